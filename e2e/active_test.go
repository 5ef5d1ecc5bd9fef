package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myhoard/myhoard/client"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

func doJSON(t testing.TB, method, url string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, url, rd)
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatalf("%s %s: body %q is not a JSON object", method, url, data)
	}
	return resp.StatusCode, out
}

type activeSetup struct {
	in      *harness.Instance
	dir     string
	port    int
	cfgPath string
	url     string
	backups string
}

func newActiveSetup(t *testing.T) *activeSetup {
	t.Helper()
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &activeSetup{in: in, dir: dir, port: port, cfgPath: filepath.Join(dir, "myhoard.json"),
		url: fmt.Sprintf("http://127.0.0.1:%d", port), backups: filepath.Join(dir, "backups")}
	cfg := daemonConfig(t, dir, port, in)
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 2}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	cfg["temporary_directory"] = filepath.Join(dir, "tmp")
	writeJSON(t, s.cfgPath, cfg)
	return s
}

// openFileSite opens a file site on dir.
func openFileSite(t testing.TB, dir string) *storage.Site {
	t.Helper()
	site, err := storage.OpenDirectory(context.Background(), "s", dir, storage.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Close() })
	return site
}

// stored reads every binlog manifest of every stream in the site.
func (s *activeSetup) stored(t *testing.T) (map[string][]storage.BinlogManifest, *storage.Site) {
	t.Helper()
	return readManifests(t, openFileSite(t, s.backups))
}

