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

// maxOpenStreams: the old stream keeps uploading until the new one is
// complete, so there is never a hole in the restorable time.
const maxOpenStreams = 2

// uploadsPerTick bounds one tick's binlog uploads per stream.
const uploadsPerTick = 50

// uploadParallelism is how many binlogs' data are encoded and sent at once
// (manifests stay strictly in order).
const uploadParallelism = 2

func (c *Controller) activeTick(ctx context.Context) error {
	c.mu.Lock()
	scanner, db, cfg := c.scanner, c.db, c.cfg
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
	c.mu.Lock()
	if len(added) > 0 {
		c.state.LastRotation = now
	}
	hadRequest, streams := c.state.Request != nil, len(c.state.Streams)
	c.scheduleLocked(now)
	c.startStreamLocked(now)
	if len(added) > 0 || hadRequest != (c.state.Request != nil) || streams != len(c.state.Streams) {
		err = c.saveLocked()
	}
	c.mu.Unlock()
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

	// Forced rotation keeps the upload cadence predictable even when idle.
	c.mu.Lock()
	streaming := false
	for _, s := range c.state.Streams {
		streaming = streaming || s.Phase == backup.PhaseCatchup || s.Phase == backup.PhaseBinlog
	}
	due := streaming && now.Sub(c.state.LastRotation) >= time.Duration(cfg.BackupSettings.ForcedBinlogRotationInterval*float64(time.Second))
	c.mu.Unlock()
	if due {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := db.ExecContext(rctx, "FLUSH BINARY LOGS")
		cancel()
		if err != nil {
			c.log.Warn("forced binlog rotation failed", "error", err)
		} else {
			c.mu.Lock()
			c.state.LastRotation = now
			c.mu.Unlock()
		}
	}
	if err := c.refreshBackups(ctx, false); err != nil {
		return err
	}
	if err := c.purgeOldBackups(ctx); err != nil {
		return err
	}
	return c.purgeBinlogs(ctx, now)
}

// scheduleLocked requests a scheduled backup when a new slot has begun, or
// the first backup when there is none at all.
func (c *Controller) scheduleLocked(now time.Time) {
	if c.state.Request != nil {
		return
	}
	bs := c.cfg.BackupSettings
	var last, lastScheduled time.Time
	for _, s := range c.state.Streams {
		if s.NormalizedTime.After(last) {
			last = s.NormalizedTime
		}
		if s.Reason == "scheduled" && s.CreatedAt.After(lastScheduled) {
			lastScheduled = s.CreatedAt
		}
	}
	slot := normalizedBackupTime(now, bs.BackupHour, bs.BackupMinute, bs.BackupIntervalMinutes, last)
	if len(c.state.Streams) == 0 {
		// No stream of ours: back up at once unless storage already has
		// a completed backup for this slot's period.
		c.state.Request = &backupRequest{Reason: "scheduled", NormalizedTime: slot}
		return
	}
	if slot.Equal(last) || slot.Before(last) {
		return
	}
	interval := time.Duration(bs.BackupIntervalMinutes) * time.Minute
	if !lastScheduled.IsZero() && now.Sub(lastScheduled) < interval/2 {
		return
	}
	if c.state.PausedUntil != nil && now.Before(*c.state.PausedUntil) {
		return
	}
	c.state.Request = &backupRequest{Reason: "scheduled", NormalizedTime: slot}
}

func (c *Controller) startStreamLocked(now time.Time) {
	if c.state.Request == nil || len(c.state.Streams) >= maxOpenStreams {
		return
	}
	req := c.state.Request
	c.state.Request = nil
	s := backup.StreamState{
		ID: storage.NewStreamID(now), Site: c.cfg.UploadSiteName(), Phase: backup.PhaseBasebackup,
		CreatedAt: now, Reason: req.Reason, NormalizedTime: req.NormalizedTime, Epoch: c.state.Epoch, NextRemoteIndex: 1,
		InitialNextIndex: c.scanner.NextIndex(),
	}
	c.state.Streams = append(c.state.Streams, s)
	c.log.Info("new backup stream", "stream", s.ID, "site", s.Site, "reason", s.Reason)
}

