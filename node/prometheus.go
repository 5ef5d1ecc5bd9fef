package node

import (
	"time"

	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/metrics"
)

// PrometheusSnapshot is the node's state for a Prometheus scrape: the
// mode, the newest backup and binlog upload from the listing and the
// streams, what is pending, the restore's phase and the node's part in
// the cluster. It does no I/O.
func (c *Controller) PrometheusSnapshot() metrics.Snapshot {
	c.mu.Lock()
	s := metrics.Snapshot{Mode: string(c.state.Mode)}
	streams := c.state.Streams
	streams.List = append(streams.List[:0:0], streams.List...)
	scanner, job := c.scanner, c.restoreJob
	if d := c.state.LastDrill; d != nil {
		s.LastDrill, s.LastDrillOK = d.At, d.OK
	}
	if p := c.state.LastDrillPassed; p != nil {
		s.LastDrillPassed = *p
	}
	if h := c.cfg.RestoreDrill.IntervalHours; c.cfg.RestoreDrill.Enabled() && h > 0 {
		s.DrillInterval = time.Duration(h * float64(time.Hour))
	}
	if v := c.state.LastVerify; v != nil && v.Error == "" {
		s.LastVerify, s.VerifyFindings = v.At, len(v.Findings)
	}
	c.mu.Unlock()
	s.StorageReads, s.StorageCacheHits = c.stats.Reads.Load(), c.stats.CacheHits.Load()
	s.StorageReadErrors, s.StorageWriteErrors = c.stats.ReadErrors.Load(), c.stats.WriteErrors.Load()
	for _, st := range streams.List {
		if st.LastUploadAt != nil && st.LastUploadAt.After(s.LastBinlogUploaded) {
			s.LastBinlogUploaded = *st.LastUploadAt
		}
	}
	if scanner != nil {
		if _, maxCount, _, maxBytes, ok := streams.Pending(scanner.Binlogs()); ok {
			s.PendingFiles, s.PendingBytes = maxCount, maxBytes
		}
	}
	var newest *time.Time
	for _, b := range c.catalog.Backups() {
		if b.RecoverySite || b.CompletedAt == nil || b.Basebackup == nil {
			continue
		}
		if b.CompletedAt.After(s.LastBackupCompleted) {
			s.LastBackupCompleted = *b.CompletedAt
			s.BasebackupDuration = b.Basebackup.EndedAt.Sub(b.Basebackup.StartedAt)
			newest = b.ClosedAt
		}
	}
	if !s.LastBackupCompleted.IsZero() {
		if newest != nil {
			s.RestorableUntil = *newest
		} else {
			s.RestorableUntil = s.LastBinlogUploaded
		}
	}
	if job != nil {
		s.RestorePhase = string(job.Phase())
	}
	if cn := c.clusterNode(); cn != nil {
		v, self := cn.View(), c.nodeID()
		s.InCluster, s.Leader, s.Primary, s.Epoch = true, cn.Leader() == self, v.Primary == self, v.Epoch
		for _, id := range cn.GossipMembers() {
			if cn.GossipState(id) == cluster.GossipAlive {
				s.MembersAlive++
			}
		}
	}
	return s
}
