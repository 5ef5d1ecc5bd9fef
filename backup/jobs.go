package backup

import (
	"context"
	"fmt"
	"sync"

	"github.com/myhoard/myhoard/storage"
)

// Gate is the writer gate: it must pass right before an object that adds
// to or ends a stream is written (the cluster's check that this node is
// still the primary of the stream's epoch). A nil Gate always passes (a
// lone node).
type Gate func(ctx context.Context) error

// Pass runs the gate; its refusal wraps ErrGateClosed.
func (g Gate) Pass(ctx context.Context) error {
	if g == nil {
		return nil
	}
	if err := g(ctx); err != nil {
		return fmt.Errorf("%w: %v", ErrGateClosed, err)
	}
	return nil
}

// BasebackupJobs runs the streams' full backups in the background, at most
// one per stream, and hands back the finished ones. Safe for concurrent
// use.
type BasebackupJobs struct {
	mu      sync.Mutex
	running map[string]chan BasebackupResult
}

// BasebackupResult is a finished full backup of a stream.
type BasebackupResult struct {
	StreamID string
	Manifest *storage.BasebackupManifest
	Err      error
}

// Start runs take for stream id in the background (nothing when one runs
// already); onEnd is called when it ended.
func (j *BasebackupJobs) Start(ctx context.Context, id string, take func(context.Context) (*storage.BasebackupManifest, error), onEnd func()) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, ok := j.running[id]; ok {
		return
	}
	if j.running == nil {
		j.running = map[string]chan BasebackupResult{}
	}
	ch := make(chan BasebackupResult, 1)
	j.running[id] = ch
	go func() {
		m, err := take(ctx)
		ch <- BasebackupResult{StreamID: id, Manifest: m, Err: err}
		if onEnd != nil {
			onEnd()
		}
	}()
}

// Running reports whether stream id's full backup is running (or finished
// and not yet handed back).
func (j *BasebackupJobs) Running(id string) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	_, ok := j.running[id]
	return ok
}

// Finished hands back the full backups that ended since the last call.
func (j *BasebackupJobs) Finished() []BasebackupResult {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []BasebackupResult
	for id, ch := range j.running {
		select {
		case res := <-ch:
			delete(j.running, id)
			out = append(out, res)
		default:
		}
	}
	return out
}

// StoredBasebackup is stream id's basebackup.json when storage holds a
// readable one: after a crash the full backup may be complete already,
// and is adopted rather than taken (and its parts overwritten) again.
func StoredBasebackup(ctx context.Context, site *storage.Site, id string) *storage.BasebackupManifest {
	data, err := site.GetBytes(ctx, storage.BasebackupManifestKey(id))
	if err != nil {
		return nil
	}
	var m storage.BasebackupManifest
	if err := storage.UnmarshalManifest(storage.BasebackupManifestKey(id), data, &m); err != nil {
		return nil
	}
	return &m
}

// PublishBasebackup writes a finished full backup's basebackup.json
// (write-once), which makes the backup visible, after the gate passed.
func PublishBasebackup(ctx context.Context, site *storage.Site, m *storage.BasebackupManifest, gate Gate) error {
	if _, err := BinlogIndexOf(m.BinlogName); err != nil {
		return fmt.Errorf("stream %s: basebackup: %w", m.StreamID, err)
	}
	body, err := storage.MarshalManifest(m)
	if err == nil {
		err = gate.Pass(ctx)
	}
	if err == nil {
		err = site.PutBytes(ctx, storage.BasebackupManifestKey(m.StreamID), body, storage.PutOptions{IfNotExist: true, ContentType: "application/json"})
	}
	if err != nil {
		return fmt.Errorf("stream %s: write basebackup.json: %w", m.StreamID, err)
	}
	return nil
}

// WriteGatedMarker writes a stream's completed or closed marker after the
// gate passed.
func WriteGatedMarker(ctx context.Context, site *storage.Site, streamID string, m storage.Marker, rec storage.MarkerRecord, gate Gate) error {
	err := gate.Pass(ctx)
	if err == nil {
		err = storage.WriteMarker(ctx, site, streamID, m, rec)
	}
	if err != nil {
		return fmt.Errorf("stream %s: mark %s: %w", streamID, m, err)
	}
	return nil
}