func (c *Controller) encodeOptions(site string) storage.EncodeOptions {
	sc := c.cfg.BackupSites[site]
	opts := storage.EncodeOptions{Compression: storage.Compression(sc.Compression.Algorithm), Level: sc.Compression.Level}
	if sc.EncryptionKeys != nil {
		if kp, err := storage.NewKeyPair(sc.EncryptionKeys.Public, ""); err == nil {
			opts.Key = c.keys[kp.ID]
		}
	}
	return opts
}

// runBasebackups starts the full backup of new streams in the background
// and takes in the results of finished ones. Storage calls happen outside
// the controller's lock, so the API never waits on storage.
func (c *Controller) runBasebackups(ctx context.Context, now time.Time) {
	type finished struct {
		id  string
		res basebackupResult
	}
	var done []finished
	var toStart []backup.StreamState
	c.mu.Lock()
	for _, s := range c.state.Streams {
		if s.Phase != backup.PhaseBasebackup {
			continue
		}
		if ch, running := c.jobs[s.ID]; running {
			select {
			case res := <-ch:
				delete(c.jobs, s.ID)
				done = append(done, finished{s.ID, res})
			default:
			}
			continue
		}
		if !now.Before(s.NextAttemptAt) {
			toStart = append(toStart, s)
		}
	}
	c.mu.Unlock()

	for _, f := range done {
		c.finishBasebackup(ctx, f.id, f.res)
	}
	for _, s := range toStart {
		site := c.siteByName(s.Site)
		if site == nil {
			c.updateStream(s.ID, func(st *backup.StreamState) { st.LastError = fmt.Sprintf("upload site %q is not open", s.Site) })
			continue
		}
		// After a crash the backup may be complete in storage already:
		// adopt it rather than overwrite its parts.
		if data, err := site.GetBytes(ctx, storage.BasebackupManifestKey(s.ID)); err == nil {
			var m storage.BasebackupManifest
			if err := storage.UnmarshalManifest(storage.BasebackupManifestKey(s.ID), data, &m); err == nil {
				c.log.Info("basebackup found in storage after a restart; resuming the stream", "stream", s.ID)
				c.adoptBasebackup(s.ID, &m)
				continue
			}
		}
		c.mu.Lock()
		sc := c.cfg.BackupSites[s.Site]
		opts := backup.BasebackupOptions{
			Flavor: c.flavor, ConfigFile: c.cfg.MySQL.ConfigFileName, Conn: ConnParams(c.cfg), DataDir: c.cfg.MySQL.DataDirectory,
			TempDir: c.cfg.TemporaryDirectory, CopyThreads: c.cfg.Xtrabackup.CopyThreads, SplitSize: sc.SplitSize,
			Encode: c.encodeOptions(s.Site), RegisterRedoLogConsumer: c.cfg.Xtrabackup.RegisterRedoLogConsumer,
			EstimateMemory: c.cfg.Xtrabackup.EstimateMemory, ServerUUID: c.state.ServerUUID, NodeID: c.cfg.Cluster.NodeID,
			Epoch: s.Epoch, Log: c.log, ServerID: uint32(c.cfg.ServerID),
		}
		m := c.metrics
		opts.Progress = func(pct float64) { m.Gauge("myhoard.basebackup.estimated_progress", pct, nil) }
		opts.Uploaded = func(n int64, rate float64) {
			m.Gauge("myhoard.backup_stream.basebackup_bytes_uploaded", float64(n), nil)
			m.Gauge("myhoard.backup_stream.basebackup_upload_rate", rate, nil)
		}
		if opts.TempDir == "" {
			opts.TempDir = os.TempDir()
		}
		ch := make(chan basebackupResult, 1)
		c.jobs[s.ID] = ch
		db := c.db
		c.mu.Unlock()
		id := s.ID
		go func() {
			m, err := backup.TakeBasebackup(ctx, site, id, opts, db)
			ch <- basebackupResult{m: m, err: err}
			c.poke()
		}()
	}
}

