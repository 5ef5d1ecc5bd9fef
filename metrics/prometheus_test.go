package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPrometheus: the series of a snapshot, with the conventional names
// and units (linted with client_golang's testutil).
func TestPrometheus(t *testing.T) {
	at := time.Unix(1765000000, 0)
	snap := Snapshot{Mode: "active", StorageReads: 40, StorageCacheHits: 30, LastBackupCompleted: at, LastBinlogUploaded: at.Add(time.Minute), RestorableUntil: at.Add(time.Minute),
		PendingBytes: 1024, PendingFiles: 2, BasebackupDuration: 90 * time.Second, InCluster: true, Leader: true, Primary: true, Epoch: 3, MembersAlive: 3}
	p := NewPrometheus(func() Snapshot { return snap })
	p.ObserveHTTP("status_get", 3*time.Millisecond)
	problems, err := testutil.GatherAndLint(p.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, pr := range problems {
		t.Errorf("lint: %s: %s", pr.Metric, pr.Text)
	}
	want := `# HELP myhoard_backup_last_completed_timestamp_seconds When the newest completed backup completed (Unix time).
# TYPE myhoard_backup_last_completed_timestamp_seconds gauge
myhoard_backup_last_completed_timestamp_seconds 1.765e+09
# HELP myhoard_cluster_epoch The cluster view's primary epoch.
# TYPE myhoard_cluster_epoch gauge
myhoard_cluster_epoch 3
# HELP myhoard_binlog_upload_pending_bytes Bytes of local binlogs an open backup stream has still to upload.
# TYPE myhoard_binlog_upload_pending_bytes gauge
myhoard_binlog_upload_pending_bytes 1024
`
	if err := testutil.GatherAndCompare(p.Registry(), strings.NewReader(want), "myhoard_backup_last_completed_timestamp_seconds",
		"myhoard_cluster_epoch", "myhoard_binlog_upload_pending_bytes"); err != nil {
		t.Error(err)
	}
	rec := httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for _, line := range []string{`myhoard_mode{mode="active"} 1`, `myhoard_mode{mode="idle"} 0`, `myhoard_restore_phase{phase="completed"} 0`,
		"myhoard_cluster_is_leader 1", "myhoard_cluster_members_alive 3", "myhoard_basebackup_duration_seconds 90",
		"myhoard_storage_read_requests_total 40", "myhoard_storage_cache_hits_total 30", "myhoard_storage_read_errors_total 0",
		`myhoard_http_request_duration_seconds_count{route="status_get"} 1`, "go_goroutines"} {
		if !strings.Contains(string(body), line+"\n") && !strings.Contains(string(body), line+" ") {
			t.Errorf("GET /metrics lacks %q", line)
		}
	}
	// Never-happened times are left out; outside a cluster no cluster series.
	snap = Snapshot{Mode: "idle"}
	rec = httptest.NewRecorder()
	p.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ = io.ReadAll(rec.Body)
	for _, absent := range []string{"myhoard_backup_last_completed_timestamp_seconds ", "myhoard_cluster_is_leader "} {
		if strings.Contains(string(body), absent) {
			t.Errorf("GET /metrics has %q for a node without it", absent)
		}
	}
}
