package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/myhoard/myhoard/tlsconfig/tlstest"
)

// minimal is the smallest valid config; tests patch it.
func minimal() map[string]any {
	return map[string]any{
		"state_directory": "/var/lib/myhoard",
		"start_command":   []any{"/usr/sbin/mariadbd", "--defaults-file=/etc/my.cnf"},
		"backup_sites": map[string]any{
			"default": map[string]any{"object_storage": map[string]any{"url": "file:///var/lib/myhoard/backups"}},
		},
	}
}

func parseMap(t *testing.T, m map[string]any) (*Config, error) {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return Parse(b)
}

func TestDefaults(t *testing.T) {
	cfg, err := parseMap(t, minimal())
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"backup_count_min", cfg.BackupSettings.BackupCountMin, 14},
		{"backup_count_max", cfg.BackupSettings.BackupCountMax, 30},
		{"backup_age_days_max", cfg.BackupSettings.BackupAgeDaysMax, 14},
		{"backup_hour", cfg.BackupSettings.BackupHour, 3},
		{"backup_interval_minutes", cfg.BackupSettings.BackupIntervalMinutes, 1440},
		{"forced_binlog_rotation_interval", cfg.BackupSettings.ForcedBinlogRotationInterval, 300.0},
		{"full_backup_week_schedule", cfg.BackupSettings.Incremental.FullBackupWeekSchedule, "sun,wed"},
		{"compression", cfg.BackupSites["default"].Compression.Algorithm, "zstd"},
		{"purge enabled", cfg.BinlogPurgeSettings.Enabled, true},
		{"min_binlog_age_before_purge", cfg.BinlogPurgeSettings.MinBinlogAgeBeforePurge, 600.0},
		{"purge_interval", cfg.BinlogPurgeSettings.PurgeInterval, 60.0},
		{"max_files_per_cycle", *cfg.BinlogPurgeSettings.MaxFilesPerCycle, int64(50)},
		{"max_bytes_per_cycle", *cfg.BinlogPurgeSettings.MaxBytesPerCycle, int64(5368709120)},
		{"http", cfg.HTTPAddress, "127.0.0.1"},
		{"http_port", cfg.HTTPPort, 16001},
		{"restore_max_binlog_bytes", cfg.RestoreMaxBinlogBytes, int64(4294967296)},
		{"server_id", cfg.ServerID, int64(1)},
		{"flavor", cfg.MySQL.Flavor, "auto"},
		{"client timeout", cfg.MySQL.ClientParams.Timeout, 4.0},
		{"copy_threads", cfg.Xtrabackup.CopyThreads, 1},
		{"statsd tags", cfg.Statsd.Tags["app"], "myhoard"},
		{"cluster data_dir", cfg.Cluster.DataDir, "/var/lib/myhoard/cluster"},
		{"upload site", cfg.UploadSiteName(), "default"},
		{"site url", cfg.BackupSites["default"].ObjectStorage.URL, "file:///var/lib/myhoard/backups"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v (%T), want %v (%T)", c.name, c.got, c.got, c.want, c.want)
		}
	}
	host, _ := os.Hostname()
	if cfg.Cluster.NodeID != host {
		t.Errorf("node_id = %q, want the host name %q", cfg.Cluster.NodeID, host)
	}
}

func TestExampleConfig(t *testing.T) {
	cfg, err := Load(tlstest.WithClusterCerts(t, "../deploy/myhoard.example.json", t.TempDir()))
	if err != nil {
		t.Fatalf("the example config must be valid:\n%v", err)
	}
	if cfg.BackupSites["default"].ObjectStorage.URL != "file:///var/lib/myhoard/backups" {
		t.Errorf("example site URL = %q", cfg.BackupSites["default"].ObjectStorage.URL)
	}
}

func TestOriginalExampleConfig(t *testing.T) {
	// The original's shipped example sets both start_command and
	// systemd_service, which its own validation rejects; so do we.
	_, err := Load("testdata/original-example.json")
	assertProblems(t, err, []Problem{{"start_command", "cannot be used together with systemd_service"}})

	data, err := os.ReadFile("testdata/original-example.json")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "systemd_service")
	cfg, err := parseMap(t, m)
	if err != nil {
		t.Fatalf("the original's example without systemd_service must load:\n%v", err)
	}
	if cfg.BackupSites["default"].Compression.Algorithm != "snappy" || cfg.MySQL.ClientParams.Password != "f@keP@ssw0rd" {
		t.Errorf("values not read: %+v", cfg.BackupSites["default"].Compression)
	}
}