func (c *Controller) siteByName(name string) *storage.Site {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sites[name]
}

// updateStream changes an owned stream's state and persists it.
func (c *Controller) updateStream(id string, f func(*backup.StreamState)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.state.Streams {
		if c.state.Streams[i].ID == id {
			f(&c.state.Streams[i])
		}
	}
	if err := c.saveLocked(); err != nil {
		c.log.Error("save state", "error", err)
	}
}

func (c *Controller) finishBasebackup(ctx context.Context, id string, res basebackupResult) {
	mx := c.m()
	fail := func(err error) {
		c.updateStream(id, func(s *backup.StreamState) {
			s.Errors++
			s.LastError = err.Error()
			wait := time.Duration(float64(10*time.Second) * pow15(min(s.Errors, 14)))
			s.NextAttemptAt = time.Now().Add(wait)
			c.log.Error("basebackup failed; retrying", "stream", s.ID, "attempt", s.Errors, "retry_in", wait, "error", err)
		})
	}
	if res.err != nil {
		mx.Inc("myhoard.basebackup.errors", 1, nil)
		fail(res.err)
		return
	}
	mx.Gauge("myhoard.basebackup.bytes_uncompressed", float64(res.m.Size), nil)
	mx.Gauge("myhoard.basebackup.bytes_compressed", float64(res.m.EncodedSize), nil)
	if res.m.EncodedSize > 0 {
		mx.Gauge("myhoard.basebackup.compression_ratio", float64(res.m.Size)/float64(res.m.EncodedSize), nil)
	}
	mx.Timing("myhoard.basebackup.xtrabackup_backup", res.m.EndedAt.Sub(res.m.StartedAt), nil)
	if _, err := backup.BinlogIndexOf(res.m.BinlogName); err != nil {
		fail(err)
		return
	}
	var site *storage.Site
	var epoch int64
	c.mu.Lock()
	for _, s := range c.state.Streams {
		if s.ID == id {
			site, epoch = c.sites[s.Site], s.Epoch
		}
	}
	c.mu.Unlock()
	body, err := storage.MarshalManifest(res.m)
	if err == nil {
		err = c.passGate(ctx, epoch)
	}
	if err == nil && site != nil {
		err = site.PutBytes(ctx, storage.BasebackupManifestKey(id), body, storage.PutOptions{IfNotExist: true, ContentType: "application/json"})
	}
	if err != nil {
		fail(fmt.Errorf("write basebackup.json: %w", err))
		return
	}
	c.adoptBasebackup(id, res.m)
}

// adoptBasebackup moves a stream whose basebackup.json is in storage to
// catchup: binlog uploads start at the consistency point's binlog.
func (c *Controller) adoptBasebackup(id string, m *storage.BasebackupManifest) {
	first, err := backup.BinlogIndexOf(m.BinlogName)
	c.updateStream(id, func(s *backup.StreamState) {
		if err != nil {
			s.LastError = err.Error()
			return
		}
		s.Phase, s.FirstLocalIndex, s.LastUploadedLocal, s.LastError = backup.PhaseCatchup, first, first-1, ""
	})
	c.mu.Lock()
	c.listedAt = time.Time{}
	c.mu.Unlock()
}

func pow15(n int) float64 {
	f := 1.0
	for i := 0; i < n; i++ {
		f *= 1.5
	}
	return f
}

