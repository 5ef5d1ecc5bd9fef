package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/restore"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

func (c *Controller) restoreStatePath() string {
	return filepath.Join(c.cfg.StateDirectory, "restore_coordinator_state.json")
}

// RequestMode handles PUT /status: mode changes, and restores with their
// validation (each problem is a 400 with a precise message).
func (c *Controller) RequestMode(ctx context.Context, r wire.ModeChange) (string, error) {
	m, err := c.requestMode(ctx, r)
	return string(m), err
}

func (c *Controller) requestMode(ctx context.Context, r wire.ModeChange) (Mode, error) {
	if Mode(r.Mode) != ModeRestore {
		to := Mode(r.Mode)
		if cur := Mode(c.Mode()); to == ModePromote || (to == ModeActive && (c.clusterNode() != nil || cur == ModeObserve || cur == ModeRestore)) {
			return c.promote(ctx, r.Force)
		}
		return c.SetMode(to)
	}
	from := Mode(c.Mode())
	if from != ModeIdle && !(from == ModeRestore && c.restoreFailed()) {
		if from == ModeRestore {
			return from, badRequest("a restore is already running (see GET /status/restore)")
		}
		return from, badRequest("switch from %s to restore mode is not allowed: only an idle node (or one whose restore failed) can restore", from)
	}
	req, err := c.validateRestore(ctx, r)
	if err != nil {
		return from, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Mode != from {
		return c.state.Mode, badRequest("%v: it is %s now", errStateChanged, c.state.Mode)
	}
	c.stopRestoreLocked()
	if err := os.Remove(c.restoreStatePath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return from, err
	}
	if _, err := restore.New(c.restoreOptionsLocked(nil), req); err != nil {
		return from, err
	}
	if err := c.changeModeLocked(ModeRestore, nil); err != nil {
		return from, err
	}
	c.log.Info("restore requested", "site", req.Site, "stream", req.StreamID, "target_time", req.TargetTime, "target_gtid", req.TargetGTID)
	c.poke()
	return ModeRestore, nil
}

func (c *Controller) restoreFailed() bool {
	c.mu.Lock()
	job := c.restoreJob
	c.mu.Unlock()
	if job != nil {
		return job.Coord.State().Failed()
	}
	st, ok, err := restore.LoadState(c.restoreStatePath())
	if err != nil || !ok {
		return err == nil // no state at all: nothing runs
	}
	return st.Failed()
}

// validateRestore checks a restore request's fields, then (once the
// sites are open) the backup and the data directory (restore.Validate).
func (c *Controller) validateRestore(ctx context.Context, r wire.ModeChange) (*restore.Request, error) {
	cfg := c.Config()
	target, err := restore.CheckFields(r, slices.Collect(maps.Keys(cfg.BackupSites)))
	if err != nil {
		return nil, err
	}
	// Right after a start the sites may not be open yet: wait a little
	// rather than answer "not found" for a backup that exists.
	if err := c.waitSitesOpen(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return restore.Validate(ctx, c.catalog, r.Site, r.StreamID, target, cfg.MySQL.DataDirectory, time.Now())
}

// restoreOptionsLocked are the coordinator's options (c.mu held); site may
// be nil when only the state file is written.
func (c *Controller) restoreOptionsLocked(site *storage.Site) restore.Options {
	o := restore.OptionsFor(c.cfg, ConnParams(c.cfg))
	o.StatePath, o.Site, o.Keys, o.Log, o.Metrics = c.restoreStatePath(), site, c.catalog.Keys(), c.log.With("component", "restore"), c.metrics
	o.Hold = func(ctx context.Context) { c.holdAt.Hold(ctx, "restore-apply", c.log) }
	return o
}

// restoreTick keeps the coordinator running and acts on its end: observe
// after completion, fallback to an older backup after failed_basebackup.
func (c *Controller) restoreTick(ctx context.Context) error {
	c.mu.Lock()
	job := c.restoreJob
	c.mu.Unlock()
	if job == nil {
		return c.startRestore(ctx)
	}
	select {
	case <-job.Done():
		c.mu.Lock()
		c.restoreJob = nil
		c.mu.Unlock()
		return c.restoreEnded(ctx, job)
	default:
		return nil
	}
}

func (c *Controller) startRestore(ctx context.Context) error {
	st, ok, err := restore.LoadState(c.restoreStatePath())
	if err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("restore mode without restore state %s", c.restoreStatePath())
	}
	if st.Phase == restore.PhaseFailed {
		return nil // parked until a new restore is requested
	}
	site := c.catalog.Site(st.Request.Site)
	c.mu.Lock()
	if site == nil {
		c.mu.Unlock()
		return fmt.Errorf("restore: site %q is not configured", st.Request.Site)
	}
	coord, err := restore.New(c.restoreOptionsLocked(site), nil)
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.restoreJob = restore.Start(ctx, coord, c.poke)
	c.mu.Unlock()
	return nil
}

func (c *Controller) restoreEnded(ctx context.Context, job *restore.Job) error {
	st := job.Coord.State()
	switch job.Phase() {
	case restore.PhaseCompleted:
		c.log.Info("restore completed", "backup", st.BackupStreamID, "binlogs", st.BinlogsRestored)
		c.mu.Lock()
		promote := c.state.PromoteAfterRestore
		err := c.changeModeLocked(ModeObserve, func(s *controllerState) { s.PromoteAfterRestore = false })
		if err == nil {
			c.catalog.Invalidate()
			_ = os.Rename(c.restoreStatePath(), c.restoreStatePath()+".completed")
		}
		c.mu.Unlock()
		if err != nil || !promote {
			return err
		}
		_, err = c.promote(ctx, true) // the forced promotion requested during the restore
		return err
	case restore.PhaseFailedBasebackup:
		cfg := c.Config()
		return job.FallBack(ctx, c.catalog, cfg.RestoreAutoMarkBackupsBroken, cfg.Cluster.NodeID)
	}
	return nil // failed (terminal) or stopped: the state says where it was
}

// RestoreStatus is GET /status/restore.
func (c *Controller) RestoreStatus() (wire.RestoreStatus, error) {
	if Mode(c.Mode()) != ModeRestore {
		return wire.RestoreStatus{}, badRequest("mode is %s, not restore: no restore status", c.Mode())
	}
	c.mu.Lock()
	job := c.restoreJob
	c.mu.Unlock()
	if job != nil {
		return job.Coord.Status(), nil
	}
	st, _, err := restore.LoadState(c.restoreStatePath())
	if err != nil {
		return wire.RestoreStatus{}, err
	}
	return st.Status(), nil
}

// stopRestoreLocked stops a running coordinator (c.mu held).
func (c *Controller) stopRestoreLocked() {
	if job := c.restoreJob; job != nil {
		c.mu.Unlock()
		job.Stop()
		c.mu.Lock()
		c.restoreJob = nil
	}
}

// waitSitesOpen waits up to d for the backup sites to be opened and
// checked; after that the request fails naming why they are not.
func (c *Controller) waitSitesOpen(ctx context.Context, d time.Duration) error {
	if ok, err := backup.PollUntil(ctx, d, c.catalog.Ready); ok || err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return badRequest("the backup sites are not open yet (last error: %s); try again", c.lastError)
}