func assertProblems(t *testing.T, err error, want []Problem) {
	t.Helper()
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("want config problems %v, got %v", want, err)
	}
	for _, w := range want {
		found := false
		for _, p := range errs {
			if p.Path == w.Path && strings.Contains(p.Message, w.Message) {
				found = true
			}
		}
		if !found {
			t.Errorf("missing problem %q: %q; got:\n%v", w.Path, w.Message, errs)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("got %d problems, want %d:\n%v", len(errs), len(want), errs)
	}
}

func genKeyPEM(t *testing.T) (pub, priv string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	pub = string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))
	priv = string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	return pub, priv
}

func TestInvalidConfigs(t *testing.T) {
	pub1, priv1 := genKeyPEM(t)
	pub2, _ := genKeyPEM(t)
	site := func(m map[string]any) map[string]any {
		return m["backup_sites"].(map[string]any)["default"].(map[string]any)
	}
	tests := []struct {
		name  string
		patch func(m map[string]any)
		want  []Problem
	}{
		{"unknown top-level key with suggestion", func(m map[string]any) { m["sever_id"] = 3 },
			[]Problem{{"sever_id", `unknown key (did you mean "server_id"?)`}}},
		{"unknown nested key with suggestion", func(m map[string]any) {
			m["backup_settings"] = map[string]any{"backup_count_mx": 3}
		}, []Problem{{"backup_settings.backup_count_mx", `did you mean "backup_count_max"?`}}},
		{"unknown key without suggestion", func(m map[string]any) { m["frobnicate"] = true },
			[]Problem{{"frobnicate", "unknown key"}}},
		{"wrong types", func(m map[string]any) {
			m["http_port"] = "16001"
			m["server_id"] = 1.5
			m["binlog_purge_settings"] = map[string]any{"enabled": "yes"}
			m["start_command"] = "mariadbd"
		}, []Problem{
			{"http_port", `must be a whole number, not the string "16001"`},
			{"server_id", "must be a whole number, not 1.5"},
			{"binlog_purge_settings.enabled", "must be true or false"},
			{"start_command", "must be a list"},
			{"start_command", "one of start_command or systemd_service is required"},
		}},
		{"server_id zero", func(m map[string]any) { m["server_id"] = 0 }, []Problem{{"server_id", "must be in 1..2147483647"}}},
		{"server_id too large", func(m map[string]any) { m["server_id"] = 0x80000000 }, []Problem{{"server_id", "must be in 1..2147483647"}}},
		{"start_command and systemd_service", func(m map[string]any) { m["systemd_service"] = "mariadb" },
			[]Problem{{"start_command", "cannot be used together with systemd_service"}}},
		{"neither start_command nor systemd_service", func(m map[string]any) { delete(m, "start_command") },
			[]Problem{{"start_command", "one of start_command or systemd_service is required"}}},
		{"backup interval", func(m map[string]any) {
			m["backup_settings"] = map[string]any{"backup_interval_minutes": 100}
		}, []Problem{{"backup_settings.backup_interval_minutes", "must divide 1440"}}},
		{"backup interval multiple of a day is fine, hour out of range is not", func(m map[string]any) {
			m["backup_settings"] = map[string]any{"backup_interval_minutes": 2880, "backup_hour": 24}
		}, []Problem{{"backup_settings.backup_hour", "must be 0..23"}}},
		{"not PEM", func(m map[string]any) {
			site(m)["encryption_keys"] = map[string]any{"public": "hello", "private": priv1}
		}, []Problem{{"backup_sites.default.encryption_keys", "public: not a PEM block"}}},
		{"keys do not match", func(m map[string]any) {
			site(m)["encryption_keys"] = map[string]any{"public": pub2, "private": priv1}
		}, []Problem{{"backup_sites.default.encryption_keys", "does not belong to the private key"}}},
		{"private key missing", func(m map[string]any) {
			site(m)["encryption_keys"] = map[string]any{"public": pub1}
		}, []Problem{{"backup_sites.default.encryption_keys", "needs both public and private"}}},
		{"public key where the private one goes", func(m map[string]any) {
			site(m)["encryption_keys"] = map[string]any{"public": pub1, "private": pub1}
		}, []Problem{{"backup_sites.default.encryption_keys", `private: PEM block "PUBLIC KEY" is not a private key`}}},
		{"unknown compression", func(m map[string]any) {
			site(m)["compression"] = map[string]any{"algorithm": "brotli"}
		}, []Problem{{"backup_sites.default.compression.algorithm", `unknown compression algorithm "brotli"`}}},
		{"compression level out of range", func(m map[string]any) {
			site(m)["compression"] = map[string]any{"algorithm": "lzma", "level": 12}
		}, []Problem{{"backup_sites.default.compression.level", "must be 0..9 for lzma"}}},
		{"two writable sites without upload_site", func(m map[string]any) {
			m["backup_sites"].(map[string]any)["second"] = map[string]any{"object_storage": map[string]any{"url": "mem://"}}
		}, []Problem{{"backup_settings.upload_site", "is required with more than one site that is not recovery_only (default, second)"}}},
		{"upload_site names a recovery site", func(m map[string]any) {
			m["backup_sites"].(map[string]any)["old"] = map[string]any{"recovery_only": true, "object_storage": map[string]any{"url": "mem://"}}
			m["backup_settings"] = map[string]any{"upload_site": "old"}
		}, []Problem{{"backup_settings.upload_site", `site "old" is recovery_only`}}},
		{"no sites", func(m map[string]any) { delete(m, "backup_sites") }, []Problem{{"backup_sites", "at least one backup site is required"}}},
		{"bad storage", func(m map[string]any) {
			site(m)["object_storage"] = map[string]any{"storage_type": "locl", "directory": "/x"}
		}, []Problem{{"backup_sites.default.object_storage.storage_type", `did you mean "local"?`}}},
		{"storage key of another type", func(m map[string]any) {
			site(m)["object_storage"] = map[string]any{"storage_type": "local", "directory": "/x", "bucket_name": "b"}
		}, []Problem{{"backup_sites.default.object_storage.bucket_name", "unknown key"}}},
		{"s3 storage class and segment size", func(m map[string]any) {
			site(m)["object_storage"] = map[string]any{"storage_type": "s3", "bucket_name": "b", "storage_class": "GLACIER", "segment_size": 1024}
		}, []Problem{{"backup_sites.default.object_storage.storage_class", `"GLACIER" is not one of STANDARD`},
			{"backup_sites.default.object_storage.segment_size", "between 5 MiB and 5 GiB"}}},
		{"gcs storage class", func(m map[string]any) {
			site(m)["object_storage"] = map[string]any{"storage_type": "google", "bucket_name": "b", "storage_class": "nearline"}
		}, []Problem{{"backup_sites.default.object_storage.storage_class", `"nearline" is not one of STANDARD, NEARLINE`}}},
		{"incremental week schedule", func(m map[string]any) {
			m["backup_settings"] = map[string]any{"incremental": map[string]any{"enabled": true, "full_backup_week_schedule": "sun,funday"}}
		}, []Problem{{"backup_settings.incremental.full_backup_week_schedule", `unknown day "funday"`}}},
		{"incremental without full backup days", func(m map[string]any) {
			m["backup_settings"] = map[string]any{"incremental": map[string]any{"enabled": true, "full_backup_week_schedule": " "}}
		}, []Problem{{"backup_settings.incremental.full_backup_week_schedule", "must name at least one day"}}},
		{"bad url scheme", func(m map[string]any) {
			site(m)["object_storage"] = map[string]any{"url": "ftp://host/x"}
		}, []Problem{{"backup_sites.default.object_storage.url", `unsupported scheme "ftp"`}}},
		{"bad flavor and relative path", func(m map[string]any) {
			m["mysql"] = map[string]any{"flavor": "oracle", "binlog_prefix": "binlog"}
		}, []Problem{{"mysql.flavor", `must be mysql, mariadb or auto, not "oracle"`}, {"mysql.binlog_prefix", "must be an absolute path"}}},
		{"cluster", func(m map[string]any) {
			m["cluster"] = map[string]any{"gossip_key": "c2hvcnQ=", "raft_address": "nohost", "join": []any{"127.0.0.1:0"}, "insecure": true}
		}, []Problem{
			{"cluster.gossip_key", "must decode to 16, 24 or 32 bytes"},
			{"cluster.raft_address", "is not host:port"},
			{"cluster.join[0]", "has a bad port"},
			{"cluster.gossip_address", "is required with cluster.raft_address"},
			{"cluster.rpc_address", "is required with cluster.raft_address"},
		}},
		{"bootstrap_expect", func(m map[string]any) {
			m["cluster"] = map[string]any{"raft_address": "127.0.0.1:1", "gossip_address": "127.0.0.1:2", "rpc_address": "127.0.0.1:3", "bootstrap_expect": 3, "insecure": true}
		}, []Problem{{"cluster.bootstrap_expect", "is 3, but cluster.join is empty"}}},
		{"bootstrap_expect zero", func(m map[string]any) {
			m["cluster"] = map[string]any{"raft_address": "127.0.0.1:1", "gossip_address": "127.0.0.1:2", "rpc_address": "127.0.0.1:3", "bootstrap_expect": 0, "insecure": true}
		}, []Problem{{"cluster.bootstrap_expect", "must be 1 or more, not 0"}}},
		{"a cluster needs TLS and a gossip key", func(m map[string]any) {
			m["cluster"] = map[string]any{"raft_address": "127.0.0.1:1", "gossip_address": "127.0.0.1:2", "rpc_address": "127.0.0.1:3"}
		}, []Problem{{"cluster.gossip_key", "is required (or cluster.insecure: true"}, {"cluster.tls", "needs ca_file, cert_file and key_file"}}},
		{"a certificate for another node", func(m map[string]any) {
			dir := t.TempDir()
			ca := tlstest.NewCA(t, dir, "c")
			c := ca.Issue(t, "db7")
			m["cluster"] = map[string]any{"node_id": "db1", "raft_address": "127.0.0.1:1", "gossip_address": "127.0.0.1:2", "rpc_address": "127.0.0.1:3",
				"gossip_key": "MDEyMzQ1Njc4OWFiY2RlZg==", "tls": map[string]any{"ca_file": ca.File, "cert_file": c.CertFile, "key_file": c.KeyFile}}
		}, []Problem{{"cluster.tls.cert_file", `names [db7], not this node's id "db1"`}}},
		{"a certificate of another CA", func(m map[string]any) {
			dir := t.TempDir()
			ca, other := tlstest.NewCA(t, dir, "c"), tlstest.NewCA(t, dir, "o")
			c := other.Issue(t, "db1")
			m["cluster"] = map[string]any{"node_id": "db1", "raft_address": "127.0.0.1:1", "gossip_address": "127.0.0.1:2", "rpc_address": "127.0.0.1:3",
				"gossip_key": "MDEyMzQ1Njc4OWFiY2RlZg==", "tls": map[string]any{"ca_file": ca.File, "cert_file": c.CertFile, "key_file": c.KeyFile}}
		}, []Problem{{"cluster.tls", "is not signed by the CA bundle"}}},
		{"a public API needs a token", func(m map[string]any) { m["http_address"] = "0.0.0.0" }, []Problem{{"http_address", "set http_auth_token_file"}}},
		{"an unreadable token", func(m map[string]any) { m["http_auth_token_file"] = "/nonexistent/token" }, []Problem{{"http_auth_token_file", "/nonexistent/token"}}},
		{"half of http_tls", func(m map[string]any) { m["http_tls"] = map[string]any{"cert_file": "/x.pem"} }, []Problem{{"http_tls", "needs both cert_file and key_file"}}},
		{"a zero timeout", func(m map[string]any) { m["http_timeouts"] = map[string]any{"read": 0} }, []Problem{{"http_timeouts.read", "must be a positive number"}}},
		{"cluster settings without a raft address", func(m map[string]any) {
			m["cluster"] = map[string]any{"auto_restore": true, "replication_password": "secret", "dead_member_grace": -1}
		}, []Problem{
			{"cluster.raft_address", "is required to take part in a cluster"},
			{"cluster.replication_user", "is required with cluster.replication_password"},
			{"cluster.dead_member_grace", "must not be negative"},
		}},
		{"workers alias disagrees", func(m map[string]any) {
			m["restore_download_workers"] = 2
			m["restore_download_workers_count"] = 3
		}, []Problem{{"restore_download_workers_count", "disagrees"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := minimal()
			tc.patch(m)
			_, err := parseMap(t, m)
			assertProblems(t, err, tc.want)
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	m := minimal()
	m["sever_id"] = 1
	m["http_port"] = 70000
	m["backup_settings"] = map[string]any{"backup_interval_minutes": 7}
	m["backup_sites"].(map[string]any)["default"].(map[string]any)["compression"] = map[string]any{"algorithm": "gzip"}
	_, err := parseMap(t, m)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 4 {
		t.Fatalf("want 4 problems, got %v", err)
	}
	if lines := strings.Split(err.Error(), "\n"); len(lines) != 4 {
		t.Errorf("want one line per problem, got %q", err.Error())
	}
}

func TestStorageForms(t *testing.T) {
	tests := []struct {
		name    string
		storage map[string]any
		url     string
		prefix  string
	}{
		{"url", map[string]any{"url": "s3://b?region=eu-west-1", "prefix": "p/"}, "s3://b?region=eu-west-1", "p/"},
		{"local", map[string]any{"storage_type": "local", "directory": "/srv/backups/", "prefix": "x"}, "file:///srv/backups", "x"},
		{"s3 aws", map[string]any{"storage_type": "s3", "region": "eu-west-1", "bucket_name": "bk", "aws_access_key_id": "a", "aws_secret_access_key": "s"}, "s3://bk?region=eu-west-1", ""},
		{"s3 compatible", map[string]any{"storage_type": "s3", "region": "us-east-1", "bucket_name": "bk", "host": "127.0.0.1", "port": 9000, "is_secure": false},
			"s3://bk?disable_https=true&endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=us-east-1&use_path_style=true", ""},
		{"google", map[string]any{"storage_type": "google", "project_id": "p", "bucket_name": "gb", "credential_file": "/etc/gcs.json"}, "gs://gb", ""},
		{"azure", map[string]any{"storage_type": "azure", "account_name": "acct", "account_key": "k", "bucket_name": "ab"}, "azblob://ab", ""},
		{"azure emulator", map[string]any{"storage_type": "azure", "account_name": "acct", "bucket_name": "ab", "host": "127.0.0.1", "port": 10000, "is_secure": false},
			"azblob://ab?domain=127.0.0.1%3A10000&protocol=http", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := minimal()
			m["backup_sites"] = map[string]any{"s": map[string]any{"object_storage": tc.storage}}
			cfg, err := parseMap(t, m)
			if err != nil {
				t.Fatal(err)
			}
			os := cfg.BackupSites["s"].ObjectStorage
			if os.URL != tc.url || os.Prefix != tc.prefix {
				t.Errorf("URL %q prefix %q, want %q %q", os.URL, os.Prefix, tc.url, tc.prefix)
			}
		})
	}
}

func TestSyntaxErrorNamesLine(t *testing.T) {
	_, err := Parse([]byte("{\n  \"server_id\": 1,\n  \"http_port\": ,\n}"))
	if err == nil || !strings.Contains(err.Error(), "line 3") {
		t.Errorf("want an error naming line 3, got %v", err)
	}
	_, err = Parse([]byte(`[1]`))
	if err == nil || !strings.Contains(err.Error(), "must be a JSON object") {
		t.Errorf("got %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("/nonexistent/myhoard.json")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/myhoard.json") {
		t.Errorf("want an error naming the file, got %v", err)
	}
}

func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../deploy/myhoard.example.json"); err == nil {
		f.Add(b)
	}
	f.Add([]byte(`{"backup_sites": {"a": {"object_storage": {"storage_type": "s3"}}}}`))
	f.Add([]byte(`{"server_id": 1e99}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
		if err != nil && err.Error() == "" {
			t.Fatal("empty error")
		}
	})
}
