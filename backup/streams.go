package backup

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// Streams is the state of the backup streams a primary owns and every
// decision about them: when a backup is due, which binlogs each stream
// uploads next and under which remote index, when a stream is complete
// and when an older one closes, which local binlogs are safe to purge.
// It does no I/O and reads no clock (the caller passes the time); the
// node controller persists it in its state file and carries out what it
// decides (backups, uploads, markers, PURGE BINARY LOGS).
type Streams struct {
	List []StreamState `json:"streams"`
	// Request is a full backup waiting for a stream to start.
	Request *Request `json:"backup_request,omitempty"`
	// PausedUntil holds scheduled backups back (PATCH /backup/settings).
	PausedUntil *time.Time `json:"paused_backups_until,omitempty"`
	// LastRotation is the last time a binlog was closed (forced or not).
	LastRotation time.Time `json:"last_binlog_rotation"`
}

// Request is a backup asked for (scheduled or requested): a full one, or
// an incremental one when it can be (IncrementalBaseOf, when it starts).
type Request struct {
	Reason         string    `json:"reason"` // requested | scheduled
	NormalizedTime time.Time `json:"normalized_time"`
	Incremental    bool      `json:"incremental,omitempty"`
}

// MaxOpen is how many streams are open at once: the old stream keeps
// uploading until the new one is complete, so that there is never a hole
// in the restorable time.
const MaxOpen = 2

// Uploading reports whether a stream uploads binlogs (it has its full
// backup and is not closed).
func (s StreamState) Uploading() bool { return s.Phase == PhaseCatchup || s.Phase == PhaseBinlog }

// Schedule is backup_settings' schedule; with Incremental, scheduled
// backups are incremental except on FullDays (UTC weekdays).
type Schedule struct {
	Hour, Minute, IntervalMinutes int
	Incremental                   bool
	FullDays                      map[time.Weekday]bool
}

// Slot is the backup slot for now: the latest slot not after now, aligned
// to Hour:Minute when the interval is a whole number of days, counted from
// last (the previous slot) when there is one.
func (sch Schedule) Slot(now, last time.Time) time.Time {
	interval := time.Duration(sch.IntervalMinutes) * time.Minute
	var t time.Time
	if !last.IsZero() {
		t = last.UTC()
		if sch.IntervalMinutes%1440 == 0 {
			t = time.Date(t.Year(), t.Month(), t.Day(), sch.Hour, sch.Minute, 0, 0, time.UTC)
		}
	} else {
		n := now.UTC()
		t = time.Date(n.Year(), n.Month(), n.Day(), sch.Hour, sch.Minute, 0, 0, time.UTC)
	}
	for t.After(now) {
		t = t.Add(-24 * time.Hour)
	}
	for !t.Add(interval).After(now) {
		t = t.Add(interval)
	}
	return t
}

// ScheduleBackup requests a scheduled backup when a new slot has begun
// (not within half an interval of the last scheduled one, not while
// paused), or at once when there is no stream at all.
func (s *Streams) ScheduleBackup(now time.Time, sch Schedule) {
	if s.Request != nil {
		return
	}
	var last, lastScheduled time.Time
	for _, st := range s.List {
		if st.NormalizedTime.After(last) {
			last = st.NormalizedTime
		}
		if st.Reason == "scheduled" && st.CreatedAt.After(lastScheduled) {
			lastScheduled = st.CreatedAt
		}
	}
	slot := sch.Slot(now, last)
	if len(s.List) == 0 {
		s.Request = &Request{Reason: "scheduled", NormalizedTime: slot, Incremental: sch.IncrementalDue(now)}
		return
	}
	if !slot.After(last) {
		return
	}
	interval := time.Duration(sch.IntervalMinutes) * time.Minute
	if !lastScheduled.IsZero() && now.Sub(lastScheduled) < interval/2 {
		return
	}
	if s.PausedUntil != nil && now.Before(*s.PausedUntil) {
		return
	}
	s.Request = &Request{Reason: "scheduled", NormalizedTime: slot, Incremental: sch.IncrementalDue(now)}
}

// StartRequested starts a stream for the pending request when fewer than
// MaxOpen are open: its full backup comes next, its binlogs are those
// from nextIndex on. It returns the new stream (nil: none started).
func (s *Streams) StartRequested(now time.Time, id, site string, epoch, nextIndex int64) *StreamState {
	if s.Request == nil || len(s.List) >= MaxOpen {
		return nil
	}
	st := StreamState{ID: id, Site: site, Phase: PhaseBasebackup, CreatedAt: now, Reason: s.Request.Reason, NormalizedTime: s.Request.NormalizedTime,
		Epoch: epoch, NextRemoteIndex: 1, InitialNextIndex: nextIndex, Incremental: s.Request.Incremental}
	s.Request = nil
	s.List = append(s.List, st)
	return &st
}

