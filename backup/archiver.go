package backup

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/metrics"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// uploadsPerTick bounds one tick's binlog uploads per stream.
const uploadsPerTick = 50

// uploadParallelism is how many binlogs' data are encoded and sent at once
// (manifests stay strictly in order).
const uploadParallelism = 2

// Owner is what an Archiver works for: the node controller, which owns
// the streams' state (under its lock, persisted with its mode) and knows
// whether this node may still write.
type Owner interface {
	// ChangeStreams runs f on the streams under the owner's lock and
	// persists them when f reports a change.
	ChangeStreams(f func(*Streams) bool) error
	// Gate is the writer gate of epoch (nil: a lone node).
	Gate(epoch int64) Gate
	// Deposed fails when the cluster no longer names this node the
	// primary of the stream's epoch: it does not even upload data then
	// (the gate would refuse the manifest anyway; it stays the authority).
	Deposed(StreamState) error
	Metrics() *metrics.Metrics
	// Wake runs the owner's next tick early (a full backup ended).
	Wake()
}

// Archiver carries out active mode on the primary, one Tick at a time.
// The decisions are Streams'; the Archiver does their I/O (the database,
// the local binlogs, storage) outside the owner's lock and hands every
// state change to the owner, which persists it.
type Archiver struct {
	Log     *slog.Logger
	Catalog *Catalog
	Owner   Owner
	// Failpoint, if set, is called at the test kill points of a full
	// backup ("basebackup-streaming").
	Failpoint func(name string)
	jobs      BasebackupJobs
	tools     ToolVersions
}

// IncrementalBase is what an incremental backup on site would continue,
// from a fresh listing and the installed tool's version; a
// wire.RequestError says why none can be taken now.
func (a *Archiver) IncrementalBase(ctx context.Context, site string, f mysql.Flavor) (*IncrementalBase, error) {
	if err := a.Catalog.Refresh(ctx, 0); err != nil {
		return nil, fmt.Errorf("list backups for an incremental: %w", err)
	}
	ver, err := a.tools.Of(ctx, f, "")
	if err != nil {
		return nil, err
	}
	return IncrementalBaseOf(a.Catalog.Backups(), site, ver)
}

// Tick is what one tick works with, read from the owner's state.
type Tick struct {
	DB         *sql.DB
	Scanner    *Scanner
	Config     *config.Config
	Conn       mysql.ConnParams // the backup tool's connection
	Flavor     mysql.Flavor
	ServerUUID string
	Epoch      int64
}

// Run is one round of active mode, in this order: find new local binlogs,
// schedule and start streams, run full backups, upload binlogs, complete
// and close streams, force a rotation when due.
func (a *Archiver) Run(ctx context.Context, t Tick) error {
	added, removed, err := t.Scanner.Scan(ctx)
	if err != nil {
		return err
	}
	mx := a.Owner.Metrics()
	if len(removed) > 0 {
		a.Log.Info("local binlogs purged", "count", len(removed), "last", removed[len(removed)-1].Name)
		mx.Inc("myhoard.binlog.removed", int64(len(removed)), nil)
	}
	a.binlogGauges(t.Scanner, added)
	now := time.Now().UTC()
	bs := t.Config.BackupSettings
	err = a.Owner.ChangeStreams(func(s *Streams) bool {
		had, open := s.Request != nil, len(s.List)
		if len(added) > 0 {
			s.LastRotation = now
		}
		s.ScheduleBackup(now, ScheduleOf(bs))
		if st := s.StartRequested(now, storage.NewStreamID(now), t.Config.UploadSiteName(), t.Epoch, t.Scanner.NextIndex()); st != nil {
			a.Log.Info("new backup stream", "stream", st.ID, "site", st.Site, "reason", st.Reason)
		}
		return len(added) > 0 || had != (s.Request != nil) || open != len(s.List)
	})
	if err != nil {
		return err
	}
	a.runBasebackups(ctx, t, now)
	if err := a.uploadBinlogs(ctx, t); err != nil {
		return err
	}
	if err := a.CompleteAndClose(ctx, t); err != nil {
		return err
	}
	a.forceRotation(ctx, t.DB, now, seconds(bs.ForcedBinlogRotationInterval))
	return nil
}

