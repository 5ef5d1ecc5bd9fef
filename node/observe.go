package node

import (
	"context"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// observeTick follows the backups other nodes upload: it refreshes the
// backup list, scans the local binlogs and purges those whose
// transactions are already in storage.
func (c *Controller) observeTick(ctx context.Context) error {
	if err := c.refreshBackups(ctx, false); err != nil {
		return err
	}
	c.mu.Lock()
	scanner := c.scanner
	cfg := c.cfg
	due := cfg.BinlogPurgeSettings.Enabled &&
		time.Since(c.state.BinlogsPurgedAt) >= time.Duration(cfg.BinlogPurgeSettings.PurgeInterval*float64(time.Second))
	c.mu.Unlock()
	if scanner == nil {
		return nil // the database is not up yet
	}
	if _, _, err := scanner.Scan(ctx); err != nil {
		return err
	}
	if !due {
		return nil
	}
	// What the open streams hold in storage.
	var open []backup.BackupInfo
	for _, b := range c.Backups() {
		if b.ClosedAt == nil && b.Basebackup != nil && !b.RecoverySite {
			open = append(open, b)
		}
	}
	var backedUp func(backup.LocalBinlog) bool
	if len(open) == 0 {
		if !cfg.BinlogPurgeSettings.PurgeWhenObserveNoStreams {
			return nil
		}
		backedUp = func(backup.LocalBinlog) bool { return true }
	} else {
		var stored []mysql.GTIDSet
		for _, b := range open {
			c.mu.Lock()
			site := c.sites[b.Site]
			c.mu.Unlock()
			if site == nil {
				return nil
			}
			list, err := storage.ListStreamBinlogs(ctx, site, b.StreamID)
			if err != nil {
				return err
			}
			set := b.Basebackup.GTIDExecuted
			if len(list) > 0 {
				set = set.Union(list[len(list)-1].End())
			}
			stored = append(stored, set)
		}
		backedUp = func(l backup.LocalBinlog) bool {
			if l.GTIDsAdded.IsEmpty() {
				return true
			}
			for _, s := range stored {
				if l.GTIDsAdded.IsSubsetOf(s) {
					return true
				}
			}
			return false
		}
	}
	return c.purgeBinlogsWith(ctx, time.Now().UTC(), backedUp)
}
