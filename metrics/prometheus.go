package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is the daemon's state as a Prometheus scrape reads it. Zero
// times are "never" (their series are left out).
type Snapshot struct {
	Mode string
	// LastBackupCompleted is the newest completed backup's completion.
	LastBackupCompleted time.Time
	// LastBinlogUploaded is when the newest binlog reached storage.
	LastBinlogUploaded time.Time
	// RestorableUntil is the newest point a restore can reach: the close
	// of the newest backup, or while it is open the time its newest
	// binlog reached storage.
	RestorableUntil time.Time
	// Pending binlogs: the most any open stream has still to upload.
	PendingBytes, PendingFiles int64
	// BasebackupDuration is the newest backup's (0: none).
	BasebackupDuration time.Duration
	// RestorePhase is the restore's phase ("": no restore).
	RestorePhase string
	// LastVerify is when the last check of the backups ran (zero: never)
	// and VerifyFindings what it found.
	LastVerify     time.Time
	VerifyFindings int
	// Restore drills: when the last one ran and whether it passed, when
	// one last passed, and how often they run (0: only on request).
	LastDrill, LastDrillPassed time.Time
	LastDrillOK                bool
	DrillInterval              time.Duration
	// Storage requests: reads made, objects the object cache served
	// instead, and failed attempts.
	StorageReads, StorageCacheHits, StorageReadErrors, StorageWriteErrors int64
	// Cluster: whether the node runs in one, and its part.
	InCluster, Leader, Primary bool
	Epoch                      int64
	MembersAlive               int
}

// Modes and RestorePhases are the values whose series are always
// exported (1 for the current one, 0 for the others).
var (
	Modes         = []string{"idle", "active", "observe", "promote", "restore"}
	RestorePhases = []string{"getting_backup_info", "initiating_binlog_downloads", "restoring_basebackup", "preparing_backup",
		"refreshing_binlogs", "applying_binlogs", "waiting_for_apply_to_finish", "finalizing", "completed", "failed", "failed_basebackup"}
)

// Prometheus serves the daemon's metrics in the Prometheus text format on
// its own registry (never the global one): the snapshot read at each
// scrape, the HTTP API's request durations and the Go runtime's.
type Prometheus struct {
	reg  *prometheus.Registry
	http *prometheus.HistogramVec
}

// NewPrometheus makes the registry; snapshot is called once per scrape.
func NewPrometheus(snapshot func() Snapshot) *Prometheus {
	reg := prometheus.NewRegistry()
	p := &Prometheus{reg: reg, http: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "myhoard_http_request_duration_seconds", Help: "Duration of the HTTP API's requests, by route.",
		Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 30, 120},
	}, []string{"route"})}
	reg.MustRegister(p.http, &snapshotCollector{snapshot: snapshot},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return p
}

// Handler serves GET /metrics.
func (p *Prometheus) Handler() http.Handler {
	return promhttp.HandlerFor(p.reg, promhttp.HandlerOpts{})
}

// ObserveHTTP records one API request.
func (p *Prometheus) ObserveHTTP(route string, d time.Duration) {
	p.http.WithLabelValues(route).Observe(d.Seconds())
}

// Registry is the registry (for tests that lint it).
func (p *Prometheus) Registry() *prometheus.Registry { return p.reg }