// uploadBinlogs uploads, per streaming stream and strictly in order, the
// local binlogs after its cursor. The cursor moves (and is persisted) only
// after the data and manifest are both in storage.
func (c *Controller) uploadBinlogs(ctx context.Context) error {
	c.mu.Lock()
	binlogs := c.scanner.Binlogs()
	scanner := c.scanner
	skipped := func(i int64) bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return scanner.Skipped(i)
	}
	streams := append([]backup.StreamState(nil), c.state.Streams...)
	flavor, uuid := c.flavor, c.state.ServerUUID
	serverID := uint32(c.cfg.ServerID)
	c.mu.Unlock()
	gates := map[int64]func(context.Context) error{}
	for _, s := range streams {
		if s.Phase != backup.PhaseCatchup && s.Phase != backup.PhaseBinlog {
			continue
		}
		// A node the cluster view no longer names the primary of this
		// epoch does not even upload data (the gate would refuse the
		// manifest anyway); the writer gate stays the authority.
		if cn := c.clusterNode(); cn != nil {
			if v := cn.View(); v.Epoch > s.Epoch || (v.Epoch == s.Epoch && v.Primary != c.nodeID()) {
				return fmt.Errorf("stream %s: %w: the cluster's primary is %q at epoch %d, this node uploads for epoch %d",
					s.ID, backup.ErrGateClosed, v.Primary, v.Epoch, s.Epoch)
			}
		}
		site := c.siteByName(s.Site)
		c.mu.Lock()
		enc := c.encodeOptions(s.Site)
		// the other streams' cursors as they are now (an older stream may
		// have uploaded what this one needs in this very tick)
		current := append([]backup.StreamState(nil), c.state.Streams...)
		c.mu.Unlock()
		var batch []backup.BinlogUpload
		next, remote := s.LastUploadedLocal+1, s.NextRemoteIndex
		for _, b := range binlogs {
			if b.Index < next || len(batch) >= uploadsPerTick {
				continue
			}
			for b.Index > next && skipped(next) {
				next++ // skipped by the operator (PATCH /binlogs)
			}
			if b.Index != next {
				return fmt.Errorf("stream %s: binlog %d is needed next but the oldest local one is %s: the stream has a hole", s.ID, next, b.Name)
			}
			ref := storage.BinlogRef{StreamID: s.ID, RemoteIndex: remote, Epoch: s.Epoch, ServerID: serverID}
			gate, ok := gates[s.Epoch]
			if !ok {
				gate = c.uploadGate(s.Epoch)
				gates[s.Epoch] = gate
			}
			batch = append(batch, backup.BinlogUpload{Ref: ref, Binlog: b, Flavor: flavor, ServerUUID: uuid, Encode: enc,
				CopyFrom: copySource(current, s, b.Index, serverID), Gate: gate})
			next, remote = next+1, remote+1
		}
		if len(batch) == 0 {
			continue
		}
		start := time.Now()
		i := 0
		err := backup.UploadBinlogs(ctx, site, batch, c.keys, uploadParallelism, func(m *storage.BinlogManifest, copied bool) error {
			b := batch[i].Binlog
			i++
			now := time.Now().UTC()
			if copied {
				c.m().Inc("myhoard.binlog.remote_copy", 1, nil)
			} else {
				c.m().Inc("myhoard.binlog.upload", 1, nil)
			}
			c.m().Timing("myhoard.binlog.upload_time", time.Since(start), nil)
			c.mu.Lock()
			defer c.mu.Unlock()
			for j := range c.state.Streams {
				if st := &c.state.Streams[j]; st.ID == s.ID {
					st.LastUploadedLocal, st.NextRemoteIndex, st.LastUploadAt = b.Index, m.RemoteIndex+1, &now
				}
			}
			return c.saveLocked()
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
	}
	return nil
}

// copySource finds local binlog index already uploaded by another open
// stream on the same site. The other stream's remote index follows from its
// first local index only while it has skipped no binlog (remote and local
// indexes advanced together); otherwise there is no source.
func copySource(streams []backup.StreamState, s backup.StreamState, index int64, serverID uint32) *storage.BinlogRef {
	for _, o := range streams {
		if o.ID == s.ID || o.Site != s.Site || (o.Phase != backup.PhaseCatchup && o.Phase != backup.PhaseBinlog) {
			continue
		}
		if index < o.FirstLocalIndex || index > o.LastUploadedLocal {
			continue
		}
		if o.NextRemoteIndex-1 != o.LastUploadedLocal-o.FirstLocalIndex+1 {
			continue // the stream skipped a binlog: indexes do not line up
		}
		return &storage.BinlogRef{StreamID: o.ID, RemoteIndex: index - o.FirstLocalIndex + 1, Epoch: o.Epoch, ServerID: serverID}
	}
	return nil
}

// completeAndClose marks caught-up streams completed and closes the older
// streams once a newer one is complete (markers written outside the lock).
func (c *Controller) completeAndClose(ctx context.Context) error {
	c.mu.Lock()
	next := c.scanner.NextIndex()
	nodeID := c.cfg.Cluster.NodeID
	var complete []backup.StreamState
	for _, s := range c.state.Streams {
		if s.Phase == backup.PhaseCatchup && s.LastUploadedLocal >= next-1 {
			complete = append(complete, s)
		}
	}
	c.mu.Unlock()
	for _, s := range complete {
		now := time.Now().UTC()
		if err := c.passGate(ctx, s.Epoch); err != nil {
			return fmt.Errorf("stream %s: mark completed: %w", s.ID, err)
		}
		if err := backup.WriteMarker(ctx, c.siteByName(s.Site), s.ID, storage.MarkerCompleted, storage.MarkerRecord{At: now, NodeID: nodeID}); err != nil {
			return fmt.Errorf("stream %s: mark completed: %w", s.ID, err)
		}
		c.updateStream(s.ID, func(st *backup.StreamState) { st.Phase, st.CompletedAt = backup.PhaseBinlog, &now })
		c.log.Info("backup stream completed", "stream", s.ID)
	}
	// Every binlog-phase stream but the newest is closed.
	c.mu.Lock()
	newest := -1
	for i, s := range c.state.Streams {
		if s.Phase == backup.PhaseBinlog && (newest < 0 || s.CreatedAt.After(c.state.Streams[newest].CreatedAt)) {
			newest = i
		}
	}
	var closing []backup.StreamState
	for i, s := range c.state.Streams {
		if s.Phase == backup.PhaseBinlog && i != newest {
			closing = append(closing, s)
		}
	}
	c.mu.Unlock()
	for _, s := range closing {
		now := time.Now().UTC()
		if err := c.passGate(ctx, s.Epoch); err != nil {
			return fmt.Errorf("stream %s: mark closed: %w", s.ID, err)
		}
		if err := backup.WriteMarker(ctx, c.siteByName(s.Site), s.ID, storage.MarkerClosed, storage.MarkerRecord{At: now, NodeID: nodeID}); err != nil {
			return fmt.Errorf("stream %s: mark closed: %w", s.ID, err)
		}
		c.log.Info("backup stream closed", "stream", s.ID)
		c.mu.Lock()
		var keep []backup.StreamState
		for _, st := range c.state.Streams {
			if st.ID != s.ID {
				keep = append(keep, st)
			}
		}
		c.state.Streams = keep
		err := c.saveLocked()
		c.mu.Unlock()
		if err != nil {
			return err
		}
	}
	if len(complete)+len(closing) > 0 {
		c.mu.Lock()
		c.listedAt = time.Time{}
		c.mu.Unlock()
	}
	return nil
}

// RequestBasebackup queues a full backup (POST /backup basebackup).
func (c *Controller) RequestBasebackup() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Mode != ModeActive {
		return badRequest("backups can only be requested in active mode (mode is %s)", c.state.Mode)
	}
	c.state.Request = &backupRequest{Reason: "requested", NormalizedTime: time.Now().UTC()}
	c.metrics.Inc("myhoard.backup_stream.basebackup_requested", 1, nil)
	if err := c.saveLocked(); err != nil {
		return err
	}
	c.poke()
	return nil
}

