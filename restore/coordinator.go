package restore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/myhoard/myhoard/metrics"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/statefile"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// Phase is a restore phase (the spec's names).
type Phase string

// The phases, in order, and the terminal ones.
const (
	PhaseGettingBackupInfo   Phase = "getting_backup_info"
	PhaseInitiatingBinlogs   Phase = "initiating_binlog_downloads"
	PhaseRestoringBasebackup Phase = "restoring_basebackup"
	PhasePreparingBackup     Phase = "preparing_backup"
	PhaseRefreshingBinlogs   Phase = "refreshing_binlogs"
	PhaseApplyingBinlogs     Phase = "applying_binlogs"
	PhaseWaitingForApply     Phase = "waiting_for_apply_to_finish"
	PhaseFinalizing          Phase = "finalizing"
	PhaseCompleted           Phase = "completed"
	PhaseFailed              Phase = "failed"
	PhaseFailedBasebackup    Phase = "failed_basebackup"
)

// Terminal reports whether the coordinator stops in this phase.
func (p Phase) Terminal() bool {
	return p == PhaseCompleted || p == PhaseFailed || p == PhaseFailedBasebackup
}

// Request is what to restore.
type Request struct {
	Site     string `json:"site"`
	StreamID string `json:"stream_id"`
	// TargetTime: restore up to the last transaction before it.
	TargetTime    *time.Time `json:"target_time,omitempty"`
	ApproximateOK bool       `json:"target_time_approximate_ok,omitempty"`
	// TargetGTID: restore up to and including this GTID set.
	TargetGTID *mysql.GTIDSet `json:"target_gtid,omitempty"`
}

// State is the coordinator's persisted state.
type State struct {
	Request Request `json:"request"`
	// BackupStreamID is the backup being restored: the requested one, or
	// an older one after the requested one failed.
	BackupStreamID   string `json:"backup_stream_id"`
	Phase            Phase  `json:"phase"`
	BasebackupErrors int    `json:"basebackup_errors"`
	LastError        string `json:"last_error,omitempty"`
	// FailedStream is the member of the backup's chain that failed to
	// restore (the backup itself, or a backup it needs).
	FailedStream string `json:"failed_stream,omitempty"`
	// GTIDStateSet is true once the restored server got the backup's GTID
	// state (never again after that: it would undo applied binlogs).
	GTIDStateSet    bool       `json:"gtid_state_set"`
	ApplyServerID   uint32     `json:"apply_server_id,omitempty"`
	BinlogsRestored int        `json:"binlogs_restored"`
	StartedAt       time.Time  `json:"started_at"`
	CompletedAt     *time.Time `json:"completed_at,omitempty"`
	// ForceComplete ends the apply early (a forced promotion): the node
	// finalizes with what it applied; the promotion catches up the rest.
	ForceComplete bool `json:"force_complete,omitempty"`
}

// Options configure a coordinator.
type Options struct {
	StatePath string
	Site      *storage.Site
	Keys      storage.Keyring
	Server    mysql.ServerControl
	Conn      mysql.ConnParams
	// DataDir, TempDir, RelayPrefix and RelayIndex come from the config
	// (mysql.data_directory, temporary_directory, mysql.relay_log_*).
	DataDir, TempDir, RelayPrefix, RelayIndex string
	MaxBinlogBytes                            int64
	FreeMemoryPercent                         *int
	// ServerID is the node's configured server_id; the server applies
	// binlogs under another one if the binlogs hold it.
	ServerID uint32
	// Parallel is the number of SQL worker threads (0: by CPU count).
	Parallel int
	Log      *slog.Logger
	Metrics  *metrics.Metrics
	// Retry is the wait after a failed step (default 2 s, growing).
	Retry time.Duration
	// Hold, if set, is called as each round of binlog applying starts,
	// with the context a forced completion cancels (a test failpoint).
	Hold func(ctx context.Context)
}

// Coordinator runs one restore through its phases. Each phase change is
// persisted; a restarted daemon resumes: the basebackup phases start over
// cleanly, the binlog phases continue from the GTID state the server has
// reached (every binlog it lacks is fetched again).
type Coordinator struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex
	st     State
	status wire.RestoreStatus

	manifest *storage.BasebackupManifest
	// members is the backup's chain: its full backup and incrementals,
	// oldest first, ending with manifest.
	members []*storage.BasebackupManifest
	chain   []storage.StoredBinlog // binlogs still to apply
	pf      *prefetcher
	pfStop  context.CancelFunc
	db      *sql.DB
	// applyCancel stops the apply in progress (ForceComplete).
	applyCancel context.CancelFunc
}

