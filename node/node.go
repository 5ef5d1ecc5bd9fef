// Package node is the node controller: it owns the main mode (idle,
// restore, observe, promote, active), the local state files in
// state_directory, the current config, and the scheduling of everything the
// lower packages do.
//
// Modes: idle (checks the sites, lists backups; auto_restore in a
// cluster), restore (validated requests, the restore coordinator's
// lifecycle, fallback to an older backup when one fails), observe (follows
// the backups, purges local binlogs whose transactions are in storage),
// promote (catch up from storage, promotion record, continue the stream;
// in a cluster after a Raft compare-and-set on the epoch) and active
// (binlog scanning and upload behind the cluster's writer gate, full
// backups on schedule and on request, stream completion and closing,
// forced rotation, retention and local binlog purge). It also publishes
// this node's state into the cluster view.
//
// The mode changes in one place: changeModeLocked (mode.go) checks every
// change against the transition table, persists it with its state changes
// and rolls back when that fails. The decisions about streams are backup's
// (backup.Streams), the flavour's statements mysql's (mysql.Dialect). The
// controller owns the state and its lock and keeps the order of each
// mode's tick; the work is the lower packages' (active mode's backup work
// is backup.Archiver, a restore restore.Job, a promotion's database steps
// backup.Takeover, the backup listing backup.Catalog). It must never serve
// HTTP itself (package api does) and never be imported by the packages
// below it.
package node

import (
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/drill"
	"github.com/myhoard/myhoard/failpoint"
	"github.com/myhoard/myhoard/metrics"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/restore"
	"github.com/myhoard/myhoard/statefile"
	"github.com/myhoard/myhoard/storage"
)

// Timing knobs; tests shorten them.
type Timing struct {
	Loop          time.Duration // controller tick
	ActiveLoop    time.Duration // tick in active mode: how soon a new binlog is noticed
	BackupRefresh time.Duration // backup list refresh
}

// DefaultTiming is used by the daemon.
var DefaultTiming = Timing{Loop: time.Second, ActiveLoop: 200 * time.Millisecond, BackupRefresh: 120 * time.Second}

// Controller is the node controller.
type Controller struct {
	log    *slog.Logger
	timing Timing

	mode    atomic.Value // Mode, mirrored from state.Mode for lock-free reads
	mu      sync.Mutex
	cfg     *config.Config
	state   controllerState
	flavor  mysql.Flavor
	version string
	reload  chan struct{}
	wake    chan struct{}

	// catalog holds the open sites, keys and the cached backup listing
	// (its own lock).
	catalog *backup.Catalog
	// owned by the Run goroutine (read under mu by API methods)
	stats   *storage.Stats
	cache   *storage.ObjectCache // under mu
	db      *sql.DB
	scanner *backup.Scanner
	// archiver does active mode's backup work
	archiver  *backup.Archiver
	lastError string
	metrics   *metrics.Metrics

	restoreJob    *restore.Job
	reloadPending bool

	// killAt and holdAt are the failpoints a test asked for.
	killAt, holdAt failpoint.Set

	cluster    *cluster.Node
	publishing atomic.Bool

	// verifying: a check of the backups runs; verifyAsked: one was
	// requested (deep or not) for the next tick.
	verifying   atomic.Bool
	verifyAsked *bool
	// drilling is the restore drill running (nil: none); drillAsked: one
	// was requested for the next tick.
	drilling   atomic.Pointer[drill.Drill]
	drillAsked bool
}

// SetMetrics sets where metrics and unexpected errors go.
func (c *Controller) SetMetrics(m *metrics.Metrics) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.metrics = m
}

// Metrics is where the controller's metrics go (nil: nowhere).
func (c *Controller) Metrics() *metrics.Metrics { return c.m() }

func (c *Controller) m() *metrics.Metrics {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.metrics
}

// New makes a controller for cfg. Its mode is the persisted one (idle for
// a new node).
func New(cfg *config.Config, log *slog.Logger) (*Controller, error) {
	c := &Controller{log: log, cfg: cfg, timing: DefaultTiming, reload: make(chan struct{}, 1), wake: make(chan struct{}, 1),
		stats: &storage.Stats{}, killAt: failpoint.FromEnv(), holdAt: failpoint.HoldsFromEnv(), catalog: backup.NewCatalog(log)}
	c.archiver = &backup.Archiver{Log: log, Catalog: c.catalog, Owner: archiverOwner{c}, Failpoint: func(name string) { c.killAt.Hit(name, log) }}
	c.state.Mode = ModeIdle
	if _, err := statefile.Load(c.statePath(), &c.state); err != nil {
		return nil, err
	}
	if c.state.Epoch == 0 {
		c.state.Epoch = 1
	}
	c.mode.Store(c.state.Mode)
	if f, err := mysql.ParseFlavor(cfg.MySQL.Flavor); err == nil && f != mysql.FlavorAuto {
		c.flavor = f
	}
	return c, nil
}