// RotateBinlog closes the current binlog (FLUSH BINARY LOGS) and, with a
// wait, blocks until every streaming stream has uploaded it (no error on
// timeout, as the spec says).
func (c *Controller) RotateBinlog(ctx context.Context, wait time.Duration) error {
	c.mu.Lock()
	db, mode := c.db, c.state.Mode
	c.mu.Unlock()
	if mode != ModeActive {
		return badRequest("binlog rotation can only be requested in active mode (mode is %s)", mode)
	}
	if db == nil {
		return errNotReady
	}
	var name string
	var size any
	rows, err := db.QueryContext(ctx, "FLUSH BINARY LOGS")
	if err == nil {
		rows.Close()
		// the file just closed is the second newest
		var names []string
		rows, err = db.QueryContext(ctx, "SHOW BINARY LOGS")
		if err == nil {
			for rows.Next() {
				cols, _ := rows.Columns()
				vals := make([]any, len(cols))
				vals[0], vals[1] = &name, &size
				for i := 2; i < len(cols); i++ {
					vals[i] = new(any)
				}
				if err = rows.Scan(vals...); err != nil {
					break
				}
				names = append(names, name)
			}
			rows.Close()
		}
		if err == nil && len(names) >= 2 {
			name = names[len(names)-2]
		}
	}
	if err != nil {
		return fmt.Errorf("rotate binlog: %w", err)
	}
	c.mu.Lock()
	c.state.LastRotation = time.Now().UTC()
	c.mu.Unlock()
	c.poke()
	if wait <= 0 || name == "" {
		return nil
	}
	index, err := backup.BinlogIndexOf(name)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if c.uploadedThrough(index) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func (c *Controller) uploadedThrough(index int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	streaming := 0
	for _, s := range c.state.Streams {
		if s.Phase == backup.PhaseCatchup || s.Phase == backup.PhaseBinlog {
			streaming++
			if s.LastUploadedLocal < index {
				return false
			}
		}
	}
	return streaming > 0
}

// SetBinlogIndex skips a hole in the local binlog sequence (PATCH /binlogs).
func (c *Controller) SetBinlogIndex(n int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.scanner == nil {
		return errNotReady
	}
	if err := c.scanner.SetNextIndex(n); err != nil {
		return &RequestError{Msg: err.Error()}
	}
	c.poke()
	return nil
}

// PauseBackups sets or clears (nil) paused_until (PATCH /backup/settings).
func (c *Controller) PauseBackups(until *time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until != nil && !until.After(time.Now()) {
		return badRequest("paused_until %s is not in the future", until.Format(time.RFC3339))
	}
	c.state.PausedUntil = until
	return c.saveLocked()
}

// ReplicationState returns the stored replication state.
func (c *Controller) ReplicationState() map[string]map[string][][2]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string][][2]uint64{}
	for k, v := range c.state.ReplicationState {
		out[k] = v
	}
	return out
}

