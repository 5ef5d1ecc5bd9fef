package node

import (
	"context"
	"path/filepath"
	"time"

	"github.com/myhoard/myhoard/drill"
	"github.com/myhoard/myhoard/wire"
)

// drillDue starts a restore drill in the background when one was
// requested, or when restore_drill.interval_hours passed since the last.
func (c *Controller) drillDue(ctx context.Context) {
	c.mu.Lock()
	d, last, asked := c.cfg.RestoreDrill, c.state.LastDrill, c.drillAsked
	c.drillAsked = false
	c.mu.Unlock()
	if !d.Enabled() {
		return
	}
	due := d.IntervalHours > 0 && (last == nil || time.Since(last.At) >= time.Duration(d.IntervalHours*float64(time.Hour)))
	if asked || due {
		c.startDrill(ctx)
	}
}

// RequestDrill asks for a restore drill now (POST /drill); the next tick
// starts it.
func (c *Controller) RequestDrill() error {
	cfg := c.Config()
	switch {
	case !cfg.RestoreDrill.Enabled():
		return badRequest("restore drills are not configured (restore_drill.directory and port)")
	case !c.catalog.Ready():
		return errNotReady
	case c.drilling.Load() != nil:
		return badRequest("a restore drill is already running")
	}
	c.mu.Lock()
	c.drillAsked = true
	c.mu.Unlock()
	c.poke()
	return nil
}

// DrillStatus is GET /drill.
func (c *Controller) DrillStatus() wire.DrillStatus {
	var st wire.DrillStatus
	if d := c.drilling.Load(); d != nil {
		st.Running = true
		if p, ok := d.Status(); ok {
			st.Progress = &p
		}
	}
	st.Last = c.LastDrill()
	return st
}

// LastDrill is the last drill's result (nil: none yet).
func (c *Controller) LastDrill() *wire.DrillResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.LastDrill == nil {
		return nil
	}
	r := *c.state.LastDrill
	return &r
}

// startDrill runs one drill of the upload site's newest backup in the
// background; one runs at a time.
func (c *Controller) startDrill(ctx context.Context) {
	d := &drill.Drill{}
	if !c.drilling.CompareAndSwap(nil, d) {
		return
	}
	cfg := c.Config()
	dc := cfg.RestoreDrill
	serverID := uint32(dc.ServerID)
	if serverID == 0 {
		serverID = uint32(cfg.ServerID) + 1000
	}
	o := drill.Options{Dir: filepath.Clean(dc.Directory), Port: dc.Port, ServerID: serverID, StartCommand: dc.StartCommand,
		Conn: ConnParams(cfg), MaxBinlogBytes: cfg.RestoreMaxBinlogBytes, Keys: c.catalog.Keys(), Log: c.log, Metrics: c.m()}
	site := c.catalog.Site(cfg.UploadSiteName())
	go func() {
		defer c.drilling.Store(nil)
		if site == nil {
			return
		}
		if err := c.catalog.Refresh(ctx, 0); err != nil {
			c.log.Warn("restore drill: list the backups", "error", err)
			return
		}
		res := d.Run(ctx, site, c.catalog.Backups(), o)
		if ctx.Err() != nil {
			return // stopped with the daemon: not a result
		}
		if !res.OK {
			c.log.Error("restore drill failed", "backup", res.StreamID, "error", res.Error)
			c.m().Inc("myhoard.drill.failures", 1, nil)
		}
		c.m().Gauge("myhoard.drill.restore_seconds", res.RestoreSeconds, nil)
		c.mu.Lock()
		c.state.LastDrill = &res
		if res.OK {
			at := res.At
			c.state.LastDrillPassed = &at
		}
		err := c.saveLocked()
		c.mu.Unlock()
		if err != nil {
			c.log.Error("save the restore drill's result", "error", err)
		}
	}()
}
