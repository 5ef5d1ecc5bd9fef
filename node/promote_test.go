package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/statefile"
	"github.com/myhoard/myhoard/storage"
)

// TestTakeUpPrimary: what a node does when the cluster names it the
// primary at an epoch, from each mode, and that the change is persisted.
func TestTakeUpPrimary(t *testing.T) {
	tests := []struct {
		from      Mode
		epoch     int64 // taken up before
		named     int64 // the epoch the cluster names
		want      Mode
		wantEpoch int64
	}{
		{ModeIdle, 1, 1, ModeActive, 1},     // a new cluster's first primary
		{ModeIdle, 1, 3, ModeActive, 3},     // a node that lost its state
		{ModeObserve, 1, 2, ModePromote, 2}, // the usual failover
		{ModeObserve, 2, 2, ModePromote, 2}, // a request cut off after the compare-and-set
		{ModeActive, 2, 2, ModeActive, 2},   // already taken up
		{ModeActive, 2, 4, ModePromote, 4},  // deposed, then promoted again
		{ModePromote, 3, 3, ModePromote, 3}, // promoting already
		{ModePromote, 2, 3, ModePromote, 3}, // promoted again while promoting
		{ModeRestore, 1, 2, ModeRestore, 1}, // the restore finishes first
	}
	for _, tc := range tests {
		c := mustNew(t, testConfig(t, "mariadb", 1), slog.New(slog.DiscardHandler))
		c.state.Mode, c.state.Epoch = tc.from, tc.epoch
		c.mode.Store(tc.from)
		got, err := c.takeUpPrimary(tc.named)
		if err != nil {
			t.Fatal(err)
		}
		var saved controllerState
		if _, err := statefile.Load(c.statePath(), &saved); err != nil {
			t.Fatal(err)
		}
		changed := got != tc.from || tc.wantEpoch != tc.epoch
		if got != tc.want || c.state.Epoch != tc.wantEpoch || Mode(c.Mode()) != tc.want ||
			(changed && (saved.Mode != tc.want || saved.Epoch != tc.wantEpoch)) {
			t.Errorf("%s at epoch %d, named at %d: %s at %d (saved %s at %d), want %s at %d",
				tc.from, tc.epoch, tc.named, got, c.state.Epoch, saved.Mode, saved.Epoch, tc.want, tc.wantEpoch)
		}
	}
}

// TestMarkersPassTheWriterGate: a node the cluster does not name the
// primary of its streams' epoch neither completes nor closes a stream
// (a real single-node cluster answers the gate); once it is the primary,
// both markers are written.
func TestMarkersPassTheWriterGate(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "mariadb", 1)
	c := mustNew(t, cfg, slog.New(slog.DiscardHandler))
	if err := c.openSites(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.shutdown()
	addr := func() string {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("127.0.0.1:%d", p)
	}
	cn, err := cluster.Open(ctx, cluster.Options{NodeID: cfg.Cluster.NodeID, RaftAddr: addr(), GossipAddr: addr(), RPCAddr: addr(), DataDir: t.TempDir(),
		Timing: cluster.Timing{Local: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	c.SetCluster(cn)
	scanner, err := backup.NewScanner(filepath.Join(t.TempDir(), "binlog"), mysql.FlavorMariaDB, filepath.Join(t.TempDir(), "scan.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.scanner = scanner
	at := time.Now().UTC()
	c.state.Streams.List = []backup.StreamState{
		{ID: "s1", Site: "s", Phase: backup.PhaseBinlog, Epoch: 1, CreatedAt: at},
		{ID: "s2", Site: "s", Phase: backup.PhaseCatchup, Epoch: 1, CreatedAt: at.Add(time.Second), LastUploadedLocal: 5},
	}
	site := c.catalog.Site("s")
	markers := func() []string {
		var keys []string
		_ = site.List(ctx, storage.StreamsPrefix, func(o storage.ObjectInfo) error {
			keys = append(keys, o.Key)
			return nil
		})
		return keys
	}
	harness.WaitFor(t, "a leader", 20*time.Second, func() (bool, string) { return cn.Leader() != "", "" })
	err = c.archiver.CompleteAndClose(ctx, backup.Tick{Scanner: scanner, Config: cfg})
	if !errors.Is(err, backup.ErrGateClosed) || !strings.Contains(err.Error(), "stream s2: mark completed") {
		t.Fatalf("complete while not the primary: %v", err)
	}
	c.state.Streams.List[1].LastUploadedLocal = -1 // not complete: only the close is due
	c.state.Streams.List[1].Phase = backup.PhaseBinlog
	err = c.archiver.CompleteAndClose(ctx, backup.Tick{Scanner: scanner, Config: cfg})
	if !errors.Is(err, backup.ErrGateClosed) || !strings.Contains(err.Error(), "stream s1: mark closed") {
		t.Fatalf("close while not the primary: %v", err)
	}
	if keys := markers(); len(keys) != 0 {
		t.Fatalf("markers written without passing the gate: %v", keys)
	}
	if err := cn.EnsureMember(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cn.Promote(ctx, cluster.PromoteRequest{NodeID: cfg.Cluster.NodeID}); err != nil {
		t.Fatal(err)
	}
	c.state.Streams.List[1].Phase, c.state.Streams.List[1].LastUploadedLocal = backup.PhaseCatchup, 5
	if err := c.archiver.CompleteAndClose(ctx, backup.Tick{Scanner: scanner, Config: cfg}); err != nil {
		t.Fatalf("complete and close as the primary: %v", err)
	}
	want := []string{storage.MarkerKey("s1", storage.MarkerClosed), storage.MarkerKey("s2", storage.MarkerCompleted)}
	if keys := markers(); !reflect.DeepEqual(keys, want) {
		t.Fatalf("markers %v, want %v", keys, want)
	}
}