// ErrDiskFull is wrapped when a disk filled up during the restore.
var ErrDiskFull = errors.New("no space left on device")

// New loads the coordinator's state, or starts a new restore of req.
func New(o Options, req *Request) (*Coordinator, error) {
	c := &Coordinator{o: o, log: o.Log}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	found, err := statefile.Load(o.StatePath, &c.st)
	if err != nil {
		return nil, err
	}
	if !found {
		if req == nil {
			return nil, fmt.Errorf("restore state %s is missing", o.StatePath)
		}
		c.st = State{Request: *req, BackupStreamID: req.StreamID, Phase: PhaseGettingBackupInfo, StartedAt: time.Now().UTC()}
		if err := statefile.Save(o.StatePath, &c.st); err != nil {
			return nil, err
		}
	}
	c.status = c.st.Status()
	return c, nil
}

// State is a copy of the persisted state.
func (c *Coordinator) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st
}

// Status is the live progress.
// Status is what GET /status/restore shows.
func (c *Coordinator) Status() wire.RestoreStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.status
	if c.pf != nil {
		s.BinlogBytesPrefetched = c.pf.downloaded()
	}
	if s.BasebackupPrepareProgress != nil {
		v := *s.BasebackupPrepareProgress
		s.BasebackupPrepareProgress = &v
	}
	return s
}

func (c *Coordinator) update(f func(*State)) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	prev := c.st
	f(&c.st)
	if err := statefile.Save(c.o.StatePath, &c.st); err != nil {
		c.st = prev
		return err
	}
	c.status.ForceComplete = c.st.ForceComplete
	if c.st.Phase != prev.Phase {
		c.log.Info("restore phase", "phase", c.st.Phase, "backup", c.st.BackupStreamID)
	}
	c.status.Phase, c.status.BinlogsRestored, c.status.LastError = string(c.st.Phase), c.st.BinlogsRestored, c.st.LastError
	c.status.BasebackupErrors, c.status.CurrentBackupName = c.st.BasebackupErrors, c.st.BackupStreamID
	return nil
}

func (c *Coordinator) setPhase(p Phase) error {
	return c.update(func(s *State) { s.Phase = p })
}

func (c *Coordinator) phase() Phase {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.Phase
}

type terminalError struct {
	phase Phase
	err   error
}

func (e *terminalError) Error() string { return e.err.Error() }
func (e *terminalError) Unwrap() error { return e.err }

func isDiskFull(err error) bool { return errors.Is(err, syscall.ENOSPC) || errors.Is(err, ErrDiskFull) }

// Run drives the restore until it completes, fails for good or ctx ends;
// it returns the final phase.
func (c *Coordinator) Run(ctx context.Context) (Phase, error) {
	defer c.close()
	switch c.phase() {
	case PhasePreparingBackup:
		if err := c.setPhase(PhaseRestoringBasebackup); err != nil {
			return c.phase(), err
		}
	case PhaseApplyingBinlogs, PhaseWaitingForApply:
		if err := c.setPhase(PhaseRefreshingBinlogs); err != nil {
			return c.phase(), err
		}
	}
	RemovePrefetched(filepath.Dir(c.o.RelayPrefix))
	retry := c.o.Retry
	if retry == 0 {
		retry = 2 * time.Second
	}
	failures := 0
	for {
		p := c.phase()
		if p.Terminal() {
			return p, nil
		}
		if c.State().ForceComplete && (p == PhaseRefreshingBinlogs || p == PhaseApplyingBinlogs || p == PhaseWaitingForApply) {
			c.stopPrefetch()
			if err := c.setPhase(PhaseFinalizing); err != nil {
				return p, err
			}
			continue
		}
		err := c.step(ctx, p)
		if err == nil {
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return c.phase(), ctx.Err()
		}
		var term *terminalError
		if errors.As(err, &term) {
			c.log.Error("restore failed", "phase", p, "next", term.phase, "error", err)
			c.o.Metrics.Error("restore", err)
			if serr := c.update(func(s *State) { s.Phase, s.LastError = term.phase, err.Error() }); serr != nil {
				return c.phase(), serr
			}
			continue
		}
		failures++
		c.log.Warn("restore step failed, retrying", "phase", p, "error", err, "failures", failures)
		c.o.Metrics.Inc("myhoard.restore_errors", 1, nil)
		_ = c.update(func(s *State) { s.LastError = err.Error() })
		select {
		case <-ctx.Done():
			return c.phase(), ctx.Err()
		case <-time.After(min(retry*time.Duration(failures), 30*time.Second)):
		}
	}
}