// Find returns the stream with id (nil: none).
func (s *Streams) Find(id string) *StreamState {
	for i := range s.List {
		if s.List[i].ID == id {
			return &s.List[i]
		}
	}
	return nil
}

// BasebackupsDue are the streams whose full backup should start now
// (running is told which are under way).
func (s *Streams) BasebackupsDue(now time.Time, running func(id string) bool) []StreamState {
	var out []StreamState
	for _, st := range s.List {
		if st.Phase == PhaseBasebackup && !running(st.ID) && !now.Before(st.NextAttemptAt) {
			out = append(out, st)
		}
	}
	return out
}

// BasebackupFailed records a failed full backup and returns when it is
// tried again (10 s, growing by half each time, up to ~49 min).
func (s *Streams) BasebackupFailed(id string, err error, now time.Time) time.Duration {
	st := s.Find(id)
	if st == nil {
		return 0
	}
	st.Errors++
	st.LastError = err.Error()
	wait := time.Duration(float64(10*time.Second) * math.Pow(1.5, float64(min(st.Errors, 14))))
	st.NextAttemptAt = now.Add(wait)
	return wait
}

// BasebackupStored moves a stream whose basebackup.json is in storage to
// catchup: binlog uploads start at the local binlog that holds the
// consistency point.
func (s *Streams) BasebackupStored(id, binlogName string) error {
	st := s.Find(id)
	if st == nil {
		return fmt.Errorf("stream %s is not open", id)
	}
	first, err := BinlogIndexOf(binlogName)
	if err != nil {
		st.LastError = err.Error()
		return err
	}
	st.Phase, st.FirstLocalIndex, st.LastUploadedLocal, st.LastError = PhaseCatchup, first, first-1, ""
	return nil
}

// Upload is one binlog a stream uploads next.
type Upload struct {
	Binlog LocalBinlog
	Ref    storage.BinlogRef
	// CopyFrom names the same binlog already uploaded by another open
	// stream of the site (copied in storage instead of encoded again).
	CopyFrom *storage.BinlogRef
}

// NextUploads are the binlogs stream id uploads next, in order, at most
// max: the local binlogs after its cursor, skipping those the operator
// skipped (PATCH /binlogs). A local binlog missing where the stream needs
// the next one is an error (a hole in the stream).
func (s *Streams) NextUploads(id string, local []LocalBinlog, skipped func(int64) bool, serverID uint32, max int) ([]Upload, error) {
	st := s.Find(id)
	if st == nil || !st.Uploading() {
		return nil, nil
	}
	var out []Upload
	next, remote := st.LastUploadedLocal+1, st.NextRemoteIndex
	for _, b := range local {
		if b.Index < next || len(out) >= max {
			continue
		}
		for b.Index > next && skipped(next) {
			next++
		}
		if b.Index != next {
			return nil, fmt.Errorf("stream %s: binlog %d is needed next but the oldest local one is %s: the stream has a hole", st.ID, next, b.Name)
		}
		ref := storage.BinlogRef{StreamID: st.ID, RemoteIndex: remote, Epoch: st.Epoch, ServerID: serverID}
		out = append(out, Upload{Binlog: b, Ref: ref, CopyFrom: s.copySource(*st, b.Index, serverID)})
		next, remote = next+1, remote+1
	}
	return out, nil
}

// copySource finds local binlog index already uploaded by another open
// stream on the same site. The other stream's remote index follows from
// its first local index only while it has skipped no binlog (remote and
// local indexes advanced together); otherwise there is no source.
func (s *Streams) copySource(st StreamState, index int64, serverID uint32) *storage.BinlogRef {
	for _, o := range s.List {
		if o.ID == st.ID || o.Site != st.Site || !o.Uploading() {
			continue
		}
		if index < o.FirstLocalIndex || index > o.LastUploadedLocal {
			continue
		}
		if o.NextRemoteIndex-1 != o.LastUploadedLocal-o.FirstLocalIndex+1 {
			continue
		}
		return &storage.BinlogRef{StreamID: o.ID, RemoteIndex: index - o.FirstLocalIndex + 1, Epoch: o.Epoch, ServerID: serverID}
	}
	return nil
}

// Uploaded moves a stream's cursor past a binlog whose data and manifest
// are both in storage.
func (s *Streams) Uploaded(id string, localIndex, remoteIndex int64, at time.Time) {
	if st := s.Find(id); st != nil {
		st.LastUploadedLocal, st.NextRemoteIndex, st.LastUploadAt = localIndex, remoteIndex+1, &at
	}
}

