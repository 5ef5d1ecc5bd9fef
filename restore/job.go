package restore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/myhoard/myhoard/statefile"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// Job runs one Coordinator in the background (the daemon's restore mode).
type Job struct {
	Coord    *Coordinator
	cancel   context.CancelFunc
	finished chan struct{}
	phase    Phase
}

// Start runs coord until it reaches a terminal phase, fails for good, or
// Stop is called; onEnd is called after (the daemon wakes its loop).
// A run that stops with an error not caused by Stop is logged.
func Start(ctx context.Context, coord *Coordinator, onEnd func()) *Job {
	ctx, cancel := context.WithCancel(ctx)
	j := &Job{Coord: coord, cancel: cancel, finished: make(chan struct{})}
	go func() {
		phase, err := coord.Run(ctx)
		if err != nil && ctx.Err() == nil {
			coord.log.Error("restore stopped", "phase", phase, "error", err)
		}
		j.phase = phase
		close(j.finished)
		if onEnd != nil {
			onEnd()
		}
	}()
	return j
}

// Done is closed when the run ended; Phase then says where.
func (j *Job) Done() <-chan struct{} { return j.finished }

// Phase is the phase the run ended in (valid after Done).
func (j *Job) Phase() Phase {
	<-j.finished
	return j.phase
}

// Stop cancels the run and waits for it to end.
func (j *Job) Stop() {
	j.cancel()
	<-j.finished
}

// InBasebackup is true while the full backup is restored or prepared.
func (j *Job) InBasebackup() bool {
	p := j.Coord.State().Phase
	return p == PhaseRestoringBasebackup || p == PhasePreparingBackup
}

// Failed reports whether the restore ended without completing.
func (s State) Failed() bool { return s.Phase == PhaseFailed || s.Phase == PhaseFailedBasebackup }

// Status is GET /status/restore of this state (without live progress).
func (s State) Status() wire.RestoreStatus {
	return wire.RestoreStatus{Phase: string(s.Phase), CurrentBackupName: s.BackupStreamID, RequestedBackupName: s.Request.StreamID,
		BinlogsRestored: s.BinlogsRestored, LastError: s.LastError, BasebackupErrors: s.BasebackupErrors, StartedAt: s.StartedAt}
}

// LoadState reads a coordinator's state file; found is false without one.
func LoadState(path string) (st State, found bool, err error) {
	found, err = statefile.Load(path, &st)
	return st, found, err
}

// NewestRestorable is the newest completed, unbroken backup of site (any
// site when empty) whose stream id sorts before before (no bound when
// empty) and whose chain (for an incremental: the full backup and the
// incrementals it needs) is all there, completed and unbroken: what
// auto_restore picks, and the fallback after a backup failed to restore.
func NewestRestorable(backups []wire.Backup, site, before string) *wire.Backup {
	var newest *wire.Backup
	for i := range backups {
		b := &backups[i]
		if (site != "" && b.Site != site) || (before != "" && b.StreamID >= before) || !usable(*b) {
			continue
		}
		if _, ok := ChainOf(backups, *b); !ok {
			continue
		}
		if newest == nil || b.StreamID > newest.StreamID {
			newest = b
		}
	}
	return newest
}

func usable(b wire.Backup) bool {
	return b.CompletedAt != nil && b.BrokenAt == nil && b.Basebackup != nil
}

// ChainOf is what restoring b takes, oldest first and b last: for an
// incremental its full backup and the incrementals before it, as listed;
// ok is false when a member is missing, not completed or broken.
func ChainOf(backups []wire.Backup, b wire.Backup) (chain []wire.Backup, ok bool) {
	if b.Basebackup == nil {
		return []wire.Backup{b}, false
	}
	ok = true
	if b.Basebackup.Incremental {
		for _, id := range b.Basebackup.RequiredStreams {
			found := false
			for _, o := range backups {
				if o.Site == b.Site && o.StreamID == id {
					chain, found = append(chain, o), usable(o)
					break
				}
			}
			ok = ok && found
		}
	}
	return append(chain, b), ok
}