// SetTiming changes the controller's intervals (tests).
func (c *Controller) SetTiming(t Timing) { c.timing = t }

func (c *Controller) statePath() string {
	return filepath.Join(c.cfg.StateDirectory, "myhoard_controller_state.json")
}

// saveLocked persists the state; c.mu must be held.
func (c *Controller) saveLocked() error {
	return statefile.Save(c.statePath(), &c.state)
}

// Mode is the current main mode.
//
// It never takes the controller's lock (metrics tag every data point with
// the mode, also from code that holds the lock).
func (c *Controller) Mode() string {
	if m, ok := c.mode.Load().(Mode); ok {
		return string(m)
	}
	return string(ModeIdle)
}

// Flavor is the database flavor: configured, or detected ("" until known).
func (c *Controller) Flavor() mysql.Flavor {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flavor
}

// Config is the config in force.
func (c *Controller) Config() *config.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg
}

// Reload puts a new, already validated config in force.
func (c *Controller) Reload(cfg *config.Config) {
	c.mu.Lock()
	c.cfg = cfg
	if f, err := mysql.ParseFlavor(cfg.MySQL.Flavor); err == nil && f != mysql.FlavorAuto {
		c.flavor = f
	}
	c.mu.Unlock()
	select {
	case c.reload <- struct{}{}:
	default:
	}
}

func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// ConnParams converts the config's mysql.client_params.
func ConnParams(cfg *config.Config) mysql.ConnParams {
	cp := cfg.MySQL.ClientParams
	return mysql.ConnParams{
		Host: cp.Host, Port: cp.Port, Socket: cp.Socket, User: cp.User, Password: cp.Password,
		Database: cp.DB, RequireTLS: cp.RequireSSL, CAFile: cp.CAFile,
		Timeout: time.Duration(cp.Timeout * float64(time.Second)),
	}
}

// StorageStats are the error counters of every backup site.
func (c *Controller) StorageStats() *storage.Stats { return c.stats }

// Run runs the controller until ctx ends. The backup sites are needed for
// everything; the database only for active mode, so an idle node with no
// running database (a new node waiting for a restore) still lists backups.
func (c *Controller) Run(ctx context.Context) error {
	defer c.shutdown()
	backoff := time.Second
	dbFailures := 0
	for {
		if !c.catalog.Ready() {
			if err := c.openSites(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				c.log.Warn("backup sites not ready yet", "error", err, "retry_in", backoff)
				if !c.sleep(ctx, backoff) {
					return nil
				}
				backoff = min(backoff*2, 30*time.Second)
				continue
			}
			backoff = time.Second
		}
		if !c.dbReady() && Mode(c.Mode()) != ModeRestore { // the restore owns the server
			if err := c.connectDB(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				dbFailures++
				if dbFailures == 1 || dbFailures%30 == 0 {
					c.log.Warn("database not ready yet", "error", err)
				}
				if Mode(c.Mode()) == ModeActive {
					if !c.sleep(ctx, min(time.Duration(dbFailures)*time.Second, 30*time.Second)) {
						return nil
					}
					continue
				}
			} else {
				dbFailures = 0
			}
		}
		err := c.followCluster(ctx)
		if err == nil {
			err = c.tick(ctx)
		}
		// publishing waits for the Raft leader: never on the loop
		if c.publishing.CompareAndSwap(false, true) {
			go func() {
				defer c.publishing.Store(false)
				c.publishState(ctx)
			}()
		}
		c.m().Cumulative("myhoard.remote_read_errors", c.stats.ReadErrors.Load())
		c.m().Cumulative("myhoard.remote_write_errors", c.stats.WriteErrors.Load())
		c.m().Cumulative("myhoard.storage.read_requests", c.stats.Reads.Load())
		c.m().Cumulative("myhoard.storage.cache_hits", c.stats.CacheHits.Load())
		if err != nil && ctx.Err() == nil {
			c.log.Error("controller iteration failed", "mode", c.Mode(), "error", err)
			c.m().Error("controller", err)
			switch {
			case errors.Is(err, syscall.ENOSPC):
				c.m().Inc("myhoard.disk_full_errors", 1, nil)
			case isNetworkError(err):
				c.m().Inc("myhoard.network_errors", 1, nil)
			}
			c.mu.Lock()
			c.lastError = err.Error()
			c.mu.Unlock()
		}
		wait := c.timing.Loop
		if Mode(c.Mode()) == ModeActive {
			wait = c.timing.ActiveLoop
		}
		if !c.sleep(ctx, wait) {
			return nil
		}
	}
}