// Completable are the streams in catchup that uploaded every local binlog
// before nextIndex (the scanner's next).
func (s *Streams) Completable(nextIndex int64) []StreamState {
	var out []StreamState
	for _, st := range s.List {
		if st.Phase == PhaseCatchup && st.LastUploadedLocal >= nextIndex-1 {
			out = append(out, st)
		}
	}
	return out
}

// Completed records a stream's completed marker in storage.
func (s *Streams) Completed(id string, at time.Time) {
	if st := s.Find(id); st != nil {
		st.Phase, st.CompletedAt = PhaseBinlog, &at
	}
}

// Closable are the completed streams but the newest: a newer stream is
// complete, so they end.
func (s *Streams) Closable() []StreamState {
	newest := -1
	for i, st := range s.List {
		if st.Phase == PhaseBinlog && (newest < 0 || st.CreatedAt.After(s.List[newest].CreatedAt)) {
			newest = i
		}
	}
	var out []StreamState
	for i, st := range s.List {
		if st.Phase == PhaseBinlog && i != newest {
			out = append(out, st)
		}
	}
	return out
}

// Closed drops a stream whose closed marker is in storage: this node owns
// it no more.
func (s *Streams) Closed(id string) {
	var keep []StreamState
	for _, st := range s.List {
		if st.ID != id {
			keep = append(keep, st)
		}
	}
	s.List = keep
}

// RotationDue reports whether a forced binlog rotation is due.
func (s *Streams) RotationDue(now time.Time, interval time.Duration) bool {
	for _, st := range s.List {
		if st.Uploading() {
			return now.Sub(s.LastRotation) >= interval
		}
	}
	return false
}

// UploadedThrough reports whether every uploading stream has uploaded
// local binlog index (and at least one stream uploads).
func (s *Streams) UploadedThrough(index int64) bool {
	uploading := 0
	for _, st := range s.List {
		if st.Uploading() {
			uploading++
			if st.LastUploadedLocal < index {
				return false
			}
		}
	}
	return uploading > 0
}

// Pending is what the uploading streams still have to upload of local:
// the fewest and the most files and bytes over the streams (ok false:
// no stream uploads).
func (s *Streams) Pending(local []LocalBinlog) (minCount, maxCount, minBytes, maxBytes int64, ok bool) {
	for _, st := range s.List {
		if !st.Uploading() {
			continue
		}
		var n, bytes int64
		for _, b := range local {
			if b.Index > st.LastUploadedLocal {
				n++
				bytes += b.Size
			}
		}
		if !ok {
			minCount, maxCount, minBytes, maxBytes, ok = n, n, bytes, bytes, true
		}
		minCount, maxCount, minBytes, maxBytes = min(minCount, n), max(maxCount, n), min(minBytes, bytes), max(maxBytes, bytes)
	}
	return
}

// BackedUp reports whether every stream has a local binlog safely: it
// predates the stream's backup, or the stream uploaded it and a later one
// (the last uploaded file is kept).
func (s *Streams) BackedUp(b LocalBinlog) bool {
	if len(s.List) == 0 {
		return false
	}
	for _, st := range s.List {
		switch {
		case b.Index < st.InitialNextIndex && (st.FirstLocalIndex == 0 || b.Index < st.FirstLocalIndex):
		case st.Uploading() && b.Index < st.LastUploadedLocal:
		default:
			return false
		}
	}
	return true
}

// PurgeLimits bound one purge cycle.
type PurgeLimits struct {
	MinAge             time.Duration
	MaxFiles, MaxBytes int64 // 0: no limit
}

