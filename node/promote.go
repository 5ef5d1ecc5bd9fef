package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/restore"
	"github.com/myhoard/myhoard/storage"
)

// promote handles PUT /status active|promote. A lone node goes through
// promote mode (the epoch comes from storage). On a cluster node the
// request is a Raft compare-and-set on the epoch; once it commits, the
// promotion belongs to the cluster: this node takes up the role
// (takeUpPrimary) and a daemon that restarts before or during it resumes
// it (followCluster). force is needed only to take over from a primary
// that is still alive, or to promote a server that is not read-only.
func (c *Controller) promote(ctx context.Context, force bool) (Mode, error) {
	from := Mode(c.Mode())
	cn := c.clusterNode()
	switch {
	case from == ModeRestore:
		return from, c.promoteAfterRestore(force)
	case cn == nil:
		// A lone node (the original's flow): observe -> promote -> active;
		// the epoch is taken from storage in promote mode.
		if from == ModeActive || from == ModePromote {
			return from, nil
		}
		if from != ModeObserve {
			return from, badRequest("switch from %s to promote mode is not allowed: promote an observing node (after a restore)", from)
		}
		if err := c.changeMode(ModePromote, nil); err != nil {
			return from, err
		}
		return ModePromote, nil
	}
	// Decide on a current view (a restarted node replays an old one), in
	// which this node is a member.
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := cn.CatchUp(cctx)
	if err == nil {
		err = cn.EnsureMember(cctx)
	}
	cancel()
	if err != nil {
		return from, fmt.Errorf("promote: read the cluster view: %w", err)
	}
	view := cn.View()
	if (from == ModeActive || from == ModePromote) && view.Primary == c.nodeID() {
		return from, nil
	}
	if err := c.checkPromotable(ctx, cn, view, from, force); err != nil {
		return from, err
	}
	epoch, err := c.claimPrimary(ctx, view)
	if err != nil {
		return from, err
	}
	c.killAt.Hit("promote-after-cas", c.log)
	return c.takeUpPrimary(epoch)
}