var (
	descLastBackup = prometheus.NewDesc("myhoard_backup_last_completed_timestamp_seconds",
		"When the newest completed backup completed (Unix time).", nil, nil)
	descLastBinlog = prometheus.NewDesc("myhoard_binlog_last_uploaded_timestamp_seconds",
		"When the newest binlog reached storage (Unix time).", nil, nil)
	descRestorable = prometheus.NewDesc("myhoard_restorable_until_timestamp_seconds",
		"The newest point a restore can reach (Unix time).", nil, nil)
	descPendingBytes = prometheus.NewDesc("myhoard_binlog_upload_pending_bytes",
		"Bytes of local binlogs an open backup stream has still to upload.", nil, nil)
	descPendingFiles = prometheus.NewDesc("myhoard_binlog_upload_pending_files",
		"Local binlogs an open backup stream has still to upload.", nil, nil)
	descBasebackup = prometheus.NewDesc("myhoard_basebackup_duration_seconds",
		"How long the newest full or incremental backup took.", nil, nil)
	descVerifyAt = prometheus.NewDesc("myhoard_verify_last_timestamp_seconds",
		"When the last check of the backups in storage ran (Unix time).", nil, nil)
	descVerifyFindings = prometheus.NewDesc("myhoard_verify_findings",
		"Problems the last check of the backups in storage found.", nil, nil)
	descDrillAt = prometheus.NewDesc("myhoard_drill_last_run_timestamp_seconds",
		"When the last restore drill ran (Unix time).", nil, nil)
	descDrillOK = prometheus.NewDesc("myhoard_drill_last_ok",
		"1 when the last restore drill passed.", nil, nil)
	descDrillPassed = prometheus.NewDesc("myhoard_drill_last_success_timestamp_seconds",
		"When a restore drill last passed (Unix time).", nil, nil)
	descDrillInterval = prometheus.NewDesc("myhoard_drill_interval_seconds",
		"How often restore drills run (restore_drill.interval_hours).", nil, nil)
	descStorageReads = prometheus.NewDesc("myhoard_storage_read_requests_total",
		"Read requests (list, get, stat attempts) made to the backup sites.", nil, nil)
	descCacheHits = prometheus.NewDesc("myhoard_storage_cache_hits_total",
		"Objects the local object cache served instead of a backup site.", nil, nil)
	descReadErrors = prometheus.NewDesc("myhoard_storage_read_errors_total",
		"Failed read attempts on the backup sites (retried or not).", nil, nil)
	descWriteErrors = prometheus.NewDesc("myhoard_storage_write_errors_total",
		"Failed write attempts on the backup sites (retried or not).", nil, nil)
	descMode = prometheus.NewDesc("myhoard_mode",
		"The node's mode: 1 for the current one.", []string{"mode"}, nil)
	descRestorePhase = prometheus.NewDesc("myhoard_restore_phase",
		"The restore's phase: 1 for the current one (all 0 without a restore).", []string{"phase"}, nil)
	descLeader = prometheus.NewDesc("myhoard_cluster_is_leader",
		"1 when this node is the cluster's Raft leader.", nil, nil)
	descPrimary = prometheus.NewDesc("myhoard_cluster_is_primary",
		"1 when the cluster view names this node the primary.", nil, nil)
	descEpoch = prometheus.NewDesc("myhoard_cluster_epoch",
		"The cluster view's primary epoch.", nil, nil)
	descAlive = prometheus.NewDesc("myhoard_cluster_members_alive",
		"Members this node's gossip sees alive, itself included.", nil, nil)
)

// snapshotCollector turns a Snapshot into series at each scrape.
type snapshotCollector struct {
	snapshot func() Snapshot
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLastBackup, descLastBinlog, descRestorable, descPendingBytes, descPendingFiles,
		descBasebackup, descVerifyAt, descVerifyFindings, descDrillAt, descDrillOK, descDrillPassed, descDrillInterval, descStorageReads, descCacheHits, descReadErrors, descWriteErrors, descMode, descRestorePhase, descLeader, descPrimary, descEpoch, descAlive} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for d, t := range map[*prometheus.Desc]time.Time{descLastBackup: s.LastBackupCompleted, descLastBinlog: s.LastBinlogUploaded, descRestorable: s.RestorableUntil} {
		if !t.IsZero() {
			gauge(d, float64(t.UnixNano())/1e9)
		}
	}
	gauge(descPendingBytes, float64(s.PendingBytes))
	gauge(descPendingFiles, float64(s.PendingFiles))
	if s.BasebackupDuration > 0 {
		gauge(descBasebackup, s.BasebackupDuration.Seconds())
	}
	if !s.LastVerify.IsZero() {
		gauge(descVerifyAt, float64(s.LastVerify.UnixNano())/1e9)
		gauge(descVerifyFindings, float64(s.VerifyFindings))
	}
	if !s.LastDrill.IsZero() {
		gauge(descDrillAt, float64(s.LastDrill.UnixNano())/1e9)
		gauge(descDrillOK, b2f(s.LastDrillOK))
	}
	if !s.LastDrillPassed.IsZero() {
		gauge(descDrillPassed, float64(s.LastDrillPassed.UnixNano())/1e9)
	}
	if s.DrillInterval > 0 {
		gauge(descDrillInterval, s.DrillInterval.Seconds())
	}
	for d, v := range map[*prometheus.Desc]int64{descStorageReads: s.StorageReads, descCacheHits: s.StorageCacheHits,
		descReadErrors: s.StorageReadErrors, descWriteErrors: s.StorageWriteErrors} {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	for _, m := range Modes {
		gauge(descMode, b2f(m == s.Mode), m)
	}
	for _, p := range RestorePhases {
		gauge(descRestorePhase, b2f(p == s.RestorePhase), p)
	}
	if s.InCluster {
		gauge(descLeader, b2f(s.Leader))
		gauge(descPrimary, b2f(s.Primary))
		gauge(descEpoch, float64(s.Epoch))
		gauge(descAlive, float64(s.MembersAlive))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