func readManifests(t testing.TB, site *storage.Site) (map[string][]storage.BinlogManifest, *storage.Site) {
	t.Helper()
	var out map[string][]storage.BinlogManifest
	var err error
	// A file site's listing can meet an upload's temporary file that is
	// renamed away meanwhile (NotFound): list again.
	for attempt := 0; attempt < 5; attempt++ {
		out, err = listManifests(site)
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, ms := range out {
		sort.Slice(ms, func(i, j int) bool { return ms[i].RemoteIndex < ms[j].RemoteIndex })
	}
	return out, site
}

func listManifests(site *storage.Site) (map[string][]storage.BinlogManifest, error) {
	out := map[string][]storage.BinlogManifest{}
	err := site.List(context.Background(), storage.StreamsPrefix, func(o storage.ObjectInfo) error {
		ref, manifest, err := storage.ParseBinlogKey(o.Key)
		if err != nil || !manifest {
			return nil
		}
		data, err := site.GetBytes(context.Background(), o.Key)
		if err != nil {
			return err
		}
		var m storage.BinlogManifest
		if err := storage.UnmarshalManifest(o.Key, data, &m); err != nil {
			return err
		}
		out[ref.StreamID] = append(out[ref.StreamID], m)
		return nil
	})
	return out, err
}

func waitCompletedBackup(t testing.TB, url string) wire.Backup {
	t.Helper()
	return waitCompletedBackupWithin(t, url, 90*time.Second)
}

// waitCompletedBackupWithin is waitCompletedBackup with a timeout.
func waitCompletedBackupWithin(t testing.TB, url string, timeout time.Duration) wire.Backup {
	t.Helper()
	var found wire.Backup
	harness.WaitFor(t, "a completed backup in GET /backup", timeout, func() (bool, string) {
		list, err := apiClient(url).Backups(context.Background(), "")
		for _, b := range list {
			if b.CompletedAt != nil {
				found = b
				return true, ""
			}
		}
		return false, fmt.Sprint(list, err)
	})
	return found
}

// checkExactlyOnce asserts that the stream's manifests have consecutive
// remote indexes, each local binlog once, chaining GTID states, and that
// the backup's GTID plus every uploaded one equals the server's position.
func checkExactlyOnce(t *testing.T, ms []storage.BinlogManifest, backupGTID mysql.GTIDSet, serverPos string) {
	t.Helper()
	seen := map[string]bool{}
	union := backupGTID
	for i, m := range ms {
		if m.RemoteIndex != int64(i+1) {
			t.Fatalf("remote index %d at position %d: a hole or a duplicate", m.RemoteIndex, i)
		}
		if seen[m.LocalName] {
			t.Fatalf("%s uploaded twice", m.LocalName)
		}
		seen[m.LocalName] = true
		if i > 0 && !m.GTIDsBefore.Equal(ms[i-1].GTIDsBefore.Union(ms[i-1].GTIDsAdded)) {
			t.Fatalf("%s does not chain on %s", m.LocalName, ms[i-1].LocalName)
		}
		union = union.Union(m.GTIDsAdded)
	}
	want, err := mysql.ParseMariaDBGTIDSet(serverPos)
	if err != nil {
		t.Fatal(err)
	}
	if !union.Equal(want) {
		t.Fatalf("storage holds %q, the server is at %q", union, want)
	}
}

func TestActiveModeBacksUpEverything(t *testing.T) {
	s := newActiveSetup(t)
	db := harness.OpenDB(t, s.in)
	ctx := context.Background()
	load, err := harness.NewLoadGen(ctx, db, 3)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 30); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	if st := setMode(t, s.url, wire.ModeRequest{Mode: "active"}); st.Mode != "active" {
		t.Fatalf("PUT /status active: %+v\n%s", st, d.out)
	}
	entry := waitCompletedBackup(t, s.url)
	if !entry.Resumable || entry.RestorableFrom == nil || entry.Site != "default" {
		t.Errorf("backup entry %v", entry)
	}
	// The client commands talk to the daemon.
	if code, out, errOut := runCLI(t, nil, "status", "--url", s.url); code != 0 || !strings.Contains(out, "mode: active") {
		t.Errorf("myhoard status: %d %q %q", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, nil, "backups", "--config", s.cfgPath); code != 0 || !strings.Contains(out, entry.StreamID) || !strings.Contains(out, "RESTORABLE") {
		t.Errorf("myhoard backups: %d %q %q", code, out, errOut)
	}
	if code, out, errOut := runCLI(t, nil, "backup", "--binlog", "--wait", "20", "--url", s.url); code != 0 || !strings.Contains(out, "binlog rotated") {
		t.Errorf("myhoard backup --binlog: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := runCLI(t, nil, "backup", "--wait", "3", "--url", s.url); code != 2 || !strings.Contains(errOut, "--wait only goes with --binlog") {
		t.Errorf("myhoard backup --wait: %d %q", code, errOut)
	}
	for _, full := range []string{"--full=false", "--full"} {
		if code, out, errOut := runCLI(t, nil, "binlogs", "--stream", entry.StreamID, full, "--url", s.url); code != 0 ||
			!strings.Contains(out, "GTIDS ADDED") || !strings.Contains(out, "binlogs of "+entry.StreamID+" on site default") || strings.Contains(out, "\n0 binlogs") {
			t.Errorf("myhoard binlogs %s: %d %q %q", full, code, out, errOut)
		}
	}
	if code, _, errOut := runCLI(t, nil, "binlogs", "--stream", "nope", "--url", s.url); code != 1 || !strings.Contains(errOut, `no backup "nope"`) {
		t.Errorf("myhoard binlogs of an unknown stream: %d %q", code, errOut)
	}
	if code, body := doJSON(t, "GET", s.url+"/backup/"+entry.StreamID+"/binlogs?full=maybe", nil); code != 400 || !strings.Contains(fmt.Sprint(body), "full must be true or false") {
		t.Errorf("GET binlogs?full=maybe: %d %v", code, body)
	}
	for i := 0; i < 3; i++ {
		if err := load.WriteTransactions(ctx, 20); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		var ok wire.Success
		wait := 20.0
		if err := client.New(s.url).Do(ctx, "POST", "/backup", wire.BackupRequest{BackupType: "binlog", WaitForUpload: &wait}, &ok); err != nil || !ok.Success {
			t.Fatalf("POST /backup binlog: %v %v", ok, err)
		}
		t.Logf("rotation + upload took %v", time.Since(start))
	}
	pos := harness.QueryString(t, db, "SELECT @@gtid_binlog_pos")
	streams, site := s.stored(t)
	if len(streams) != 1 {
		t.Fatalf("%d streams with binlogs", len(streams))
	}
	for id, ms := range streams {
		data, err := site.GetBytes(ctx, storage.BasebackupManifestKey(id))
		if err != nil {
			t.Fatal(err)
		}
		var bb storage.BasebackupManifest
		if err := storage.UnmarshalManifest("bb", data, &bb); err != nil {
			t.Fatal(err)
		}
		checkExactlyOnce(t, ms, bb.GTIDExecuted, pos)
	}

	// The mode cannot be left, and bad bodies are 400 with a message.
	if code, body := doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "idle"}); code != 400 || !strings.Contains(fmt.Sprint(body["message"]), "not allowed") {
		t.Errorf("active -> idle: %d %v", code, body)
	}
	tests := []struct {
		method, path string
		body         any
		want         string
	}{
		{"PUT", "/status", `{"mode": `, "not valid JSON"},
		{"PUT", "/status", `[1]`, "must be a JSON object"},
		{"PUT", "/status", map[string]any{"mode": "sideways"}, `unknown mode "sideways"`},
		{"PUT", "/status", map[string]any{"mode": 7}, "mode"},
		{"PUT", "/status", map[string]any{"mood": "active"}, `unknown field "mood"`},
		{"PUT", "/status", map[string]any{}, "mode is required"},
		{"POST", "/backup", map[string]any{}, "backup_type is required"},
		{"POST", "/backup", map[string]any{"backup_type": "full"}, `backup_type "full"`},
		{"POST", "/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": -1}, "wait_for_upload must be"},
		{"POST", "/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": "soon"}, "wait_for_upload"},
		{"POST", "/backup", map[string]any{"backup_type": "basebackup", "wait_for_upload": 3}, "only valid with backup_type binlog"},
		{"PATCH", "/binlogs", map[string]any{"binlog_index": 0}, "binlog_index must be"},
		{"PATCH", "/binlogs", map[string]any{"binlog_index": 1}, "cannot be decreased"},
		{"PATCH", "/backup/settings", map[string]any{"paused_until": "yesterday"}, "not an ISO 8601 time"},
		{"PATCH", "/backup/settings", map[string]any{"paused_until": "2001-01-01T00:00:00Z"}, "not in the future"},
		{"PATCH", "/backup/settings", map[string]any{"other": 1}, "paused_until"},
		{"PUT", "/backup/nosuch/preserve", map[string]any{"preserve_until": "2099-01-01T00:00:00Z"}, `no backup "nosuch"`},
		{"PUT", "/backup/x/preserve", map[string]any{"preserve_until": "2001-01-01T00:00:00Z"}, "must be in the future"},
		{"PATCH", "/backup/nosuch", map[string]any{"broken": true}, `no backup "nosuch"`},
		{"PATCH", "/backup/nosuch", map[string]any{"broken": "yes"}, "broken"},
		{"PUT", "/replication_state", map[string]any{"s1": map[string]any{"0-1": [][]int{{1, 5}}}, "s2": "x"}, "replication state"},
		{"PUT", "/replication_state", map[string]any{"s1": map[string]any{"zz": [][]int{{1, 5}}}}, `server "s1"`},
	}
	for _, tc := range tests {
		code, body := doJSON(t, tc.method, s.url+tc.path, tc.body)
		if code != 400 || !strings.Contains(fmt.Sprint(body["message"]), tc.want) {
			t.Errorf("%s %s %v: %d %v, want 400 with %q", tc.method, tc.path, tc.body, code, body, tc.want)
		}
	}
	// Valid settings calls succeed.
	id := entry.StreamID
	for _, tc := range []struct {
		method, path string
		body         any
	}{
		{"PUT", "/backup/" + id + "/preserve", map[string]any{"preserve_until": "2099-01-01T00:00:00Z", "wait_for_applied_preservation": 5}},
		{"PATCH", "/backup/settings", map[string]any{"paused_until": nil}},
		{"PUT", "/replication_state", map[string]any{"s1": map[string]any{"0-101": [][]int{{1, 5}}}}},
	} {
		if code, body := doJSON(t, tc.method, s.url+tc.path, tc.body); code != 200 {
			t.Errorf("%s %s: %d %v", tc.method, tc.path, code, body)
		}
	}
	if list := listBackups(t, s.url); len(list) != 1 || list[0].PreserveUntil == nil {
		t.Errorf("preserved backup: %+v", list)
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	if code, err := d.wait(t, 30*time.Second); code != 0 || err != nil {
		t.Errorf("exit %d %v", code, err)
	}
}

