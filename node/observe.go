package node

import (
	"context"
	"time"

	"github.com/myhoard/myhoard/backup"
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
	due := backup.PurgeDue(cfg.BinlogPurgeSettings, c.state.BinlogsPurgedAt, time.Now())
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
	backedUp, open, err := c.catalog.StoredByOpenStreams(ctx)
	if err != nil {
		return err
	}
	if !open {
		if !cfg.BinlogPurgeSettings.PurgeWhenObserveNoStreams {
			return nil
		}
		backedUp = func(backup.LocalBinlog) bool { return true }
	}
	return c.purgeBinlogsWith(ctx, time.Now().UTC(), backedUp)
}
