package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"runtime/debug"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/myhoard/myhoard/api"
	"github.com/myhoard/myhoard/cluster"
	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/metrics"
	"github.com/myhoard/myhoard/node"
	"github.com/myhoard/myhoard/tlsconfig"
)

// daemon runs until SIGTERM or SIGINT (exit 0) and reloads the config on
// SIGHUP; a bad new config is logged and the old one stays in force.
//
// It is long because it is the start-up sequence, each step with its own
// exit on failure.
func daemon(args []string, stderr io.Writer) int {
	f, err := parseFlags("myhoard", args, stderr, true)
	if err != nil {
		return 2
	}
	log, err := newLogger(f, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "myhoard: %v\n", err)
		return 2
	}
	cfg, ok := loadConfig(f.config, stderr)
	if !ok {
		return 1
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	if err := os.MkdirAll(cfg.StateDirectory, 0o750); err != nil {
		log.Error("cannot create state_directory", "path", cfg.StateDirectory, "error", err)
		return 1
	}
	setMemoryLimit(cfg, log)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if f.pprof != "" {
		if _, err := servePprof(ctx, f.pprof, log); err != nil {
			log.Error("cannot serve profiles", "error", err)
			return 2
		}
	}
	ctrl, err := node.New(cfg, log)
	if err != nil {
		log.Error("cannot load the controller state", "error", err)
		return 1
	}
	mx, err := newMetrics(cfg, ctrl, log)
	if err != nil {
		log.Error("cannot set up metrics", "error", err)
		return 1
	}
	ctrl.SetMetrics(mx)
	cn, err := openCluster(ctx, cfg, log)
	if err != nil {
		log.Error("cannot join the cluster", "error", err)
		return 1
	}
	if cn != nil {
		ctrl.SetCluster(cn)
		defer cn.Close()
	}
	handler := api.New(ctrl, log)
	prom := metrics.NewPrometheus(ctrl.PrometheusSnapshot)
	handler.SetMetrics(prom.Handler())
	handler.SetObserver(func(name string, d time.Duration) {
		ctrl.Metrics().Timing("myhoard.http."+name, d, nil)
		prom.ObserveHTTP(name, d)
	})
	if err := setToken(handler, cfg); err != nil {
		log.Error("cannot read the API token", "error", err)
		return 1
	}
	web, err := listenHTTP(cfg, handler, log)
	if err != nil {
		log.Error("cannot serve the HTTP API", "error", err)
		return 1
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := ctrl.Run(ctx); err != nil {
			log.Error("controller stopped", "error", err)
		}
	}()
	log.Info("myhoard started", "version", version, "config", f.config, "http", web.addr, "mode", ctrl.Mode())

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	d := &running{path: f.config, log: log, ctrl: ctrl, cluster: cn, handler: handler, web: web, metrics: mx}
	for sig := range sigs {
		if sig != syscall.SIGHUP {
			log.Info("stopping", "signal", sig.String())
			break
		}
		d.reload()
	}
	cancel()
	d.web.stop()
	wg.Wait()
	d.metrics.Close()
	log.Info("myhoard stopped")
	return 0
}

// running is what a SIGHUP reloads in a running daemon.
type running struct {
	path    string
	log     *slog.Logger
	ctrl    *node.Controller
	cluster *cluster.Node
	handler *api.Server
	web     *httpServer
	metrics *metrics.Metrics
}

// reload reads the config again and puts it in force: the API token, the
// cluster's and the API's certificates, the API's address and timeouts,
// metrics, and the controller's config. A bad new config is logged and the
// old one stays in force; cluster settings wait for a restart.
func (d *running) reload() {
	log := d.log
	newCfg, err := config.Load(d.path)
	if err != nil {
		log.Error("config reload rejected, keeping the old config", "config", d.path, "problems", err.Error())
		return
	}
	for _, w := range newCfg.Warnings() {
		log.Warn(w)
	}
	setMemoryLimit(newCfg, log)
	if err := setToken(d.handler, newCfg); err != nil {
		log.Error("config reload rejected: cannot read the API token, keeping the old config", "error", err)
		return
	}
	if d.cluster != nil {
		if err := d.cluster.ReloadTLS(); err != nil {
			log.Error("config reload: cluster certificates not reloaded, the old ones stay in force", "error", err)
		}
	}
	if addr := httpAddr(newCfg); addr != d.web.addr || !reflect.DeepEqual(newCfg.HTTPTLS, d.web.tlsFiles) || newCfg.HTTPTimeouts != d.web.timeouts {
		moved, err := listenHTTP(newCfg, d.handler, log)
		if err != nil {
			log.Error("config reload: cannot serve the HTTP API on the new address, keeping the old config", "error", err)
			return
		}
		d.web.stop()
		d.web = moved
	} else if d.web.tls != nil {
		if err := d.web.tls.Reload(); err != nil {
			log.Error("config reload: HTTPS certificate not reloaded, the old one stays in force", "error", err)
		}
	}
	if nm, err := newMetrics(newCfg, d.ctrl, log); err != nil {
		log.Error("config reload: metrics settings rejected, keeping the old ones", "error", err)
	} else {
		d.ctrl.SetMetrics(nm)
		d.metrics.Close()
		d.metrics = nm
	}
	if !reflect.DeepEqual(newCfg.Cluster, d.ctrl.Config().Cluster) {
		log.Warn("config reload: cluster settings take effect at the next start of the daemon")
	}
	d.ctrl.Reload(newCfg)
	log.Info("config reloaded", "config", d.path, "http", d.web.addr)
}

