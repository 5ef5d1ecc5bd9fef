package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
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
	if from == ModeRestore {
		if !force {
			return from, badRequest("the restore is still running: wait for observe mode, or force the promotion while binlogs are being applied")
		}
		c.mu.Lock()
		job := c.restoreJob
		c.mu.Unlock()
		if job == nil {
			return from, badRequest("no restore is running")
		}
		if err := job.coord.ForceComplete(); err != nil {
			if errors.Is(err, restore.ErrCannotForce) {
				return from, badRequest("can only force promotion while waiting for binlogs to be applied (%v)", err)
			}
			return from, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		c.state.PromoteAfterRestore = true
		return from, c.saveLocked()
	}
	if cn == nil {
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
	self := c.nodeID()
	if (from == ModeActive || from == ModePromote) && view.Primary == self {
		return from, nil
	}
	if view.Primary != "" && view.Primary != self && !force {
		if alive, why := primaryAlive(cn, view); alive {
			return from, badRequest("node %s is the primary at epoch %d and %s; promote this node with force to take over", view.Primary, view.Epoch, why)
		}
	}
	if !force && from == ModeObserve {
		// The spec's precondition: a replica about to be promoted is
		// read-only (nothing but replication writes to it).
		c.mu.Lock()
		db := c.db
		c.mu.Unlock()
		if db == nil {
			return from, badRequest("the database is not reachable: a promotion needs it")
		}
		var ro int
		if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.read_only").Scan(&ro); err != nil {
			return from, fmt.Errorf("promote: read read_only: %w", err)
		}
		if ro == 0 {
			return from, badRequest("the server is not read_only: a replica about to be promoted must be read-only (or promote with force)")
		}
	}
	epoch, err := c.claimPrimary(ctx, view)
	if err != nil {
		return from, err
	}
	c.failpoint("promote-after-cas")
	return c.takeUpPrimary(epoch)
}

// primaryStaleAfter: a primary that gossip has no news of (this node
// started after it died) counts as alive while it published its state
// this recently.
const primaryStaleAfter = 15 * time.Second

// primaryAlive says whether the view's primary is alive as far as this
// node can tell, and why.
func primaryAlive(cn *cluster.Node, view cluster.View) (bool, string) {
	switch st := cn.GossipState(view.Primary); st {
	case cluster.GossipAlive:
		return true, "gossip sees it alive"
	case cluster.GossipFailed, cluster.GossipLeft:
		return false, "gossip marks it " + st
	default:
		seen := view.Members[view.Primary].LastSeen
		if age := time.Since(seen); age < primaryStaleAfter {
			return true, fmt.Sprintf("gossip has no news of it, but it published its state %v ago", age.Round(time.Second))
		}
		return false, "gossip has no news of it"
	}
}

