// Package config owns myhoard's configuration file: the JSON format of the
// original MyHoard (every key of its README and code, with the same
// defaults) plus myhoard's own keys (mysql.flavor, cluster.*, the url form
// of object_storage), loading, and validation that reports every problem at
// once with the key path it concerns.
//
// It is its own small package so that `cmd` (check-config) and `node`
// share it without `cmd` importing the controller. It must never open
// connections, start anything, or read files other than the config itself
// and the files it names (certificates, tokens, keys), which it checks.
//
// One default differs from the original: compression.algorithm defaults to
// zstd rather than snappy (zstd's fastest level compresses backup streams
// better and faster; every object records its codec, so old snappy
// objects still read).
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"
)

// Config is the whole configuration file.
type Config struct {
	BackupSettings      BackupSettings      `json:"backup_settings"`
	BackupSites         map[string]*Site    `json:"backup_sites"`
	BinlogPurgeSettings BinlogPurgeSettings `json:"binlog_purge_settings"`
	Cluster             Cluster             `json:"cluster"`
	HTTPAddress         string              `json:"http_address"`
	HTTPPort            int                 `json:"http_port"`
	// HTTPAuthTokenFile holds the token every API request must bear
	// (Authorization: Bearer); empty: no authentication.
	HTTPAuthTokenFile string `json:"http_auth_token_file"`
	// HTTPAllowUnauthenticated allows a non-loopback http_address without
	// a token.
	HTTPAllowUnauthenticated     bool         `json:"http_allow_unauthenticated"`
	HTTPTLS                      HTTPTLS      `json:"http_tls"`
	HTTPTimeouts                 HTTPTimeouts `json:"http_timeouts"`
	MySQL                        MySQL        `json:"mysql"`
	OptimizeTablesBeforeBackup   bool         `json:"optimize_tables_before_backup"`
	RestoreAutoMarkBackupsBroken bool         `json:"restore_auto_mark_backups_broken"`
	RestoreFreeMemoryPercentage  *int         `json:"restore_free_memory_percentage"`
	RestoreMaxBinlogBytes        int64        `json:"restore_max_binlog_bytes"`
	RestoreDownloadWorkers       *int         `json:"restore_download_workers"`
	RestoreDownloadWorkersCount  *int         `json:"restore_download_workers_count"`
	SentryDSN                    *string      `json:"sentry_dsn"`
	ServerID                     int64        `json:"server_id"`
	StartCommand                 []string     `json:"start_command"`
	StateDirectory               string       `json:"state_directory"`
	// ObjectCacheMaxMB bounds the local copies of manifests under
	// state_directory/object-cache (0: no cache); StorageReadConcurrency
	// is how many objects a listing reads at once.
	ObjectCacheMaxMB int64 `json:"object_cache_max_mb"`
	// MemoryLimitMB is the daemon's soft memory limit for the Go runtime
	// (0: none; GOMEMLIMIT in the environment wins).
	MemoryLimitMB           int64    `json:"memory_limit_mb"`
	StorageReadConcurrency  int      `json:"storage_read_concurrency"`
	Statsd                  Statsd   `json:"statsd"`
	SystemctlCommand        []string `json:"systemctl_command"`
	SystemdEnvUpdateCommand []string `json:"systemd_env_update_command"`
	SystemdService          *string  `json:"systemd_service"`
	TemporaryDirectory      string   `json:"temporary_directory"`
	// RestoreDrill schedules restore drills (off unless interval_hours or
	// a directory is set).
	RestoreDrill RestoreDrill `json:"restore_drill"`
	// VerifyIntervalHours is how often the daemon checks its backups in
	// storage (myhoard verify's cheap check; 0: never).
	VerifyIntervalHours float64    `json:"verify_interval_hours"`
	Xtrabackup          Xtrabackup `json:"xtrabackup"`
	warnings            []string
}

// BackupSettings are the backup_settings block.
type BackupSettings struct {
	BackupAgeDaysMax             int         `json:"backup_age_days_max"`
	BackupCountMax               int         `json:"backup_count_max"`
	BackupCountMin               int         `json:"backup_count_min"`
	BackupHour                   int         `json:"backup_hour"`
	BackupMinute                 int         `json:"backup_minute"`
	BackupIntervalMinutes        int         `json:"backup_interval_minutes"`
	ForcedBinlogRotationInterval float64     `json:"forced_binlog_rotation_interval"`
	UploadSite                   string      `json:"upload_site"`
	Incremental                  Incremental `json:"incremental"`
}