// SetReplicationState stores PUT /replication_state.
//
// In a cluster it also goes into the Raft view (next to what the members
// publish themselves), which is what the purge rules read there.
func (c *Controller) SetReplicationState(rs map[string]map[string][][2]uint64) error {
	c.mu.Lock()
	state := map[string]mysql.ReplicationState{}
	texts := map[string]string{}
	for k, v := range rs {
		if c.flavor != "" {
			set, err := mysql.GTIDSetFromReplicationState(c.flavor, v)
			if err != nil {
				c.mu.Unlock()
				return badRequest("server %q: %v", k, err)
			}
			texts[k] = set.String()
		}
		state[k] = v
	}
	c.state.ReplicationState = state
	err := c.saveLocked()
	cn := c.cluster
	c.mu.Unlock()
	if err != nil || cn == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return cn.SetExternal(ctx, texts)
}

// Preserve writes or removes (until nil) a backup's preservation marker
// and, with a wait, waits until the backup list shows it.
func (c *Controller) Preserve(ctx context.Context, streamID string, until *time.Time, wait time.Duration) (bool, error) {
	site, err := c.siteOfBackup(streamID, false)
	if err != nil {
		return false, err
	}
	if until == nil {
		err = site.Delete(ctx, storage.MarkerKey(streamID, storage.MarkerPreserved))
	} else {
		err = backup.WriteMarker(ctx, site, streamID, storage.MarkerPreserved, storage.MarkerRecord{At: time.Now().UTC(), PreserveUntil: until, NodeID: c.Config().Cluster.NodeID})
	}
	if err != nil {
		return false, err
	}
	if err := c.refreshBackups(ctx, true); err != nil {
		return false, err
	}
	_ = wait // the marker is in storage and the list refreshed before returning
	for _, b := range c.Backups() {
		if b.StreamID == streamID {
			return true, nil
		}
	}
	return false, nil // the backup disappeared meanwhile
}

