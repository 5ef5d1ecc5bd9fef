package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

func TestPrepareCommand(t *testing.T) {
	pct := 40
	my := PrepareCommand(BasebackupOptions{Flavor: mysql.FlavorMySQL, FreeMemoryPercent: &pct}, "/r/x")
	if !slices.Equal(my, []string{"xtrabackup", "--prepare", "--target-dir=/r/x", "--no-version-check", "--use-free-memory-pct=40"}) {
		t.Errorf("MySQL prepare = %q", my)
	}
	ma := PrepareCommand(BasebackupOptions{Flavor: mysql.FlavorMariaDB}, "/r/x")
	if !slices.Equal(ma, []string{"mariabackup", "--prepare", "--target-dir=/r/x"}) {
		t.Errorf("MariaDB prepare = %q", ma)
	}
}

func TestRestoreBasebackupOnMariaDB(t *testing.T) {
	ins := harness.StartInstances(t, 1, harness.Options{})
	src := ins[0]
	db := harness.OpenDB(t, src)
	ctx := context.Background()
	load, err := harness.NewLoadGen(ctx, db, 9)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 200); err != nil {
		t.Fatal(err)
	}
	cp, err := load.Checkpoint(ctx, "before the backup")
	if err != nil {
		t.Fatal(err)
	}
	site, err := storage.OpenDirectory(ctx, "s", t.TempDir(), storage.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	pub, _ := os.ReadFile("../storage/testdata/test-key-a.pub.pem")
	priv, _ := os.ReadFile("../storage/testdata/test-key-a.pem")
	key, err := storage.NewKeyPair(string(pub), string(priv))
	if err != nil {
		t.Fatal(err)
	}
	sid := storage.NewStreamID(time.Now())
	m, err := backup.TakeBasebackup(ctx, site, sid, backup.BasebackupOptions{
		Flavor: mysql.FlavorMariaDB, ConfigFile: src.ConfigFile, DataDir: src.DataDir, TempDir: t.TempDir(),
		Conn: mysql.ConnParams{User: "root", Socket: src.Socket}, SplitSize: 300 << 10,
		Encode: storage.EncodeOptions{Compression: storage.CompressionZstd, Key: key},
	}, db)
	if err != nil {
		t.Fatal(err)
	}
	if m.GTIDExecuted.String() != cp.GTID {
		t.Fatalf("backup at %s, checkpoint at %s", m.GTIDExecuted, cp.GTID)
	}

	// An empty instance receives the backup.
	dst, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(harness.ShortTempDir(t), "r"), ServerID: 201, NoInit: true})
	if err != nil {
		t.Fatal(err)
	}
	var last, total int64
	opts := BasebackupOptions{Flavor: mysql.FlavorMariaDB, DataDir: dst.DataDir, Keys: storage.NewKeyring(key),
		Progress: func(d, tot int64) { last, total = d, tot }}
	if err := RestoreBasebackup(ctx, site, m, opts); err != nil {
		t.Fatal(err)
	}
	if last != total || total != m.EncodedSize {
		t.Errorf("progress %d of %d, manifest says %d", last, total, m.EncodedSize)
	}
	if err := dst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer dst.Stop(ctx)
	sums, rows, err := harness.TableChecksums(ctx, harness.OpenDB(t, dst))
	if err != nil {
		t.Fatal(err)
	}
	for _, tbl := range harness.LoadTables {
		if sums[tbl] != cp.Checksums[tbl] || rows[tbl] != cp.Rows[tbl] {
			t.Errorf("%s: restored checksum %d (%d rows), source %d (%d rows)", tbl, sums[tbl], rows[tbl], cp.Checksums[tbl], cp.Rows[tbl])
		}
	}

	// A data directory with files is refused and left alone.
	if err := RestoreBasebackup(ctx, site, m, opts); !errors.Is(err, ErrDataDirNotEmpty) {
		t.Errorf("non-empty data directory: %v", err)
	}
	// A damaged part fails the restore and leaves the target empty.
	fresh := filepath.Join(harness.ShortTempDir(t), "data")
	data, err := site.GetBytes(ctx, m.Parts[1].Key)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := site.PutBytes(ctx, m.Parts[1].Key, data, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	opts.DataDir = fresh
	err = RestoreBasebackup(ctx, site, m, opts)
	if err == nil || !errors.Is(err, storage.ErrCorrupt) {
		t.Fatalf("damaged part: %v", err)
	}
	if entries, _ := os.ReadDir(fresh); len(entries) != 0 {
		t.Errorf("a failed restore left %d entries in the data directory", len(entries))
	}
	// The wrong key is named.
	opts.Keys = nil
	if err := RestoreBasebackup(ctx, site, m, opts); err == nil || !strings.Contains(err.Error(), key.ID) {
		t.Errorf("missing key: %v", err)
	}
}