// TestKill9LosesNothing kills the daemon with SIGKILL at random moments
// while the load writes and binlogs rotate, restarts it each time, and then
// checks that every binlog is in storage exactly once and nothing is
// missing.
func TestKill9LosesNothing(t *testing.T) {
	s := newActiveSetup(t)
	db := harness.OpenDB(t, s.in)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	load, err := harness.NewLoadGen(ctx, db, 4)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- load.Run(ctx, 2*time.Millisecond, 0.05) }()

	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	rng := rand.New(rand.NewPCG(7, 7))
	// The first kills hit chosen points of the full backup: while
	// mariabackup streams, and right after the parts are uploaded (before
	// the stream's new phase is saved). The rest are random.
	marks := []string{"basebackup started", "basebackup uploaded"}
	for i := 0; i < 6; i++ {
		if i < len(marks) {
			mark := marks[i]
			harness.WaitFor(t, "the log line "+mark, 60*time.Second, func() (bool, string) {
				return strings.Contains(d.out.String(), mark), d.out.String()
			})
		} else {
			time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		}
		_ = d.cmd.Process.Kill()
		_, _ = d.wait(t, 10*time.Second)
		d = startDaemon(t, "--config", s.cfgPath)
		harness.WaitFor(t, "the daemon back in active mode", 20*time.Second, func() (bool, string) {
			st, err := statusOf(s.url)
			return err == nil && st.Mode == "active", fmt.Sprint(st, err)
		})
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	waitCompletedBackup(t, s.url)
	if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("final rotation: %d %v", code, body)
	}
	pos := harness.QueryString(t, db, "SELECT @@gtid_binlog_pos")
	streams, site := s.stored(t)
	if len(streams) == 0 {
		t.Fatalf("no binlogs stored\n%s", d.out)
	}
	listed := 0
	err = site.ListDir(context.Background(), storage.StreamsPrefix, func(o storage.ObjectInfo, isDir bool) error {
		if isDir {
			listed++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id, ms := range streams {
		data, err := site.GetBytes(context.Background(), storage.BasebackupManifestKey(id))
		if err != nil {
			t.Fatalf("stream %s has binlogs but no basebackup.json: %v", id, err)
		}
		var bb storage.BasebackupManifest
		if err := storage.UnmarshalManifest("bb", data, &bb); err != nil {
			t.Fatal(err)
		}
		checkExactlyOnce(t, ms, bb.GTIDExecuted, pos)
	}
	t.Logf("%d transactions written, %d stream directories, %d streams with binlogs", load.Written(), listed, len(streams))
}

// listBackups is GET /backup?order=asc.
func listBackups(t testing.TB, url string) []wire.Backup {
	t.Helper()
	list, err := apiClient(url).Backups(context.Background(), "asc")
	if err != nil {
		t.Fatalf("GET /backup: %v", err)
	}
	return list
}

func TestStreamsRetentionAndPreservation(t *testing.T) {
	s := newActiveSetup(t)
	sink := newStatsdSink(t)
	cfg := daemonConfig(t, s.dir, s.port, s.in)
	cfg["statsd"] = map[string]any{"host": "127.0.0.1", "port": sink.port(), "tags": map[string]any{"app": "myhoard"}}
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 2, "backup_count_max": 2, "backup_count_min": 1, "backup_age_days_max": 30}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	writeJSON(t, s.cfgPath, cfg)
	db := harness.OpenDB(t, s.in)
	load, err := harness.NewLoadGen(context.Background(), db, 5)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	first := waitCompletedBackup(t, s.url).StreamID
	var ok wire.Success
	if err := apiClient(s.url).Do(context.Background(), "PUT", "/backup/"+first+"/preserve", map[string]any{"preserve_until": "2099-01-01T00:00:00Z"}, &ok); err != nil || !ok.Success {
		t.Fatalf("preserve: %v %v", ok, err)
	}
	// Two more full backups: each new one completes, then the older closes.
	for n := 2; n <= 3; n++ {
		if err := load.WriteTransactions(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
		if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "basebackup"}); code != 200 {
			t.Fatalf("request backup: %d %v", code, body)
		}
		harness.WaitFor(t, fmt.Sprintf("%d completed backups, all but the newest closed", n), 90*time.Second, func() (bool, string) {
			list := listBackups(t, s.url)
			if len(list) != n {
				return false, fmt.Sprint(list)
			}
			for i, b := range list {
				closed := b.ClosedAt != nil
				if b.CompletedAt == nil || closed != (i < n-1) {
					return false, fmt.Sprint(list)
				}
			}
			return true, ""
		})
	}
	// The new streams caught up by copying what the old one had uploaded.
	harness.WaitFor(t, "remote copies in statsd", 10*time.Second, func() (bool, string) {
		return strings.Contains(sink.String(), "myhoard.binlog.remote_copy,"), sink.String()
	})
	// Over backup_count_max, but the oldest is preserved: all stay.
	if list := listBackups(t, s.url); len(list) != 3 || list[0].StreamID != first || list[0].PreserveUntil == nil {
		t.Fatalf("with the oldest preserved: %v", list)
	}
	// Lifting the preservation lets retention delete it.
	if code, body := doJSON(t, "PUT", s.url+"/backup/"+first+"/preserve", map[string]any{"preserve_until": nil}); code != 200 {
		t.Fatalf("unpreserve: %d %v", code, body)
	}
	harness.WaitFor(t, "the oldest backup deleted by retention", 30*time.Second, func() (bool, string) {
		list := listBackups(t, s.url)
		return len(list) == 2 && list[0].StreamID != first, fmt.Sprint(list)
	})
	streams, _ := s.stored(t)
	if _, ok := streams[first]; ok {
		t.Errorf("binlogs of the deleted backup %s are still in storage", first)
	}
	// Marking broken and back.
	id := listBackups(t, s.url)[0].StreamID
	for _, broken := range []bool{true, false} {
		if code, body := doJSON(t, "PATCH", s.url+"/backup/"+id, map[string]any{"broken": broken}); code != 200 {
			t.Fatalf("mark broken=%v: %d %v", broken, code, body)
		}
		if got := listBackups(t, s.url)[0].BrokenAt != nil; got != broken {
			t.Errorf("broken_at set = %v, want %v", got, broken)
		}
	}
}