// MarkBroken writes or removes a backup's broken marker (active mode only).
func (c *Controller) MarkBroken(ctx context.Context, streamID string, broken bool) error {
	if Mode(c.Mode()) != ModeActive {
		return badRequest("backups can only be marked broken in active mode (mode is %s)", c.Mode())
	}
	site, err := c.siteOfBackup(streamID, true)
	if err != nil {
		return err
	}
	if broken {
		c.m().Inc("myhoard.basebackup_broken", 1, nil)
		err = backup.WriteMarker(ctx, site, streamID, storage.MarkerBroken, storage.MarkerRecord{At: time.Now().UTC(), NodeID: c.Config().Cluster.NodeID})
	} else {
		err = site.Delete(ctx, storage.MarkerKey(streamID, storage.MarkerBroken))
	}
	if err != nil {
		return err
	}
	return c.refreshBackups(ctx, true)
}

// siteOfBackup finds the writable site holding a listed backup.
func (c *Controller) siteOfBackup(streamID string, writable bool) (*storage.Site, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.backups == nil {
		return nil, errNotReady
	}
	for _, b := range c.backups {
		if b.StreamID == streamID {
			if b.RecoverySite {
				return nil, badRequest("backup %s is on recovery-only site %s, which myhoard never writes to", streamID, b.Site)
			}
			if s := c.sites[b.Site]; s != nil {
				return s, nil
			}
		}
	}
	return nil, badRequest("no backup %q in the backup list", streamID)
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
	streams := append([]backup.StreamState(nil), c.state.Streams...)
	c.mu.Unlock()
	first := true
	var minCount, maxCount, minBytes, maxBytes int64
	for _, s := range streams {
		if s.Phase != backup.PhaseCatchup && s.Phase != backup.PhaseBinlog {
			continue
		}
		var n, bytes int64
		for _, b := range binlogs {
			if b.Index > s.LastUploadedLocal {
				n++
				bytes += b.Size
			}
		}
		if first {
			minCount, maxCount, minBytes, maxBytes, first = n, n, bytes, bytes, false
		}
		minCount, maxCount, minBytes, maxBytes = min(minCount, n), max(maxCount, n), min(minBytes, bytes), max(maxBytes, bytes)
	}
	if !first {
		m.Gauge("myhoard.pending_binlog_count_min", float64(minCount), nil)
		m.Gauge("myhoard.pending_binlog_count_max", float64(maxCount), nil)
		m.Gauge("myhoard.pending_binlog_bytes_min", float64(minBytes), nil)
		m.Gauge("myhoard.pending_binlog_bytes_max", float64(maxBytes), nil)
	}
}
