package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/failpoint"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// restoreSource is a primary backed up by a daemon into two streams while
// a load ran, with checkpoints along the way.
type restoreSource struct {
	backups      string // storage directory
	b1, b2       string // the two backups, oldest first
	inStream1    harness.Checkpoint
	acrossStream harness.Checkpoint
	forGTID      harness.Checkpoint
	final        harness.Checkpoint
	biggest      int64 // the biggest binlog
	binlogs      int
}

// loadedPrimary is a primary with some data, its daemon in active mode and
// a load running on it (errc has its end once ctx is cancelled).
type loadedPrimary struct {
	*activeSetup
	d    *daemonProc
	load *harness.LoadGen
	errc chan error
}

// startLoadedPrimary writes first transactions (a basebackup with some
// data in it), starts the daemon in active mode and the load.
func startLoadedPrimary(ctx context.Context, t *testing.T, seed uint64, first int) *loadedPrimary {
	t.Helper()
	s := newActiveSetup(t)
	load, err := harness.NewLoadGen(ctx, harness.OpenDB(t, s.in), seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, first); err != nil {
		t.Fatal(err)
	}
	p := &loadedPrimary{activeSetup: s, d: startDaemon(t, "--config", s.cfgPath), load: load, errc: make(chan error, 1)}
	waitStatus(t, p.d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	go func() { p.errc <- load.Run(ctx, time.Millisecond, 0.006) }()
	return p
}

func newRestoreSource(t *testing.T) *restoreSource {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := startLoadedPrimary(ctx, t, 21, 2000)
	s, d, load, errc := p.activeSetup, p.d, p.load, p.errc
	var err error
	src := &restoreSource{backups: s.backups}
	src.b1 = waitCompletedBackup(t, s.url).StreamID
	time.Sleep(3 * time.Second) // some binlogs in the first stream
	if src.inStream1, err = load.Checkpoint(ctx, "inside the first stream"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "basebackup"}); code != 200 {
		t.Fatalf("request backup: %d %v", code, body)
	}
	harness.WaitFor(t, "the second backup completed and the first stream closed", 120*time.Second, func() (bool, string) {
		list := listBackups(t, s.url)
		return len(list) == 2 && list[1].CompletedAt != nil && list[0].ClosedAt != nil, fmt.Sprint(list)
	})
	src.b2 = listBackups(t, s.url)[1].StreamID
	time.Sleep(2 * time.Second)
	if src.acrossStream, err = load.Checkpoint(ctx, "after the first stream closed"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if src.forGTID, err = load.Checkpoint(ctx, "GTID target"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	src.final = stopLoad(t, cancel, errc, load, s.url)
	streams, _ := s.stored(t)
	for _, ms := range streams {
		for _, m := range ms {
			src.biggest = max(src.biggest, m.Size)
			src.binlogs++
		}
	}
	d.cmd.Process.Kill()
	_, _ = d.wait(t, 10*time.Second)
	t.Logf("source: %d transactions, backups %s and %s, %d binlogs stored (biggest %d bytes)", load.Written(), src.b1, src.b2, src.binlogs, src.biggest)
	return src
}

// stopLoad stops a load run (cancel, errc), records the final checkpoint
// and has the primary's daemon at url upload the binlog that holds it.
func stopLoad(t *testing.T, cancel context.CancelFunc, errc <-chan error, load *harness.LoadGen, url string) harness.Checkpoint {
	t.Helper()
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	final, err := load.Checkpoint(context.Background(), "final")
	if err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("final rotation: %d %v", code, body)
	}
	return final
}

// restoreNode is an empty server with a daemon that can restore into it.
type restoreNode struct {
	in      *harness.Instance
	dir     string
	url     string
	cfgPath string
	d       *daemonProc
	argv    []string
	env     []string
}

func newRestoreNode(t testing.TB, backups string, extra map[string]any) *restoreNode {
	t.Helper()
	return newRestoreNodeEnv(t, backups, extra, nil)
}

// newRestoreNodeEnv is newRestoreNode with env for the daemon (failpoints).
func newRestoreNodeEnv(t testing.TB, backups string, extra map[string]any, env []string) *restoreNode {
	t.Helper()
	tools, err := harness.FindTools()
	if err != nil {
		t.Fatal(err)
	}
	in, err := harness.NewInstance(context.Background(), harness.Options{Dir: filepath.Join(harness.ShortTempDir(t), "r"), ServerID: 301, NoInit: true})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	n := &restoreNode{in: in, dir: dir, url: fmt.Sprintf("http://127.0.0.1:%d", port), cfgPath: filepath.Join(dir, "myhoard.json"),
		argv: []string{tools.Mariadbd, "--defaults-file=" + in.ConfigFile}, env: env}
	cfg := daemonConfig(t, dir, port, in)
	cfg["server_id"] = 301
	cfg["start_command"] = n.argv
	cfg["backup_sites"] = map[string]any{
		"default": map[string]any{"object_storage": map[string]any{"storage_type": "local", "directory": backups}},
	}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": true, "min_binlog_age_before_purge": 1, "purge_interval": 1}
	for k, v := range extra {
		cfg[k] = v
	}
	writeJSON(t, n.cfgPath, cfg)
	t.Cleanup(func() {
		_ = (&mysql.CommandControl{Argv: n.argv, StopTimeout: time.Minute}).Stop(context.Background())
	})
	n.start(t)
	return n
}

func (n *restoreNode) start(t testing.TB) {
	t.Helper()
	n.d = startDaemonEnv(t, n.env, "--config", n.cfgPath)
	harness.WaitFor(t, "the restore node's API", 20*time.Second, func() (bool, string) {
		_, err := statusOf(n.url)
		return err == nil, fmt.Sprint(err)
	})
}

// request asks the node's daemon for a restore (PUT /status).
func (n *restoreNode) request(t testing.TB, body map[string]any) {
	t.Helper()
	if code, resp := doJSON(t, "PUT", n.url+"/status", body); code != 200 {
		t.Fatalf("restore request: %d %v", code, resp)
	}
}

func (n *restoreNode) kill(t testing.TB) {
	t.Helper()
	_ = n.d.cmd.Process.Kill()
	_, _ = n.d.wait(t, 10*time.Second)
}

func (n *restoreNode) restoreStatus(t testing.TB) wire.RestoreStatus {
	t.Helper()
	st, _ := apiClient(n.url).RestoreStatus(context.Background())
	return st
}

// waitObserve waits until the restore completed and the node observes.
func (n *restoreNode) waitObserve(t testing.TB, timeout time.Duration) {
	t.Helper()
	harness.WaitFor(t, "the restore to complete (mode observe)", timeout, func() (bool, string) {
		mode, err := statusOf(n.url)
		if err != nil {
			return false, err.Error()
		}
		if mode.Mode == "observe" {
			return true, ""
		}
		st := n.restoreStatus(t)
		if st.Phase == "failed" {
			t.Fatalf("restore failed: %v\n%s", st, n.d.out)
		}
		return false, fmt.Sprint(mode, st)
	})
}

// assertRestored compares the restored server with a source checkpoint.
func (n *restoreNode) assertRestored(t testing.TB, cp harness.Checkpoint) {
	t.Helper()
	db, err := n.in.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	diffs, err := harness.Mismatches(context.Background(), db, cp)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffs {
		t.Errorf("restored %s", d)
	}
	// The server runs as configured again: its own server_id, no replica
	// configuration left.
	if id := harness.QueryString(t, db, "SELECT @@server_id"); id != "301" {
		t.Errorf("restored server runs with server_id %s, want the configured 301", id)
	}
	rows2, err := db.Query("SHOW ALL SLAVES STATUS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows2.Close()
	if rows2.Next() {
		t.Errorf("the restored server still has a replica configuration")
	}
}

// corruptedCopy copies the file storage at backups and flips a bit in
// the middle of the first part of backup streamID.
func corruptedCopy(t *testing.T, backups, streamID string) string {
	t.Helper()
	copyDir := filepath.Join(t.TempDir(), "backups")
	if out, err := exec.Command("cp", "-a", backups, copyDir).CombinedOutput(); err != nil {
		t.Fatalf("copy storage: %v %s", err, out)
	}
	site := openFileSite(t, copyDir)
	raw, err := site.GetBytes(context.Background(), storage.BasebackupManifestKey(streamID))
	if err != nil {
		t.Fatal(err)
	}
	var m storage.BasebackupManifest
	if err := storage.UnmarshalManifest("basebackup.json", raw, &m); err != nil {
		t.Fatal(err)
	}
	part := filepath.Join(copyDir, filepath.FromSlash(m.Parts[0].Key))
	data, err := os.ReadFile(part)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(part, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return copyDir
}

func dirBytes(dir string) int64 {
	var n int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() && (strings.HasPrefix(e.Name(), "relay.0") || strings.HasPrefix(e.Name(), ".myhoard-prefetch-")) {
			n += info.Size()
		}
	}
	return n
}

func TestRestore(t *testing.T) {
	src := newRestoreSource(t)
	if src.binlogs < 20 {
		t.Fatalf("only %d binlogs stored; the test wants dozens", src.binlogs)
	}
	t.Run("latest within a binlog budget", func(t *testing.T) {
		budget := max(1<<20, 2*src.biggest)
		n := newRestoreNode(t, src.backups, map[string]any{"restore_max_binlog_bytes": budget})
		var peak atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if b := dirBytes(n.in.RelayDir); b > peak.Load() {
					peak.Store(b)
				}
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": nil})
		n.waitObserve(t, 5*time.Minute)
		close(stop)
		wg.Wait()
		n.assertRestored(t, src.final)
		if limit := budget + src.biggest; peak.Load() > limit {
			t.Errorf("prefetched + relay binlogs peaked at %d bytes, over the budget %d plus one binlog (%d)", peak.Load(), budget, src.biggest)
		}
		t.Logf("binlog disk peak %d bytes with a budget of %d (biggest binlog %d)", peak.Load(), budget, src.biggest)
		// Observing: the backup list is served, and the binlogs the
		// restored server wrote while applying are purged, since storage
		// holds their transactions (observe rules).
		if list := listBackups(t, n.url); len(list) != 2 {
			t.Errorf("observe mode lists %d backups, want 2", len(list))
		}
		db := harness.OpenDB(t, n.in)
		harness.Exec(t, db, "FLUSH BINARY LOGS")
		harness.WaitFor(t, "the restored server's binlogs purged in observe mode", 60*time.Second, func() (bool, string) {
			rows, err := db.Query("SHOW BINARY LOGS")
			if err != nil {
				return false, err.Error()
			}
			defer rows.Close()
			var names []string
			for rows.Next() {
				var name string
				var size any
				if err := rows.Scan(&name, &size); err != nil {
					return false, err.Error()
				}
				names = append(names, name)
			}
			return len(names) == 1, fmt.Sprint(names)
		})
	})
	t.Run("to a time inside the first stream", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		body := map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": src.inStream1.Time.Format(time.RFC3339)}
		n.request(t, body)
		n.waitObserve(t, 3*time.Minute)
		n.assertRestored(t, src.inStream1)
	})
	t.Run("to a time across the stream boundary, epoch seconds", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		body := map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": src.acrossStream.Time.Unix()}
		n.request(t, body)
		n.waitObserve(t, 3*time.Minute)
		n.assertRestored(t, src.acrossStream)
	})
	t.Run("to a GTID with the CLI", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		code, stdout, stderr := runCLI(t, nil, "restore", "--url", n.url, "--stream", src.b1, "--gtid", src.forGTID.GTID, "--interval", "200ms")
		if code != 0 {
			t.Fatalf("myhoard restore: exit %d\n%s\n%s\n%s", code, stdout, stderr, n.d.out)
		}
		for _, want := range []string{"binlogs", "restore completed", "observe mode"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("the CLI's progress lacks %q:\n%s", want, stdout)
			}
		}
		n.assertRestored(t, src.forGTID)
	})
	t.Run("kill -9 in every phase", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, map[string]any{"restore_max_binlog_bytes": max(1<<20, 2*src.biggest)})
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1})
		// Kill as soon as each mark shows in the log (every new daemon
		// logs the phase it resumes in, then the next ones).
		var killedIn []string
		marks := []string{"phase=restoring_basebackup", "phase=preparing_backup", "phase=refreshing_binlogs", "msg=\"applying binlogs\"",
			"msg=\"applying binlogs\"", "phase=finalizing"}
		for _, mark := range marks {
			deadline := time.Now().Add(3 * time.Minute)
			for !strings.Contains(n.d.out.String(), mark) && time.Now().Before(deadline) {
				if st, _ := statusOf(n.url); st.Mode == "observe" {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			if !strings.Contains(n.d.out.String(), mark) {
				break // completed before this mark could be hit
			}
			n.kill(t)
			state, _ := os.ReadFile(filepath.Join(n.dir, "state", "restore_coordinator_state.json"))
			killedIn = append(killedIn, phaseOf(string(state)))
			n.start(t)
		}
		n.waitObserve(t, 5*time.Minute)
		n.assertRestored(t, src.final)
		t.Logf("daemon killed with the restore state in phases %v", killedIn)
		if len(killedIn) < 4 {
			t.Errorf("only %d kills landed during the restore", len(killedIn))
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		before := src.inStream1.Time.Add(-time.Hour).Format(time.RFC3339)
		tests := []struct {
			body map[string]any
			want string
		}{
			{map[string]any{"mode": "restore", "site": "default", "stream_id": "nope"}, `backup "nope" not found on site "default"`},
			{map[string]any{"mode": "restore", "site": "elsewhere", "stream_id": src.b1}, `unknown site "elsewhere"`},
			{map[string]any{"mode": "restore", "site": "default"}, "needs site and stream_id"},
			{map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": before}, "outside the restorable window"},
			{map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": "2099-01-01T00:00:00Z"}, "in the future"},
			{map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": "yesterday"}, "not an ISO 8601 timestamp"},
			{map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": src.final.Time.Format(time.RFC3339), "target_gtid": src.final.GTID}, "not both"},
			{map[string]any{"mode": "restore", "site": "default", "stream_id": src.b2, "target_gtid": src.inStream1.GTID}, "already contains it"},
			{map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_gtid": "0-101-99999999"}, "binlogs in storage end at"},
			{map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_gtid": "x-y"}, "is not a mariadb GTID set"},
			{map[string]any{"mode": "observe", "stream_id": src.b1}, "stream_id only apply to mode restore"},
		}
		for _, tc := range tests {
			code, body := doJSON(t, "PUT", n.url+"/status", tc.body)
			if msg, _ := body["message"].(string); code != 400 || !strings.Contains(msg, tc.want) {
				t.Errorf("%v: %d %v, want 400 with %q", tc.body, code, body, tc.want)
			}
		}
		// A data directory that is not empty.
		if err := os.WriteFile(filepath.Join(n.in.DataDir, "ibdata1"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		code, body := doJSON(t, "PUT", n.url+"/status", map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1})
		if msg, _ := body["message"].(string); code != 400 || !strings.Contains(msg, n.in.DataDir+" is not empty") {
			t.Errorf("non-empty data directory: %d %v", code, body)
		}
		if st, _ := statusOf(n.url); st.Mode != "idle" {
			t.Errorf("mode after bad requests: %v, want idle", st.Mode)
		}
		if code, body := doJSON(t, "GET", n.url+"/status/restore", nil); code != 400 || !strings.Contains(fmt.Sprint(body["message"]), "not restore") {
			t.Errorf("GET /status/restore in idle mode: %d %v", code, body)
		}
	})
	t.Run("full disk", func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Fatal("the full-disk test mounts a small tmpfs and must run as root")
		}
		n := newRestoreNode(t, src.backups, nil)
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", n.in.DataDir).CombinedOutput(); err != nil {
			t.Fatalf("mount a small tmpfs on %s: %v %s", n.in.DataDir, err, out)
		}
		t.Cleanup(func() { _ = exec.Command("umount", "-l", n.in.DataDir).Run() })
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1})
		var st wire.RestoreStatus
		harness.WaitFor(t, "the restore to fail", 2*time.Minute, func() (bool, string) {
			st = n.restoreStatus(t)
			return st.Phase == "failed", fmt.Sprint(st)
		})
		if msg := st.LastError; !strings.Contains(msg, n.in.DataDir) || !strings.Contains(msg, "no space left on device") {
			t.Errorf("last_error %q does not name the full directory %s", msg, n.in.DataDir)
		}
		if entries, _ := os.ReadDir(n.in.DataDir); len(entries) != 0 {
			t.Errorf("the data directory holds %d entries after the failed restore", len(entries))
		}
		if list := listBackups(t, n.url); len(list) != 2 || list[0].BrokenAt != nil {
			t.Errorf("a full disk marked the backup broken: %v", list)
		}
		if st, _ := statusOf(n.url); st.Mode != "restore" {
			t.Errorf("mode %v after the failure, want restore (with phase failed)", st.Mode)
		}
	})
	t.Run("corrupted newest backup falls back to the previous one", func(t *testing.T) {
		copyDir := corruptedCopy(t, src.backups, src.b2)
		n := newRestoreNode(t, copyDir, map[string]any{"restore_auto_mark_backups_broken": true})
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b2})
		n.waitObserve(t, 5*time.Minute)
		n.assertRestored(t, src.final)
		for _, b := range listBackups(t, n.url) {
			if broken := b.BrokenAt != nil; broken != (b.StreamID == src.b2) {
				t.Errorf("backup %s broken_at %v", b.StreamID, b.BrokenAt)
			}
		}
		if !strings.Contains(n.d.out.String(), "restoring an older backup instead") {
			t.Errorf("no fallback in the log:\n%s", n.d.out)
		}
	})
	promoted := func(t *testing.T, forced bool) {
		copyDir := filepath.Join(t.TempDir(), "backups")
		if out, err := exec.Command("cp", "-a", src.backups, copyDir).CombinedOutput(); err != nil {
			t.Fatalf("copy storage: %v %s", err, out)
		}
		var env []string
		if forced {
			// the apply waits at its start until the forced promotion
			// cancels it (instead of racing a fast apply)
			env = []string{failpoint.EnvHoldAt + "=restore-apply"}
		}
		n := newRestoreNodeEnv(t, copyDir, map[string]any{"restore_max_binlog_bytes": max(1<<20, 2*src.biggest)}, env)
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1})
		if forced {
			// Forced while binlogs are applied: the restore finalizes with
			// what it has and the promotion catches up from storage.
			harness.WaitFor(t, "the restore holding at its binlog apply", 2*time.Minute, func() (bool, string) {
				return strings.Contains(n.d.out.String(), "failpoint: holding until cancelled"), n.restoreStatus(t).Phase
			})
			if code, body := doJSON(t, "PUT", n.url+"/status", map[string]any{"mode": "active", "force": true}); code != 200 {
				t.Fatalf("forced promotion during the restore: %d %v", code, body)
			}
			if !strings.Contains(n.d.out.String(), "restore forced to complete") {
				t.Errorf("the forced promotion did not end the restore early")
			}
		} else {
			n.waitObserve(t, 5*time.Minute)
			if code, body := doJSON(t, "PUT", n.url+"/status", map[string]any{"mode": "promote"}); code != 200 {
				t.Fatalf("promote: %d %v", code, body)
			}
		}
		harness.WaitFor(t, "the restored node active", 60*time.Second, func() (bool, string) {
			st, _ := statusOf(n.url)
			return st.Mode == "active", n.d.out.String()
		})
		db := harness.OpenDB(t, n.in)
		load, err := harness.NewLoadGen(context.Background(), db, 77)
		if err != nil {
			t.Fatal(err)
		}
		if err := load.WriteTransactions(context.Background(), 100); err != nil {
			t.Fatal(err)
		}
		if code, body := doJSON(t, "POST", n.url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
			t.Fatalf("rotation: %d %v", code, body)
		}
		if up, _ := epochUploads(t, copyDir, 2); up == 0 {
			t.Fatalf("nothing uploaded under epoch 2 after the promotion\n%s", n.d.out)
		}
		restoreOldestEquals(t, copyDir, n.url, db)
	}
	t.Run("promote after a restore, then restore what the new primary wrote", func(t *testing.T) { promoted(t, false) })
	t.Run("promotion forced during the restore", func(t *testing.T) { promoted(t, true) })
}

func phaseOf(state string) string {
	i := strings.Index(state, `"phase": "`)
	if i < 0 {
		return "?"
	}
	rest := state[i+len(`"phase": "`):]
	return rest[:strings.IndexByte(rest, '"')]
}
