package mysql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ServerControl starts and stops the database server during a restore
// (start_command, or systemctl with systemd_service).
type ServerControl interface {
	// Restart stops the server if it runs and starts it with the extra
	// options (none: exactly as its config file says), then waits until
	// it answers.
	Restart(ctx context.Context, options []string) error
	// Stop stops the server if it runs.
	Stop(ctx context.Context) error
}

// ReadyFunc tells whether the server answers (nil) or not yet.
type ReadyFunc func(ctx context.Context) error

// PingReady is a ReadyFunc that connects with p and pings.
func PingReady(p ConnParams) ReadyFunc {
	return func(ctx context.Context) error {
		db, err := Open(p)
		if err != nil {
			return err
		}
		defer db.Close()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return db.PingContext(pctx)
	}
}

// CommandControl runs the server from start_command: it is started as its
// own session (it outlives the daemon, so a restart of the daemon never
// stops a restore's server) and found again by its command line.
type CommandControl struct {
	Argv []string
	// LogFile receives the server's stdout and stderr.
	LogFile string
	Ready   ReadyFunc
	// StartTimeout bounds the wait for Ready (default 10 minutes: crash
	// recovery of a big restored server takes a while); StopTimeout the
	// wait for the process to exit after SIGTERM (default 10 minutes).
	StartTimeout, StopTimeout time.Duration
	// KillAfter, when set, sends SIGKILL to a server that has not exited
	// that long after SIGTERM (during a restore a crash is resumed from,
	// while a half-started server may never stop).
	KillAfter time.Duration
}

// FindProcesses returns the pids whose command line starts with argv.
func FindProcesses(argv []string) ([]int, error) {
	return findProcesses(argv, false)
}

// findProcesses returns the pids whose command line starts with argv, or
// with exact, is argv.
func findProcesses(argv []string, exact bool) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", argv[0], err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
		if len(args) < len(argv) || (exact && len(args) != len(argv)) || !alive(pid) {
			continue
		}
		match := true
		for i := range argv {
			if args[i] != argv[i] {
				match = false
				break
			}
		}
		if match {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// alive is false for processes that exited (zombies included).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// Stop sends SIGTERM to every process running start_command and waits for
// them to exit.
func (c *CommandControl) Stop(ctx context.Context) error {
	if len(c.Argv) == 0 {
		return errors.New("stop server: start_command is empty")
	}
	pids, err := FindProcesses(c.Argv)
	if err != nil {
		return err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	timeout := c.StopTimeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	killAt := time.Now().Add(c.KillAfter)
	for _, pid := range pids {
		for alive(pid) {
			if c.KillAfter > 0 && time.Now().After(killAt) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("stop server: %s (pid %d) did not exit within %v of SIGTERM", c.Argv[0], pid, timeout)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("stop server: %w", ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// Restart stops the server and starts start_command plus options (also
// passed as MYSQLD_OPTS in its environment, as the original did).
func (c *CommandControl) Restart(ctx context.Context, options []string) error {
	if c.adoptStarting(ctx, options) {
		return nil
	}
	if err := c.Stop(ctx); err != nil {
		return err
	}
	cmd := exec.Command(c.Argv[0], append(append([]string{}, c.Argv[1:]...), options...)...)
	cmd.Env = append(os.Environ(), "MYSQLD_OPTS="+strings.Join(options, " "))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var logf *os.File
	if c.LogFile != "" {
		f, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return fmt.Errorf("start server: log file: %w", err)
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("start server %s: %w", strings.Join(c.Argv, " "), err)
	}
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait() // reaps the server whenever it exits
		if logf != nil {
			logf.Close()
		}
	}()
	return waitReady(ctx, c.Ready, c.StartTimeout, exited, func() string {
		if c.LogFile == "" {
			return ""
		}
		return tailFile(c.LogFile, 2000)
	})
}

// adoptStarting waits for a server that already runs with exactly these
// options (started by a daemon that was killed before it answered) to
// answer, instead of stopping it half-started; false: there is none, or it
// exited or never answered.
func (c *CommandControl) adoptStarting(ctx context.Context, options []string) bool {
	if c.Ready == nil || len(c.Argv) == 0 {
		return false
	}
	pids, err := findProcesses(append(append([]string{}, c.Argv...), options...), true)
	if err != nil || len(pids) != 1 {
		return false
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for alive(pids[0]) {
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
		exited <- fmt.Errorf("pid %d exited", pids[0])
	}()
	return waitReady(ctx, c.Ready, c.StartTimeout, exited, func() string { return "" }) == nil
}

func waitReady(ctx context.Context, ready ReadyFunc, timeout time.Duration, exited <-chan error, output func() string) error {
	if ready == nil {
		return nil
	}
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	deadline := time.Now().Add(timeout)
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case werr := <-exited:
			return fmt.Errorf("start server: it exited (%v) before answering: %s", werr, output())
		case <-ctx.Done():
			return fmt.Errorf("start server: %w", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("start server: not answering within %v: %w", timeout, err)
		}
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// SystemdControl runs the server as a systemd service: the temporary
// options go into the service's environment through the env update
// command (systemd_env_update_command, `myhoard mysql-env-update`), then
// systemctl restarts the service.
type SystemdControl struct {
	Systemctl []string
	Service   string
	EnvUpdate []string
	Ready     ReadyFunc
	// StartTimeout bounds the wait for Ready after systemctl returned.
	StartTimeout time.Duration
}

func run(ctx context.Context, argv []string) error {
	if len(argv) == 0 {
		return errors.New("empty command")
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(tailString(string(out), 2000)))
	}
	return nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// Restart writes the options into the service environment and restarts it.
func (c *SystemdControl) Restart(ctx context.Context, options []string) error {
	argv := append(append([]string{}, c.EnvUpdate...), "-o", strings.Join(options, " "))
	if err := run(ctx, argv); err != nil {
		return fmt.Errorf("restart server: update its environment: %w", err)
	}
	if err := run(ctx, append(append([]string{}, c.Systemctl...), "restart", c.Service)); err != nil {
		return fmt.Errorf("restart server: %w", err)
	}
	return waitReady(ctx, c.Ready, c.StartTimeout, nil, func() string { return "" })
}

// Stop stops the service.
func (c *SystemdControl) Stop(ctx context.Context) error {
	if err := run(ctx, append(append([]string{}, c.Systemctl...), "stop", c.Service)); err != nil {
		return fmt.Errorf("stop server: %w", err)
	}
	return nil
}

// UpdateEnvironmentFile sets MYSQLD_OPTS in a systemd environment file
// (written atomically); empty options remove the line, so that the server
// starts exactly as its config file says.
func UpdateEnvironmentFile(path, options string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("update %s: %w", path, err)
	}
	var out []string
	for _, line := range strings.Split(string(old), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "MYSQLD_OPTS=") || line == "" {
			continue
		}
		out = append(out, line)
	}
	if options != "" {
		out = append(out, "MYSQLD_OPTS="+strconv.Quote(options))
	}
	data := strings.Join(out, "\n")
	if data != "" {
		data += "\n"
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("update %s: %w", path, err)
	}
	return nil
}

// LegacyEnvOptions maps the original helper's -b/-g flags to options.
func LegacyEnvOptions(withBinlog, withGTIDs bool) string {
	var opts []string
	if !withBinlog {
		opts = append(opts, "--disable-log-bin", "--skip-slave-preserve-commit-order", "--event-scheduler=OFF")
	}
	if !withGTIDs {
		opts = append(opts, "--gtid-mode=OFF")
	}
	return strings.Join(opts, " ")
}