// streams is a copy of the owner's streams.
func (a *Archiver) streams() Streams {
	var out Streams
	_ = a.Owner.ChangeStreams(func(s *Streams) bool {
		out = *s
		out.List = append([]StreamState(nil), s.List...)
		return false
	})
	return out
}

// save hands a change to the owner; a failed save is logged (the change
// is made again from storage's state after a restart).
func (a *Archiver) save(f func(*Streams) bool) {
	if err := a.Owner.ChangeStreams(f); err != nil {
		a.Log.Error("save state", "error", err)
	}
}

// forceRotation closes the current binlog when no binlog was closed for
// forced_binlog_rotation_interval, which keeps the upload cadence
// predictable even when the server is idle.
func (a *Archiver) forceRotation(ctx context.Context, db *sql.DB, now time.Time, interval time.Duration) {
	if s := a.streams(); !s.RotationDue(now, interval) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	_, err := mysql.FlushBinaryLogs(rctx, db)
	cancel()
	if err != nil {
		a.Log.Warn("forced binlog rotation failed", "error", err)
		return
	}
	_ = a.Owner.ChangeStreams(func(s *Streams) bool { s.LastRotation = now; return false })
}

// runBasebackups takes in the finished full backups and starts those of
// new streams in the background.
func (a *Archiver) runBasebackups(ctx context.Context, t Tick, now time.Time) {
	for _, res := range a.jobs.Finished() {
		a.finishBasebackup(ctx, res)
	}
	s := a.streams()
	for _, st := range s.BasebackupsDue(now, a.jobs.Running) {
		a.startBasebackup(ctx, t, st)
	}
}

// startBasebackup runs a stream's full backup in the background, or adopts
// the one a killed daemon completed.
func (a *Archiver) startBasebackup(ctx context.Context, t Tick, s StreamState) {
	site := a.Catalog.Site(s.Site)
	if site == nil {
		a.save(func(ss *Streams) bool {
			st := ss.Find(s.ID)
			if st != nil {
				st.LastError = fmt.Sprintf("upload site %q is not open", s.Site)
			}
			return st != nil
		})
		return
	}
	if m := StoredBasebackup(ctx, site, s.ID); m != nil {
		a.Log.Info("basebackup found in storage after a restart; resuming the stream", "stream", s.ID)
		a.adoptBasebackup(s.ID, m)
		return
	}
	cfg, mx := t.Config, a.Owner.Metrics()
	opts := BasebackupOptions{
		Flavor: t.Flavor, ConfigFile: cfg.MySQL.ConfigFileName, Conn: t.Conn, DataDir: cfg.MySQL.DataDirectory,
		TempDir: cfg.TemporaryDirectory, CopyThreads: cfg.Xtrabackup.CopyThreads, SplitSize: cfg.BackupSites[s.Site].SplitSize,
		Encode: site.Encode, RegisterRedoLogConsumer: cfg.Xtrabackup.RegisterRedoLogConsumer,
		EstimateMemory: cfg.Xtrabackup.EstimateMemory, ServerUUID: t.ServerUUID, NodeID: cfg.Cluster.NodeID,
		Epoch: s.Epoch, Log: a.Log, ServerID: uint32(cfg.ServerID), Failpoint: a.Failpoint, OptimizeTables: cfg.OptimizeTablesBeforeBackup,
		Progress: func(pct float64) { mx.Gauge("myhoard.basebackup.estimated_progress", pct, nil) },
		Uploaded: func(n int64, rate float64) {
			mx.Gauge("myhoard.backup_stream.basebackup_bytes_uploaded", float64(n), nil)
			mx.Gauge("myhoard.backup_stream.basebackup_upload_rate", rate, nil)
		},
	}
	if opts.TempDir == "" {
		opts.TempDir = os.TempDir()
	}
	if s.Incremental {
		base, err := a.IncrementalBase(ctx, s.Site, t.Flavor)
		if err != nil {
			a.Log.Warn("taking a full backup instead of an incremental one", "stream", s.ID, "reason", err)
		}
		opts.Incremental = base
	}
	db := t.DB
	a.jobs.Start(ctx, s.ID, func(ctx context.Context) (*storage.BasebackupManifest, error) {
		return TakeBasebackup(ctx, site, s.ID, opts, db)
	}, a.Owner.Wake)
}