func TestRestoreToLatestAndPointsInTimeOnMariaDB(t *testing.T) {
	src := harness.StartInstances(t, 1, harness.Options{})[0]
	db := harness.OpenDB(t, src)
	ctx := context.Background()
	load, err := harness.NewLoadGen(ctx, db, 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 100); err != nil {
		t.Fatal(err)
	}
	site, err := storage.OpenDirectory(ctx, "s", t.TempDir(), storage.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer site.Close()
	enc := storage.EncodeOptions{Compression: storage.CompressionZstd}
	sid := storage.NewStreamID(time.Now())
	m, err := backup.TakeBasebackup(ctx, site, sid, backup.BasebackupOptions{
		Flavor: mysql.FlavorMariaDB, ConfigFile: src.ConfigFile, DataDir: src.DataDir, TempDir: t.TempDir(),
		Conn: mysql.ConnParams{User: "root", Socket: src.Socket}, Encode: enc,
	}, db)
	if err != nil {
		t.Fatal(err)
	}
	var mid harness.Checkpoint
	for i := 0; i < 4; i++ {
		if err := load.WriteTransactions(ctx, 60); err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if mid, err = load.Checkpoint(ctx, "middle"); err != nil { // inside a binlog
				t.Fatal(err)
			}
			if err := load.WriteTransactions(ctx, 30); err != nil {
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

	// Upload the binlogs from the backup's consistency point on.
	sc, err := backup.NewScanner(src.BinlogPrefix(), mysql.FlavorMariaDB, filepath.Join(t.TempDir(), "scan.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	binlogs, _, err := sc.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, err := backup.BinlogIndexOf(m.BinlogName)
	if err != nil {
		t.Fatal(err)
	}
	var refs []storage.BinlogRef
	for _, b := range binlogs {
		if b.Index < first {
			continue
		}
		ref := storage.BinlogRef{StreamID: sid, RemoteIndex: int64(len(refs) + 1), Epoch: 1, ServerID: 101}
		if _, err := backup.UploadBinlog(ctx, site, backup.BinlogUpload{Ref: ref, Binlog: b, Flavor: mysql.FlavorMariaDB, Encode: enc}, nil); err != nil {
			t.Fatal(err)
		}
		refs = append(refs, ref)
	}
	if len(refs) < 4 {
		t.Fatalf("only %d binlogs to apply", len(refs))
	}

	targetMid, _ := mysql.ParseMariaDBGTIDSet(mid.GTID)
	tests := []struct {
		name string
		cp   harness.Checkpoint
		stop func(files []string) (StopPoint, error)
	}{
		{"latest", final, nil},
		{"to a GTID", mid, func(files []string) (StopPoint, error) {
			return FindStopByGTID(files, mysql.FlavorMariaDB, m.GTIDExecuted, targetMid)
		}},
		{"to a time", mid, func(files []string) (StopPoint, error) {
			return FindStopByTime(files, mysql.FlavorMariaDB, m.GTIDExecuted, mid.Time)
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(harness.ShortTempDir(t), "r"), ServerID: uint32(201 + i), NoInit: true})
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
			var files []string
			for i, ref := range refs {
				f, err := os.Create(filepath.Join(dst.RelayDir, fmt.Sprintf("download.%d", i)))
				if err != nil {
					t.Fatal(err)
				}
				if err := backup.DownloadObject(ctx, site, ref.DataKey(), nil, f); err != nil {
					t.Fatal(err)
				}
				f.Close()
				files = append(files, f.Name())
			}
			opts := ApplyOptions{DB: harness.OpenDB(t, dst), RelayPrefix: dst.RelayLogPrefix(), RelayIndex: dst.RelayLogIndex(), Files: files,
				StartFile: m.BinlogName, StartPos: m.BinlogPosition, GTID: m.GTIDExecuted.String(), Target: tc.cp.GTID, Parallel: 2, Timeout: time.Minute}
			if tc.stop != nil {
				sp, err := tc.stop(files)
				if err != nil {
					t.Fatal(err)
				}
				if sp.Reached.String() != tc.cp.GTID {
					t.Fatalf("stop point reaches %s, want %s", sp.Reached, tc.cp.GTID)
				}
				opts.UntilFile, opts.UntilPos, opts.Parallel = sp.File, sp.Pos, 0
			}
			if err := ApplyBinlogs(ctx, opts); err != nil {
				t.Fatal(err)
			}
			ddb := harness.OpenDB(t, dst)
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
		})
	}
	beyond, _ := mysql.ParseMariaDBGTIDSet("0-101-999999")
	if _, err := FindStopByGTID(nil, mysql.FlavorMariaDB, m.GTIDExecuted, beyond); !errors.Is(err, ErrTargetNotFound) {
		t.Errorf("unreachable target: %v", err)
	}
}
