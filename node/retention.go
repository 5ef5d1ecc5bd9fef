package node

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// backupToPurge picks the oldest completed backup that the retention rules
// allow to delete (reference 5.7, without incremental chains): never an
// open stream of ours, never below backup_count_min unbroken backups,
// never one that is not closed or that is preserved; deleted when older
// than backup_age_days_max after its close, or when there are more than
// backup_count_max unbroken backups. Recovery-only sites are never touched.
func backupToPurge(backups []backup.BackupInfo, own map[string]bool, min, max, ageDays int, now time.Time) *backup.BackupInfo {
	var done []backup.BackupInfo
	for _, b := range backups {
		if !b.RecoverySite && b.CompletedAt != nil {
			done = append(done, b)
		}
	}
	if len(done) == 0 {
		return nil
	}
	sort.Slice(done, func(i, j int) bool { return done[i].CompletedAt.Before(*done[j].CompletedAt) })
	nonBroken := 0
	for _, b := range done {
		if b.BrokenAt == nil {
			nonBroken++
		}
	}
	cand := done[0]
	if own[cand.StreamID] || cand.ClosedAt == nil {
		return nil
	}
	if nonBroken <= max && max < len(done) {
		return nil // broken backups do not force purges
	}
	left := nonBroken
	if cand.BrokenAt == nil {
		left--
	}
	if left < min {
		return nil
	}
	if cand.PreserveUntil != nil && cand.PreserveUntil.After(now) {
		return nil
	}
	if now.After(cand.ClosedAt.Add(time.Duration(ageDays)*24*time.Hour)) || nonBroken > max {
		return &cand
	}
	return nil
}

func (c *Controller) purgeOldBackups(ctx context.Context) error {
	for i := 0; i < 10; i++ {
		c.mu.Lock()
		bs := c.cfg.BackupSettings
		own := map[string]bool{}
		for _, s := range c.state.Streams {
			own[s.ID] = true
		}
		victim := backupToPurge(c.backups, own, bs.BackupCountMin, bs.BackupCountMax, bs.BackupAgeDaysMax, time.Now())
		site := (*storage.Site)(nil)
		if victim != nil {
			site = c.sites[victim.Site]
		}
		c.mu.Unlock()
		if victim == nil || site == nil {
			return nil
		}
		c.log.Info("deleting old backup", "stream", victim.StreamID, "site", victim.Site, "closed_at", victim.ClosedAt)
		// basebackup.json first: the backup leaves listings at once.
		if err := site.Delete(ctx, storage.BasebackupManifestKey(victim.StreamID)); err != nil {
			return fmt.Errorf("delete backup %s: %w", victim.StreamID, err)
		}
		if _, err := site.DeletePrefix(ctx, storage.StreamPrefix(victim.StreamID)); err != nil {
			return fmt.Errorf("delete backup %s: %w", victim.StreamID, err)
		}
		c.mu.Lock()
		var keep []backup.BackupInfo
		for _, b := range c.backups {
			if b.StreamID != victim.StreamID {
				keep = append(keep, b)
			}
		}
		c.backups = keep
		c.mu.Unlock()
	}
	return nil
}

// binlogsToPurge walks the local binlogs oldest first and returns the
// longest prefix that is safe to purge (reference 4.5): old enough,
// uploaded by every open stream (the last uploaded file is kept), and
// executed by every server of the replication state; a file without GTIDs
// is purged only together with a later replicated file. Capped per cycle.
func binlogsToPurge(binlogs []backup.LocalBinlog, streams []backup.StreamState, rs map[string]mysql.ReplicationState,
	flavor mysql.Flavor, minAge time.Duration, maxFiles, maxBytes int64, now time.Time) ([]backup.LocalBinlog, error) {
	if len(streams) == 0 {
		return nil, nil
	}
	return purgeCandidates(binlogs, func(b backup.LocalBinlog) bool {
		for _, s := range streams {
			switch {
			case b.Index < s.InitialNextIndex && (s.FirstLocalIndex == 0 || b.Index < s.FirstLocalIndex):
			case (s.Phase == backup.PhaseCatchup || s.Phase == backup.PhaseBinlog) && b.Index < s.LastUploadedLocal:
			default:
				return false
			}
		}
		return true
	}, rs, flavor, minAge, maxFiles, maxBytes, now)
}

