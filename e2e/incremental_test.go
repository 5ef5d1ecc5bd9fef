package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/failpoint"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// incrementalSource is a primary backed up by a daemon as a full backup
// (b1) and two incrementals (b2 on b1, b3 on b1+b2) while a load ran; the
// daemon was killed in the middle of b2 and resumed it.
type incrementalSource struct {
	backups      string
	b1, b2, b3   string
	inB3, atGTID harness.Checkpoint
	final        harness.Checkpoint
	list         []wire.Backup
}

// flushDirtyPages makes InnoDB write every dirty page, so that its
// checkpoint (an incremental's starting LSN) is now: a real server gets
// there by itself within minutes.
func flushDirtyPages(t testing.TB, in *harness.Instance) {
	t.Helper()
	db := harness.OpenDB(t, in)
	harness.Exec(t, db, "SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0", "SET GLOBAL innodb_max_dirty_pages_pct = 0")
	harness.WaitFor(t, "(almost) no dirty pages", 3*time.Minute, func() (bool, string) {
		var name string
		var dirty int
		if err := db.QueryRow("SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'").Scan(&name, &dirty); err != nil {
			return false, err.Error()
		}
		return dirty < 64, fmt.Sprint(dirty)
	})
	harness.Exec(t, db, "SET GLOBAL innodb_max_dirty_pages_pct = 90")
}

// waitActive waits for a restarted daemon in active mode with its sites
// open (it has listed the backups).
func waitActive(t *testing.T, url string) {
	t.Helper()
	harness.WaitFor(t, "GET /status active and a backup listing", 20*time.Second, func() (bool, string) {
		st, err := statusOf(url)
		if err != nil || st.Mode != "active" {
			return false, fmt.Sprint(st, err)
		}
		list, err := apiClient(url).Backups(context.Background(), "")
		return err == nil && list != nil, fmt.Sprint(list, err)
	})
}

