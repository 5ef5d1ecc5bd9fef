package node

import (
	"context"
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
	if err := c.catalog.DeleteOld(ctx, backup.RetentionOf(bs), own, 10); err != nil {
		return err
	}
	c.metrics.Inc("myhoard.backup_retention.checks", 1, nil)
	return nil
}

func (c *Controller) purgeBinlogs(ctx context.Context, now time.Time) error {
	return c.purgeBinlogsWith(ctx, now, nil)
}

// purgeBinlogsWith purges local binlogs (backup.Purge) when the purge
// interval passed, by the active rules (backedUp nil) or by the given
// backup safety rule. The servers that must have executed a binlog first
// are the cluster view's members, or those of PUT /replication_state.
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
	p := backup.Purge{DB: c.db, Scanner: c.scanner, BackedUp: backedUp, Replicas: c.state.ReplicationState, Flavor: c.flavor,
		Limits: backup.PurgeLimitsOf(ps), Log: c.log, Metrics: c.metrics}
	if clusterRS != nil {
		p.Replicas = clusterRS
	}
	if backedUp == nil {
		// a copy: the rule is read outside the lock
		streams := c.state.Streams
		streams.List = append([]backup.StreamState(nil), streams.List...)
		p.BackedUp = streams.BackedUp
	}
	c.state.BinlogsPurgedAt = now
	c.mu.Unlock()
	return p.Run(ctx, now)
}