// purgeCandidates is binlogsToPurge with the backup safety rule given as
// a function (active: the streams uploaded it; observe: storage holds its
// transactions).
func purgeCandidates(binlogs []backup.LocalBinlog, backedUp func(backup.LocalBinlog) bool, rs map[string]mysql.ReplicationState,
	flavor mysql.Flavor, minAge time.Duration, maxFiles, maxBytes int64, now time.Time) ([]backup.LocalBinlog, error) {
	if len(binlogs) == 0 {
		return nil, nil
	}
	var executed []mysql.GTIDSet
	for name, st := range rs {
		if len(st) == 0 {
			return nil, nil // an unknown position blocks purging
		}
		set, err := mysql.GTIDSetFromReplicationState(flavor, st)
		if err != nil {
			return nil, fmt.Errorf("replication state of %s: %w", name, err)
		}
		executed = append(executed, set)
	}
	var out []backup.LocalBinlog
	pending := 0 // files without GTIDs waiting for a later replicated one
	for _, b := range binlogs {
		if now.Sub(b.ProcessedAt) < minAge {
			break
		}
		if !backedUp(b) {
			break
		}
		if len(executed) > 0 {
			if b.GTIDsAdded.IsEmpty() {
				pending++
				out = append(out, b)
				continue
			}
			replicated := true
			for _, e := range executed {
				replicated = replicated && b.GTIDsAdded.IsSubsetOf(e)
			}
			if !replicated {
				break
			}
			pending = 0
		}
		out = append(out, b)
	}
	out = out[:len(out)-pending]
	var bytes int64
	for i, b := range out {
		bytes += b.Size
		if (maxFiles > 0 && int64(i+1) > maxFiles) || (maxBytes > 0 && bytes > maxBytes && i > 0) {
			return out[:i], nil
		}
	}
	return out, nil
}

func (c *Controller) purgeBinlogs(ctx context.Context, now time.Time) error {
	return c.purgeBinlogsWith(ctx, now, nil)
}

// purgeBinlogsWith purges local binlogs by the active rules (backedUp nil)
// or by the given backup safety rule.
func (c *Controller) purgeBinlogsWith(ctx context.Context, now time.Time, backedUp func(backup.LocalBinlog) bool) error {
	clusterRS := c.clusterReplicationState(c.Flavor())
	c.mu.Lock()
	ps := c.cfg.BinlogPurgeSettings
	if !ps.Enabled || c.scanner == nil || c.db == nil || now.Sub(c.state.BinlogsPurgedAt) < time.Duration(ps.PurgeInterval*float64(time.Second)) {
		c.mu.Unlock()
		return nil
	}
	var maxFiles, maxBytes int64
	if ps.MaxFilesPerCycle != nil {
		maxFiles = *ps.MaxFilesPerCycle
	}
	if ps.MaxBytesPerCycle != nil {
		maxBytes = *ps.MaxBytesPerCycle
	}
	minAge := time.Duration(ps.MinBinlogAgeBeforePurge * float64(time.Second))
	rs := c.state.ReplicationState
	if clusterRS != nil {
		rs = clusterRS // the cluster view replaces PUT /replication_state
	}
	var victims []backup.LocalBinlog
	var err error
	if backedUp == nil {
		victims, err = binlogsToPurge(c.scanner.Binlogs(), c.state.Streams, rs, c.flavor, minAge, maxFiles, maxBytes, now)
	} else {
		victims, err = purgeCandidates(c.scanner.Binlogs(), backedUp, rs, c.flavor, minAge, maxFiles, maxBytes, now)
	}
	db := c.db
	c.state.BinlogsPurgedAt = now
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
	if _, err := db.ExecContext(pctx, "PURGE BINARY LOGS TO '"+to+"'"); err != nil {
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
