package node

import (
	"context"
	"fmt"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/metrics"
)

// activeTick is one round of active mode: the archiver's round (scan,
// streams, full backups, uploads, markers, rotation; backup.Archiver),
// then the backup list, retention and the local binlog purge.
func (c *Controller) activeTick(ctx context.Context) error {
	c.mu.Lock()
	t := backup.Tick{DB: c.db, Scanner: c.scanner, Config: c.cfg, Conn: ConnParams(c.cfg), Flavor: c.flavor,
		ServerUUID: c.state.ServerUUID, Epoch: c.state.Epoch}
	c.mu.Unlock()
	if err := c.archiver.Run(ctx, t); err != nil {
		return err
	}
	if err := c.refreshBackups(ctx, false); err != nil {
		return err
	}
	if err := c.purgeOldBackups(ctx); err != nil {
		return err
	}
	return c.purgeBinlogs(ctx, time.Now().UTC())
}

// changeStreams changes the streams' state under the lock and persists
// it when change says it changed something.
func (c *Controller) changeStreams(change func(*backup.Streams) bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !change(&c.state.Streams) {
		return nil
	}
	return c.saveLocked()
}

// archiverOwner is the controller as the archiver's owner.
type archiverOwner struct{ c *Controller }

func (o archiverOwner) ChangeStreams(f func(*backup.Streams) bool) error { return o.c.changeStreams(f) }
func (o archiverOwner) Gate(epoch int64) backup.Gate                     { return o.c.gate(epoch) }
func (o archiverOwner) Metrics() *metrics.Metrics                        { return o.c.m() }
func (o archiverOwner) Wake()                                            { o.c.poke() }

// Deposed fails when the cluster view no longer names this node the
// primary of the stream's epoch.
func (o archiverOwner) Deposed(s backup.StreamState) error {
	cn := o.c.clusterNode()
	if cn == nil {
		return nil
	}
	if v := cn.View(); v.Epoch > s.Epoch || (v.Epoch == s.Epoch && v.Primary != o.c.nodeID()) {
		return fmt.Errorf("stream %s: %w: the cluster's primary is %q at epoch %d, this node uploads for epoch %d",
			s.ID, backup.ErrGateClosed, v.Primary, v.Epoch, s.Epoch)
	}
	return nil
}