func (c *Coordinator) close() {
	c.stopPrefetch()
	if c.db != nil {
		c.db.Close()
		c.db = nil
	}
}

func (c *Coordinator) stopPrefetch() {
	c.mu.Lock()
	pf, stop := c.pf, c.pfStop
	c.pf, c.pfStop = nil, nil
	c.mu.Unlock()
	if pf != nil {
		pf.stop(stop)
	}
}

func (c *Coordinator) step(ctx context.Context, p Phase) error {
	switch p {
	case PhaseGettingBackupInfo:
		if err := c.loadBackup(ctx); err != nil {
			return err
		}
		return c.setPhase(PhaseInitiatingBinlogs)
	case PhaseInitiatingBinlogs:
		if err := c.startPrefetch(ctx, false); err != nil {
			return err
		}
		return c.setPhase(PhaseRestoringBasebackup)
	case PhaseRestoringBasebackup:
		return c.restoreBasebackup(ctx)
	case PhaseRefreshingBinlogs:
		if err := c.startServer(ctx); err != nil {
			return err
		}
		if err := c.startPrefetch(ctx, true); err != nil {
			return err
		}
		return c.setPhase(PhaseApplyingBinlogs)
	case PhaseApplyingBinlogs, PhaseWaitingForApply:
		return c.applyBinlogs(ctx)
	case PhaseFinalizing:
		return c.finalize(ctx)
	}
	return &terminalError{PhaseFailed, fmt.Errorf("unknown restore phase %q", p)}
}

// loadBackup reads the backup's manifest and markers, and those of every
// backup of its chain (an incremental needs its full backup and the
// incrementals before it, all completed and not broken, on the same site).
func (c *Coordinator) loadBackup(ctx context.Context) error {
	id := c.State().BackupStreamID
	m, err := c.readMember(ctx, id, id)
	if err != nil {
		return err
	}
	var members []*storage.BasebackupManifest
	for i, rid := range m.RequiredStreams {
		if !m.Incremental {
			break
		}
		rm, err := c.readMember(ctx, rid, id)
		if err != nil {
			return err
		}
		if rm.Incremental != (i > 0) {
			return &terminalError{PhaseFailed, fmt.Errorf("backup %s needs %s as member %d of its chain, but that one is %s",
				id, rid, i+1, map[bool]string{true: "incremental", false: "a full backup"}[rm.Incremental])}
		}
		members = append(members, rm)
	}
	members = append(members, m)
	var total int64
	for _, mm := range members {
		for _, p := range mm.Parts {
			total += p.EncodedSize
		}
	}
	c.mu.Lock()
	c.manifest, c.members = m, members
	c.status.BasebackupBytesTotal = total
	c.status.RestoreChainTotal = len(members)
	c.mu.Unlock()
	return nil
}

// readMember reads the manifest of backup id, which the restore of backup
// of needs: it must be completed and not broken. A member that cannot be
// used fails the restore of of (failed_basebackup: the fallback picks an
// older backup).
func (c *Coordinator) readMember(ctx context.Context, id, of string) (*storage.BasebackupManifest, error) {
	what := "backup " + id
	if id != of {
		what = fmt.Sprintf("backup %s (needed by %s)", id, of)
	}
	ok, err := c.o.Site.Exists(ctx, storage.MarkerKey(id, storage.MarkerCompleted))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if !ok {
		if id != of {
			return nil, c.memberFailed(id, fmt.Errorf("%s on site %s is missing or not completed", what, c.o.Site.Name))
		}
		return nil, &terminalError{PhaseFailed, fmt.Errorf("%s on site %s is not completed", what, c.o.Site.Name)}
	}
	broken, err := c.o.Site.Exists(ctx, storage.MarkerKey(id, storage.MarkerBroken))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	if broken {
		return nil, c.memberFailed(id, fmt.Errorf("%s is marked broken", what))
	}
	data, err := c.o.Site.GetBytes(ctx, storage.BasebackupManifestKey(id))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	var m storage.BasebackupManifest
	if err := storage.UnmarshalManifest(storage.BasebackupManifestKey(id), data, &m); err != nil {
		return nil, c.memberFailed(id, err)
	}
	return &m, nil
}