// PurgeCandidates walks the local binlogs oldest first and returns the
// longest prefix that is safe to purge: old enough, backed up (the rule
// is given: active mode's BackedUp, or observe mode's "storage holds its
// transactions"), and executed by every server of the replication state;
// a file without GTIDs is purged only together with a later replicated
// file. Capped by the limits.
func PurgeCandidates(local []LocalBinlog, backedUp func(LocalBinlog) bool, rs map[string]mysql.ReplicationState,
	flavor mysql.Flavor, l PurgeLimits, now time.Time) ([]LocalBinlog, error) {
	if len(local) == 0 {
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
	var out []LocalBinlog
	pending := 0 // files without GTIDs waiting for a later replicated one
	for _, b := range local {
		if now.Sub(b.ProcessedAt) < l.MinAge || !backedUp(b) {
			break
		}
		if len(executed) > 0 {
			if b.GTIDsAdded.IsEmpty() {
				pending++
				out = append(out, b)
				continue
			}
			for _, e := range executed {
				if !b.GTIDsAdded.IsSubsetOf(e) {
					return limit(out[:len(out)-pending], l), nil
				}
			}
			pending = 0
		}
		out = append(out, b)
	}
	return limit(out[:len(out)-pending], l), nil
}

func limit(out []LocalBinlog, l PurgeLimits) []LocalBinlog {
	var bytes int64
	for i, b := range out {
		bytes += b.Size
		if (l.MaxFiles > 0 && int64(i+1) > l.MaxFiles) || (l.MaxBytes > 0 && bytes > l.MaxBytes && i > 0) {
			return out[:i]
		}
	}
	return out
}

// Retention is backup_settings' retention.
type Retention struct {
	CountMin, CountMax, AgeDaysMax int
}

// ToDelete picks the backup to delete next, if any, as the original does,
// looking at the oldest completed backup of the writable sites:
//   - an incremental is an orphan there (its full backup is gone): deleted;
//   - a full backup goes together with its dependants (the incrementals
//     that need it), so it is kept while any of them must be: one of own
//     (this node's open streams), not closed, preserved, or younger than
//     AgeDaysMax after its close; and while deleting them would leave
//     fewer than CountMin restorable backups;
//   - then it is deleted when older than AgeDaysMax after its close, or
//     when there are more than CountMax restorable backups (broken ones,
//     and incrementals whose chain is broken, never force a deletion).
//
// Recovery-only sites are never touched.
func (r Retention) ToDelete(backups []BackupInfo, own map[string]bool, now time.Time) *BackupInfo {
	var done []BackupInfo
	byID := map[string]BackupInfo{}
	for _, b := range backups {
		if !b.RecoverySite && b.CompletedAt != nil {
			done = append(done, b)
			byID[b.Site+"/"+b.StreamID] = b
		}
	}
	if len(done) == 0 {
		return nil
	}
	sort.Slice(done, func(i, j int) bool { return done[i].CompletedAt.Before(*done[j].CompletedAt) })
	restorable := func(b BackupInfo) bool {
		if b.BrokenAt != nil {
			return false
		}
		if b.Basebackup != nil && b.Basebackup.Incremental {
			for _, id := range b.Basebackup.RequiredStreams {
				if m, ok := byID[b.Site+"/"+id]; !ok || m.BrokenAt != nil {
					return false
				}
			}
		}
		return true
	}
	nonBroken := 0
	for _, b := range done {
		if restorable(b) {
			nonBroken++
		}
	}
	cand := done[0]
	if own[cand.StreamID] {
		return nil
	}
	if cand.Basebackup != nil && cand.Basebackup.Incremental {
		return &cand // an orphan: the full backup it needs is gone
	}
	deps := []BackupInfo{cand}
	for _, b := range done[1:] {
		if b.Site == cand.Site && b.Basebackup != nil && b.Basebackup.Incremental && slices.Contains(b.Basebackup.RequiredStreams, cand.StreamID) {
			deps = append(deps, b)
		}
	}
	if nonBroken <= r.CountMax && r.CountMax < len(done) {
		return nil // broken backups do not force purges
	}
	left := nonBroken
	maxAge := time.Duration(r.AgeDaysMax) * 24 * time.Hour
	young := false
	for _, d := range deps {
		if own[d.StreamID] || d.ClosedAt == nil || (d.PreserveUntil != nil && d.PreserveUntil.After(now)) {
			return nil
		}
		if restorable(d) {
			left--
		}
		young = young || !now.After(d.ClosedAt.Add(maxAge))
	}
	if left < r.CountMin {
		return nil
	}
	if now.After(cand.ClosedAt.Add(maxAge)) {
		if young {
			return nil // an incremental that needs it is still within its age
		}
		return &cand
	}
	if nonBroken > r.CountMax {
		return &cand
	}
	return nil
}

// Continue is the stream a promoted node continues: the old primary's
// open stream, under the new epoch, from remote index start, uploading
// from local binlog first on. It keeps its place in the backup schedule
// (no new full backup just because the primary changed).
func Continue(b BackupInfo, sch Schedule, epoch, start, first int64) StreamState {
	started := b.Basebackup.StartedAt
	return StreamState{ID: b.StreamID, Site: b.Site, Phase: PhaseBinlog, CreatedAt: started, Reason: "scheduled", Epoch: epoch,
		NormalizedTime: sch.Slot(started, time.Time{}), InitialNextIndex: first, FirstLocalIndex: first, LastUploadedLocal: first - 1,
		NextRemoteIndex: start, CompletedAt: b.CompletedAt}
}
