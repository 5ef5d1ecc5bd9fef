package node

import (
	"context"
	"database/sql"
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

// promote handles PUT /status active|promote on a cluster node: the node
// becomes the primary through a Raft compare-and-set on the epoch; from
// idle it is active at once (a new cluster's first primary), from observe
// it goes through promote mode (catch up, promotion record, then active).
func (c *Controller) promote(ctx context.Context, force bool) (Mode, error) {
	from := Mode(c.Mode())
	switch from {
	case ModeActive, ModePromote:
		return from, nil
	case ModeRestore:
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
	cn := c.clusterNode()
	if cn == nil {
		// A lone node (the original's flow): observe -> promote -> active;
		// the epoch is taken from storage in promote mode.
		if from != ModeObserve {
			return from, badRequest("switch from %s to promote mode is not allowed: promote an observing node (after a restore)", from)
		}
		return c.setModeUnchecked(ModePromote)
	}
	if !force && from == ModeObserve {
		// The spec's precondition: a replica about to be promoted is
		// read-only (nothing but replication writes to it).
		if view := cn.View(); view.Primary != "" && view.Primary != c.nodeID() {
			return from, badRequest("node %s is the primary at epoch %d; promote this node with force to take over", view.Primary, view.Epoch)
		}
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
	epoch, err := c.claimPrimary(ctx, force)
	if err != nil {
		return from, err
	}
	to := ModePromote
	if from == ModeIdle {
		to = ModeActive
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.state
	c.state.Epoch, c.state.Mode = epoch, to
	if err := c.saveLocked(); err != nil {
		c.state = prev
		return from, err
	}
	c.mode.Store(to)
	c.log.Info("mode changed", "from", from, "to", to, "epoch", epoch)
	c.poke()
	return to, nil
}

// promoteTick takes over as the primary (reference 2.4, with Raft as the
// fence): it applies the binlogs the old primary uploaded that this server
// lacks, writes the promotion record of its epoch to storage and to Raft,
// and continues the old primary's open stream in active mode.
func (c *Controller) promoteTick(ctx context.Context) error {
	c.mu.Lock()
	db, scanner, cfg, flavor, epoch := c.db, c.scanner, c.cfg, c.flavor, c.state.Epoch
	c.mu.Unlock()
	if db == nil || scanner == nil {
		return fmt.Errorf("promote: the database is not reachable yet")
	}
	lone := c.clusterNode() == nil
	if cn := c.clusterNode(); cn != nil {
		if v := cn.View(); v.Primary != c.nodeID() || v.Epoch != epoch {
			return fmt.Errorf("promote: the cluster says the primary is %q at epoch %d, not this node at %d", v.Primary, v.Epoch, epoch)
		}
	}
	// What the server received from the old primary but has not applied
	// yet is applied before anything else (the relay logs are dropped
	// when replication is reset below).
	if err := drainRelayLog(ctx, db, flavor); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if err := c.refreshBackups(ctx, true); err != nil {
		return err
	}
	// The stream to continue: the newest open one on a writable site.
	var open *backup.BackupInfo
	for _, b := range c.Backups() {
		if b.ClosedAt == nil && b.CompletedAt != nil && b.Basebackup != nil && !b.RecoverySite && (open == nil || b.StreamID > open.StreamID) {
			open = &b
		}
	}
	if open == nil {
		c.log.Info("promote: no open backup stream to continue; active mode starts a new one")
		return c.finishPromotion(nil)
	}
	site := c.siteByName(open.Site)
	list, err := restore.ListStreamBinlogs(ctx, site, open.StreamID)
	if err != nil {
		return fmt.Errorf("promote: list the binlogs of %s: %w", open.StreamID, err)
	}
	stored := open.Basebackup.GTIDExecuted
	for _, b := range list {
		stored = stored.Union(b.End())
	}
	if lone {
		// Without Raft the new epoch is one above every epoch the stream
		// has seen (its binlogs and promotion records).
		top, err := streamEpoch(ctx, site, open.StreamID)
		if err != nil {
			return err
		}
		epoch = max(epoch, top+1, open.Basebackup.Epoch+1)
		c.mu.Lock()
		c.state.Epoch = epoch
		err = c.saveLocked()
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	executed, err := restore.ServerExecuted(ctx, db, flavor)
	if err != nil {
		return err
	}
	if missing := stored.Subtract(executed); !missing.IsEmpty() {
		c.log.Info("promote: applying the binlogs the old primary uploaded that this server lacks", "missing", missing.String())
		// The chain from the newest backup this server is already past:
		// a server far behind needs older streams' binlogs too.
		var from *backup.BackupInfo
		for _, b := range c.Backups() {
			if b.Site == open.Site && b.CompletedAt != nil && b.Basebackup != nil && b.Basebackup.GTIDExecuted.IsSubsetOf(executed) &&
				b.StreamID <= open.StreamID && (from == nil || b.StreamID > from.StreamID) {
				from = &b
			}
		}
		if from == nil {
			return fmt.Errorf("promote: this server (%s) is older than every backup on site %s; it cannot catch up from storage", executed, open.Site)
		}
		chain, err := restore.ListChain(ctx, site, from.Basebackup)
		if err != nil {
			return fmt.Errorf("promote: list the binlogs since backup %s: %w", from.StreamID, err)
		}
		err = restore.ApplyFromStorage(ctx, chain, restore.FromStorageOptions{Site: site, Keys: c.keys, DB: db,
			RelayPrefix: cfg.MySQL.RelayLogPrefix, RelayIndex: cfg.MySQL.RelayLogIndexFile, MaxBytes: cfg.RestoreMaxBinlogBytes,
			Parallel: restore.DefaultParallel(), Flavor: flavor, Log: c.log})
		if err != nil {
			return fmt.Errorf("promote: catch up: %w", err)
		}
		if executed, err = restore.ServerExecuted(ctx, db, flavor); err != nil {
			return err
		}
	} else {
		// stop replicating from the old primary
		for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL"} {
			if flavor == mysql.FlavorMySQL {
				q = map[string]string{"STOP SLAVE": "STOP REPLICA", "RESET SLAVE ALL": "RESET REPLICA ALL"}[q]
			}
			if _, err := db.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("promote: %s: %w", q, err)
			}
		}
	}
	start := int64(len(list) + 1)
	rec := storage.PromotionRecord{Version: storage.ManifestVersion, StreamID: open.StreamID, Epoch: epoch, NodeID: c.nodeID(),
		ServerID: uint32(cfg.ServerID), StartIndex: start, GTIDs: executed, PromotedAt: time.Now().UTC()}
	body, err := storage.MarshalManifest(&rec)
	if err != nil {
		return err
	}
	key := storage.PromotionKey(open.StreamID, epoch)
	if err := site.PutBytes(ctx, key, body, storage.PutOptions{IfNotExist: true, ContentType: "application/json"}); err != nil && !isExists(err) {
		return fmt.Errorf("promote: write %s: %w", key, err)
	}
	if cn := c.clusterNode(); cn != nil {
		if _, err := cn.Apply(ctx, cluster.CmdPromotion, cluster.Promotion{Epoch: epoch, NodeID: c.nodeID(), StreamID: open.StreamID,
			StartIndex: start, GTIDs: executed.String(), At: rec.PromotedAt}); err != nil {
			return fmt.Errorf("promote: record the promotion: %w", err)
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
		if !b.GTIDsAdded.IsSubsetOf(stored) {
			first = b.Index
			break
		}
	}
	// The stream keeps its place in the backup schedule: no new full
	// backup just because the primary changed.
	bs := cfg.BackupSettings
	started := open.Basebackup.StartedAt
	st := backup.StreamState{ID: open.StreamID, Site: open.Site, Phase: backup.PhaseBinlog, CreatedAt: started, Reason: "scheduled", Epoch: epoch,
		NormalizedTime:   normalizedBackupTime(started, bs.BackupHour, bs.BackupMinute, bs.BackupIntervalMinutes, time.Time{}),
		InitialNextIndex: first, FirstLocalIndex: first, LastUploadedLocal: first - 1, NextRemoteIndex: start, CompletedAt: open.CompletedAt}
	c.log.Info("promote: continuing the backup stream", "stream", open.StreamID, "epoch", epoch, "start_index", start,
		"first_local", filepath.Base(scanner.Path(first)))
	return c.finishPromotion(&st)
}

// drainRelayLog stops receiving from the old primary and waits until the
// SQL thread applied everything already received (reference 2.3: the
// original required this state before a promotion; here it is reached).
func drainRelayLog(ctx context.Context, db *sql.DB, flavor mysql.Flavor) error {
	stopIO, status, posCol, wait := "STOP SLAVE IO_THREAD", "SHOW SLAVE STATUS", "Gtid_IO_Pos", "SELECT MASTER_GTID_WAIT(?, ?)"
	if flavor == mysql.FlavorMySQL {
		stopIO, status, posCol, wait = "STOP REPLICA IO_THREAD", "SHOW REPLICA STATUS", "Retrieved_Gtid_Set", "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)"
	}
	rows, err := db.QueryContext(ctx, status)
	if err != nil {
		return fmt.Errorf("%s: %w", status, err)
	}
	cols, _ := rows.Columns()
	var received, sqlRunning, sqlError string
	if rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return err
		}
		for i, c := range cols {
			switch c {
			case posCol:
				received = vals[i].String
			case "Slave_SQL_Running", "Replica_SQL_Running":
				sqlRunning = vals[i].String
			case "Last_SQL_Error":
				sqlError = vals[i].String
			}
		}
	}
	rows.Close()
	if len(cols) == 0 || received == "" {
		return nil // not a replica
	}
	if _, err := db.ExecContext(ctx, stopIO); err != nil {
		return fmt.Errorf("%s: %w", stopIO, err)
	}
	if sqlRunning != "Yes" {
		if sqlError != "" {
			return fmt.Errorf("the SQL thread stopped with %q; fix replication before promoting", sqlError)
		}
		return nil
	}
	var res sql.NullInt64
	if err := db.QueryRowContext(ctx, wait, received, 300).Scan(&res); err != nil {
		return fmt.Errorf("wait for the relay log (%s) to be applied: %w", received, err)
	}
	if !res.Valid || res.Int64 != 0 {
		return fmt.Errorf("the relay log (up to %s) was not applied within 300 s", received)
	}
	return nil
}

// streamEpoch is the highest epoch of a stream's binlog keys and
// promotion records.
func streamEpoch(ctx context.Context, site *storage.Site, streamID string) (int64, error) {
	var top int64
	err := site.List(ctx, storage.StreamPrefix(streamID), func(o storage.ObjectInfo) error {
		if ref, _, err := storage.ParseBinlogKey(o.Key); err == nil && ref.Epoch > top {
			top = ref.Epoch
		}
		if _, e, err := storage.ParsePromotionKey(o.Key); err == nil && e > top {
			top = e
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("promote: list %s: %w", streamID, err)
	}
	return top, nil
}

func isExists(err error) bool { return errors.Is(err, storage.ErrExists) }

// finishPromotion switches to active with the adopted stream (nil: none).
func (c *Controller) finishPromotion(st *backup.StreamState) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.state
	if st != nil {
		c.state.Streams = []backup.StreamState{*st}
	}
	c.state.Mode = ModeActive
	c.state.LastRotation = time.Now().UTC()
	if err := c.saveLocked(); err != nil {
		c.state = prev
		return err
	}
	c.mode.Store(ModeActive)
	c.log.Info("mode changed", "from", ModePromote, "to", ModeActive, "epoch", c.state.Epoch)
	return nil
}