// memberFailed ends the restore as failed_basebackup because of chain
// member id.
func (c *Coordinator) memberFailed(id string, err error) error {
	if serr := c.update(func(s *State) { s.FailedStream = id }); serr != nil {
		return serr
	}
	return &terminalError{PhaseFailedBasebackup, err}
}

func (c *Coordinator) backup(ctx context.Context) (*storage.BasebackupManifest, error) {
	c.mu.Lock()
	m := c.manifest
	c.mu.Unlock()
	if m != nil {
		return m, nil
	}
	if err := c.loadBackup(ctx); err != nil {
		return nil, err
	}
	return c.manifest, nil
}

// ListChain lists the binlogs that follow a backup: those of its own
// stream from its consistency point, then those of every later stream on
// the site that carry on from there. Overlapping binlogs (the same
// transactions uploaded by two streams) are dropped; a hole is storage.ErrGap.
func ListChain(ctx context.Context, site *storage.Site, m *storage.BasebackupManifest) ([]storage.StoredBinlog, error) {
	return ListChainFrom(ctx, SiteChainSource(site), m)
}

// ChainSource is what ListChainFrom reads: the site's stream ids, whether
// a stream holds a backup (its basebackup.json), and a stream's binlogs.
type ChainSource struct {
	Streams   func(ctx context.Context) ([]string, error)
	HasBackup func(ctx context.Context, streamID string) (bool, error)
	Binlogs   func(ctx context.Context, streamID string) ([]storage.StoredBinlog, error)
}

// SiteChainSource reads a site as it is now.
func SiteChainSource(site *storage.Site) ChainSource {
	return ChainSource{
		Streams: func(ctx context.Context) ([]string, error) {
			var ids []string
			err := site.ListDir(ctx, storage.StreamsPrefix, func(o storage.ObjectInfo, isDir bool) error {
				if isDir {
					ids = append(ids, filepath.Base(o.Key))
				}
				return nil
			})
			return ids, err
		},
		HasBackup: func(ctx context.Context, id string) (bool, error) {
			return site.Exists(ctx, storage.BasebackupManifestKey(id))
		},
		Binlogs: func(ctx context.Context, id string) ([]storage.StoredBinlog, error) {
			return storage.ListStreamBinlogs(ctx, site, id)
		},
	}
}

// ListChainFrom is ListChain over src.
func ListChainFrom(ctx context.Context, src ChainSource, m *storage.BasebackupManifest) ([]storage.StoredBinlog, error) {
	ids, err := src.Streams(ctx)
	if err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	var later []string
	for _, id := range ids {
		if id > m.StreamID {
			later = append(later, id)
		}
	}
	sort.Strings(later)
	state := m.GTIDExecuted
	var chain []storage.StoredBinlog
	for _, id := range append([]string{m.StreamID}, later...) {
		if id != m.StreamID {
			if ok, err := src.HasBackup(ctx, id); err != nil {
				return nil, err
			} else if !ok {
				continue // a backup that never completed has no binlogs
			}
		}
		list, err := src.Binlogs(ctx, id)
		if err != nil {
			return nil, err
		}
		for _, b := range list {
			end := b.End()
			if end.IsSubsetOf(state) {
				continue
			}
			if !b.Manifest.GTIDsBefore.IsSubsetOf(state) {
				if id == m.StreamID || len(chain) == 0 {
					return nil, fmt.Errorf("stream %s binlog %d (%s) starts at %s, past the backup's %s: %w",
						id, b.Ref.RemoteIndex, b.Manifest.LocalName, b.Manifest.GTIDsBefore, state, storage.ErrGap)
				}
				// a later stream that does not continue this history
				// (another server's): stop here
				c := chain[len(chain)-1]
				return chain, fmt.Errorf("stream %s binlog %d (%s) starts at %s, but the chain ends at %s after %s: %w",
					id, b.Ref.RemoteIndex, b.Manifest.LocalName, b.Manifest.GTIDsBefore, state, c.Manifest.LocalName, storage.ErrGap)
			}
			chain = append(chain, b)
			state = state.Union(end)
		}
	}
	return chain, nil
}

