package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
)

// TestDrill: restore drills on real daemons: one passes and is listed
// with its numbers; one of a corrupted backup fails and says so, without
// touching the live server's data directory or marking the backup
// broken; one on a full scratch disk fails naming the directory.
func TestDrill(t *testing.T) {
	s := newActiveSetup(t)
	drillPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	drillCfg := func(dir string) map[string]any {
		return map[string]any{"directory": dir, "port": drillPort}
	}
	cfg := daemonConfig(t, s.dir, s.port, s.in)
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 2}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	cfg["restore_drill"] = drillCfg(filepath.Join(harness.ShortTempDir(t), "drill"))
	writeJSON(t, s.cfgPath, cfg)
	db := harness.OpenDB(t, s.in)
	load, err := harness.NewLoadGen(context.Background(), db, 11)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(context.Background(), 300); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	b := waitCompletedBackup(t, s.url)
	if err := load.WriteTransactions(context.Background(), 300); err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("rotate: %d %v", code, body)
	}
	var gtid string
	if err := db.QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		t.Fatal(err)
	}

	t.Run("passes and is listed", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, nil, "drill", "--url", s.url, "--interval", "200ms")
		if code != 0 || !strings.Contains(stdout, "restore drill passed: backup "+b.StreamID+" restored to "+gtid) {
			t.Fatalf("myhoard drill: exit %d\n%s%s\n%s", code, stdout, stderr, d.out)
		}
		list, err := apiClient(s.url).BackupList(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		r := list.LastDrill
		if r == nil || !r.OK || r.StreamID != b.StreamID || r.TargetGTID != gtid || r.RestoreSeconds <= 0 || r.Bytes <= 0 || r.TablesChecked < 2 {
			t.Errorf("GET /backup last_drill = %+v", r)
		}
		if entries, _ := os.ReadDir(cfg["restore_drill"].(map[string]any)["directory"].(string)); len(entries) != 0 {
			t.Errorf("the drill left %d entries in its directory", len(entries))
		}
		resp, err := http.Get(s.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"myhoard_drill_last_ok 1", "myhoard_drill_last_success_timestamp_seconds "} {
			if !strings.Contains(string(body), want) {
				t.Errorf("GET /metrics lacks %q", want)
			}
		}
	})

	// A node whose live server is stopped (its data directory cannot
	// change by itself) drills a corrupted copy of the storage.
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(t, 10*time.Second)
	if err := s.in.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	drillNode := func(t *testing.T, storageDir, drillDir string) string {
		t.Helper()
		port, _ := harness.FreePort()
		c := daemonConfig(t, t.TempDir(), port, s.in)
		c["backup_sites"] = map[string]any{"default": map[string]any{"object_storage": map[string]any{"storage_type": "local", "directory": storageDir}}}
		c["restore_drill"] = drillCfg(drillDir)
		path := filepath.Join(t.TempDir(), "myhoard.json")
		writeJSON(t, path, c)
		nd := startDaemon(t, "--config", path)
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		harness.WaitFor(t, "the daemon lists the backups", 20*time.Second, func() (bool, string) {
			list, err := apiClient(url).Backups(context.Background(), "")
			return err == nil && len(list) == 1, fmt.Sprint(list, err)
		})
		code, stdout, stderr := runCLI(t, nil, "drill", "--url", url, "--interval", "200ms")
		if code != 1 || !strings.Contains(stdout, "restore drill FAILED (backup "+b.StreamID+")") {
			t.Errorf("myhoard drill: exit %d, want 1 with the failure\n%s%s\n%s", code, stdout, stderr, nd.out)
		}
		return stdout
	}
	t.Run("a corrupted backup fails and touches nothing live", func(t *testing.T) {
		before := treeHash(t, s.in.DataDir)
		copyDir := corruptedCopy(t, s.backups, b.StreamID)
		out := drillNode(t, copyDir, filepath.Join(harness.ShortTempDir(t), "drill"))
		if after := treeHash(t, s.in.DataDir); after != before {
			t.Errorf("the live data directory changed during the drill")
		}
		if _, err := os.Stat(filepath.Join(copyDir, "streams", b.StreamID, "broken.json")); err == nil {
			t.Errorf("a failed drill marked the backup broken")
		}
		t.Logf("%s", out)
	})
	t.Run("a full scratch disk", func(t *testing.T) {
		dir := filepath.Join(harness.ShortTempDir(t), "small")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Fatalf("mount a 1 MiB tmpfs (the test needs root): %v %s", err, out)
		}
		defer func() { _ = exec.Command("umount", dir).Run() }()
		out := drillNode(t, s.backups, dir)
		if !strings.Contains(out, "not enough disk for a restore drill") || !strings.Contains(out, dir) {
			t.Errorf("the failure does not name the full directory:\n%s", out)
		}
	})
}

// treeHash hashes every file's path and content under dir.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		fmt.Fprintf(h, "%s\n", p)
		_, err = io.Copy(h, f)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