// RestoreDrill is restore_drill: a drill restores the newest backup into
// a scratch server under Directory (its own data directory, Port, socket
// and ServerID), checks it and deletes it, every IntervalHours (0: only
// on request). StartCommand overrides the scratch server's command line
// ({dir}, {datadir}, {socket}, {port}, {server_id} are replaced).
type RestoreDrill struct {
	IntervalHours float64  `json:"interval_hours"`
	Directory     string   `json:"directory"`
	Port          int      `json:"port"`
	ServerID      int64    `json:"server_id"`
	StartCommand  []string `json:"start_command"`
}

// Enabled: drills can run (a directory is configured).
func (r RestoreDrill) Enabled() bool { return r.Directory != "" }

// Incremental is backup_settings.incremental: with Enabled, a scheduled
// backup is incremental unless today (UTC) is one of the full-backup days.
type Incremental struct {
	Enabled                bool   `json:"enabled"`
	FullBackupWeekSchedule string `json:"full_backup_week_schedule"`
}

var weekdays = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

// FullBackupDays are the days of full_backup_week_schedule ("sun,wed");
// an unknown day is an error naming it.
func (i Incremental) FullBackupDays() (map[time.Weekday]bool, error) {
	out := map[time.Weekday]bool{}
	for _, d := range strings.Split(i.FullBackupWeekSchedule, ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "" {
			continue
		}
		wd, ok := weekdays[d]
		if !ok {
			return out, fmt.Errorf("unknown day %q (want mon, tue, wed, thu, fri, sat, sun)", d)
		}
		out[wd] = true
	}
	return out, nil
}

// Site is one entry of backup_sites.
type Site struct {
	Compression    Compression     `json:"compression"`
	EncryptionKeys *EncryptionKeys `json:"encryption_keys"`
	ObjectStorage  *ObjectStorage  `json:"object_storage"`
	RecoveryOnly   bool            `json:"recovery_only"`
	SplitSize      int64           `json:"split_size"`
}

func (s *Site) setDefaults() {
	s.Compression = Compression{Algorithm: "zstd"}
}

// Compression is backup_sites.<name>.compression.
type Compression struct {
	Algorithm string `json:"algorithm"`
	Level     *int   `json:"level"`
}

// EncryptionKeys is backup_sites.<name>.encryption_keys: an RSA key pair in
// PEM form.
type EncryptionKeys struct {
	Public  string `json:"public"`
	Private string `json:"private"`
}

// BinlogPurgeSettings are the binlog_purge_settings block.
type BinlogPurgeSettings struct {
	Enabled                   bool    `json:"enabled"`
	MinBinlogAgeBeforePurge   float64 `json:"min_binlog_age_before_purge"`
	PurgeInterval             float64 `json:"purge_interval"`
	MaxFilesPerCycle          *int64  `json:"max_files_per_cycle"`
	MaxBytesPerCycle          *int64  `json:"max_bytes_per_cycle"`
	PurgeWhenObserveNoStreams bool    `json:"purge_when_observe_no_streams"`
}

// MySQL is the mysql block.
type MySQL struct {
	BinlogPrefix      string       `json:"binlog_prefix"`
	ClientParams      ClientParams `json:"client_params"`
	ConfigFileName    string       `json:"config_file_name"`
	DataDirectory     string       `json:"data_directory"`
	RelayLogIndexFile string       `json:"relay_log_index_file"`
	RelayLogPrefix    string       `json:"relay_log_prefix"`
	// Flavor is "mysql", "mariadb" or "auto" (detected at start).
	Flavor string `json:"flavor"`
}

// ClientParams is mysql.client_params.
type ClientParams struct {
	Host       string  `json:"host"`
	Port       int     `json:"port"`
	User       string  `json:"user"`
	Password   string  `json:"password"`
	RequireSSL bool    `json:"require_ssl"`
	CAFile     string  `json:"ca_file"`
	DB         string  `json:"db"`
	Timeout    float64 `json:"timeout"`
	// Socket is myhoard's addition: a unix socket path used instead of
	// host and port when set.
	Socket string `json:"socket"`
}

// Statsd is the statsd block.
type Statsd struct {
	Host *string           `json:"host"`
	Port *int              `json:"port"`
	Tags map[string]string `json:"tags"`
}

