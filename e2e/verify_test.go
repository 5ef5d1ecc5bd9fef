package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/storage/storagetest"
)

// TestVerify: myhoard verify on a repository a real daemon wrote: clean,
// then each kind of damage found and named (deep where only decoding
// shows it), exit 1; storage it cannot read is exit 2.
func TestVerify(t *testing.T) {
	s := newActiveSetup(t)
	pub, priv := storagetest.KeyPEM(t)
	site := func(dir string) map[string]any {
		return map[string]any{"default": map[string]any{
			"encryption_keys": map[string]any{"public": pub, "private": priv},
			"object_storage":  map[string]any{"storage_type": "local", "directory": dir},
		}}
	}
	cfg := daemonConfig(t, s.dir, s.port, s.in)
	cfg["backup_sites"] = site(s.backups)
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 3600}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	writeJSON(t, s.cfgPath, cfg)
	db := harness.OpenDB(t, s.in)
	load, err := harness.NewLoadGen(context.Background(), db, 9)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	b := waitCompletedBackup(t, s.url)
	for i := 0; i < 4; i++ {
		if err := load.WriteTransactions(context.Background(), 50); err != nil {
			t.Fatal(err)
		}
		if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
			t.Fatalf("rotate: %d %v", code, body)
		}
	}
	// a second backup after some transactions in the current binlog: the
	// first backup's window then ends where the second one starts
	if err := load.WriteTransactions(context.Background(), 20); err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "basebackup"}); code != 200 {
		t.Fatalf("request a backup: %d %v", code, body)
	}
	harness.WaitFor(t, "the second backup completed and the first closed", 90*time.Second, func() (bool, string) {
		list := listBackups(t, s.url)
		return len(list) == 2 && list[1].CompletedAt != nil && list[0].ClosedAt != nil, fmt.Sprint(list)
	})
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(t, 10*time.Second)
	manifests, _ := readManifests(t, openFileSite(t, s.backups))
	binlogs := manifests[b.StreamID]
	if len(binlogs) < 4 {
		t.Fatalf("only %d binlogs stored", len(binlogs))
	}
	ref := func(i int) storage.BinlogRef { return binlogs[i].Ref() }

	// verify runs the CLI on a copy of the storage damaged by damage.
	verify := func(t *testing.T, damage func(dir string), deep bool) (int, string) {
		t.Helper()
		dir := filepath.Join(t.TempDir(), "backups")
		if out, err := exec.Command("cp", "-a", s.backups, dir).CombinedOutput(); err != nil {
			t.Fatalf("copy storage: %v %s", err, out)
		}
		damage(dir)
		c := daemonConfig(t, t.TempDir(), s.port, s.in)
		c["backup_sites"] = site(dir)
		path := filepath.Join(t.TempDir(), "myhoard.json")
		writeJSON(t, path, c)
		args := []string{"verify", "--config", path}
		if deep {
			args = append(args, "--deep")
		}
		code, stdout, stderr := runCLI(t, nil, args...)
		t.Logf("verify (deep %v): exit %d\n%s%s", deep, code, stdout, stderr)
		return code, stdout
	}
	file := func(dir, key string) string { return filepath.Join(dir, filepath.FromSlash(key)) }
	tests := []struct {
		name   string
		damage func(dir string)
		deep   bool
		want   string // in the findings ("": clean)
	}{
		{"clean", func(string) {}, false, ""},
		{"clean, deep", func(string) {}, true, ""},
		{"a flipped byte in a binlog object", func(dir string) {
			p := file(dir, ref(1).DataKey())
			data, _ := os.ReadFile(p)
			data[len(data)/2] ^= 1
			_ = os.WriteFile(p, data, 0o644)
		}, true, ref(1).DataKey() + ": damaged"},
		{"a truncated basebackup part", func(dir string) {
			p := file(dir, b.Basebackup.Parts[0].Key)
			st, _ := os.Stat(p)
			_ = os.Truncate(p, st.Size()/2)
		}, false, b.Basebackup.Parts[0].Key + ": "},
		{"a deleted binlog object", func(dir string) { _ = os.Remove(file(dir, ref(2).DataKey())) }, false, ref(2).DataKey() + ": missing"},
		{"a binlog manifest removed from the middle", func(dir string) { _ = os.Remove(file(dir, ref(1).ManifestKey())) }, false,
			fmt.Sprintf("binlog manifests %d to %d are missing", ref(1).RemoteIndex, ref(1).RemoteIndex)},
		{"a promotion record that contradicts the manifests", func(dir string) {
			st := openFileSite(t, dir)
			wrong, _ := mysql.ParseMariaDBGTIDSet("0-101-1")
			if _, err := storage.WritePromotion(context.Background(), st, &storage.PromotionRecord{StreamID: b.StreamID, Epoch: 7, NodeID: "x", ServerID: 9,
				StartIndex: 3, GTIDs: wrong, PromotedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}, false, storage.PromotionKey(b.StreamID, 7) + ": records GTIDs 0-101-1 at index 3"},
		{"the binlog holding the backup's consistency point removed", func(dir string) {
			// a restore of the backup cannot start: its window is not backed
			_ = os.Remove(file(dir, ref(0).ManifestKey()))
			_ = os.Remove(file(dir, ref(0).DataKey()))
		}, false, storage.BasebackupManifestKey(b.StreamID) + ": the binlogs after this backup do not continue it, so its restorable window is not what GET /backup says"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := verify(t, tc.damage, tc.deep)
			switch {
			case tc.want == "" && (code != 0 || out != ""):
				t.Errorf("clean storage: exit %d, findings:\n%s", code, out)
			case tc.want != "" && (code != 1 || !strings.Contains(out, tc.want)):
				t.Errorf("exit %d, want 1 with %q in:\n%s", code, tc.want, out)
			}
		})
	}
	t.Run("the flipped byte is invisible to the cheap check", func(t *testing.T) {
		if code, out := verify(t, tests[2].damage, false); code != 0 {
			t.Errorf("cheap check of a flipped byte: exit %d\n%s", code, out)
		}
	})
	t.Run("the daemon checks by itself and on request", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "backups")
		if out, err := exec.Command("cp", "-a", s.backups, dir).CombinedOutput(); err != nil {
			t.Fatalf("copy storage: %v %s", err, out)
		}
		_ = os.Remove(file(dir, ref(2).DataKey()))
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		c := daemonConfig(t, t.TempDir(), port, s.in)
		c["backup_sites"] = site(dir)
		path := filepath.Join(t.TempDir(), "myhoard.json")
		writeJSON(t, path, c)
		nd := startDaemon(t, "--config", path)
		url := fmt.Sprintf("http://127.0.0.1:%d", port)
		waitStatus(t, nd, port)
		var first time.Time
		harness.WaitFor(t, "the daemon's own check of the backups in GET /backup", 30*time.Second, func() (bool, string) {
			list := listBackups(t, url)
			if len(list) != 2 || list[0].VerifiedAt == nil {
				return false, fmt.Sprint(list)
			}
			first = *list[0].VerifiedAt
			f := list[0].VerifyFindings
			if len(f) != 1 || !strings.Contains(f[0], ref(2).DataKey()+": missing") {
				t.Fatalf("findings %q", f)
			}
			return true, ""
		})
		if code, body := doJSON(t, "POST", url+"/verify", map[string]any{"deep": true}); code != 200 {
			t.Fatalf("POST /verify: %d %v", code, body)
		}
		harness.WaitFor(t, "the requested deep check", 30*time.Second, func() (bool, string) {
			list := listBackups(t, url)
			return list[0].VerifiedAt != nil && list[0].VerifiedAt.After(first), fmt.Sprint(list)
		})
		if code, body := doJSON(t, "POST", url+"/verify", "{"); code != 400 {
			t.Errorf("POST /verify with a bad body: %d %v", code, body)
		}
		resp, err := http.Get(url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metricsBody, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(metricsBody), "myhoard_verify_findings 1\n") {
			t.Errorf("GET /metrics lacks myhoard_verify_findings 1")
		}
	})
	t.Run("storage it cannot open", func(t *testing.T) {
		c := daemonConfig(t, t.TempDir(), s.port, s.in)
		c["backup_sites"] = site("/dev/null/backups")
		path := filepath.Join(t.TempDir(), "myhoard.json")
		writeJSON(t, path, c)
		if code, stdout, stderr := runCLI(t, nil, "verify", "--config", path); code != 2 || !strings.Contains(stderr, "/dev/null/backups") {
			t.Errorf("exit %d, want 2 naming the directory:\n%s%s", code, stdout, stderr)
		}
	})
}