// claimPrimary makes this node the primary through Raft (compare-and-set
// on the epoch of view) and returns the new epoch. When the outcome is
// unknown (the leader changed while the request was in flight) it reads
// the view once it has caught up: the compare-and-set may have committed.
func (c *Controller) claimPrimary(ctx context.Context, view cluster.View) (int64, error) {
	cn := c.clusterNode()
	self := c.nodeID()
	if view.Primary == self {
		// Already named (a repeated request, or one whose daemon died
		// before taking up the role): the leader confirms it.
		if err := cn.VerifyPrimary(ctx, self, view.Epoch); err != nil {
			return 0, fmt.Errorf("promote: this node's view names it the primary at epoch %d, but the leader does not confirm it (%w); try again", view.Epoch, err)
		}
		return view.Epoch, nil
	}
	epoch, err := cn.Promote(ctx, cluster.PromoteRequest{NodeID: self, ExpectedEpoch: view.Epoch, At: time.Now().UTC()})
	if errors.Is(err, cluster.ErrStaleEpoch) {
		return 0, badRequest("another node was promoted meanwhile (%v); see GET /cluster", err)
	}
	if err != nil {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			if v := cn.View(); v.Epoch > view.Epoch {
				if v.Primary == self && cn.VerifyPrimary(ctx, self, v.Epoch) == nil {
					c.log.Info("the promotion committed although its answer was lost", "epoch", v.Epoch, "error", err)
					return v.Epoch, nil
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		return 0, fmt.Errorf("promote %s at epoch %d: %w", self, view.Epoch+1, err)
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
// start index), drains the relay log, applies exactly the binlogs below
// the start index that this server lacks, and continues the old primary's
// open stream in active mode. Each step can be resumed after a crash.
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
	c.failpoint("promote-after-record")
	// What the server received from the old primary but has not applied
	// yet is applied before anything else (the relay logs are dropped
	// when replication is reset below).
	c.failpoint("promote-drain")
	if err := mysql.DrainRelayLog(ctx, db, mysql.DialectOf(flavor)); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if f == nil {
		c.log.Info("promote: no open backup stream to continue; active mode starts a new one")
		return c.finishPromotion(nil)
	}
	epoch = f.rec.Epoch
	executed, err := mysql.DialectOf(flavor).Executed(ctx, db)
	if err != nil {
		return err
	}
	if missing := f.rec.GTIDs.Subtract(executed); !missing.IsEmpty() {
		c.log.Info("promote: applying the binlogs the old primary uploaded that this server lacks", "missing", missing.String(),
			"below_index", f.rec.StartIndex)
		err = restore.CatchUp(ctx, c.Backups(), f.rec, executed, restore.FromStorageOptions{Site: f.site, Keys: c.keys, DB: db,
			RelayPrefix: cfg.MySQL.RelayLogPrefix, RelayIndex: cfg.MySQL.RelayLogIndexFile, MaxBytes: cfg.RestoreMaxBinlogBytes,
			Parallel: restore.DefaultParallel(), Flavor: flavor, Log: c.log, Batch: func(int, int) { c.failpoint("promote-catchup") }})
		if err != nil {
			return fmt.Errorf("promote: catch up: %w", err)
		}
	}
	// stop replicating from the old primary (or from the catch-up's relay
	// logs)
	for _, q := range mysql.DialectOf(flavor).ResetReplica() {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("promote: %s: %w", q, err)
		}
	}
	// Continue the stream from the first local binlog with transactions
	// that storage lacks (everything before it is there already).
	if _, err := db.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		return fmt.Errorf("promote: FLUSH BINARY LOGS: %w", err)
	}
	for {
		added, _, err := scanner.Scan(ctx)
		if err != nil {
			return err
		}
		if len(added) == 0 {
			break
		}
	}
	local := scanner.Binlogs()
	sort.Slice(local, func(i, j int) bool { return local[i].Index < local[j].Index })
	first := scanner.NextIndex()
	for _, b := range local {
		if !b.GTIDsAdded.IsSubsetOf(f.rec.GTIDs) {
			first = b.Index
			break
		}
	}
	bs := cfg.BackupSettings
	st := backup.Continue(f.open, backup.Schedule{Hour: bs.BackupHour, Minute: bs.BackupMinute, IntervalMinutes: bs.BackupIntervalMinutes},
		epoch, f.rec.StartIndex, first)
	c.log.Info("promote: continuing the backup stream", "stream", f.open.StreamID, "epoch", epoch, "start_index", f.rec.StartIndex,
		"first_local", filepath.Base(scanner.Path(first)))
	return c.finishPromotion(&st)
}

// fence is the promotion record of the stream a promoted node continues.
type fence struct {
	site *storage.Site
	open backup.BackupInfo
	rec  storage.PromotionRecord
}

// fenceStreams writes the promotion record of this node's epoch (storage,
// then Raft) to the newest open stream, at the index after its last valid
// binlog, and fences every other open stream of the writable sites at its
// end too. A record already there (a resumed promotion) is kept as it is.
// It returns nil when there is no open stream to continue.
func (c *Controller) fenceStreams(ctx context.Context) (*fence, error) {
	if err := c.refreshBackups(ctx, true); err != nil {
		return nil, err
	}
	var open *backup.BackupInfo
	for _, b := range c.Backups() {
		if b.ClosedAt == nil && b.CompletedAt != nil && b.Basebackup != nil && !b.RecoverySite && (open == nil || b.StreamID > open.StreamID) {
			open = &b
		}
	}
	if open == nil {
		return nil, nil
	}
	f := &fence{site: c.siteByName(open.Site), open: *open}
	epoch, err := c.promotionEpoch(ctx, f)
	if err != nil {
		return nil, err
	}
	list, err := restore.ListStreamBinlogs(ctx, f.site, open.StreamID)
	if err != nil {
		return nil, fmt.Errorf("promote: list the binlogs of %s: %w", open.StreamID, err)
	}
	rec, err := storage.ReadPromotion(ctx, f.site, open.StreamID, epoch)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		stored := open.Basebackup.GTIDExecuted
		for _, b := range list {
			stored = stored.Union(b.End())
		}
		rec = &storage.PromotionRecord{StreamID: open.StreamID, Epoch: epoch, NodeID: c.nodeID(),
			ServerID: uint32(c.Config().ServerID), StartIndex: int64(len(list) + 1), GTIDs: stored, PromotedAt: time.Now().UTC()}
		if rec, err = storage.WritePromotion(ctx, f.site, rec); err != nil {
			return nil, err
		}
		c.log.Info("promote: promotion record written", "stream", open.StreamID, "epoch", epoch, "start_index", rec.StartIndex)
	}
	if int64(len(list)) < rec.StartIndex-1 {
		return nil, fmt.Errorf("promote: stream %s has %d valid binlogs, but epoch %d starts at index %d", open.StreamID, len(list), epoch, rec.StartIndex)
	}
	f.rec = *rec
	if cn := c.clusterNode(); cn != nil {
		if err := cn.RecordPromotion(ctx, cluster.Promotion{Epoch: epoch, NodeID: c.nodeID(), StreamID: open.StreamID,
			StartIndex: rec.StartIndex, GTIDs: rec.GTIDs.String(), At: rec.PromotedAt}); err != nil {
			return nil, fmt.Errorf("promote: record the promotion: %w", err)
		}
	}
	// The other open streams (an older one still catching up, a newer
	// one whose backup never completed) end where they are now.
	for _, b := range c.Backups() {
		if b.StreamID == open.StreamID || b.ClosedAt != nil || b.Basebackup == nil || b.RecoverySite {
			continue
		}
		site := c.siteByName(b.Site)
		next, err := restore.StreamNextIndex(ctx, site, b.StreamID)
		if err != nil {
			return nil, fmt.Errorf("promote: fence stream %s: %w", b.StreamID, err)
		}
		other := *rec
		other.StreamID, other.StartIndex, other.GTIDs = b.StreamID, next, mysql.GTIDSet{}
		if _, err := storage.WritePromotion(ctx, site, &other); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// promotionEpoch is the epoch this promotion records: the cluster's (as
// taken up), or for a lone node one above every epoch the stream has seen
// (its binlogs and promotion records), unless this node already recorded
// its epoch there (a resumed promotion).
func (c *Controller) promotionEpoch(ctx context.Context, f *fence) (int64, error) {
	c.mu.Lock()
	epoch := c.state.Epoch
	c.mu.Unlock()
	if c.clusterNode() != nil {
		return epoch, nil
	}
	if rec, err := storage.ReadPromotion(ctx, f.site, f.open.StreamID, epoch); err != nil || (rec != nil && rec.NodeID == c.nodeID()) {
		return epoch, err
	}
	top, err := storage.HighestEpoch(ctx, f.site, f.open.StreamID)
	if err != nil {
		return 0, err
	}
	epoch = max(epoch, top+1, f.open.Basebackup.Epoch+1)
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