// Xtrabackup is the xtrabackup block (also used for mariabackup).
type Xtrabackup struct {
	CopyThreads             int  `json:"copy_threads"`
	CompressThreads         int  `json:"compress_threads"`
	EncryptThreads          int  `json:"encrypt_threads"`
	EstimateMemory          bool `json:"estimate_memory"`
	RegisterRedoLogConsumer bool `json:"register_redo_log_consumer"`
}

// HTTPTLS serves the API over HTTPS with CertFile and KeyFile (PEM);
// CAFile is what the CLI verifies the daemon's certificate against
// (default: the system's roots).
type HTTPTLS struct {
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	CAFile   string `json:"ca_file"`
}

// Enabled reports whether the API is served over HTTPS.
func (t HTTPTLS) Enabled() bool { return t.CertFile != "" }

// HTTPTimeouts are the API server's timeouts, in seconds: reading a
// request's headers, the whole request, writing a response (a longer
// wait_for_upload extends it), and an idle keep-alive connection.
type HTTPTimeouts struct {
	ReadHeader float64 `json:"read_header"`
	Read       float64 `json:"read"`
	Write      float64 `json:"write"`
	Idle       float64 `json:"idle"`
}

// ClusterTLS are the PEM files of a node's mutual TLS: the cluster's CA
// bundle, and this node's certificate (naming its node id) and key.
type ClusterTLS struct {
	CAFile   string `json:"ca_file"`
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
}

// Cluster is myhoard's cluster block.
type Cluster struct {
	NodeID        string `json:"node_id"`
	RaftAddress   string `json:"raft_address"`
	GossipAddress string `json:"gossip_address"`
	// RPCAddress is where the node serves the node-to-node RPC.
	RPCAddress string     `json:"rpc_address"`
	TLS        ClusterTLS `json:"tls"`
	// Insecure runs Raft and the RPC in plain TCP without authentication
	// and allows gossip without a key (a lab on loopback).
	Insecure bool     `json:"insecure"`
	Join     []string `json:"join"`
	// BootstrapExpect is how many members form a new cluster: every node
	// of it gets the same join list and the same number (default 1).
	BootstrapExpect int    `json:"bootstrap_expect"`
	GossipKey       string `json:"gossip_key"`
	AutoRestore     bool   `json:"auto_restore"`
	DataDir         string `json:"data_dir"`
	// ReplicationUser and ReplicationPassword: a node provisioned by
	// auto_restore replicates from the primary with them.
	ReplicationUser     string `json:"replication_user"`
	ReplicationPassword string `json:"replication_password"`
	// DeadMemberGrace is how long (seconds) a dead member stays in the
	// Raft configuration before the leader removes it.
	DeadMemberGrace float64 `json:"dead_member_grace"`
	// LocalTiming uses fast gossip and Raft timeouts (loopback, tests).
	LocalTiming bool `json:"local_timing"`
	// MySQLAddress is where other members' servers reach this node's
	// server for replication (host:port; default: mysql.client_params).
	MySQLAddress string `json:"mysql_address"`
}

// Enabled reports whether this node takes part in a cluster (it has a
// Raft address).
func (c Cluster) Enabled() bool { return c.RaftAddress != "" }

