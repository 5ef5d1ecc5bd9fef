package backup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/storage"
)

func TestBasebackupJobs(t *testing.T) {
	var j BasebackupJobs
	release := make(chan struct{})
	var calls, ended atomic.Int32
	take := func(ctx context.Context) (*storage.BasebackupManifest, error) {
		calls.Add(1)
		<-release
		return &storage.BasebackupManifest{StreamID: "a"}, nil
	}
	onEnd := func() { ended.Add(1) }
	j.Start(context.Background(), "a", take, onEnd)
	j.Start(context.Background(), "a", take, onEnd) // one per stream
	j.Start(context.Background(), "b", func(context.Context) (*storage.BasebackupManifest, error) { return nil, errors.New("boom") }, onEnd)
	if !j.Running("a") || j.Running("c") {
		t.Fatal("running a, not c")
	}
	var got []BasebackupResult
	harness.WaitFor(t, "b finishes", 10*time.Second, func() (bool, string) {
		got = append(got, j.Finished()...)
		return len(got) == 1, fmt.Sprintf("finished %+v", got)
	})
	if got[0].StreamID != "b" || got[0].Err == nil || j.Running("b") || !j.Running("a") {
		t.Fatalf("finished %+v; running a %v b %v", got, j.Running("a"), j.Running("b"))
	}
	close(release)
	harness.WaitFor(t, "a finishes", 10*time.Second, func() (bool, string) {
		got = append(got, j.Finished()...)
		return len(got) == 2, fmt.Sprintf("finished %+v", got)
	})
	if got[1].StreamID != "a" || got[1].Manifest == nil || calls.Load() != 1 || ended.Load() != 2 {
		t.Fatalf("finished %+v; %d takes, %d ends", got, calls.Load(), ended.Load())
	}
}

func TestPublishBasebackupAndMarkersPassTheGate(t *testing.T) {
	ctx := context.Background()
	site, _ := fileSite(t)
	closed := Gate(func(context.Context) error { return errors.New("deposed") })
	m := &storage.BasebackupManifest{Version: storage.ManifestVersion, StreamID: storage.NewStreamID(time.Now()), BinlogName: "binlog.000003",
		Parts: []storage.BasebackupPart{{Key: "part", EncodedSize: 1}}}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"basebackup.json", PublishBasebackup(ctx, site, m, closed)},
		{"marker", WriteGatedMarker(ctx, site, m.StreamID, storage.MarkerCompleted, storage.MarkerRecord{At: time.Now()}, closed)},
	} {
		if !errors.Is(tc.err, ErrGateClosed) || !strings.Contains(tc.err.Error(), "deposed") {
			t.Errorf("%s behind a closed gate: %v", tc.name, tc.err)
		}
	}
	if StoredBasebackup(ctx, site, m.StreamID) != nil {
		t.Fatal("basebackup.json written behind a closed gate")
	}
	bad := *m
	bad.BinlogName = "binlog"
	if err := PublishBasebackup(ctx, site, &bad, nil); err == nil || !strings.Contains(err.Error(), "no index") {
		t.Errorf("a backup without a binlog position: %v", err)
	}
	if err := PublishBasebackup(ctx, site, m, nil); err != nil {
		t.Fatal(err)
	}
	if got := StoredBasebackup(ctx, site, m.StreamID); got == nil || got.BinlogName != m.BinlogName {
		t.Fatalf("stored basebackup: %+v", got)
	}
	if err := PublishBasebackup(ctx, site, m, nil); !errors.Is(err, storage.ErrExists) {
		t.Errorf("basebackup.json is written once: %v", err)
	}
}
