package node

import (
	"context"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// The requests of the HTTP API that act on backups (active mode's, and
// the markers any mode may write).

// RequestBasebackup queues a backup (POST /backup basebackup): a full one,
// or with incremental true an incremental one, refused with the reason
// when none can be taken now (an explicit request never silently becomes
// a full backup).
func (c *Controller) RequestBasebackup(ctx context.Context, incremental *bool) error {
	c.mu.Lock()
	mode, site, flavor := c.state.Mode, c.cfg.UploadSiteName(), c.flavor
	c.mu.Unlock()
	if mode != ModeActive {
		return badRequest("backups can only be requested in active mode (mode is %s)", mode)
	}
	inc := incremental != nil && *incremental
	if inc {
		if _, err := c.archiver.IncrementalBase(ctx, site, flavor); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Mode != ModeActive {
		return badRequest("backups can only be requested in active mode (mode is %s)", c.state.Mode)
	}
	c.state.Streams.Request = &backup.Request{Reason: "requested", NormalizedTime: time.Now().UTC(), Incremental: inc}
	c.metrics.Inc("myhoard.backup_stream.basebackup_requested", 1, nil)
	if err := c.saveLocked(); err != nil {
		return err
	}
	c.poke()
	return nil
}

// RotateBinlog closes the current binlog and, with a wait, blocks until
// every streaming stream has uploaded it (backup.Archiver.Rotate).
func (c *Controller) RotateBinlog(ctx context.Context, wait time.Duration) error {
	c.mu.Lock()
	db, mode := c.db, c.state.Mode
	c.mu.Unlock()
	if mode != ModeActive {
		return badRequest("binlog rotation can only be requested in active mode (mode is %s)", mode)
	}
	if db == nil {
		return errNotReady
	}
	return c.archiver.Rotate(ctx, db, wait)
}

// SetBinlogIndex skips a hole in the local binlog sequence (PATCH /binlogs).
func (c *Controller) SetBinlogIndex(n int64) error {
	c.mu.Lock()
	scanner := c.scanner
	c.mu.Unlock()
	if scanner == nil {
		return errNotReady
	}
	if err := scanner.SetNextIndex(n); err != nil {
		return &wire.RequestError{Msg: err.Error()}
	}
	c.poke()
	return nil
}

// PauseBackups sets or clears (nil) paused_until (PATCH /backup/settings).
func (c *Controller) PauseBackups(until *time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until != nil && !until.After(time.Now()) {
		return badRequest("paused_until %s is not in the future", until.Format(time.RFC3339))
	}
	c.state.Streams.PausedUntil = until
	return c.saveLocked()
}

// ReplicationState returns the stored replication state.
func (c *Controller) ReplicationState() map[string]map[string][][2]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string][][2]uint64{}
	for k, v := range c.state.ReplicationState {
		out[k] = v
	}
	return out
}

// SetReplicationState stores PUT /replication_state.
//
// In a cluster it also goes into the Raft view (next to what the members
// publish themselves), which is what the purge rules read there.
func (c *Controller) SetReplicationState(rs map[string]map[string][][2]uint64) error {
	c.mu.Lock()
	state := map[string]mysql.ReplicationState{}
	texts := map[string]string{}
	for k, v := range rs {
		if c.flavor != "" {
			set, err := mysql.GTIDSetFromReplicationState(c.flavor, v)
			if err != nil {
				c.mu.Unlock()
				return badRequest("server %q: %v", k, err)
			}
			texts[k] = set.String()
		}
		state[k] = v
	}
	c.state.ReplicationState = state
	err := c.saveLocked()
	cn := c.cluster
	c.mu.Unlock()
	if err != nil || cn == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cn.SetExternal(ctx, texts)
}

// Preserve writes or removes (until nil) a backup's preservation marker
// and, with a wait, waits until the backup list shows it.
func (c *Controller) Preserve(ctx context.Context, streamID string, until *time.Time, wait time.Duration) (bool, error) {
	var rec *storage.MarkerRecord
	if until != nil {
		rec = &storage.MarkerRecord{At: time.Now().UTC(), PreserveUntil: until, NodeID: c.nodeID()}
	}
	if err := c.catalog.SetMarker(ctx, streamID, storage.MarkerPreserved, rec); err != nil {
		return false, err
	}
	_ = wait // the marker is in storage and the list refreshed before returning
	for _, b := range c.Backups() {
		if b.StreamID == streamID {
			return true, nil
		}
	}
	return false, nil // the backup disappeared meanwhile
}

// MarkBroken writes or removes a backup's broken marker (active mode only).
// StreamBinlogs lists a listed backup's binlogs in storage.
func (c *Controller) StreamBinlogs(ctx context.Context, streamID string, full bool) (wire.StreamBinlogs, error) {
	return c.catalog.StreamBinlogs(ctx, streamID, full)
}

func (c *Controller) MarkBroken(ctx context.Context, streamID string, broken bool) error {
	if Mode(c.Mode()) != ModeActive {
		return badRequest("backups can only be marked broken in active mode (mode is %s)", c.Mode())
	}
	var rec *storage.MarkerRecord
	if broken {
		c.m().Inc("myhoard.basebackup_broken", 1, nil)
		rec = &storage.MarkerRecord{At: time.Now().UTC(), NodeID: c.nodeID()}
	}
	return c.catalog.SetMarker(ctx, streamID, storage.MarkerBroken, rec)
}