// startPrefetch lists the chain and starts downloading what the server
// (or, before the basebackup is restored, the backup) lacks.
func (c *Coordinator) startPrefetch(ctx context.Context, fromServer bool) error {
	m, err := c.backup(ctx)
	if err != nil {
		return err
	}
	chain, err := ListChain(ctx, c.o.Site, m)
	if err != nil {
		return fmt.Errorf("list binlogs to restore: %w", err)
	}
	st := c.State()
	chain, err = needed(chain, c.applyOptions(st))
	if err != nil {
		return &terminalError{PhaseFailed, err}
	}
	executed := m.GTIDExecuted
	if fromServer {
		db, err := c.conn(ctx)
		if err != nil {
			return err
		}
		if executed, err = mysql.DialectOf(m.Flavor).Executed(ctx, db); err != nil {
			return err
		}
	}
	chain = pendingAfter(chain, executed)
	c.stopPrefetch()
	pf := newPrefetcher(c.o.Site, c.o.Keys, filepath.Dir(c.o.RelayPrefix), c.budget(), chain)
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go pf.run(pctx)
	c.mu.Lock()
	c.chain, c.pf, c.pfStop = chain, pf, cancel
	c.status.BinlogsPending = len(chain)
	c.mu.Unlock()
	c.o.Metrics.Gauge("myhoard.restore.pending_binlogs", float64(len(chain)), nil)
	c.log.Info("binlogs to restore", "count", len(chain), "backup", m.StreamID)
	return nil
}

func (c *Coordinator) budget() int64 {
	if c.o.MaxBinlogBytes > 0 {
		return c.o.MaxBinlogBytes
	}
	return 1 << 30
}

func (c *Coordinator) applyOptions(st State) FromStorageOptions {
	o := FromStorageOptions{Site: c.o.Site, Keys: c.o.Keys, RelayPrefix: c.o.RelayPrefix, RelayIndex: c.o.RelayIndex,
		MaxBytes: c.budget(), Parallel: c.o.Parallel, StopGTID: st.Request.TargetGTID, StopTime: st.Request.TargetTime,
		Approximate: st.Request.ApproximateOK, Log: c.log}
	if c.manifest != nil {
		o.Flavor = c.manifest.Flavor
	}
	return o
}

