// Package e2e holds myhoard's end-to-end tests: the real myhoard binary,
// real MariaDB servers (package harness), real HTTP.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myhoard/myhoard/client"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/tlsconfig/tlstest"
	"github.com/myhoard/myhoard/wire"
)

// binary is the myhoard binary built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "myhoard-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "myhoard")
	args := []string{"build", "-o", binary}
	if os.Getenv("MYHOARD_E2E_RACE") != "" {
		args = append(args, "-race") // the daemon under the race detector
		if os.Getenv("GORACE") == "" {
			os.Setenv("GORACE", "halt_on_error=1") // a race fails the test that hit it
		}
	}
	build := exec.Command("go", append(args, "github.com/myhoard/myhoard/cmd/myhoard")...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build myhoard:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output for assertions while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// daemonConfig is a valid config for a daemon next to instance in (nil: a
// database that is not there).
func daemonConfig(t testing.TB, dir string, port int, in *harness.Instance) map[string]any {
	t.Helper()
	mysql := map[string]any{"flavor": "auto", "client_params": map[string]any{"host": "127.0.0.1", "port": 1, "user": "root"}}
	if in != nil {
		mysql = in.MyhoardMySQLConfig()
	}
	return map[string]any{
		"http_address":    "127.0.0.1",
		"http_port":       port,
		"server_id":       101,
		"state_directory": filepath.Join(dir, "state"),
		"start_command":   []any{"/usr/sbin/mariadbd", "--defaults-file=/dev/null"},
		"mysql":           mysql,
		"backup_sites": map[string]any{
			"default": map[string]any{"object_storage": map[string]any{"storage_type": "local", "directory": filepath.Join(dir, "backups")}},
		},
	}
}

func writeJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// apiClient is a typed client of the daemon at url, for polls (short
// timeout).
func apiClient(url string) *client.Client {
	c := client.New(url)
	c.HTTP.Timeout = 5 * time.Second
	return c
}

// setMode is PUT /status on the daemon at url; it fails the test when
// refused.
func setMode(t testing.TB, url string, r wire.ModeRequest) wire.Status {
	t.Helper()
	st, err := client.New(url).SetMode(context.Background(), r)
	if err != nil {
		t.Fatalf("PUT /status %+v on %s: %v", r, url, err)
	}
	return st
}

// statusOf is GET /status of the daemon at url.
func statusOf(url string) (wire.Status, error) { return apiClient(url).Status(context.Background()) }

type daemonProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

func startDaemon(t testing.TB, args ...string) *daemonProc {
	t.Helper()
	return startDaemonEnv(t, nil, args...)
}

// startDaemonEnv starts the daemon with extra environment variables.
func startDaemonEnv(t testing.TB, env []string, args ...string) *daemonProc {
	t.Helper()
	return startProcess(t, env, append([]string{binary}, args...))
}

// startProcess runs argv (the daemon, possibly behind a wrapper such as
// ip netns exec) and collects its output.
func startProcess(t testing.TB, env []string, argv []string) *daemonProc {
	t.Helper()
	d := &daemonProc{out: &syncBuffer{}, done: make(chan error, 1)}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Env = append(os.Environ(), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		_ = d.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("daemon output:\n%s", d.out)
		}
	})
	return d
}

func (d *daemonProc) wait(t testing.TB, timeout time.Duration) (int, error) {
	t.Helper()
	select {
	case err := <-d.done:
		if err == nil {
			return 0, nil
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), nil
		}
		return -1, err
	case <-time.After(timeout):
		return -1, fmt.Errorf("daemon did not exit within %v; output:\n%s", timeout, d.out)
	}
}

func waitStatus(t testing.TB, d *daemonProc, port int) {
	t.Helper()
	harness.WaitFor(t, "GET /status", 20*time.Second, func() (bool, string) {
		st, err := statusOf(fmt.Sprintf("http://127.0.0.1:%d", port))
		if err != nil {
			return false, err.Error() + "\n" + d.out.String()
		}
		return st.Mode == "idle", fmt.Sprint(st)
	})
}

