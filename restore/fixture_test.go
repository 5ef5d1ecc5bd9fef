package restore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// fixture is a source server's history in storage: a basebackup, then
// rounds of writes each closed by a binlog rotation, with checkpoints in
// the middle (inside a binlog) and at the end, and the binlogs uploaded.
type fixture struct {
	site       *storage.Site
	m          *storage.BasebackupManifest
	stored     []storage.StoredBinlog
	mid, final harness.Checkpoint
	biggest    int64
}

func newFixture(t *testing.T, seed uint64, rounds, perRound, midRound int, enc storage.EncodeOptions) *fixture {
	t.Helper()
	src := harness.StartInstances(t, 1, harness.Options{})[0]
	db := harness.OpenDB(t, src)
	ctx := context.Background()
	load, err := harness.NewLoadGen(ctx, db, seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 50); err != nil {
		t.Fatal(err)
	}
	f := &fixture{}
	if f.site, err = storage.OpenDirectory(ctx, "s", t.TempDir(), storage.SiteOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.site.Close() })
	sid := storage.NewStreamID(time.Now())
	f.m, err = backup.TakeBasebackup(ctx, f.site, sid, backup.BasebackupOptions{
		Flavor: mysql.FlavorMariaDB, ConfigFile: src.ConfigFile, DataDir: src.DataDir, TempDir: t.TempDir(),
		Conn: mysql.ConnParams{User: "root", Socket: src.Socket}, Encode: enc,
	}, db)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < rounds; i++ {
		if err := load.WriteTransactions(ctx, perRound); err != nil {
			t.Fatal(err)
		}
		if i == midRound {
			if f.mid, err = load.Checkpoint(ctx, "middle"); err != nil {
				t.Fatal(err)
			}
			if err := load.WriteTransactions(ctx, 10); err != nil { // the middle lies inside a binlog
				t.Fatal(err)
			}
		}
		harness.Exec(t, db, "FLUSH BINARY LOGS")
	}
	if f.final, err = load.Checkpoint(ctx, "final"); err != nil {
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
	first, err := backup.BinlogIndexOf(f.m.BinlogName)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range binlogs {
		if b.Index < first {
			continue
		}
		ref := storage.BinlogRef{StreamID: sid, RemoteIndex: int64(len(f.stored) + 1), Epoch: 1, ServerID: 101}
		man, err := backup.UploadBinlog(ctx, f.site, backup.BinlogUpload{Ref: ref, Binlog: b, Flavor: mysql.FlavorMariaDB, Encode: enc}, nil)
		if err != nil {
			t.Fatal(err)
		}
		f.stored = append(f.stored, storage.StoredBinlog{Ref: ref, Manifest: *man})
		f.biggest = max(f.biggest, b.Size)
	}
	return f
}

// restoredTarget is an empty server that received the fixture's
// basebackup, started.
func restoredTarget(t *testing.T, f *fixture, serverID uint32) *harness.Instance {
	t.Helper()
	ctx := context.Background()
	dst, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(harness.ShortTempDir(t), "r"), ServerID: serverID, NoInit: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := RestoreBasebackup(ctx, f.site, f.m, BasebackupOptions{Flavor: mysql.FlavorMariaDB, DataDir: dst.DataDir}); err != nil {
		t.Fatal(err)
	}
	if err := dst.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Stop(context.Background()) })
	return dst
}

// assertAt checks that a restored server equals a checkpoint of the source.
func assertAt(t *testing.T, dst *harness.Instance, cp harness.Checkpoint) {
	t.Helper()
	diffs, err := harness.Mismatches(context.Background(), harness.OpenDB(t, dst), cp)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Errorf("restored %s", d)
	}
}