// restoreBasebackup restores the basebackup into the (emptied) data
// directory: four failures make it failed_basebackup, a full disk failed.
func (c *Coordinator) restoreBasebackup(ctx context.Context) error {
	m, err := c.backup(ctx)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running := c.pf != nil
	c.mu.Unlock()
	if !running {
		if err := c.startPrefetch(ctx, false); err != nil {
			return err
		}
	}
	// Anything in the data directory is an earlier attempt's: the restore
	// was accepted only for an empty one.
	if err := c.o.Server.Stop(ctx); err != nil {
		return err
	}
	if err := clearDir(c.o.DataDir); err != nil {
		return err
	}
	c.mu.Lock()
	members := c.members
	c.mu.Unlock()
	err = RestoreChain(ctx, c.o.Site, members, BasebackupOptions{
		Flavor: m.Flavor, DataDir: c.o.DataDir, TempDir: c.o.TempDir, Keys: c.o.Keys, FreeMemoryPercent: c.o.FreeMemoryPercent, Log: c.log,
		Member: func(i, n int, mm *storage.BasebackupManifest) {
			c.mu.Lock()
			c.status.RestoreChainIndex, c.status.RestoreChainTotal = i+1, n
			c.status.CurrentBackupIncremental, c.status.RestoringStream = mm.Incremental, mm.StreamID
			c.status.BasebackupPrepareProgress = nil
			c.mu.Unlock()
			if i > 0 {
				_ = c.setPhase(PhaseRestoringBasebackup)
			}
		},
		Progress: func(d, total int64) {
			c.mu.Lock()
			c.status.BasebackupBytesDownloaded = d
			c.mu.Unlock()
			c.o.Metrics.Gauge("myhoard.restore.basebackup_bytes_downloaded", float64(d), nil)
		},
		Preparing: func() {
			_ = c.setPhase(PhasePreparingBackup)
		},
		PrepareProgress: func(pct float64) {
			c.mu.Lock()
			c.status.BasebackupPrepareProgress = &pct
			c.mu.Unlock()
		},
	})
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		_ = clearDir(c.o.DataDir)
		if isDiskFull(err) {
			c.o.Metrics.Inc("myhoard.disk_full_errors", 1, nil)
			return &terminalError{PhaseFailed, err}
		}
		if errors.Is(err, ErrToolMissing) {
			return err // not the backup's fault: retried, never marked broken
		}
		if serr := c.update(func(s *State) { s.BasebackupErrors++; s.Phase = PhaseRestoringBasebackup }); serr != nil {
			return serr
		}
		if c.State().BasebackupErrors >= 4 {
			c.o.Metrics.Inc("myhoard.basebackup_broken", 1, nil)
			failed := m.StreamID
			var me *MemberError
			if errors.As(err, &me) {
				failed = me.StreamID
			}
			if serr := c.update(func(s *State) { s.FailedStream = failed }); serr != nil {
				return serr
			}
			return &terminalError{PhaseFailedBasebackup, fmt.Errorf("restoring backup %s failed 4 times, last: %w", m.StreamID, err)}
		}
		return err
	}
	c.mu.Lock()
	pct := 100.0
	c.status.BasebackupPrepareProgress = &pct
	c.mu.Unlock()
	return c.update(func(s *State) { s.Phase, s.GTIDStateSet = PhaseRefreshingBinlogs, false })
}

func clearDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("clear data directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("clear data directory %s: %w", dir, err)
		}
	}
	return nil
}

// applyServerID is a server_id that differs from every server id in the
// backup and its binlogs (the SQL thread silently skips its own).
func (c *Coordinator) applyServerID() uint32 {
	st := c.State()
	if st.ApplyServerID != 0 {
		return st.ApplyServerID
	}
	used := map[uint32]bool{}
	add := func(s mysql.GTIDSet) {
		for _, src := range s.Sources() {
			if g, ok := s.Last(src); ok {
				used[g.ServerID] = true
			}
		}
	}
	c.mu.Lock()
	if c.manifest != nil {
		used[c.manifest.ServerID] = true
		add(c.manifest.GTIDExecuted)
	}
	for _, b := range c.chain {
		used[b.Manifest.ServerID] = true
		add(b.Manifest.GTIDsAdded)
		add(b.Manifest.GTIDsBefore)
	}
	c.mu.Unlock()
	id := c.o.ServerID
	if id == 0 {
		id = 1
	}
	for used[id] {
		id = id%0x7FFFFFFF + 1
	}
	_ = c.update(func(s *State) { s.ApplyServerID = id })
	return id
}

// serverOptions are the temporary options of the server while binlogs
// are applied: another server_id, no replica start, no events, relaxed
// durability (a crash during apply is handled by resuming the restore).
func (c *Coordinator) serverOptions() []string {
	var f mysql.Flavor // DialectOf's default until the manifest is read
	if c.manifest != nil {
		f = c.manifest.Flavor
	}
	return ApplyServerOptions(f, c.applyServerID())
}

// ApplyServerOptions are the server's options while binlogs are applied.
// Besides the relaxed durability, the server's own binlog rotates only
// every 1 GiB (the maximum): each rotation stalls the committing SQL thread
// (the old file is synced and a binlog checkpoint waits for InnoDB). The
// configured size is back for new writes after finalize. InnoDB reads
// through the page cache (innodb_flush_method=fsync instead of MariaDB's
// O_DIRECT): the data directory was just written by the restore and is
// mostly cached, and with O_DIRECT each buffer pool miss of the SQL thread
// is a synchronous disk read. (The README's restore section has what
// BenchmarkRestore measured for each.)
func ApplyServerOptions(f mysql.Flavor, serverID uint32) []string {
	return []string{mysql.DialectOf(f).SkipReplicaStart(), "--event-scheduler=OFF", "--server-id=" + strconv.FormatUint(uint64(serverID), 10),
		"--innodb-flush-log-at-trx-commit=2", "--sync-binlog=0", "--relay-log-purge=ON", "--max-binlog-size=1073741824",
		"--innodb-flush-method=fsync"}
}

