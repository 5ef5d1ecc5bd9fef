package restore

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

func dirSize(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() {
			n += info.Size()
		}
	}
	return n
}

func TestApplyInBoundedBatches(t *testing.T) {
	src := harness.StartInstances(t, 1, harness.Options{})[0]
	db := harness.OpenDB(t, src)
	ctx := context.Background()
	load, err := harness.NewLoadGen(ctx, db, 11)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 50); err != nil {
		t.Fatal(err)
	}
	site, err := storage.OpenDirectory(ctx, "s", t.TempDir(), storage.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	enc := storage.EncodeOptions{Compression: storage.CompressionSnappy}
	sid := storage.NewStreamID(time.Now())
	m, err := backup.TakeBasebackup(ctx, site, sid, backup.BasebackupOptions{
		Flavor: mysql.FlavorMariaDB, ConfigFile: src.ConfigFile, DataDir: src.DataDir, TempDir: t.TempDir(),
		Conn: mysql.ConnParams{User: "root", Socket: src.Socket}, Encode: enc,
	}, db)
	if err != nil {
		t.Fatal(err)
	}
	var mid harness.Checkpoint
	for i := 0; i < 14; i++ {
		if err := load.WriteTransactions(ctx, 25); err != nil {
			t.Fatal(err)
		}
		if i == 8 {
			if mid, err = load.Checkpoint(ctx, "middle"); err != nil {
				t.Fatal(err)
			}
			if err := load.WriteTransactions(ctx, 10); err != nil {
				t.Fatal(err)
			}
		}
		harness.Exec(t, db, "FLUSH BINARY LOGS")
	}
	final, err := load.Checkpoint(ctx, "final")
	if err != nil {
		t.Fatal(err)
	}
	harness.Exec(t, db, "FLUSH BINARY LOGS")
	sc, err := backup.NewScanner(src.BinlogPrefix(), mysql.FlavorMariaDB, filepath.Join(t.TempDir(), "scan.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	binlogs, _, err := sc.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := backup.BinlogIndexOf(m.BinlogName)
	var stored []StoredBinlog
	var biggest int64
	for _, b := range binlogs {
		if b.Index < first {
			continue
		}
		ref := storage.BinlogRef{StreamID: sid, RemoteIndex: int64(len(stored) + 1), Epoch: 1, ServerID: 101}
		man, err := backup.UploadBinlog(ctx, site, backup.BinlogUpload{Ref: ref, Binlog: b, Flavor: mysql.FlavorMariaDB, Encode: enc}, nil)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, StoredBinlog{Ref: ref, Manifest: *man})
		biggest = max(biggest, b.Size)
	}
	budget := 2 * biggest

	midGTID, _ := mysql.ParseMariaDBGTIDSet(mid.GTID)
	midTime := mid.Time
	tests := []struct {
		name  string
		cp    harness.Checkpoint
		patch func(o *FromStorageOptions)
	}{
		{"latest", final, func(o *FromStorageOptions) {}},
		{"to a GTID", mid, func(o *FromStorageOptions) { o.StopGTID = &midGTID }},
		{"to a time", mid, func(o *FromStorageOptions) { o.StopTime = &midTime }},
	}
	for n, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(harness.ShortTempDir(t), "r"), ServerID: uint32(210 + n), NoInit: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := RestoreBasebackup(ctx, site, m, BasebackupOptions{Flavor: mysql.FlavorMariaDB, DataDir: dst.DataDir}); err != nil {
				t.Fatal(err)
			}
			if err := dst.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer dst.Stop(ctx)
			var peak atomic.Int64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if n := dirSize(dst.RelayDir); n > peak.Load() {
						peak.Store(n)
					}
					select {
					case <-stop:
						return
					case <-time.After(2 * time.Millisecond):
					}
				}
			}()
			batches := 0
			ddb := harness.OpenDB(t, dst)
			opts := FromStorageOptions{Site: site, DB: ddb, RelayPrefix: dst.RelayLogPrefix(), RelayIndex: dst.RelayLogIndex(),
				StartFile: m.BinlogName, StartPos: m.BinlogPosition, GTID: m.GTIDExecuted.String(), MaxBytes: budget, Parallel: 2,
				BackupGTID: m.GTIDExecuted, Flavor: mysql.FlavorMariaDB, Progress: func(applied, pending int) { batches++ }}
			tc.patch(&opts)
			err = ApplyFromStorage(ctx, stored, opts)
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if batches < 3 {
				t.Errorf("only %d batches with a budget of two binlogs", batches)
			}
			if limit := budget + biggest + 4096; peak.Load() > limit {
				t.Errorf("relay directory peaked at %d bytes, over the budget %d plus one binlog", peak.Load(), budget)
			}
			sums, rows, err := harness.TableChecksums(ctx, ddb)
			if err != nil {
				t.Fatal(err)
			}
			for _, tbl := range harness.LoadTables {
				if sums[tbl] != tc.cp.Checksums[tbl] || rows[tbl] != tc.cp.Rows[tbl] {
					t.Errorf("%s: restored checksum %d (%d rows), source %d (%d rows)", tbl, sums[tbl], rows[tbl], tc.cp.Checksums[tbl], tc.cp.Rows[tbl])
				}
			}
			if pos := harness.QueryString(t, ddb, "SELECT @@gtid_binlog_pos"); pos != tc.cp.GTID {
				t.Errorf("restored server at %s, source at %s", pos, tc.cp.GTID)
			}
			t.Logf("%d batches, budget %d bytes, relay directory peak %d bytes", batches, budget, peak.Load())
		})
	}
}