// promoteAfterRestore handles a promotion asked for during a restore: only
// forced, and only while binlogs are applied; the restore then completes
// with what it has and the promotion catches up the rest from storage.
func (c *Controller) promoteAfterRestore(force bool) error {
	if !force {
		return badRequest("the restore is still running: wait for observe mode, or force the promotion while binlogs are being applied")
	}
	c.mu.Lock()
	job := c.restoreJob
	c.mu.Unlock()
	if job == nil {
		return badRequest("no restore is running")
	}
	if err := job.Coord.ForceComplete(); err != nil {
		if errors.Is(err, restore.ErrCannotForce) {
			return badRequest("can only force promotion while waiting for binlogs to be applied (%v)", err)
		}
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.PromoteAfterRestore = true
	return c.saveLocked()
}

// checkPromotable refuses, without force, a promotion while the view's
// primary is alive, and of a replica that is not read-only (the spec's
// precondition: nothing but replication writes to it).
func (c *Controller) checkPromotable(ctx context.Context, cn *cluster.Node, view cluster.View, from Mode, force bool) error {
	if force {
		return nil
	}
	if view.Primary != "" && view.Primary != c.nodeID() {
		if alive, why := cn.PrimaryAlive(view); alive {
			return badRequest("node %s is the primary at epoch %d and %s; promote this node with force to take over", view.Primary, view.Epoch, why)
		}
	}
	if from != ModeObserve {
		return nil
	}
	c.mu.Lock()
	db := c.db
	c.mu.Unlock()
	if db == nil {
		return badRequest("the database is not reachable: a promotion needs it")
	}
	ro, err := mysql.ReadOnly(ctx, db)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if !ro {
		return badRequest("the server is not read_only: a replica about to be promoted must be read-only (or promote with force)")
	}
	return nil
}

// claimPrimary makes this node the primary through Raft
// (cluster.Node.ClaimPrimary) and returns the new epoch.
func (c *Controller) claimPrimary(ctx context.Context, view cluster.View) (int64, error) {
	epoch, err := c.clusterNode().ClaimPrimary(ctx, view)
	if errors.Is(err, cluster.ErrStaleEpoch) {
		return 0, badRequest("another node was promoted meanwhile (%v); see GET /cluster", err)
	}
	if err != nil {
		return 0, fmt.Errorf("promote: %w", err)
	}
	c.log.Info("this node is the primary", "epoch", epoch)
	return epoch, nil
}

// takeUpPrimary persists what the cluster decided: this node is the
// primary at epoch. From idle it is active at once (a new cluster's first
// primary); from observe, or active or promoting at an older epoch, it
// goes through promote mode (fence, catch up, continue the stream). A
// running restore finishes first (it then observes, and the role is taken
// up from there).
func (c *Controller) takeUpPrimary(epoch int64) (Mode, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	from := c.state.Mode
	var to Mode
	switch {
	case from == ModeRestore:
		return from, nil
	case from == ModeIdle:
		to = ModeActive
	case from == ModeObserve || c.state.Epoch < epoch:
		to = ModePromote
	default:
		return from, nil // active or promoting at this epoch already
	}
	if err := c.changeModeLocked(to, func(s *controllerState) { s.Epoch = epoch }); err != nil {
		return from, err
	}
	return to, nil
}

// followCluster takes up the primary role when the cluster view names this
// node primary at an epoch it has not taken up yet: a promotion whose
// request was cut off after the compare-and-set, or whose daemon was
// killed before saving the mode. The leader confirms the view first (a
// restarted node replays an old view before it catches up).
func (c *Controller) followCluster(ctx context.Context) error {
	cn := c.clusterNode()
	if cn == nil {
		return nil
	}
	view := cn.View()
	if view.Primary != c.nodeID() || view.Epoch == 0 {
		return nil
	}
	c.mu.Lock()
	mode, epoch := c.state.Mode, c.state.Epoch
	c.mu.Unlock()
	if mode == ModeRestore || ((mode == ModeActive || mode == ModePromote) && epoch >= view.Epoch) {
		return nil
	}
	vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := cn.VerifyPrimary(vctx, c.nodeID(), view.Epoch)
	cancel()
	if err != nil {
		c.log.Debug("the view names this node the primary, not confirmed yet", "epoch", view.Epoch, "error", err)
		return nil
	}
	c.log.Info("the cluster names this node the primary: taking up the role", "epoch", view.Epoch, "mode", mode)
	_, err = c.takeUpPrimary(view.Epoch)
	return err
}

// promoteTick takes over as the primary, with Raft as the fence: it
// writes the promotion record of its epoch to storage and Raft first (from
// then on every reader drops what an older epoch writes at or after the
// start index), then the server takes over (backup.Takeover: drain the
// relay log, apply exactly the binlogs below the start index that it
// lacks) and active mode continues the old primary's open stream. Each
// step can be resumed after a crash.
func (c *Controller) promoteTick(ctx context.Context) error {
	c.mu.Lock()
	db, scanner, cfg, flavor, epoch := c.db, c.scanner, c.cfg, c.flavor, c.state.Epoch
	c.mu.Unlock()
	if db == nil || scanner == nil {
		return fmt.Errorf("promote: the database is not reachable yet")
	}
	if cn := c.clusterNode(); cn != nil {
		if v := cn.View(); v.Primary != c.nodeID() || v.Epoch != epoch {
			return fmt.Errorf("promote: the cluster says the primary is %q at epoch %d, not this node at %d", v.Primary, v.Epoch, epoch)
		}
	}
	f, err := c.fenceStreams(ctx)
	if err != nil {
		return err
	}
	c.killAt.Hit("promote-after-record", c.log)
	st, err := backup.Takeover{DB: db, Flavor: flavor, Scanner: scanner, Schedule: backup.ScheduleOf(cfg.BackupSettings), Log: c.log,
		Failpoint: func(name string) { c.killAt.Hit(name, c.log) },
		CatchUp: func(ctx context.Context, f *backup.Fence, executed mysql.GTIDSet) error {
			return restore.CatchUp(ctx, c.Backups(), f.Record, executed, restore.FromStorageOptions{Site: f.Site, Keys: c.catalog.Keys(), DB: db,
				RelayPrefix: cfg.MySQL.RelayLogPrefix, RelayIndex: cfg.MySQL.RelayLogIndexFile, MaxBytes: cfg.RestoreMaxBinlogBytes,
				Parallel: restore.DefaultParallel(), Flavor: flavor, Log: c.log, Batch: func(int, int) { c.killAt.Hit("promote-catchup", c.log) }})
		}}.Run(ctx, f)
	if err != nil {
		return err
	}
	if st == nil {
		c.log.Info("promote: no open backup stream to continue; active mode starts a new one")
	}
	return c.finishPromotion(st)
}

// fenceStreams fences the open streams for this node's epoch
// (backup.FenceStreams) and records the promotion in Raft; nil when there
// is no open stream to continue.
func (c *Controller) fenceStreams(ctx context.Context) (*backup.Fence, error) {
	if err := c.refreshBackups(ctx, true); err != nil {
		return nil, err
	}
	backups := c.Backups()
	open := backup.NewestOpen(backups)
	if open == nil {
		return nil, nil
	}
	epoch, err := c.promotionEpoch(ctx, *open)
	if err != nil {
		return nil, err
	}
	f, err := backup.FenceStreams(ctx, *open, backups, c.catalog.Site, storage.PromotionRecord{Epoch: epoch, NodeID: c.nodeID(),
		ServerID: uint32(c.Config().ServerID), PromotedAt: time.Now().UTC()})
	if err != nil {
		return nil, fmt.Errorf("promote: %w", err)
	}
	c.log.Info("promote: the open streams are fenced", "stream", open.StreamID, "epoch", epoch, "start_index", f.Record.StartIndex)
	if cn := c.clusterNode(); cn != nil {
		if err := cn.RecordPromotion(ctx, cluster.Promotion{Epoch: epoch, NodeID: c.nodeID(), StreamID: open.StreamID,
			StartIndex: f.Record.StartIndex, GTIDs: f.Record.GTIDs.String(), At: f.Record.PromotedAt}); err != nil {
			return nil, fmt.Errorf("promote: record the promotion: %w", err)
		}
	}
	return f, nil
}

// promotionEpoch is the epoch this promotion records: the cluster's (as
// taken up), or for a lone node the one backup.PromotionEpoch finds,
// persisted.
func (c *Controller) promotionEpoch(ctx context.Context, open backup.BackupInfo) (int64, error) {
	c.mu.Lock()
	epoch := c.state.Epoch
	c.mu.Unlock()
	if c.clusterNode() != nil {
		return epoch, nil
	}
	epoch, err := backup.PromotionEpoch(ctx, c.catalog.Site(open.Site), open, epoch, c.nodeID())
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state.Epoch = epoch
	return epoch, c.saveLocked()
}

// finishPromotion switches to active with the adopted stream (nil: none).
func (c *Controller) finishPromotion(st *backup.StreamState) error {
	return c.changeMode(ModeActive, func(s *controllerState) {
		if st != nil {
			s.Streams.List = []backup.StreamState{*st}
		}
		s.Streams.LastRotation = time.Now().UTC()
	})
}