func TestDaemonLifecycle(t *testing.T) {
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "myhoard.json")
	cfg := daemonConfig(t, dir, port, in)
	writeJSON(t, cfgPath, cfg)

	d := startDaemon(t, "--config", cfgPath)
	waitStatus(t, d, port)

	err = apiClient(fmt.Sprintf("http://127.0.0.1:%d", port)).Do(context.Background(), "GET", "/no/such/thing", nil, nil)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 404 || !strings.Contains(apiErr.Message, "no such endpoint") {
		t.Errorf("unknown path: %v", err)
	}
	harness.WaitFor(t, "flavor detection in the log", 20*time.Second, func() (bool, string) {
		out := d.out.String()
		return strings.Contains(out, "database detected") && strings.Contains(out, "flavor=mariadb"), out
	})
	harness.WaitFor(t, "the backup site check in the log", 20*time.Second, func() (bool, string) {
		out := d.out.String()
		return strings.Contains(out, "backup site ready") && strings.Contains(out, "site=default"), out
	})
	if st, err := os.Stat(filepath.Join(dir, "state")); err != nil || !st.IsDir() {
		t.Errorf("state_directory not created: %v", err)
	}

	// A bad config on SIGHUP is rejected and logged; the daemon keeps
	// serving with the old one.
	bad := daemonConfig(t, dir, port, in)
	bad["sever_id"] = 7
	writeJSON(t, cfgPath, bad)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "reload rejection in the log", 10*time.Second, func() (bool, string) {
		out := d.out.String()
		return strings.Contains(out, "config reload rejected") && strings.Contains(out, `sever_id: unknown key (did you mean \"server_id\"?)`), out
	})
	if _, err := statusOf(fmt.Sprintf("http://127.0.0.1:%d", port)); err != nil {
		t.Fatalf("after a rejected reload: %v", err)
	}

	// A good config that moves the HTTP port is applied.
	port2, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	good := daemonConfig(t, dir, port2, in)
	writeJSON(t, cfgPath, good)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, d, port2)
	if _, err := statusOf(fmt.Sprintf("http://127.0.0.1:%d", port)); err == nil {
		t.Errorf("old port %d still answers after the reload", port)
	}

	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code, err := d.wait(t, 20*time.Second)
	if err != nil || code != 0 {
		t.Fatalf("exit code %d (%v) after SIGTERM; output:\n%s", code, err, d.out)
	}
}

func TestDaemonWithoutDatabaseStillServes(t *testing.T) {
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "myhoard.json")
	writeJSON(t, cfgPath, daemonConfig(t, dir, port, nil))
	d := startDaemon(t, "--config", cfgPath)
	waitStatus(t, d, port)
	harness.WaitFor(t, "a clear database error in the log", 10*time.Second, func() (bool, string) {
		out := d.out.String()
		return strings.Contains(out, "not ready yet") && strings.Contains(out, "127.0.0.1:1"), out
	})
	// Backups are listed all the same (a new node waiting for a restore
	// has no running database).
	harness.WaitFor(t, "GET /backup to list without a database", 10*time.Second, func() (bool, string) {
		list, err := apiClient(fmt.Sprintf("http://127.0.0.1:%d", port)).Backups(context.Background(), "")
		return err == nil && list != nil && len(list) == 0, fmt.Sprint(list, err)
	})
	_ = d.cmd.Process.Signal(syscall.SIGINT)
	if code, err := d.wait(t, 20*time.Second); err != nil || code != 0 {
		t.Fatalf("exit code %d (%v) after SIGINT", code, err)
	}
}

func runCLI(t *testing.T, env []string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), binary, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func TestCheckConfigCLI(t *testing.T) {
	dir := t.TempDir()
	example := tlstest.WithClusterCerts(t, "../deploy/myhoard.example.json", dir)
	bad := filepath.Join(dir, "bad.json")
	cfg := daemonConfig(t, dir, 16001, nil)
	cfg["backup_setings"] = map[string]any{}
	cfg["server_id"] = 0
	writeJSON(t, bad, cfg)

	tests := []struct {
		name       string
		env, args  []string
		code       int
		stdout     []string
		stderr     []string
		stderrLine int // expected number of stderr lines (0: not checked)
	}{
		{name: "example is valid", args: []string{"check-config", "--config", example}, code: 0,
			stdout: []string{"valid", "site default: file:///var/lib/myhoard/backups"}},
		{name: "MYHOARD_CONFIG names the file", env: []string{"MYHOARD_CONFIG=" + example}, args: []string{"check-config"}, code: 0,
			stdout: []string{"valid"}},
		{name: "bad config lists every problem", args: []string{"check-config", "--config", bad}, code: 1,
			stderr:     []string{bad + `: backup_setings: unknown key (did you mean "backup_settings"?)`, bad + ": server_id: must be in 1..2147483647"},
			stderrLine: 2},
		{name: "daemon refuses a bad config with the same messages", args: []string{"--config", bad}, code: 1,
			stderr:     []string{bad + `: backup_setings: unknown key (did you mean "backup_settings"?)`, bad + ": server_id: must be in 1..2147483647"},
			stderrLine: 2},
		{name: "missing file", args: []string{"check-config", "--config", filepath.Join(dir, "nope.json")}, code: 1,
			stderr: []string{"nope.json", "no such file"}},
		{name: "no config at all", env: []string{"MYHOARD_CONFIG="}, args: []string{"check-config"}, code: 2,
			stderr: []string{"pass --config FILE or set MYHOARD_CONFIG"}},
		{name: "version", args: []string{"version"}, code: 0, stdout: []string{"myhoard "}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`}},
		{name: "client without a daemon", args: []string{"status", "--url", "http://127.0.0.1:1"}, code: 1, stderr: []string{"cannot reach the myhoard daemon"}},
		{name: "bad log level", args: []string{"--config", example, "--log-level", "loud"}, code: 2, stderr: []string{"--log-level"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.env, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n") + 1; tc.stderrLine > 0 && n != tc.stderrLine {
				t.Errorf("stderr has %d lines, want %d:\n%s", n, tc.stderrLine, stderr)
			}
		})
	}
}
