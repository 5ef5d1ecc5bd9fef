package restore

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	ctx := context.Background()
	f := newFixture(t, 11, 14, 25, 8, storage.EncodeOptions{Compression: storage.CompressionSnappy})
	m := f.m
	budget := 2 * f.biggest
	midGTID, _ := mysql.ParseMariaDBGTIDSet(f.mid.GTID)
	midTime := f.mid.Time
	tests := []struct {
		name  string
		cp    harness.Checkpoint
		patch func(o *FromStorageOptions)
	}{
		{"latest", f.final, func(o *FromStorageOptions) {}},
		{"to a GTID", f.mid, func(o *FromStorageOptions) { o.StopGTID = &midGTID }},
		{"to a time", f.mid, func(o *FromStorageOptions) { o.StopTime = &midTime }},
		{"to a time, approximately", harness.Checkpoint{}, func(o *FromStorageOptions) { o.StopTime, o.Approximate = &midTime, true }},
	}
	for n, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dst := restoredTarget(t, f, uint32(210+n))
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
			if err := InitGTIDState(ctx, ddb, mysql.FlavorMariaDB, m.GTIDExecuted); err != nil {
				t.Fatal(err)
			}
			opts := FromStorageOptions{Site: f.site, DB: ddb, RelayPrefix: dst.RelayLogPrefix(), RelayIndex: dst.RelayLogIndex(),
				MaxBytes: budget, Parallel: 2, Flavor: mysql.FlavorMariaDB, Progress: func(applied, pending int) { batches++ }}
			tc.patch(&opts)
			err := ApplyFromStorage(ctx, f.stored, opts)
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			if batches < 3 {
				t.Errorf("only %d batches with a budget of two binlogs", batches)
			}
			if limit := budget + f.biggest + 4096; peak.Load() > limit {
				t.Errorf("relay directory peaked at %d bytes, over the budget %d plus one binlog", peak.Load(), budget)
			}
			if tc.cp.Label == "" {
				// approximate: the binlog holding the target is applied
				// whole, and none that starts after it
				var want string
				for _, b := range f.stored {
					if b.Manifest.FirstEventAt != nil && b.Manifest.FirstEventAt.Before(midTime) {
						want = b.End().MariaDBPosition()
					}
				}
				if got := harness.QueryString(t, harness.OpenDB(t, dst), "SELECT @@gtid_binlog_pos"); got != want {
					t.Errorf("approximate restore ended at %s, want the end of the target's binlog %s", got, want)
				}
				mid, _ := mysql.ParseMariaDBGTIDSet(f.mid.GTID)
				wantSet, _ := mysql.ParseMariaDBGTIDSet(want)
				if !mid.IsSubsetOf(wantSet) {
					t.Errorf("approximate restore ended at %s, before the target %s", want, f.mid.GTID)
				}
			} else {
				assertAt(t, dst, tc.cp)
			}
			t.Logf("%d batches, budget %d bytes, relay directory peak %d bytes", batches, budget, peak.Load())
		})
	}
	t.Run("a hole in the chain", func(t *testing.T) {
		// Binlog 2 left out: the apply stops before binlog 3 instead of
		// applying it on top of the hole.
		dst := restoredTarget(t, f, 218)
		ddb := harness.OpenDB(t, dst)
		if err := InitGTIDState(ctx, ddb, mysql.FlavorMariaDB, m.GTIDExecuted); err != nil {
			t.Fatal(err)
		}
		holed := append(append([]storage.StoredBinlog{}, f.stored[:2]...), f.stored[3:]...)
		err := ApplyFromStorage(ctx, holed, FromStorageOptions{Site: f.site, DB: ddb, RelayPrefix: dst.RelayLogPrefix(),
			RelayIndex: dst.RelayLogIndex(), MaxBytes: budget, Flavor: mysql.FlavorMariaDB})
		if !errors.Is(err, storage.ErrGap) {
			t.Fatalf("got %v, want storage.ErrGap", err)
		}
		reached, _ := mysql.ParseMariaDBGTIDSet(harness.QueryString(t, ddb, "SELECT @@gtid_binlog_pos"))
		if !reached.Equal(f.stored[1].End()) && !reached.IsSubsetOf(f.stored[1].End()) {
			t.Errorf("the server went past the hole: at %s, binlog 2 ends at %s", reached, f.stored[1].End())
		}
	})
	t.Run("a binlog object swapped for another", func(t *testing.T) {
		// An intact object of another binlog under a binlog's key (as a
		// deposed primary's upload could leave) is refused, never applied.
		if err := f.site.Copy(ctx, f.stored[1].Ref.DataKey(), f.stored[2].Ref.DataKey()); err != nil {
			t.Fatal(err)
		}
		dst := restoredTarget(t, f, 219)
		ddb := harness.OpenDB(t, dst)
		if err := InitGTIDState(ctx, ddb, mysql.FlavorMariaDB, m.GTIDExecuted); err != nil {
			t.Fatal(err)
		}
		err := ApplyFromStorage(ctx, f.stored, FromStorageOptions{Site: f.site, DB: ddb, RelayPrefix: dst.RelayLogPrefix(),
			RelayIndex: dst.RelayLogIndex(), MaxBytes: budget, Flavor: mysql.FlavorMariaDB})
		if !errors.Is(err, storage.ErrCorrupt) || !strings.Contains(err.Error(), f.stored[1].Ref.DataKey()) {
			t.Fatalf("got %v, want ErrCorrupt naming %s", err, f.stored[1].Ref.DataKey())
		}
	})
}