// finishBasebackup publishes a finished full backup (its basebackup.json,
// behind the writer gate) or schedules another attempt.
func (a *Archiver) finishBasebackup(ctx context.Context, res BasebackupResult) {
	mx, id, m := a.Owner.Metrics(), res.StreamID, res.Manifest
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
		s := a.streams()
		st := s.Find(id)
		if st == nil {
			return // the stream is gone (the node left active mode)
		}
		if site := a.Catalog.Site(st.Site); site == nil {
			err = fmt.Errorf("stream %s: upload site %q is not open", id, st.Site)
		} else {
			err = PublishBasebackup(ctx, site, m, a.Owner.Gate(st.Epoch))
		}
	}
	if err == nil {
		a.adoptBasebackup(id, m)
		return
	}
	a.save(func(s *Streams) bool {
		wait := s.BasebackupFailed(id, err, time.Now())
		a.Log.Error("basebackup failed; retrying", "stream", id, "retry_in", wait, "error", err)
		return true
	})
}

// adoptBasebackup moves a stream whose basebackup.json is in storage to
// catchup.
func (a *Archiver) adoptBasebackup(id string, m *storage.BasebackupManifest) {
	a.save(func(s *Streams) bool { _ = s.BasebackupStored(id, m.BinlogName); return true })
	a.Catalog.Invalidate()
}

// uploadBinlogs uploads, per uploading stream and strictly in order, the
// local binlogs after its cursor. The cursor moves (and is persisted) only
// after the data and manifest are both in storage.
func (a *Archiver) uploadBinlogs(ctx context.Context, t Tick) error {
	local := t.Scanner.Binlogs()
	for _, s := range a.streams().List {
		if !s.Uploading() {
			continue
		}
		if err := a.Owner.Deposed(s); err != nil {
			return err
		}
		site := a.Catalog.Site(s.Site)
		if site == nil {
			return fmt.Errorf("stream %s: upload site %q is not open", s.ID, s.Site)
		}
		// the other streams' cursors as they are now (an older stream may
		// have uploaded what this one needs in this very tick)
		var planned []Upload
		var err error
		_ = a.Owner.ChangeStreams(func(ss *Streams) bool {
			planned, err = ss.NextUploads(s.ID, local, t.Scanner.Skipped, uint32(t.Config.ServerID), uploadsPerTick)
			return false
		})
		if err != nil {
			return err
		}
		if len(planned) == 0 {
			continue
		}
		gate := a.Owner.Gate(s.Epoch)
		batch := make([]BinlogUpload, len(planned))
		for i, p := range planned {
			batch[i] = BinlogUpload{Ref: p.Ref, Binlog: p.Binlog, Flavor: t.Flavor, ServerUUID: t.ServerUUID, Encode: site.Encode, CopyFrom: p.CopyFrom, Gate: gate}
		}
		if err := a.uploadBatch(ctx, site, s, batch); err != nil {
			return err
		}
	}
	return nil
}

// uploadBatch uploads one stream's batch, moving and persisting its
// cursor after each binlog.
func (a *Archiver) uploadBatch(ctx context.Context, site *storage.Site, s StreamState, batch []BinlogUpload) error {
	mx := a.Owner.Metrics()
	start := time.Now()
	i := 0
	err := UploadBinlogs(ctx, site, batch, a.Catalog.Keys(), uploadParallelism, func(m *storage.BinlogManifest, copied bool) error {
		b := batch[i].Binlog
		i++
		if copied {
			mx.Inc("myhoard.binlog.remote_copy", 1, nil)
		} else {
			mx.Inc("myhoard.binlog.upload", 1, nil)
		}
		mx.Timing("myhoard.binlog.upload_time", time.Since(start), nil)
		return a.Owner.ChangeStreams(func(st *Streams) bool {
			st.Uploaded(s.ID, b.Index, m.RemoteIndex, time.Now().UTC())
			return true
		})
	})
	if err != nil {
		mx.Inc("myhoard.binlog.upload_errors", 1, nil)
		mx.Inc("myhoard.backup_stream.errors", 1, nil)
		return fmt.Errorf("stream %s: %w", s.ID, err)
	}
	var bytes int64
	for _, u := range batch {
		bytes += u.Binlog.Size
	}
	if d := time.Since(start).Seconds(); d > 0 {
		mx.Gauge("myhoard.backup_stream.binlog_upload_rate", float64(bytes)/d, nil)
	}
	return nil
}