func newIncrementalSource(t *testing.T) *incrementalSource {
	t.Helper()
	s := newActiveSetup(t)
	cfg := daemonConfig(t, s.dir, s.port, s.in)
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 2}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	cfg["temporary_directory"] = filepath.Join(s.dir, "tmp")
	cfg["optimize_tables_before_backup"] = true // acts on MySQL 8.0.29+ only: a log line here
	writeJSON(t, s.cfgPath, cfg)
	db := harness.OpenDB(t, s.in)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load, err := harness.NewLoadGen(ctx, db, 33)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 2000); err != nil {
		t.Fatal(err)
	}
	// Data that never changes again: what an incremental does not copy.
	harness.Exec(t, db, "CREATE DATABASE bulk", "CREATE TABLE bulk.t (id INT PRIMARY KEY, a CHAR(32), b CHAR(32), c CHAR(32))",
		"INSERT INTO bulk.t SELECT seq, MD5(seq), MD5(seq+1), MD5(seq+2) FROM bulk.seq_1_to_200000")
	flushDirtyPages(t, s.in)

	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	src := &incrementalSource{backups: s.backups}
	src.b1 = waitCompletedBackup(t, s.url).StreamID
	if !strings.Contains(d.out.String(), "optimize_tables_before_backup applies to MySQL 8.0.29 and later only") {
		t.Errorf("optimize_tables_before_backup did not say it has nothing to do on MariaDB:\n%s", d.out)
	}

	// An explicit incremental that cannot be taken is refused with the
	// reason, never turned into a full backup.
	site := openFileSite(t, s.backups)
	if err := storage.WriteMarker(ctx, site, src.b1, storage.MarkerBroken, storage.MarkerRecord{At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"backup_type": "basebackup", "incremental": true}, "of the chain of " + src.b1 + " is broken"},
		{map[string]any{"backup_type": "binlog", "incremental": true}, "incremental is only valid with backup_type basebackup"},
	} {
		code, body := doJSON(t, "POST", s.url+"/backup", tc.body)
		if msg, _ := body["message"].(string); code != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("POST /backup %v: %d %v, want 400 with %q", tc.body, code, body, tc.want)
		}
	}
	if err := site.Delete(ctx, storage.MarkerKey(src.b1, storage.MarkerBroken)); err != nil {
		t.Fatal(err)
	}
	if n := len(listBackups(t, s.url)); n != 1 {
		t.Fatalf("a refused request started a backup: %d backups", n)
	}

	errc := make(chan error, 1)
	go func() { errc <- load.Run(ctx, time.Millisecond, 0.006) }()
	time.Sleep(2 * time.Second) // some load in the first stream

	// b2: the daemon is killed while it streams the incremental, and
	// takes it again when it comes back.
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(t, 10*time.Second)
	d = startDaemonEnv(t, []string{failpoint.EnvKillAt + "=basebackup-streaming"}, "--config", s.cfgPath)
	waitActive(t, s.url)
	if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "basebackup", "incremental": true}); code != 200 {
		t.Fatalf("request an incremental: %d %v", code, body)
	}
	_, _ = d.wait(t, 60*time.Second)
	if !strings.Contains(d.out.String(), "failpoint: killing the daemon") || !strings.Contains(d.out.String(), "incremental basebackup started") {
		t.Fatalf("the daemon was not killed while streaming an incremental:\n%s", d.out)
	}
	d = startDaemon(t, "--config", s.cfgPath)
	waitActive(t, s.url)
	waitChain := func(n int) []wire.Backup {
		var list []wire.Backup
		harness.WaitFor(t, fmt.Sprintf("backup %d completed and the previous stream closed", n), 120*time.Second, func() (bool, string) {
			list = listBackups(t, s.url)
			return len(list) == n && list[n-1].CompletedAt != nil && list[n-2].ClosedAt != nil, fmt.Sprint(list)
		})
		return list
	}
	src.b2 = waitChain(2)[1].StreamID
	time.Sleep(2 * time.Second)
	if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "basebackup", "incremental": true}); code != 200 {
		t.Fatalf("request the second incremental: %d %v", code, body)
	}
	src.b3 = waitChain(3)[2].StreamID
	time.Sleep(2 * time.Second)
	if src.inB3, err = load.Checkpoint(ctx, "inside the third stream"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if src.atGTID, err = load.Checkpoint(ctx, "GTID target"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	src.final = stopLoad(t, cancel, errc, load, s.url)
	src.list = listBackups(t, s.url)
	code, out, stderr := runCLI(t, nil, "backups", "--url", s.url)
	if code != 0 || !strings.Contains(out, "incremental of "+src.b1) || !strings.Contains(out, "incremental of "+src.b2) {
		t.Errorf("myhoard backups does not show the chain: exit %d\n%s%s", code, out, stderr)
	}
	// The killed attempt's parts were replaced: only the parts the
	// manifest names are stored.
	parts, _ := filepath.Glob(filepath.Join(s.backups, "streams", src.b2, "basebackup", "*"))
	if want := len(src.list[1].Basebackup.Parts); len(parts) != want {
		t.Errorf("backup %s stores %d files (temporary ones included), its manifest names %d parts: %v", src.b2, len(parts), want, parts)
	}
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(t, 10*time.Second)
	return src
}

func TestIncremental(t *testing.T) {
	src := newIncrementalSource(t)
	t.Run("chain in storage and listing", func(t *testing.T) {
		if len(src.list) != 3 {
			t.Fatalf("%d backups, want 3", len(src.list))
		}
		full, inc1, inc2 := src.list[0].Basebackup, src.list[1].Basebackup, src.list[2].Basebackup
		if full.Incremental || !inc1.Incremental || !inc2.Incremental {
			t.Fatalf("kinds: %v %v %v, want full, incremental, incremental", full.Incremental, inc1.Incremental, inc2.Incremental)
		}
		if fmt.Sprint(inc1.RequiredStreams) != fmt.Sprint([]string{src.b1}) || fmt.Sprint(inc2.RequiredStreams) != fmt.Sprint([]string{src.b1, src.b2}) {
			t.Errorf("required streams %v and %v", inc1.RequiredStreams, inc2.RequiredStreams)
		}
		for _, b := range src.list {
			m := b.Basebackup
			if !strings.Contains(m.CheckpointsFileContent, "to_lsn") || m.EndTS <= m.StartTS || m.CompressedSize != m.EncodedSize ||
				m.NumberOfSplits != len(m.Parts) || m.GTID == "" || m.ToolVersion == "" || m.BinlogName == "" || m.EndSize <= 0 {
				t.Errorf("basebackup_info of %s lacks fields: %+v", b.StreamID, *b.Basebackup)
			}
		}
		// a few seconds of load changed a few pages: the incremental
		// stores a small fraction of the full backup
		ratio := float64(inc1.EncodedSize) / float64(full.EncodedSize)
		t.Logf("stored: full %d bytes, incrementals %d and %d bytes (%.3f of the full one)", full.EncodedSize, inc1.EncodedSize, inc2.EncodedSize, ratio)
		if ratio > 0.25 {
			t.Errorf("the incremental stores %.2f of the full backup, want at most 0.25", ratio)
		}
	})
	t.Run("latest, one incremental on disk at a time", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		// watch the temporary directories: the full backup's and at most
		// one incremental's at any time
		var mu sync.Mutex
		seen := map[string]bool{}
		most := 0
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				incs, _ := filepath.Glob(filepath.Join(filepath.Dir(n.in.DataDir), ".myhoard-incremental-*"))
				mu.Lock()
				most = max(most, len(incs))
				for _, d := range incs {
					seen[d] = true
				}
				mu.Unlock()
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b3})
		n.waitObserve(t, 5*time.Minute)
		close(stop)
		wg.Wait()
		n.assertRestored(t, src.final)
		if most != 1 || len(seen) == 0 {
			t.Errorf("incremental directories: at most %d at once, %d seen; want one at a time, and to see them", most, len(seen))
		}
		for i, id := range []string{src.b1, src.b2, src.b3} {
			if want := fmt.Sprintf("stream=%s member=%d of=3", id, i+1); !strings.Contains(n.d.out.String(), want) {
				t.Errorf("the log does not show %q", want)
			}
		}
	})
	t.Run("to a time inside the last stream", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		body := map[string]any{"mode": "restore", "site": "default", "stream_id": src.b3, "target_time": src.inB3.Time.Format(time.RFC3339)}
		n.request(t, body)
		n.waitObserve(t, 5*time.Minute)
		n.assertRestored(t, src.inB3)
	})
	t.Run("to a GTID, with the CLI's chain progress", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		code, stdout, stderr := runCLI(t, nil, "restore", "--url", n.url, "--stream", src.b3, "--gtid", src.atGTID.GTID, "--interval", "50ms")
		if code != 0 {
			t.Fatalf("myhoard restore: exit %d\n%s\n%s\n%s", code, stdout, stderr, n.d.out)
		}
		n.assertRestored(t, src.atGTID)
		if !strings.Contains(stdout, "chain ") {
			t.Logf("the CLI's progress never showed a chain member (a fast restore):\n%s", stdout)
		}
	})
	t.Run("kill -9 at each step of the chain", func(t *testing.T) {
		n := newRestoreNode(t, src.backups, nil)
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b3})
		marks := []string{
			`msg="basebackup extracted" component=restore stream=` + src.b1,
			`msg="basebackup prepared" component=restore stream=` + src.b1,
			`msg="basebackup extracted" component=restore stream=` + src.b2,
			`msg="basebackup prepared" component=restore stream=` + src.b2,
			`msg="basebackup extracted" component=restore stream=` + src.b3,
		}
		killed := 0
		for _, mark := range marks {
			harness.WaitFor(t, "the restore at "+mark, 3*time.Minute, func() (bool, string) {
				return strings.Contains(n.d.out.String(), mark), ""
			})
			n.kill(t)
			killed++
			n.start(t) // the resumed restore starts the chain over
		}
		n.waitObserve(t, 5*time.Minute)
		n.assertRestored(t, src.final)
		leftover, _ := filepath.Glob(filepath.Join(filepath.Dir(n.in.DataDir), ".myhoard-*"))
		if len(leftover) > 0 {
			t.Errorf("temporary directories left after the restore: %v", leftover)
		}
		t.Logf("killed %d times during the chain restore", killed)
	})
	t.Run("corrupted middle incremental falls back", func(t *testing.T) {
		copyDir := corruptedCopy(t, src.backups, src.b2)
		n := newRestoreNode(t, copyDir, map[string]any{"restore_auto_mark_backups_broken": true})
		n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b3})
		n.waitObserve(t, 6*time.Minute)
		n.assertRestored(t, src.final)
		for _, b := range listBackups(t, n.url) {
			if broken := b.BrokenAt != nil; broken != (b.StreamID == src.b2) {
				t.Errorf("backup %s broken_at %v: only the corrupted member %s is marked", b.StreamID, b.BrokenAt, src.b2)
			}
		}
		if want := "instead=" + src.b1; !strings.Contains(n.d.out.String(), want) {
			t.Errorf("no fallback to the full backup in the log (want %q)", want)
		}
		if _, err := os.Stat(filepath.Join(copyDir, "streams", src.b3, "broken.json")); err == nil {
			t.Errorf("the intact last incremental was marked broken")
		}
	})
}

