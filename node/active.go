package node

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// uploadsPerTick bounds one tick's binlog uploads per stream.
const uploadsPerTick = 50

// uploadParallelism is how many binlogs' data are encoded and sent at once
// (manifests stay strictly in order).
const uploadParallelism = 2

// activeTick is one round of active mode, in this order: find new local
// binlogs, schedule and start streams, run full backups, upload binlogs,
// complete and close streams, force a rotation when due, apply retention,
// purge local binlogs. The decisions are backup.Streams'; this does the
// I/O and persists the state after each change.
func (c *Controller) activeTick(ctx context.Context) error {
	c.mu.Lock()
	scanner, cfg := c.scanner, c.cfg
	c.mu.Unlock()

	added, removed, err := scanner.Scan(ctx)
	if err != nil {
		return err
	}
	if len(removed) > 0 {
		c.log.Info("local binlogs purged", "count", len(removed), "last", removed[len(removed)-1].Name)
		c.m().Inc("myhoard.binlog.removed", int64(len(removed)), nil)
	}
	c.binlogGauges(scanner, added)
	now := time.Now().UTC()
	bs := cfg.BackupSettings
	err = c.changeStreams(func(s *backup.Streams) bool {
		had, open := s.Request != nil, len(s.List)
		if len(added) > 0 {
			s.LastRotation = now
		}
		s.ScheduleBackup(now, backup.ScheduleOf(bs))
		if st := s.StartRequested(now, storage.NewStreamID(now), cfg.UploadSiteName(), c.state.Epoch, scanner.NextIndex()); st != nil {
			c.log.Info("new backup stream", "stream", st.ID, "site", st.Site, "reason", st.Reason)
		}
		return len(added) > 0 || had != (s.Request != nil) || open != len(s.List)
	})
	if err != nil {
		return err
	}
	c.runBasebackups(ctx, now)
	if err := c.uploadBinlogs(ctx); err != nil {
		return err
	}
	if err := c.completeAndClose(ctx); err != nil {
		return err
	}
	c.forceRotation(ctx, now, time.Duration(bs.ForcedBinlogRotationInterval*float64(time.Second)))
	if err := c.refreshBackups(ctx, false); err != nil {
		return err
	}
	if err := c.purgeOldBackups(ctx); err != nil {
		return err
	}
	return c.purgeBinlogs(ctx, now)
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

// forceRotation closes the current binlog when no binlog was closed for
// forced_binlog_rotation_interval, which keeps the upload cadence
// predictable even when the server is idle.
func (c *Controller) forceRotation(ctx context.Context, now time.Time, interval time.Duration) {
	c.mu.Lock()
	due, db := c.state.Streams.RotationDue(now, interval), c.db
	c.mu.Unlock()
	if !due {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := mysql.FlushBinaryLogs(rctx, db)
	cancel()
	if err != nil {
		c.log.Warn("forced binlog rotation failed", "error", err)
		return
	}
	c.mu.Lock()
	c.state.Streams.LastRotation = now
	c.mu.Unlock()
}

// runBasebackups takes in the finished full backups and starts those of
// new streams in the background. Storage calls happen outside the
// controller's lock, so the API never waits on storage.
func (c *Controller) runBasebackups(ctx context.Context, now time.Time) {
	for _, res := range c.basebackups.Finished() {
		c.finishBasebackup(ctx, res)
	}
	c.mu.Lock()
	toStart := c.state.Streams.BasebackupsDue(now, c.basebackups.Running)
	c.mu.Unlock()
	for _, s := range toStart {
		c.startBasebackup(ctx, s)
	}
}

// startBasebackup runs a stream's full backup in the background, or adopts
// the one a killed daemon completed.
func (c *Controller) startBasebackup(ctx context.Context, s backup.StreamState) {
	site := c.catalog.Site(s.Site)
	if site == nil {
		c.updateStream(s.ID, func(st *backup.StreamState) { st.LastError = fmt.Sprintf("upload site %q is not open", s.Site) })
		return
	}
	if m := backup.StoredBasebackup(ctx, site, s.ID); m != nil {
		c.log.Info("basebackup found in storage after a restart; resuming the stream", "stream", s.ID)
		c.adoptBasebackup(s.ID, m)
		return
	}
	c.mu.Lock()
	cfg, mx := c.cfg, c.metrics
	opts := backup.BasebackupOptions{
		Flavor: c.flavor, ConfigFile: cfg.MySQL.ConfigFileName, Conn: ConnParams(cfg), DataDir: cfg.MySQL.DataDirectory,
		TempDir: cfg.TemporaryDirectory, CopyThreads: cfg.Xtrabackup.CopyThreads, SplitSize: cfg.BackupSites[s.Site].SplitSize,
		Encode: site.Encode, RegisterRedoLogConsumer: cfg.Xtrabackup.RegisterRedoLogConsumer,
		EstimateMemory: cfg.Xtrabackup.EstimateMemory, ServerUUID: c.state.ServerUUID, NodeID: cfg.Cluster.NodeID,
		Epoch: s.Epoch, Log: c.log, ServerID: uint32(cfg.ServerID),
		Progress: func(pct float64) { mx.Gauge("myhoard.basebackup.estimated_progress", pct, nil) },
		Uploaded: func(n int64, rate float64) {
			mx.Gauge("myhoard.backup_stream.basebackup_bytes_uploaded", float64(n), nil)
			mx.Gauge("myhoard.backup_stream.basebackup_upload_rate", rate, nil)
		},
	}
	db := c.db
	c.mu.Unlock()
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	c.basebackups.Start(ctx, s.ID, func(ctx context.Context) (*storage.BasebackupManifest, error) {
		return backup.TakeBasebackup(ctx, site, s.ID, opts, db)
	}, c.poke)
}

// updateStream changes an owned stream's state and persists it.
func (c *Controller) updateStream(id string, f func(*backup.StreamState)) {
	err := c.changeStreams(func(s *backup.Streams) bool {
		st := s.Find(id)
		if st != nil {
			f(st)
		}
		return st != nil
	})
	if err != nil {
		c.log.Error("save state", "error", err)
	}
}

// finishBasebackup publishes a finished full backup (its basebackup.json,
// behind the writer gate) or schedules another attempt.
func (c *Controller) finishBasebackup(ctx context.Context, res backup.BasebackupResult) {
	mx, id, m := c.m(), res.StreamID, res.Manifest
	err := res.Err
	if err != nil {
		mx.Inc("myhoard.basebackup.errors", 1, nil)
	} else {
		mx.Gauge("myhoard.basebackup.bytes_uncompressed", float64(m.Size), nil)
		mx.Gauge("myhoard.basebackup.bytes_compressed", float64(m.EncodedSize), nil)
		if m.EncodedSize > 0 {
			mx.Gauge("myhoard.basebackup.compression_ratio", float64(m.Size)/float64(m.EncodedSize), nil)
		}
		mx.Timing("myhoard.basebackup.xtrabackup_backup", m.EndedAt.Sub(m.StartedAt), nil)
		var siteName string
		var epoch int64
		c.mu.Lock()
		if st := c.state.Streams.Find(id); st != nil {
			siteName, epoch = st.Site, st.Epoch
		}
		c.mu.Unlock()
		if site := c.catalog.Site(siteName); site == nil {
			err = fmt.Errorf("stream %s: upload site %q is not open", id, siteName)
		} else {
			err = backup.PublishBasebackup(ctx, site, m, c.gate(epoch))
		}
	}
	if err == nil {
		c.adoptBasebackup(id, m)
		return
	}
	if serr := c.changeStreams(func(s *backup.Streams) bool {
		wait := s.BasebackupFailed(id, err, time.Now())
		c.log.Error("basebackup failed; retrying", "stream", id, "retry_in", wait, "error", err)
		return true
	}); serr != nil {
		c.log.Error("save state", "error", serr)
	}
}

// adoptBasebackup moves a stream whose basebackup.json is in storage to
// catchup.
func (c *Controller) adoptBasebackup(id string, m *storage.BasebackupManifest) {
	if err := c.changeStreams(func(s *backup.Streams) bool { _ = s.BasebackupStored(id, m.BinlogName); return true }); err != nil {
		c.log.Error("save state", "error", err)
	}
	c.catalog.Invalidate()
}

// uploadBinlogs uploads, per uploading stream and strictly in order, the
// local binlogs after its cursor. The cursor moves (and is persisted) only
// after the data and manifest are both in storage.
func (c *Controller) uploadBinlogs(ctx context.Context) error {
	c.mu.Lock()
	scanner := c.scanner
	local := scanner.Binlogs()
	streams := append([]backup.StreamState(nil), c.state.Streams.List...)
	flavor, uuid, serverID := c.flavor, c.state.ServerUUID, uint32(c.cfg.ServerID)
	c.mu.Unlock()
	skipped := func(i int64) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return scanner.Skipped(i)
	}
	for _, s := range streams {
		if !s.Uploading() {
			continue
		}
		if err := c.deposed(s); err != nil {
			return err
		}
		site := c.catalog.Site(s.Site)
		if site == nil {
			return fmt.Errorf("stream %s: upload site %q is not open", s.ID, s.Site)
		}
		c.mu.Lock()
		// the other streams' cursors as they are now (an older stream may
		// have uploaded what this one needs in this very tick)
		planned, err := c.state.Streams.NextUploads(s.ID, local, skipped, serverID, uploadsPerTick)
		c.mu.Unlock()
		if err != nil {
			return err
		}
		if len(planned) == 0 {
			continue
		}
		gate := c.gate(s.Epoch)
		batch := make([]backup.BinlogUpload, len(planned))
		for i, p := range planned {
			batch[i] = backup.BinlogUpload{Ref: p.Ref, Binlog: p.Binlog, Flavor: flavor, ServerUUID: uuid, Encode: site.Encode, CopyFrom: p.CopyFrom, Gate: gate}
		}
		if err := c.uploadBatch(ctx, site, s, batch); err != nil {
			return err
		}
	}
	return nil
}

// deposed fails when the cluster view no longer names this node the
// primary of the stream's epoch: it does not even upload data then (the
// writer gate would refuse the manifest anyway; it stays the authority).
func (c *Controller) deposed(s backup.StreamState) error {
	cn := c.clusterNode()
	if cn == nil {
		return nil
	}
	if v := cn.View(); v.Epoch > s.Epoch || (v.Epoch == s.Epoch && v.Primary != c.nodeID()) {
		return fmt.Errorf("stream %s: %w: the cluster's primary is %q at epoch %d, this node uploads for epoch %d",
			s.ID, backup.ErrGateClosed, v.Primary, v.Epoch, s.Epoch)
	}
	return nil
}

// uploadBatch uploads one stream's batch, moving and persisting its
// cursor after each binlog.
func (c *Controller) uploadBatch(ctx context.Context, site *storage.Site, s backup.StreamState, batch []backup.BinlogUpload) error {
	start := time.Now()
	i := 0
	err := backup.UploadBinlogs(ctx, site, batch, c.catalog.Keys(), uploadParallelism, func(m *storage.BinlogManifest, copied bool) error {
		b := batch[i].Binlog
		i++
		if copied {
			c.m().Inc("myhoard.binlog.remote_copy", 1, nil)
		} else {
			c.m().Inc("myhoard.binlog.upload", 1, nil)
		}
		c.m().Timing("myhoard.binlog.upload_time", time.Since(start), nil)
		return c.changeStreams(func(st *backup.Streams) bool {
			st.Uploaded(s.ID, b.Index, m.RemoteIndex, time.Now().UTC())
			return true
		})
	})
	if err != nil {
		c.m().Inc("myhoard.binlog.upload_errors", 1, nil)
		c.m().Inc("myhoard.backup_stream.errors", 1, nil)
		return fmt.Errorf("stream %s: %w", s.ID, err)
	}
	var bytes int64
	for _, u := range batch {
		bytes += u.Binlog.Size
	}
	if d := time.Since(start).Seconds(); d > 0 {
		c.m().Gauge("myhoard.backup_stream.binlog_upload_rate", float64(bytes)/d, nil)
	}
	return nil
}

// completeAndClose marks caught-up streams completed and closes the older
// streams once a newer one is complete; each marker passes the writer
// gate and is written outside the lock before the state changes.
func (c *Controller) completeAndClose(ctx context.Context) error {
	c.mu.Lock()
	complete := c.state.Streams.Completable(c.scanner.NextIndex())
	nodeID := c.cfg.Cluster.NodeID
	c.mu.Unlock()
	for _, s := range complete {
		now := time.Now().UTC()
		if err := c.writeMarker(ctx, s, storage.MarkerCompleted, storage.MarkerRecord{At: now, NodeID: nodeID}); err != nil {
			return err
		}
		if err := c.changeStreams(func(st *backup.Streams) bool { st.Completed(s.ID, now); return true }); err != nil {
			return err
		}
		c.log.Info("backup stream completed", "stream", s.ID)
	}
	c.mu.Lock()
	closing := c.state.Streams.Closable()
	c.mu.Unlock()
	for _, s := range closing {
		if err := c.writeMarker(ctx, s, storage.MarkerClosed, storage.MarkerRecord{At: time.Now().UTC(), NodeID: nodeID}); err != nil {
			return err
		}
		if err := c.changeStreams(func(st *backup.Streams) bool { st.Closed(s.ID); return true }); err != nil {
			return err
		}
		c.log.Info("backup stream closed", "stream", s.ID)
	}
	if len(complete)+len(closing) > 0 {
		c.catalog.Invalidate()
	}
	return nil
}

// writeMarker writes a stream's completed or closed marker behind the
// writer gate.
func (c *Controller) writeMarker(ctx context.Context, s backup.StreamState, mk storage.Marker, rec storage.MarkerRecord) error {
	site := c.catalog.Site(s.Site)
	if site == nil {
		return fmt.Errorf("stream %s: mark %s: upload site %q is not open", s.ID, mk, s.Site)
	}
	return backup.WriteGatedMarker(ctx, site, s.ID, mk, rec, c.gate(s.Epoch))
}

// binlogGauges reports the local binlogs and what each stream still has to
// upload.
func (c *Controller) binlogGauges(scanner *backup.Scanner, added []backup.LocalBinlog) {
	m := c.m()
	var size, newSize int64
	binlogs := scanner.Binlogs()
	for _, b := range binlogs {
		size += b.Size
	}
	for _, b := range added {
		newSize += b.Size
	}
	m.Gauge("myhoard.binlog.count", float64(len(binlogs)), nil)
	m.Gauge("myhoard.binlog.size", float64(size), nil)
	if len(added) > 0 {
		m.Inc("myhoard.binlog.count_new", int64(len(added)), nil)
		m.Inc("myhoard.binlog.size_new", newSize, nil)
	}
	missing := 0.0
	if scanner.Missing() != 0 {
		missing = 1
	}
	m.Gauge("myhoard.binlog.missing", missing, nil)
	c.mu.Lock()
	minCount, maxCount, minBytes, maxBytes, ok := c.state.Streams.Pending(binlogs)
	c.mu.Unlock()
	if ok {
		m.Gauge("myhoard.pending_binlog_count_min", float64(minCount), nil)
		m.Gauge("myhoard.pending_binlog_count_max", float64(maxCount), nil)
		m.Gauge("myhoard.pending_binlog_bytes_min", float64(minBytes), nil)
		m.Gauge("myhoard.pending_binlog_bytes_max", float64(maxBytes), nil)
	}
}
