package mysql

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCommandControlRestartAndStop(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "fake-server")
	// The fake server records its arguments and environment, then runs
	// until SIGTERM.
	body := "#!/bin/sh\necho \"args=$* opts=$MYSQLD_OPTS\" >> " + filepath.Join(dir, "calls") + "\nexec sleep 1000\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	ready := func(ctx context.Context) error {
		pids, err := FindProcesses([]string{"sleep", "1000"})
		if err != nil || len(pids) == 0 {
			return errors.New("not yet")
		}
		return nil
	}
	c := &CommandControl{Argv: []string{script, "--defaults-file=x"}, LogFile: filepath.Join(dir, "log"), Ready: ready, StartTimeout: 10 * time.Second}
	ctx := context.Background()
	if err := c.Restart(ctx, []string{"--skip-slave-start", "--server-id=7"}); err != nil {
		t.Fatal(err)
	}
	// exec replaces the shell: the process is found by the sleep command line
	c.Argv = []string{"sleep", "1000"}
	pids, _ := FindProcesses(c.Argv)
	if len(pids) != 1 {
		t.Fatalf("%d servers running, want 1", len(pids))
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if pids, _ := FindProcesses(c.Argv); len(pids) != 0 {
		t.Fatalf("server still running after Stop: %v", pids)
	}
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if want := "args=--defaults-file=x --skip-slave-start --server-id=7 opts=--skip-slave-start --server-id=7\n"; string(calls) != want {
		t.Fatalf("server started as %q, want %q", calls, want)
	}
}

func TestCommandControlServerExitsEarly(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "broken-server")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'mariadbd: unknown option --bogus' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &CommandControl{Argv: []string{script}, LogFile: filepath.Join(dir, "log"),
		Ready: func(context.Context) error { return errors.New("refused") }}
	err := c.Restart(context.Background(), []string{"--bogus"})
	if err == nil || !strings.Contains(err.Error(), "exited") || !strings.Contains(err.Error(), "unknown option --bogus") {
		t.Fatalf("got %v, want an error with the server's output", err)
	}
}

func TestSystemdControl(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	fake := filepath.Join(dir, "fake")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"$*\" >> "+log+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &SystemdControl{Systemctl: []string{fake, "systemctl"}, Service: "mariadb", EnvUpdate: []string{fake, "env", "-f", "/x"}}
	ctx := context.Background()
	if err := c.Restart(ctx, []string{"--skip-slave-start", "--server-id=9"}); err != nil {
		t.Fatal(err)
	}
	if err := c.Restart(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	calls, _ := os.ReadFile(log)
	want := "env -f /x -o --skip-slave-start --server-id=9\nsystemctl restart mariadb\nenv -f /x -o \nsystemctl restart mariadb\nsystemctl stop mariadb\n"
	if string(calls) != want {
		t.Fatalf("calls:\n%s\nwant:\n%s", calls, want)
	}
	c.Systemctl = []string{filepath.Join(dir, "missing-systemctl")}
	if err := c.Stop(ctx); err == nil || !strings.Contains(err.Error(), "missing-systemctl") {
		t.Fatalf("got %v, want an error naming the command", err)
	}
}

func TestUpdateEnvironmentFile(t *testing.T) {
	tests := []struct {
		name, old, options, want string
	}{
		{"new file", "", "--skip-slave-start", "MYSQLD_OPTS=\"--skip-slave-start\"\n"},
		{"replace", "A=1\nMYSQLD_OPTS=\"--x\"\nB=2\n", "--y --z", "A=1\nB=2\nMYSQLD_OPTS=\"--y --z\"\n"},
		{"remove", "A=1\nMYSQLD_OPTS=\"--x\"\n", "", "A=1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "env")
			if tt.old != "" {
				if err := os.WriteFile(path, []byte(tt.old), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := UpdateEnvironmentFile(path, tt.options); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	if err := UpdateEnvironmentFile(filepath.Join(t.TempDir(), "missing", "env"), "--x"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("got %v, want an error naming the file", err)
	}
}

// TestCommandControlAdoptsStartingServer: a server that already runs with
// exactly the requested options (its daemon was killed while it started)
// is waited for, not stopped half-started; one with other options is
// restarted.
func TestCommandControlAdoptsStartingServer(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	// a server binary of its own, so that Stop touches no other process
	srv := filepath.Join(dir, "srv")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(srv, data, 0o755); err != nil {
		t.Fatal(err)
	}
	pre := exec.Command(srv, "1002")
	if err := pre.Start(); err != nil {
		t.Fatal(err)
	}
	go pre.Wait()
	t.Cleanup(func() { _ = pre.Process.Kill() })
	readyAt := time.Now().Add(500 * time.Millisecond) // still starting
	c := &CommandControl{Argv: []string{srv}, Ready: func(context.Context) error {
		if time.Now().Before(readyAt) {
			return errors.New("not yet")
		}
		return nil
	}, StartTimeout: 10 * time.Second, StopTimeout: 10 * time.Second}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })

	if err := c.Restart(ctx, []string{"1002"}); err != nil {
		t.Fatal(err)
	}
	if pids, _ := FindProcesses([]string{srv}); len(pids) != 1 || pids[0] != pre.Process.Pid {
		t.Fatalf("servers %v after Restart with the same options, want the starting one (%d) kept", pids, pre.Process.Pid)
	}
	if err := c.Restart(ctx, []string{"1003"}); err != nil {
		t.Fatal(err)
	}
	pids, _ := FindProcesses([]string{srv})
	if len(pids) != 1 || pids[0] == pre.Process.Pid {
		t.Fatalf("servers %v after Restart with other options, want one new", pids)
	}
	if exact, _ := findProcesses([]string{srv, "1003"}, true); len(exact) != 1 {
		t.Fatalf("the new server does not run with the new options")
	}
}
