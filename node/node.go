// Package node is the node controller: it owns the main mode (idle,
// restore, observe, promote, active), the local state files in
// state_directory, the current config, and the scheduling of everything the
// lower packages do.
//
// So far it implements the idle mode: it holds the config, detects the
// database flavor when mysql.flavor is "auto", opens and checks the backup
// sites, and reports its mode. It must
// never serve HTTP itself (package api does) and never be imported by the
// packages below it.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// Mode is a controller main mode.
type Mode string

// The modes of the spec.
const (
	ModeIdle    Mode = "idle"
	ModeRestore Mode = "restore"
	ModeObserve Mode = "observe"
	ModePromote Mode = "promote"
	ModeActive  Mode = "active"
)

// Controller is the node controller.
type Controller struct {
	log *slog.Logger

	mu      sync.Mutex
	cfg     *config.Config
	mode    Mode
	flavor  mysql.Flavor
	version string
	reload  chan struct{}
	sites   map[string]*storage.Site
	stats   *storage.Stats
}

// New makes a controller in idle mode for cfg.
func New(cfg *config.Config, log *slog.Logger) *Controller {
	c := &Controller{log: log, cfg: cfg, mode: ModeIdle, reload: make(chan struct{}, 1), stats: &storage.Stats{}}
	if f, err := mysql.ParseFlavor(cfg.MySQL.Flavor); err == nil && f != mysql.FlavorAuto {
		c.flavor = f
	}
	return c
}

// Mode is the current main mode.
func (c *Controller) Mode() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.mode)
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

// ConnParams converts the config's mysql.client_params.
func ConnParams(cfg *config.Config) mysql.ConnParams {
	cp := cfg.MySQL.ClientParams
	return mysql.ConnParams{
		Host: cp.Host, Port: cp.Port, Socket: cp.Socket, User: cp.User, Password: cp.Password,
		Database: cp.DB, RequireTLS: cp.RequireSSL, CAFile: cp.CAFile,
		Timeout: time.Duration(cp.Timeout * float64(time.Second)),
	}
}

// Run runs the controller until ctx ends. In idle mode it checks the
// database and detects its flavor, retrying with backoff while it is
// unreachable, and again after each reload.
func (c *Controller) Run(ctx context.Context) error {
	defer c.closeSites()
	backoff := time.Second
	for {
		err := c.detectFlavor(ctx)
		if err == nil {
			err = c.openSites(ctx)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.log.Warn("not ready yet", "error", err, "retry_in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			case <-c.reload:
			}
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
		select {
		case <-ctx.Done():
			return nil
		case <-c.reload:
			c.closeSites()
		}
	}
}

// StorageStats are the error counters of every backup site.
func (c *Controller) StorageStats() *storage.Stats { return c.stats }

// openSites opens every backup site of the config and checks it: writable
// sites with a write/read/delete probe, recovery-only sites with a listing
// (they are never written to).
func (c *Controller) openSites(ctx context.Context) error {
	cfg := c.Config()
	sites := map[string]*storage.Site{}
	for name, sc := range cfg.BackupSites {
		s, err := storage.OpenSite(ctx, name, sc.ObjectStorage, storage.SiteOptions{Log: c.log, Stats: c.stats})
		if err == nil {
			if sc.RecoveryOnly {
				err = s.CheckReadOnly(ctx)
			} else {
				err = s.Check(ctx)
			}
			if err != nil {
				s.Close()
			}
		}
		if err != nil {
			for _, o := range sites {
				o.Close()
			}
			return err
		}
		c.log.Info("backup site ready", "site", name, "url", s.URL, "recovery_only", sc.RecoveryOnly)
		sites[name] = s
	}
	c.mu.Lock()
	c.sites = sites
	c.mu.Unlock()
	return nil
}

func (c *Controller) closeSites() {
	c.mu.Lock()
	sites := c.sites
	c.sites = nil
	c.mu.Unlock()
	for _, s := range sites {
		s.Close()
	}
}

func (c *Controller) detectFlavor(ctx context.Context) error {
	params := ConnParams(c.Config())
	db, err := mysql.Open(params)
	if err != nil {
		return err
	}
	defer db.Close()
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	f, version, err := mysql.DetectFlavor(dctx, db)
	if err != nil {
		return fmt.Errorf("%s: %w", params.Where(), err)
	}
	c.mu.Lock()
	configured := c.flavor
	c.flavor, c.version = f, version
	c.mu.Unlock()
	if configured != "" && configured != f {
		c.log.Error("configured mysql.flavor does not match the server", "configured", configured, "server", version)
	}
	c.log.Info("database detected", "flavor", f, "version", version, "server", params.Where())
	return nil
}