// DefaultParallel is the number of SQL worker threads by CPU count (0:
// the serial SQL thread). With the apply's relaxed durability a commit
// costs no fsync and the serial SQL thread is CPU-bound: on two cores
// workers only take its CPU (they need cores of their own; the README's
// restore section has the measurements). With cores to spare, workers (as
// many as cores, at most 4) apply independent transactions side by side.
func DefaultParallel() int {
	if n := runtime.NumCPU(); n > 2 {
		return min(4, n)
	}
	return 0
}

func (c *Coordinator) conn(ctx context.Context) (*sql.DB, error) {
	if c.db == nil {
		db, err := mysql.Open(c.o.Conn)
		if err != nil {
			return nil, err
		}
		c.db = db
	}
	if err := c.db.PingContext(ctx); err != nil {
		return nil, fmt.Errorf("restored server %s: %w", c.o.Conn.Where(), err)
	}
	return c.db, nil
}

// startServer makes sure the restored server runs with the apply options
// and has the backup's GTID state.
func (c *Coordinator) startServer(ctx context.Context) error {
	m, err := c.backup(ctx)
	if err != nil {
		return err
	}
	opts := c.serverOptions()
	db, err := c.conn(ctx)
	if err == nil {
		var id uint32
		if err = db.QueryRowContext(ctx, "SELECT @@GLOBAL.server_id").Scan(&id); err == nil && id != c.applyServerID() {
			err = fmt.Errorf("server runs with server_id %d", id)
		}
	}
	if err != nil {
		c.log.Info("starting the restored server", "options", opts, "reason", err)
		if err := c.o.Server.Restart(ctx, opts); err != nil {
			return err
		}
		if db, err = c.conn(ctx); err != nil {
			return err
		}
	}
	st := c.State()
	if st.GTIDStateSet {
		// a restarted daemon: the SQL thread may still be applying the
		// last batch; stop it so that its state is final
		if _, err := db.ExecContext(ctx, mysql.DialectOf(m.Flavor).StopReplica()); err != nil {
			return fmt.Errorf("stop the SQL thread: %w", err)
		}
	} else {
		if err := InitGTIDState(ctx, db, m.Flavor, m.GTIDExecuted); err != nil {
			return err
		}
		if err := c.update(func(s *State) { s.GTIDStateSet = true }); err != nil {
			return err
		}
	}
	// the SQL thread is stopped here: the redo log may be replaced
	return GrowRedoLog(ctx, db, m.Flavor, c.o.DataDir, ApplyRedoLogSize, c.log)
}

// applyBinlogs applies the chain batch by batch; when it is done and the
// target is the latest transaction, it looks once more for binlogs
// uploaded in the meantime.
func (c *Coordinator) applyBinlogs(ctx context.Context) error {
	db, err := c.conn(ctx)
	if err != nil {
		return err
	}
	st := c.State()
	o := c.applyOptions(st)
	o.DB = db
	if o.Parallel == 0 {
		o.Parallel = DefaultParallel()
	}
	c.mu.Lock()
	chain, pf := c.chain, c.pf
	c.mu.Unlock()
	if pf == nil {
		return c.setPhase(PhaseRefreshingBinlogs)
	}
	base := c.State().BinlogsRestored
	o.Batch = func(files, pending int) {
		c.mu.Lock()
		c.status.BinlogsBeingRestored, c.status.BinlogsPending = files, pending
		c.status.Phase = string(PhaseWaitingForApply)
		c.mu.Unlock()
	}
	o.Progress = func(applied, pending int) {
		_ = c.update(func(s *State) { s.BinlogsRestored = base + applied })
		c.mu.Lock()
		c.status.BinlogsPending, c.status.BinlogsBeingRestored = pending, 0
		c.status.Phase = string(PhaseApplyingBinlogs)
		c.mu.Unlock()
		c.o.Metrics.Gauge("myhoard.restore.binlogs_restored", float64(base+applied), nil)
		c.o.Metrics.Gauge("myhoard.restore.pending_binlogs", float64(pending), nil)
	}
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.mu.Lock()
	c.applyCancel = cancel
	c.mu.Unlock()
	if c.o.Hold != nil {
		c.o.Hold(actx)
	}
	_, err = applyChain(actx, chain, o, pf, 0)
	c.mu.Lock()
	c.applyCancel = nil
	c.mu.Unlock()
	if err != nil && c.State().ForceComplete {
		return nil // the loop finalizes
	}
	if err != nil {
		if errors.Is(err, ErrTargetNotFound) {
			return &terminalError{PhaseFailed, err}
		}
		// retry from the server's state, with a fresh listing
		if serr := c.setPhase(PhaseRefreshingBinlogs); serr != nil {
			return serr
		}
		return err
	}
	c.stopPrefetch()
	if st.Request.TargetTime == nil && st.Request.TargetGTID == nil && len(chain) > 0 {
		// binlogs may have arrived while these were applied
		if err := c.startPrefetch(ctx, true); err != nil {
			return err
		}
		c.mu.Lock()
		more := len(c.chain) > 0
		c.mu.Unlock()
		if more {
			return nil
		}
		c.stopPrefetch()
	}
	return c.setPhase(PhaseFinalizing)
}

