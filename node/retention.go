package node

import (
	"context"
	"path/filepath"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/mysql"
)

// purgeOldBackups deletes the backups retention lets go (at most 10 a
// tick), never one of this node's open streams.
func (c *Controller) purgeOldBackups(ctx context.Context) error {
	c.mu.Lock()
	bs := c.cfg.BackupSettings
	own := map[string]bool{}
	for _, s := range c.state.Streams.List {
		own[s.ID] = true
	}
	c.mu.Unlock()
	return c.catalog.DeleteOld(ctx, backup.RetentionOf(bs), own, 10)
}

func (c *Controller) purgeBinlogs(ctx context.Context, now time.Time) error {
	return c.purgeBinlogsWith(ctx, now, nil)
}

// purgeBinlogsWith purges local binlogs by the active rules (backedUp nil)
// or by the given backup safety rule.
func (c *Controller) purgeBinlogsWith(ctx context.Context, now time.Time, backedUp func(backup.LocalBinlog) bool) error {
	var clusterRS map[string]mysql.ReplicationState
	if cn := c.clusterNode(); cn != nil {
		clusterRS = cn.View().ReplicationStates(c.Flavor(), c.nodeID())
	}
	c.mu.Lock()
	ps := c.cfg.BinlogPurgeSettings
	if c.scanner == nil || c.db == nil || !backup.PurgeDue(ps, c.state.BinlogsPurgedAt, now) {
		c.mu.Unlock()
		return nil
	}
	rs := c.state.ReplicationState
	if clusterRS != nil {
		rs = clusterRS // the cluster view replaces PUT /replication_state
	}
	if backedUp == nil {
		backedUp = c.state.Streams.BackedUp
	}
	victims, err := backup.PurgeCandidates(c.scanner.Binlogs(), backedUp, rs, c.flavor, backup.PurgeLimitsOf(ps), now)
	db := c.db
	c.state.BinlogsPurgedAt = now
	c.metrics.Inc("myhoard.binlog.purge_checks", 1, nil)
	var last backup.LocalBinlog
	var to string
	if len(victims) > 0 {
		last = victims[len(victims)-1]
		to = filepath.Base(c.scanner.Path(last.Index + 1)) // TO is exclusive
	}
	c.mu.Unlock()
	if err != nil || len(victims) == 0 {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := mysql.PurgeBinaryLogsTo(pctx, db, to); err != nil {
		c.log.Warn("binlog purge failed; retrying next interval", "to", to, "error", err)
		return nil
	}
	c.log.Info("purged local binlogs", "count", len(victims), "through", last.Name)
	var bytes int64
	for _, v := range victims {
		bytes += v.Size
	}
	c.m().Gauge("myhoard.binlog.purged_per_cycle.files", float64(len(victims)), nil)
	c.m().Gauge("myhoard.binlog.purged_per_cycle.bytes", float64(bytes), nil)
	return nil
}
