package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
)

// TestSandbox is `make run` then `make run-restore` as a newcomer runs
// them: the sandbox shows a completed backup within a minute, Ctrl-C
// prints the server's checksums, and the restore sandbox prints the same.
func TestSandbox(t *testing.T) {
	sandbox := filepath.Join(t.TempDir(), "sandbox")
	if out, err := exec.Command("go", "build", "-o", sandbox, "github.com/myhoard/myhoard/e2e/cmd/sandbox").CombinedOutput(); err != nil {
		t.Fatalf("build the sandbox: %v\n%s", err, out)
	}
	dir := harness.ShortTempDir(t)
	p1, _ := harness.FreePort()
	p2, _ := harness.FreePort()

	run := exec.Command(sandbox, "-dir", filepath.Join(dir, "run"), "-myhoard", binary, "-http-port", fmt.Sprint(p1))
	var out lines
	pr, pw := io.Pipe()
	run.Stdout, run.Stderr = pw, pw
	go out.read(pr)
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run.Wait(); pw.Close() }()
	defer func() { _ = run.Process.Kill() }()
	harness.WaitFor(t, "make run to show a completed backup", 60*time.Second, func() (bool, string) {
		return out.has("sandbox: backup completed"), out.String()
	})
	harness.WaitFor(t, "binlogs after the backup", 60*time.Second, func() (bool, string) {
		return out.has("restorable from"), out.String()
	})
	_ = run.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("make run ended with %v:\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("make run did not stop on Ctrl-C:\n%s", out.String())
	}
	want := out.after("sandbox: this server: ")
	if len(want) != 2 {
		t.Fatalf("make run printed no checksums:\n%s", out.String())
	}

	restore := exec.Command(sandbox, "-restore", "-dir", filepath.Join(dir, "restore"), "-backups", filepath.Join(dir, "run", "backups"),
		"-myhoard", binary, "-http-port", fmt.Sprint(p2))
	got, err := restore.CombinedOutput()
	if err != nil {
		t.Fatalf("make run-restore: %v\n%s", err, got)
	}
	var rl lines
	rl.read(strings.NewReader(string(got)))
	if restored := rl.after("sandbox: the restored server: "); fmt.Sprint(restored) != fmt.Sprint(want) {
		t.Errorf("the restore sandbox shows %q, make run showed %q\n%s", restored, want, got)
	}
	_ = os.RemoveAll(dir)
}

// lines collects a process's output lines.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (o *lines) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		o.mu.Lock()
		o.l = append(o.l, sc.Text())
		o.mu.Unlock()
	}
}

func (o *lines) has(s string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, l := range o.l {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// after returns what follows prefix on the lines that start with it.
func (o *lines) after(prefix string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, l := range o.l {
		if rest, ok := strings.CutPrefix(l, prefix); ok {
			out = append(out, rest)
		}
	}
	return out
}

func (o *lines) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.l, "\n")
}