// CheckFields checks a restore request's own fields: it names a backup
// of a configured site (one of sites) and at most one kind of target
// (approximate matching only with a time). It returns the target.
func CheckFields(r wire.ModeChange, sites []string) (Target, error) {
	t := Target{Time: r.TargetTime, ApproximateOK: r.ApproximateOK, GTID: r.TargetGTID}
	switch {
	case r.Site == "" || r.StreamID == "":
		return t, badRequest("a restore needs site and stream_id (see GET /backup)")
	case !slices.Contains(sites, r.Site):
		sorted := slices.Sorted(slices.Values(sites))
		return t, badRequest("unknown site %q (configured: %s)", r.Site, strings.Join(sorted, ", "))
	case t.Time != nil && t.GTID != "":
		return t, badRequest("give target_time or target_gtid, not both")
	case t.ApproximateOK && t.Time == nil:
		return t, badRequest("target_time_approximate_ok needs target_time")
	}
	return t, nil
}

// Lookup is what checking a request reads of the backup listing (the
// node's backup.Catalog).
type Lookup interface {
	Backups() []wire.Backup
	Find(ctx context.Context, site, streamID string) (*wire.Backup, error)
	Site(name string) *storage.Site
}

// Validate checks a restore of streamID on site to target against the
// listing (the backup is listed, whole, unbroken, and the target inside
// its window: CheckRequest) and the data directory (empty). It returns
// the request to run.
func Validate(ctx context.Context, list Lookup, site, streamID string, target Target, dataDir string, now time.Time) (*Request, error) {
	b, err := list.Find(ctx, site, streamID)
	if err != nil {
		return nil, err
	}
	s := list.Site(site)
	if b == nil || s == nil {
		return nil, badRequest("backup %q not found on site %q (see GET /backup)", streamID, site)
	}
	req, err := CheckRequest(ctx, s, *b, list.Backups(), target, now)
	if err != nil {
		return nil, err
	}
	if err := CheckDataDirEmpty(dataDir); err != nil {
		return nil, err
	}
	return req, nil
}

// CheckDataDirEmpty refuses to restore into a data directory that holds
// anything but lost+found (a missing one is fine: it is created).
func CheckDataDirEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return badRequest("cannot read the data directory %s: %v", dir, err)
	}
	var names []string
	for _, e := range entries {
		if e.Name() != "lost+found" {
			names = append(names, e.Name())
		}
	}
	if len(names) > 0 {
		if len(names) > 3 {
			names = append(names[:3], "...")
		}
		return badRequest("the data directory %s is not empty (%s): a restore needs an empty one", dir, strings.Join(names, ", "))
	}
	return nil
}

// Listing is what a fallback reads of the backup listing, and where it
// asks for a broken marker (the node's backup.Catalog).
type Listing interface {
	Refresh(ctx context.Context, maxAge time.Duration) error
	Backups() []wire.Backup
	SetMarker(ctx context.Context, streamID string, m storage.Marker, rec *storage.MarkerRecord) error
}

// FallBack handles a backup that failed to restore (the run ended in
// failed_basebackup): with markBroken it has the listing mark the backup
// broken (for a chain, the member that failed: the incrementals after it
// cannot be restored either; a recovery-only site is never written), then
// switches to the newest restorable backup older than the failed one (a
// shorter chain or an earlier full backup), which restores with every
// later binlog; with none left the restore fails.
func (j *Job) FallBack(ctx context.Context, list Listing, markBroken bool, nodeID string) error {
	st := j.Coord.State()
	if err := list.Refresh(ctx, 0); err != nil { // after a restart nothing is listed yet
		return err
	}
	// the member of the chain that failed: it and every later backup
	// (which may need it) are passed over
	failed := st.BackupStreamID
	if st.FailedStream != "" && st.FailedStream < failed {
		failed = st.FailedStream
	}
	if site := j.Coord.o.Site; markBroken && site != nil && !site.RecoveryOnly {
		rec := storage.MarkerRecord{At: time.Now().UTC(), NodeID: nodeID}
		if err := list.SetMarker(ctx, failed, storage.MarkerBroken, &rec); err != nil {
			return fmt.Errorf("mark backup %s broken: %w", failed, err)
		}
		j.Coord.log.Warn("backup marked broken after failing to restore", "backup", failed, "restoring", st.BackupStreamID, "error", st.LastError)
	}
	older := NewestRestorable(list.Backups(), st.Request.Site, failed)
	if older == nil {
		return j.Coord.Fail(fmt.Sprintf("%s; no older backup to fall back to", st.LastError))
	}
	j.Coord.log.Warn("restoring an older backup instead", "failed", st.BackupStreamID, "instead", older.StreamID)
	return j.Coord.SwitchBackup(older.StreamID)
}