// finalize drops the replica configuration and restarts the server as
// its config file says.
func (c *Coordinator) finalize(ctx context.Context) error {
	m, err := c.backup(ctx)
	if err != nil {
		return err
	}
	db, err := c.conn(ctx)
	if err == nil {
		if err := mysql.ExecAll(ctx, db, mysql.DialectOf(m.Flavor).ResetReplica()); err != nil {
			return fmt.Errorf("finalize restore: %w", err)
		}
	} else {
		c.log.Warn("restored server not answering before the final restart", "error", err)
	}
	if c.db != nil {
		c.db.Close()
		c.db = nil
	}
	if err := c.o.Server.Restart(ctx, nil); err != nil {
		return fmt.Errorf("finalize restore: %w", err)
	}
	now := time.Now().UTC()
	return c.update(func(s *State) { s.Phase, s.CompletedAt, s.LastError = PhaseCompleted, &now, "" })
}

// ErrCannotForce is returned by ForceComplete outside the binlog phases.
var ErrCannotForce = errors.New("a restore can only be forced to complete while binlogs are applied")

// ForceComplete stops applying binlogs: the restore finalizes with what
// the server has (a forced promotion catches up the rest from storage).
func (c *Coordinator) ForceComplete() error {
	switch p := c.phase(); p {
	case PhaseRefreshingBinlogs, PhaseApplyingBinlogs, PhaseWaitingForApply:
	default:
		return fmt.Errorf("phase %s: %w", p, ErrCannotForce)
	}
	if err := c.update(func(s *State) { s.ForceComplete = true }); err != nil {
		return err
	}
	c.log.Warn("restore forced to complete", "binlogs_restored", c.State().BinlogsRestored)
	c.mu.Lock()
	if c.applyCancel != nil {
		c.applyCancel()
	}
	c.mu.Unlock()
	return nil
}

// Fail ends the restore as failed with a message (the controller found no
// way to go on).
func (c *Coordinator) Fail(msg string) error {
	return c.update(func(s *State) { s.Phase, s.LastError = PhaseFailed, msg })
}

// SwitchBackup starts the restore over from another (older) backup, with
// the same target: its basebackup plus all later binlogs reach the same
// state. The coordinator must not be running.
func (c *Coordinator) SwitchBackup(streamID string) error {
	c.mu.Lock()
	c.manifest, c.members, c.chain = nil, nil, nil
	c.status.BasebackupBytesDownloaded, c.status.BasebackupBytesTotal, c.status.BasebackupPrepareProgress = 0, 0, nil
	c.status.RestoreChainIndex, c.status.RestoreChainTotal, c.status.CurrentBackupIncremental, c.status.RestoringStream = 0, 0, false, ""
	c.mu.Unlock()
	return c.update(func(s *State) {
		s.BackupStreamID, s.Phase, s.BasebackupErrors, s.GTIDStateSet, s.ApplyServerID, s.BinlogsRestored, s.FailedStream =
			streamID, PhaseGettingBackupInfo, 0, false, 0, 0, ""
	})
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
