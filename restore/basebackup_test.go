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
	"github.com/myhoard/myhoard/storage/storagetest"
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
	// a chain of three: the full backup and the middle member stay open
	// for the next incremental (xtrabackup only), incrementals come from
	// their own directory
	my3, ma3 := BasebackupOptions{Flavor: mysql.FlavorMySQL}, BasebackupOptions{Flavor: mysql.FlavorMariaDB}
	for _, tc := range []struct {
		o    BasebackupOptions
		i    int
		want []string
	}{
		{my3, 0, []string{"xtrabackup", "--prepare", "--target-dir=/t", "--no-version-check", "--apply-log-only"}},
		{my3, 1, []string{"xtrabackup", "--prepare", "--target-dir=/t", "--no-version-check", "--incremental-dir=/i", "--apply-log-only"}},
		{my3, 2, []string{"xtrabackup", "--prepare", "--target-dir=/t", "--no-version-check", "--incremental-dir=/i"}},
		{ma3, 0, []string{"mariabackup", "--prepare", "--target-dir=/t"}},
		{ma3, 1, []string{"mariabackup", "--prepare", "--target-dir=/t", "--incremental-dir=/i"}},
		{ma3, 2, []string{"mariabackup", "--prepare", "--target-dir=/t", "--incremental-dir=/i"}},
	} {
		if got := ChainPrepareCommand(tc.o, "/t", "/i", tc.i, 3); !slices.Equal(got, tc.want) {
			t.Errorf("%s member %d: %q, want %q", tc.o.Flavor, tc.i, got, tc.want)
		}
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
	key := storagetest.Key(t)
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
	ctx := context.Background()
	f := newFixture(t, 10, 4, 60, 1, storage.EncodeOptions{Compression: storage.CompressionZstd})
	if len(f.stored) < 4 {
		t.Fatalf("only %d binlogs to apply", len(f.stored))
	}
	m := f.m
	targetMid, _ := mysql.ParseMariaDBGTIDSet(f.mid.GTID)
	tests := []struct {
		name string
		cp   harness.Checkpoint
		stop func(files []string) (StopPoint, error)
	}{
		{"latest", f.final, nil},
		{"to a GTID", f.mid, func(files []string) (StopPoint, error) {
			return FindStopByGTID(files, mysql.FlavorMariaDB, m.GTIDExecuted, targetMid)
		}},
		{"to a time", f.mid, func(files []string) (StopPoint, error) {
			return FindStopByTime(files, mysql.FlavorMariaDB, m.GTIDExecuted, f.mid.Time)
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := restoredTarget(t, f, uint32(201+i))
			var files []string
			for i, b := range f.stored {
				out, err := os.Create(filepath.Join(dst.RelayDir, fmt.Sprintf("download.%d", i)))
				if err != nil {
					t.Fatal(err)
				}
				if err := f.site.GetDecoded(ctx, b.Ref.DataKey(), nil, out); err != nil {
					t.Fatal(err)
				}
				out.Close()
				files = append(files, out.Name())
			}
			ddb := harness.OpenDB(t, dst)
			if err := InitGTIDState(ctx, ddb, mysql.FlavorMariaDB, m.GTIDExecuted); err != nil {
				t.Fatal(err)
			}
			opts := ApplyOptions{DB: ddb, RelayPrefix: dst.RelayLogPrefix(), RelayIndex: dst.RelayLogIndex(), Files: files,
				StartFile: m.BinlogName, StartPos: m.BinlogPosition, Target: tc.cp.GTID, Parallel: 2, Timeout: time.Minute}
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
			assertAt(t, dst, tc.cp)
		})
	}
	beyond, _ := mysql.ParseMariaDBGTIDSet("0-101-999999")
	if _, err := FindStopByGTID(nil, mysql.FlavorMariaDB, m.GTIDExecuted, beyond); !errors.Is(err, ErrTargetNotFound) {
		t.Errorf("unreachable target: %v", err)
	}
}