// TestRetentionWithChains: a full backup outlives its incrementals' need
// (a preserved incremental keeps its chain), and once the need is gone the
// full backup goes first and its orphaned incremental after it.
func TestRetentionWithChains(t *testing.T) {
	s := newActiveSetup(t)
	sink := newStatsdSink(t)
	cfg := daemonConfig(t, s.dir, s.port, s.in)
	cfg["statsd"] = map[string]any{"host": "127.0.0.1", "port": sink.port()}
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 2, "backup_count_max": 2, "backup_count_min": 1, "backup_age_days_max": 30}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	writeJSON(t, s.cfgPath, cfg)
	db := harness.OpenDB(t, s.in)
	load, err := harness.NewLoadGen(context.Background(), db, 7)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	full := waitCompletedBackup(t, s.url).StreamID
	next := func(n int, incremental bool) string {
		if err := load.WriteTransactions(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
		if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "basebackup", "incremental": incremental}); code != 200 {
			t.Fatalf("request backup: %d %v", code, body)
		}
		var id string
		harness.WaitFor(t, fmt.Sprintf("backup %d completed, the one before closed", n), 90*time.Second, func() (bool, string) {
			list := listBackups(t, s.url)
			if len(list) != n || list[n-1].CompletedAt == nil || list[n-2].ClosedAt == nil {
				return false, fmt.Sprint(list)
			}
			id = list[n-1].StreamID
			return true, ""
		})
		return id
	}
	inc := next(2, true)
	var ok wire.Success
	if err := apiClient(s.url).Do(context.Background(), "PUT", "/backup/"+inc+"/preserve", map[string]any{"preserve_until": "2099-01-01T00:00:00Z"}, &ok); err != nil || !ok.Success {
		t.Fatalf("preserve: %v %v", ok, err)
	}
	full2 := next(3, false)
	// Over backup_count_max, but the preserved incremental needs the full
	// backup: all stay, over several retention checks.
	checks := func() int { return strings.Count(sink.String(), "myhoard.backup_retention.checks") }
	before := checks()
	harness.WaitFor(t, "three retention checks", 30*time.Second, func() (bool, string) { return checks() >= before+3, "" })
	if list := listBackups(t, s.url); len(list) != 3 || list[0].StreamID != full || list[1].StreamID != inc {
		t.Fatalf("with the incremental preserved: %v", list)
	}
	// Prometheus reads the same state on GET /metrics.
	resp, err := http.Get(s.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"myhoard_backup_last_completed_timestamp_seconds ", "myhoard_binlog_last_uploaded_timestamp_seconds ",
		"myhoard_restorable_until_timestamp_seconds ", `myhoard_mode{mode="active"} 1`, "myhoard_basebackup_duration_seconds ",
		`myhoard_http_request_duration_seconds_count{route="backup_get"}`} {
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET /metrics (%d) lacks %q", resp.StatusCode, want)
		}
	}
	// Lifting the preservation: the full backup goes, then its orphan.
	if code, body := doJSON(t, "PUT", s.url+"/backup/"+inc+"/preserve", map[string]any{"preserve_until": nil}); code != 200 {
		t.Fatalf("unpreserve: %d %v", code, body)
	}
	harness.WaitFor(t, "the chain deleted by retention", 30*time.Second, func() (bool, string) {
		list := listBackups(t, s.url)
		return len(list) == 1 && list[0].StreamID == full2, fmt.Sprint(list)
	})
	for _, id := range []string{full, inc} {
		var left []string
		_ = filepath.WalkDir(filepath.Join(s.backups, "streams", id), func(p string, e os.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				left = append(left, p)
			}
			return nil
		})
		if len(left) > 0 {
			t.Errorf("objects of the deleted backup %s are still in storage: %v", id, left)
		}
	}
}