func firstBinlog(t *testing.T, in *harness.Instance) string {
	t.Helper()
	db := harness.OpenDB(t, in)
	rows, err := db.Query("SHOW BINARY LOGS")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	vals := make([]any, len(cols))
	var name string
	vals[0] = &name
	for i := 1; i < len(vals); i++ {
		vals[i] = new(any)
	}
	if !rows.Next() || rows.Scan(vals...) != nil {
		t.Fatal("SHOW BINARY LOGS returned nothing")
	}
	return name
}

func TestBinlogPurgeWaitsForReplicas(t *testing.T) {
	s := newActiveSetup(t)
	cfg := daemonConfig(t, s.dir, s.port, s.in)
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 1}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": true, "min_binlog_age_before_purge": 0, "purge_interval": 1}
	sink := newStatsdSink(t)
	cfg["statsd"] = map[string]any{"host": "127.0.0.1", "port": sink.port(), "tags": map[string]any{"app": "myhoard"}}
	writeJSON(t, s.cfgPath, cfg)
	db := harness.OpenDB(t, s.in)
	load, err := harness.NewLoadGen(context.Background(), db, 6)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(context.Background(), 10); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	// A replica that has executed only the first transaction.
	if code, body := doJSON(t, "PUT", s.url+"/replication_state", map[string]any{"replica": map[string]any{"0-101": [][]int{{1, 1}}}}); code != 200 {
		t.Fatalf("replication state: %d %v", code, body)
	}
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	waitCompletedBackup(t, s.url)
	before := firstBinlog(t, s.in)
	for i := 0; i < 3; i++ {
		if err := load.WriteTransactions(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
		doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 10})
	}
	// Three more purge checks ran (the statsd counter proves it): nothing
	// may go.
	checks := func() int { return strings.Count(sink.String(), "myhoard.binlog.purge_checks") }
	seen := checks()
	harness.WaitFor(t, "three more purge checks", 30*time.Second, func() (bool, string) { return checks() >= seen+3, fmt.Sprint(checks()) })
	if got := firstBinlog(t, s.in); got != before {
		t.Fatalf("binlogs purged although the replica lags: first is %s, was %s", got, before)
	}
	pos := harness.QueryString(t, db, "SELECT @@gtid_binlog_pos")
	set, _ := mysql.ParseMariaDBGTIDSet(pos)
	if code, body := doJSON(t, "PUT", s.url+"/replication_state", map[string]any{"replica": set.ReplicationState()}); code != 200 {
		t.Fatalf("replication state: %d %v", code, body)
	}
	harness.WaitFor(t, "old binlogs purged once the replica caught up", 30*time.Second, func() (bool, string) {
		got := firstBinlog(t, s.in)
		return got != before, got
	})
	// Everything purged was uploaded first.
	streams, _ := s.stored(t)
	for _, ms := range streams {
		checkExactlyOnce(t, ms, mustBackupGTID(t, s), pos)
	}
}