type httpServer struct {
	addr     string
	srv      *http.Server
	done     chan struct{}
	log      *slog.Logger
	tls      *tlsconfig.Store // nil: plain HTTP
	tlsFiles config.HTTPTLS
	timeouts config.HTTPTimeouts
}

func httpAddr(cfg *config.Config) string {
	return net.JoinHostPort(cfg.HTTPAddress, strconv.Itoa(cfg.HTTPPort))
}

// setToken puts the config's API token in force ("" without one).
func setToken(h *api.Server, cfg *config.Config) error {
	tok := ""
	if cfg.HTTPAuthTokenFile != "" {
		var err error
		if tok, err = config.ReadToken(cfg.HTTPAuthTokenFile); err != nil {
			return fmt.Errorf("http_auth_token_file: %w", err)
		}
	}
	h.SetToken(tok)
	return nil
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// listenHTTP serves the API: timeouts on every phase of a request (a long
// wait_for_upload extends its own write deadline), a cap on header size,
// HTTPS with http_tls.
func listenHTTP(cfg *config.Config, h http.Handler, log *slog.Logger) (*httpServer, error) {
	addr := httpAddr(cfg)
	t := cfg.HTTPTimeouts
	s := &httpServer{
		addr: addr,
		srv: &http.Server{Handler: h, ReadHeaderTimeout: seconds(t.ReadHeader), ReadTimeout: seconds(t.Read), WriteTimeout: seconds(t.Write),
			IdleTimeout: seconds(t.Idle), MaxHeaderBytes: 64 << 10, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)},
		done:     make(chan struct{}),
		log:      log,
		tlsFiles: cfg.HTTPTLS,
		timeouts: t,
	}
	if cfg.HTTPTLS.Enabled() {
		store, err := tlsconfig.Load(tlsconfig.Files{CertFile: cfg.HTTPTLS.CertFile, KeyFile: cfg.HTTPTLS.KeyFile})
		if err != nil {
			return nil, fmt.Errorf("http_tls: %w", err)
		}
		s.tls = store
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s (http_address, http_port): %w", addr, err)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls.Server())
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server failed", "addr", addr, "error", err)
		}
	}()
	return s, nil
}

func (s *httpServer) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.log.Warn("HTTP shutdown", "addr", s.addr, "error", err)
	}
	<-s.done
}

func newMetrics(cfg *config.Config, ctrl *node.Controller, log *slog.Logger) (*metrics.Metrics, error) {
	o := metrics.Options{Tags: cfg.Statsd.Tags, Mode: ctrl.Mode, Log: log}
	if cfg.Statsd.Host != nil {
		o.Host = *cfg.Statsd.Host
	}
	if cfg.Statsd.Port != nil {
		o.Port = *cfg.Statsd.Port
	}
	if cfg.SentryDSN != nil {
		o.SentryDSN = *cfg.SentryDSN
	}
	return metrics.New(o)
}

// setMemoryLimit puts memory_limit_mb in force as the Go runtime's soft
// memory limit, unless GOMEMLIMIT is set (which wins). Listings and uploads
// allocate much more than they keep (a cold listing of 10,000 manifests
// allocates about 1 GB and keeps about 15 MB); without a limit the heap
// grows to twice what is live between collections, and with garbage made
// that fast, well past it.
func setMemoryLimit(cfg *config.Config, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := int64(math.MaxInt64)
	if cfg.MemoryLimitMB > 0 {
		limit = cfg.MemoryLimitMB << 20
	}
	if old := debug.SetMemoryLimit(limit); old != limit {
		log.Debug("memory limit set", "memory_limit_mb", cfg.MemoryLimitMB)
	}
}