// isNetworkError tells connection-level failures (to the database or to
// storage) from others.
func isNetworkError(err error) bool {
	var ne net.Error
	var oe *net.OpError
	return errors.As(err, &ne) || errors.As(err, &oe) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// sleep waits d, a wake-up or a reload; false when ctx ended.
func (c *Controller) sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
	case <-c.wake:
	case <-c.reload:
		if c.restoringBasebackup() {
			// as the original: a reload would restart the basebackup
			// restore from scratch, so it waits for the phase to end
			c.log.Info("config reload postponed until the basebackup is restored")
			c.mu.Lock()
			c.reloadPending = true
			c.mu.Unlock()
			return true
		}
		c.shutdown() // reopen sites and the database with the new config
	}
	c.mu.Lock()
	pending := c.reloadPending
	c.mu.Unlock()
	if pending && !c.restoringBasebackup() {
		c.mu.Lock()
		c.reloadPending = false
		c.mu.Unlock()
		c.shutdown()
	}
	return true
}

// restoringBasebackup is true while a restore is in its basebackup phases.
func (c *Controller) restoringBasebackup() bool {
	c.mu.Lock()
	job := c.restoreJob
	c.mu.Unlock()
	return job != nil && job.InBasebackup()
}

func (c *Controller) dbReady() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.db != nil
}

// connectDB connects to the database, detects its flavor and opens the
// binlog scanner.
func (c *Controller) connectDB(ctx context.Context) error {
	cfg := c.Config()
	params := ConnParams(cfg)
	db, server, err := mysql.Connect(ctx, params)
	if err != nil {
		return err
	}
	f, version, uuid := server.Flavor, server.Version, server.UUID
	c.mu.Lock()
	configured := c.flavor
	c.mu.Unlock()
	if configured != "" && configured != f {
		c.log.Error("configured mysql.flavor does not match the server", "configured", configured, "server", version)
	}
	scanner, err := backup.NewScanner(cfg.MySQL.BinlogPrefix, f, filepath.Join(cfg.StateDirectory, "binlog_scanner_state.json"), c.log)
	if err != nil {
		db.Close()
		return err
	}
	c.log.Info("database detected", "flavor", f, "version", version, "server", params.Where())
	c.mu.Lock()
	c.flavor, c.version, c.db, c.scanner = f, version, db, scanner
	if uuid != "" {
		c.state.ServerUUID = uuid
	}
	c.mu.Unlock()
	if cn := c.clusterNode(); cn != nil {
		cn.SetMeta(uint32(cfg.ServerID), uuid, string(f))
	}
	return nil
}

// openSites opens and checks every backup site and loads the encryption
// keys (storage.OpenSites).
func (c *Controller) openSites(ctx context.Context) error {
	cfg := c.Config()
	sites, keys, err := storage.OpenSites(ctx, cfg.BackupSites, storage.SiteOptions{Log: c.log, Stats: c.stats,
		Cache: c.objectCache(cfg), ReadConcurrency: cfg.StorageReadConcurrency})
	if err != nil {
		return err
	}
	c.catalog.Open(sites, keys)
	return nil
}

// objectCache opens the object cache under the state directory on first
// use (nil: disabled, or it cannot be opened, which is logged: the
// daemon works without it).
func (c *Controller) objectCache(cfg *config.Config) *storage.ObjectCache {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cache != nil || cfg.ObjectCacheMaxMB <= 0 {
		return c.cache
	}
	cache, err := storage.OpenObjectCache(filepath.Join(cfg.StateDirectory, "object-cache"), cfg.ObjectCacheMaxMB<<20, c.log)
	if err != nil {
		c.log.Warn("working without the object cache", "error", err)
		return nil
	}
	c.cache = cache
	return cache
}

func (c *Controller) shutdown() {
	c.mu.Lock()
	c.stopRestoreLocked()
	db := c.db
	c.db = nil
	cache := c.cache
	c.cache = nil
	c.mu.Unlock()
	c.catalog.Close()
	if cache != nil {
		cache.Close()
	}
	if db != nil {
		db.Close()
	}
}

func (c *Controller) tick(ctx context.Context) error {
	if c.catalog.Ready() {
		c.verifyDue(ctx)
		c.drillDue(ctx)
	}
	switch Mode(c.Mode()) {
	case ModeActive:
		return c.activeTick(ctx)
	case ModeRestore:
		return c.restoreTick(ctx)
	case ModeObserve:
		if err := c.startReplication(ctx); err != nil {
			return err
		}
		return c.observeTick(ctx)
	case ModePromote:
		return c.promoteTick(ctx)
	default:
		if err := c.refreshBackups(ctx, false); err != nil {
			return err
		}
		return c.autoRestore(ctx)
	}
}

// refreshBackups lists the backups of every site when the cached listing
// is older than the refresh interval (or force).
func (c *Controller) refreshBackups(ctx context.Context, force bool) error {
	maxAge := c.timing.BackupRefresh
	if force {
		maxAge = 0
	}
	if err := c.catalog.Refresh(ctx, maxAge); err != nil {
		return err
	}
	c.m().Gauge("myhoard.backup_list.unreadable_objects", float64(c.catalog.Unreadable()), nil)
	return nil
}

// Backups returns the cached backup list (nil before the first listing).
func (c *Controller) Backups() []backup.BackupInfo { return c.withVerify(c.catalog.Backups()) }