func mustBackupGTID(t *testing.T, s *activeSetup) mysql.GTIDSet {
	t.Helper()
	_, site := s.stored(t)
	var out mysql.GTIDSet
	_ = site.ListDir(context.Background(), storage.StreamsPrefix, func(o storage.ObjectInfo, isDir bool) error {
		id := strings.TrimSuffix(strings.TrimPrefix(o.Key, storage.StreamsPrefix), "/")
		data, err := site.GetBytes(context.Background(), storage.BasebackupManifestKey(id))
		if err == nil {
			var bb storage.BasebackupManifest
			if storage.UnmarshalManifest("bb", data, &bb) == nil {
				out = bb.GTIDExecuted
			}
		}
		return nil
	})
	return out
}

// storedS3 reads the binlog manifests from the S3 test server.
func (s *activeSetup) storedS3(t *testing.T, srv *harness.StorageServer) (map[string][]storage.BinlogManifest, *storage.Site) {
	t.Helper()
	return readManifests(t, openS3Site(t, srv.Port))
}

func backupGTID(t *testing.T, site *storage.Site, id string) mysql.GTIDSet {
	t.Helper()
	data, err := site.GetBytes(context.Background(), storage.BasebackupManifestKey(id))
	if err != nil {
		t.Fatal(err)
	}
	var bb storage.BasebackupManifest
	if err := storage.UnmarshalManifest("bb", data, &bb); err != nil {
		t.Fatal(err)
	}
	return bb.GTIDExecuted
}

func TestScheduledBackups(t *testing.T) {
	s := newActiveSetup(t)
	cfg := daemonConfig(t, s.dir, s.port, s.in)
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 5, "backup_interval_minutes": 1, "backup_hour": 0, "backup_minute": 0}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	writeJSON(t, s.cfgPath, cfg)
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	first := waitCompletedBackup(t, s.url).StreamID
	harness.WaitFor(t, "a second, scheduled backup and the first one closed", 150*time.Second, func() (bool, string) {
		list := listBackups(t, s.url)
		return len(list) == 2 && list[0].StreamID == first && list[0].ClosedAt != nil && list[1].CompletedAt != nil, fmt.Sprint(list)
	})
	if !strings.Contains(d.out.String(), "reason=scheduled") {
		t.Error("the new stream was not scheduled")
	}
}