// CompleteAndClose (a step of Run) marks caught-up streams completed and
// closes the older streams once a newer one is complete; each marker
// passes the writer gate and is written before the state changes.
func (a *Archiver) CompleteAndClose(ctx context.Context, t Tick) error {
	nodeID := t.Config.Cluster.NodeID
	s := a.streams()
	complete := s.Completable(t.Scanner.NextIndex())
	for _, st := range complete {
		now := time.Now().UTC()
		if err := a.writeMarker(ctx, st, storage.MarkerCompleted, storage.MarkerRecord{At: now, NodeID: nodeID}); err != nil {
			return err
		}
		if err := a.Owner.ChangeStreams(func(ss *Streams) bool { ss.Completed(st.ID, now); return true }); err != nil {
			return err
		}
		a.Log.Info("backup stream completed", "stream", st.ID)
	}
	s = a.streams()
	closing := s.Closable()
	for _, st := range closing {
		if err := a.writeMarker(ctx, st, storage.MarkerClosed, storage.MarkerRecord{At: time.Now().UTC(), NodeID: nodeID}); err != nil {
			return err
		}
		if err := a.Owner.ChangeStreams(func(ss *Streams) bool { ss.Closed(st.ID); return true }); err != nil {
			return err
		}
		a.Log.Info("backup stream closed", "stream", st.ID)
	}
	if len(complete)+len(closing) > 0 {
		a.Catalog.Invalidate()
	}
	return nil
}

// writeMarker writes a stream's completed or closed marker behind the
// writer gate.
func (a *Archiver) writeMarker(ctx context.Context, s StreamState, mk storage.Marker, rec storage.MarkerRecord) error {
	site := a.Catalog.Site(s.Site)
	if site == nil {
		return fmt.Errorf("stream %s: mark %s: upload site %q is not open", s.ID, mk, s.Site)
	}
	return WriteGatedMarker(ctx, site, s.ID, mk, rec, a.Owner.Gate(s.Epoch))
}

// binlogGauges reports the local binlogs and what each stream still has to
// upload.
func (a *Archiver) binlogGauges(scanner *Scanner, added []LocalBinlog) {
	m := a.Owner.Metrics()
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
	s := a.streams()
	if minCount, maxCount, minBytes, maxBytes, ok := s.Pending(binlogs); ok {
		m.Gauge("myhoard.pending_binlog_count_min", float64(minCount), nil)
		m.Gauge("myhoard.pending_binlog_count_max", float64(maxCount), nil)
		m.Gauge("myhoard.pending_binlog_bytes_min", float64(minBytes), nil)
		m.Gauge("myhoard.pending_binlog_bytes_max", float64(maxBytes), nil)
	}
}

// Rotate closes the current binlog (FLUSH BINARY LOGS) and, with a wait,
// waits until every uploading stream has uploaded it: no error when the
// wait runs out, as the spec says.
func (a *Archiver) Rotate(ctx context.Context, db *sql.DB, wait time.Duration) error {
	name, err := mysql.FlushBinaryLogs(ctx, db)
	if err != nil {
		return fmt.Errorf("rotate binlog: %w", err)
	}
	_ = a.Owner.ChangeStreams(func(s *Streams) bool { s.LastRotation = time.Now().UTC(); return false })
	a.Owner.Wake()
	if wait <= 0 || name == "" {
		return nil
	}
	index, err := BinlogIndexOf(name)
	if err != nil {
		return err
	}
	_, err = PollUntil(ctx, wait, func() bool {
		done := false
		_ = a.Owner.ChangeStreams(func(s *Streams) bool { done = s.UploadedThrough(index); return false })
		return done
	})
	return err
}

// PollUntil checks cond every 50 ms until it holds (true) or d passed
// (false); the error is ctx's.
func PollUntil(ctx context.Context, d time.Duration, cond func() bool) (bool, error) {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false, nil
		}
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return true, nil
}