// Default returns a config holding every default of the original MyHoard
// (and myhoard's own), before a file is applied.
func Default() *Config {
	maxFiles, maxBytes := int64(50), int64(5368709120)
	return &Config{
		Cluster: Cluster{BootstrapExpect: 1},
		BackupSettings: BackupSettings{
			BackupAgeDaysMax:             14,
			BackupCountMax:               30,
			BackupCountMin:               14,
			BackupHour:                   3,
			BackupMinute:                 0,
			BackupIntervalMinutes:        1440,
			ForcedBinlogRotationInterval: 300,
			Incremental:                  Incremental{FullBackupWeekSchedule: "sun,wed"},
		},
		BinlogPurgeSettings: BinlogPurgeSettings{
			Enabled:                   true,
			MinBinlogAgeBeforePurge:   600,
			PurgeInterval:             60,
			MaxFilesPerCycle:          &maxFiles,
			MaxBytesPerCycle:          &maxBytes,
			PurgeWhenObserveNoStreams: true,
		},
		HTTPAddress:  "127.0.0.1",
		HTTPPort:     16001,
		HTTPTimeouts: HTTPTimeouts{ReadHeader: 10, Read: 60, Write: 60, Idle: 120},
		MySQL: MySQL{
			BinlogPrefix:      "/var/lib/mysql/binlog",
			ClientParams:      ClientParams{Host: "127.0.0.1", Port: 3306, User: "root", Timeout: 4},
			ConfigFileName:    "/etc/my.cnf",
			DataDirectory:     "/var/lib/mysql",
			RelayLogIndexFile: "/var/lib/mysql/relay.index",
			RelayLogPrefix:    "/var/lib/mysql/relay",
			Flavor:            "auto",
		},
		RestoreMaxBinlogBytes:   4294967296,
		ObjectCacheMaxMB:        256,
		MemoryLimitMB:           80,
		StorageReadConcurrency:  16,
		VerifyIntervalHours:     24,
		ServerID:                1,
		Statsd:                  Statsd{Tags: map[string]string{"app": "myhoard"}},
		SystemctlCommand:        []string{"sudo", "/usr/bin/systemctl"},
		SystemdEnvUpdateCommand: []string{"sudo", "/usr/bin/myhoard_mysql_env_update", "-f", "/etc/systemd/system/mysqld.environment"},
		Xtrabackup:              Xtrabackup{CopyThreads: 1, CompressThreads: 1, EncryptThreads: 1},
	}
}

// EnvConfigPath is the environment variable naming the config file when no
// flag does.
const EnvConfigPath = "MYHOARD_CONFIG"

// Load reads, decodes and validates the config file at path. On failure the
// error is an Errors value listing every problem. Warnings (valid but
// unwise settings) are returned by Warnings on the result.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{Message: fmt.Sprintf("read config: %v", err)}}
	}
	cfg, err := Parse(data)
	if err != nil {
		var errs Errors
		if errors.As(err, &errs) {
			for i := range errs {
				if errs[i].Path == "" {
					errs[i].Message = path + ": " + errs[i].Message
				}
			}
			return nil, errs
		}
		return nil, err
	}
	return cfg, nil
}

// Parse decodes and validates config file contents.
func Parse(data []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return nil, Errors{{Message: "not valid JSON: " + jsonErrorWhere(data, err)}}
	}
	if dec.More() {
		return nil, Errors{{Message: "not valid JSON: more data after the top-level object"}}
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return nil, Errors{{Message: "the config must be a JSON object, not " + describe(raw)}}
	}
	cfg := Default()
	d := &decoder{}
	d.decodeStruct(obj, reflect.ValueOf(cfg).Elem(), "")
	cfg.applyDerivedDefaults()
	errs := d.errs
	errs = append(errs, cfg.validate()...)
	if len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// Warnings lists settings that are valid but unwise (for example an HTTP
// address beyond loopback).
func (c *Config) Warnings() []string { return append([]string(nil), c.warnings...) }

// UploadSiteName is the site new backups go to: backup_settings.upload_site,
// or the only site that is not recovery_only.
func (c *Config) UploadSiteName() string {
	if c.BackupSettings.UploadSite != "" {
		return c.BackupSettings.UploadSite
	}
	for name, s := range c.BackupSites {
		if !s.RecoveryOnly {
			return name
		}
	}
	return ""
}

// DownloadWorkers is restore_download_workers (or its documented alias
// restore_download_workers_count); 0 means "number of CPUs - 1".
func (c *Config) DownloadWorkers() int {
	if c.RestoreDownloadWorkers != nil {
		return *c.RestoreDownloadWorkers
	}
	if c.RestoreDownloadWorkersCount != nil {
		return *c.RestoreDownloadWorkersCount
	}
	return 0
}

func (c *Config) applyDerivedDefaults() {
	if c.Cluster.NodeID == "" {
		if h, err := os.Hostname(); err == nil {
			c.Cluster.NodeID = h
		}
	}
	if c.Cluster.DataDir == "" && c.StateDirectory != "" {
		c.Cluster.DataDir = strings.TrimRight(c.StateDirectory, "/") + "/cluster"
	}
}

func jsonErrorWhere(data []byte, err error) string {
	var off int64 = -1
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		off = syn.Offset
	case errors.As(err, &typ):
		off = typ.Offset
	}
	if off < 0 {
		return err.Error()
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := off - int64(bytes.LastIndexByte(data[:off], '\n'))
	return fmt.Sprintf("line %d, column %d: %v", line, col, err)
}
