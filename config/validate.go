package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/myhoard/myhoard/tlsconfig"
)

// compressionLevels are the accepted level ranges per algorithm (nil: the
// algorithm takes no level).
var compressionLevels = map[string]*[2]int{
	"zstd":   {1, 22},
	"lzma":   {0, 9},
	"snappy": nil,
	"none":   nil,
}

// validate checks everything the decoder cannot: ranges, combinations and
// key material. Warnings go to c.warnings.
//
// It is long because it is a list: one check per key, in the order of the
// file.
func (c *Config) validate() Errors {
	var e Errors
	bs := c.BackupSettings
	if c.ServerID < 1 || c.ServerID > 0x7FFFFFFF {
		e.add("server_id", "must be in 1..2147483647 (0x7FFFFFFF), not %d", c.ServerID)
	}
	hasStart := len(c.StartCommand) > 0
	hasSystemd := c.SystemdService != nil && *c.SystemdService != ""
	switch {
	case hasStart && hasSystemd:
		e.add("start_command", "cannot be used together with systemd_service: set only one of them")
	case !hasStart && !hasSystemd:
		e.add("start_command", "one of start_command or systemd_service is required (how myhoard restarts the database during a restore)")
	case hasSystemd && len(c.SystemctlCommand) == 0:
		e.add("systemctl_command", "must not be empty when systemd_service is set")
	}
	for i, a := range c.StartCommand {
		if a == "" {
			e.add(fmt.Sprintf("start_command[%d]", i), "must not be empty")
		}
	}

	if n := bs.BackupIntervalMinutes; n <= 0 || (1440%n != 0 && n%1440 != 0) {
		e.add("backup_settings.backup_interval_minutes", "must divide 1440 (a day) or be a multiple of it, not %d", n)
	}
	if bs.BackupHour < 0 || bs.BackupHour > 23 {
		e.add("backup_settings.backup_hour", "must be 0..23, not %d", bs.BackupHour)
	}
	if bs.BackupMinute < 0 || bs.BackupMinute > 59 {
		e.add("backup_settings.backup_minute", "must be 0..59, not %d", bs.BackupMinute)
	}
	if bs.BackupCountMin < 0 {
		e.add("backup_settings.backup_count_min", "must not be negative, not %d", bs.BackupCountMin)
	}
	if bs.BackupCountMax < 1 {
		e.add("backup_settings.backup_count_max", "must be at least 1, not %d", bs.BackupCountMax)
	} else if bs.BackupCountMax < bs.BackupCountMin {
		e.add("backup_settings.backup_count_max", "(%d) must not be below backup_count_min (%d)", bs.BackupCountMax, bs.BackupCountMin)
	}
	if bs.BackupAgeDaysMax < 1 {
		e.add("backup_settings.backup_age_days_max", "must be at least 1, not %d", bs.BackupAgeDaysMax)
	}
	if bs.ForcedBinlogRotationInterval <= 0 {
		e.add("backup_settings.forced_binlog_rotation_interval", "must be a positive number of seconds, not %v", bs.ForcedBinlogRotationInterval)
	}
	if days, err := bs.Incremental.FullBackupDays(); err != nil {
		e.add("backup_settings.incremental.full_backup_week_schedule", "%v", err)
	} else if len(days) == 0 && bs.Incremental.Enabled {
		e.add("backup_settings.incremental.full_backup_week_schedule", "must name at least one day when incremental backups are enabled")
	}

	c.validateSites(&e)

	bp := c.BinlogPurgeSettings
	if bp.MinBinlogAgeBeforePurge < 0 {
		e.add("binlog_purge_settings.min_binlog_age_before_purge", "must not be negative, not %v", bp.MinBinlogAgeBeforePurge)
	}
	if bp.PurgeInterval <= 0 {
		e.add("binlog_purge_settings.purge_interval", "must be a positive number of seconds, not %v", bp.PurgeInterval)
	}

	if c.HTTPPort < 1 || c.HTTPPort > 65535 {
		e.add("http_port", "must be 1..65535, not %d", c.HTTPPort)
	}
	c.validateHTTP(&e)

	m := c.MySQL
	for _, p := range []struct{ key, val string }{
		{"mysql.binlog_prefix", m.BinlogPrefix},
		{"mysql.config_file_name", m.ConfigFileName},
		{"mysql.data_directory", m.DataDirectory},
		{"mysql.relay_log_index_file", m.RelayLogIndexFile},
		{"mysql.relay_log_prefix", m.RelayLogPrefix},
	} {
		if !filepath.IsAbs(p.val) {
			e.add(p.key, "must be an absolute path, not %q", p.val)
		}
	}
	cp := m.ClientParams
	if cp.Socket == "" {
		if cp.Host == "" {
			e.add("mysql.client_params.host", "must not be empty (or set mysql.client_params.socket)")
		}
		if cp.Port < 1 || cp.Port > 65535 {
			e.add("mysql.client_params.port", "must be 1..65535, not %d", cp.Port)
		}
	} else if !filepath.IsAbs(cp.Socket) {
		e.add("mysql.client_params.socket", "must be an absolute path, not %q", cp.Socket)
	}
	if cp.User == "" {
		e.add("mysql.client_params.user", "must not be empty")
	}
	if cp.Timeout <= 0 {
		e.add("mysql.client_params.timeout", "must be a positive number of seconds, not %v", cp.Timeout)
	}
	switch strings.ToLower(m.Flavor) {
	case "mysql", "mariadb", "auto":
	default:
		e.add("mysql.flavor", "must be mysql, mariadb or auto, not %q", m.Flavor)
	}

	c.validateDrill(&e)
	if c.VerifyIntervalHours < 0 {
		e.add("verify_interval_hours", "must be 0 (never) or a positive number of hours, not %v", c.VerifyIntervalHours)
	}
	if c.ObjectCacheMaxMB < 0 {
		e.add("object_cache_max_mb", "must be 0 (no cache) or a positive number of MiB, not %d", c.ObjectCacheMaxMB)
	}
	if c.MemoryLimitMB < 0 || (c.MemoryLimitMB > 0 && c.MemoryLimitMB < 32) {
		e.add("memory_limit_mb", "must be 0 (no limit) or at least 32, not %d", c.MemoryLimitMB)
	}
	if c.StorageReadConcurrency < 1 || c.StorageReadConcurrency > 256 {
		e.add("storage_read_concurrency", "must be 1..256, not %d", c.StorageReadConcurrency)
	}
	if c.RestoreMaxBinlogBytes < 1<<20 {
		e.add("restore_max_binlog_bytes", "must be at least 1 MiB (1048576), not %d", c.RestoreMaxBinlogBytes)
	}
	if p := c.RestoreFreeMemoryPercentage; p != nil && (*p < 1 || *p > 100) {
		e.add("restore_free_memory_percentage", "must be 1..100 or null, not %d", *p)
	}
	if w := c.RestoreDownloadWorkers; w != nil && *w < 1 {
		e.add("restore_download_workers", "must be at least 1, not %d", *w)
	}
	if w := c.RestoreDownloadWorkersCount; w != nil && *w < 1 {
		e.add("restore_download_workers_count", "must be at least 1, not %d", *w)
	}
	if a, b := c.RestoreDownloadWorkers, c.RestoreDownloadWorkersCount; a != nil && b != nil && *a != *b {
		e.add("restore_download_workers_count", "is an alias of restore_download_workers and disagrees with it (%d != %d)", *b, *a)
	}

	if c.StateDirectory == "" {
		e.add("state_directory", "is required")
	} else if !filepath.IsAbs(c.StateDirectory) {
		e.add("state_directory", "must be an absolute path, not %q", c.StateDirectory)
	}
	if c.TemporaryDirectory != "" && !filepath.IsAbs(c.TemporaryDirectory) {
		e.add("temporary_directory", "must be an absolute path, not %q", c.TemporaryDirectory)
	}
	if c.Statsd.Host != nil && *c.Statsd.Host != "" {
		if c.Statsd.Port == nil || *c.Statsd.Port < 1 || *c.Statsd.Port > 65535 {
			e.add("statsd.port", "must be 1..65535 when statsd.host is set")
		}
	}
	for k, v := range c.Statsd.Tags {
		if strings.ContainsAny(k+v, " :|=,") {
			e.add("statsd.tags."+k, "tag names and values cannot contain space, ':', '|', '=' or ','")
		}
	}
	for _, t := range []struct {
		key string
		n   int
	}{
		{"xtrabackup.copy_threads", c.Xtrabackup.CopyThreads},
		{"xtrabackup.compress_threads", c.Xtrabackup.CompressThreads},
		{"xtrabackup.encrypt_threads", c.Xtrabackup.EncryptThreads},
	} {
		if t.n < 1 {
			e.add(t.key, "must be at least 1, not %d", t.n)
		}
	}
	c.validateCluster(&e)
	sort.SliceStable(e, func(i, j int) bool { return e[i].Path < e[j].Path })
	return e
}

func (c *Config) validateSites(e *Errors) {
	if len(c.BackupSites) == 0 {
		e.add("backup_sites", "at least one backup site is required")
		return
	}
	var writable []string
	for _, name := range sortedSiteNames(c.BackupSites) {
		s := c.BackupSites[name]
		p := "backup_sites." + name
		if s == nil {
			e.add(p, "must be an object, not null")
			continue
		}
		if !s.RecoveryOnly {
			writable = append(writable, name)
		}
		alg := strings.ToLower(s.Compression.Algorithm)
		levels, known := compressionLevels[alg]
		switch {
		case !known:
			msg := fmt.Sprintf("unknown compression algorithm %q (want zstd, snappy, lzma or none)", s.Compression.Algorithm)
			e.add(p+".compression.algorithm", "%s", msg)
		case s.Compression.Level != nil && levels == nil:
			e.add(p+".compression.level", "%s takes no level", alg)
		case s.Compression.Level != nil && (*s.Compression.Level < levels[0] || *s.Compression.Level > levels[1]):
			e.add(p+".compression.level", "must be %d..%d for %s, not %d", levels[0], levels[1], alg, *s.Compression.Level)
		}
		s.Compression.Algorithm = alg
		if s.ObjectStorage == nil {
			e.add(p+".object_storage", "is required")
		}
		if s.SplitSize < 0 {
			e.add(p+".split_size", "must not be negative, not %d", s.SplitSize)
		}
		if k := s.EncryptionKeys; k != nil {
			if err := checkKeyPair(k.Public, k.Private); err != "" {
				e.add(p+".encryption_keys", "%s", err)
			}
		}
	}
	up := c.BackupSettings.UploadSite
	switch {
	case up != "":
		s, ok := c.BackupSites[up]
		if !ok {
			msg := fmt.Sprintf("names no site in backup_sites (have %s)", strings.Join(sortedSiteNames(c.BackupSites), ", "))
			e.add("backup_settings.upload_site", "%s", msg)
		} else if s != nil && s.RecoveryOnly {
			e.add("backup_settings.upload_site", "site %q is recovery_only: backups cannot be written to it", up)
		}
	case len(writable) > 1:
		e.add("backup_settings.upload_site", "is required with more than one site that is not recovery_only (%s)", strings.Join(writable, ", "))
	}
}

func sortedSiteNames(m map[string]*Site) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// checkKeyPair returns "" when public and private are an RSA key pair in
// PEM form, else what is wrong.
func checkKeyPair(public, private string) string {
	if public == "" || private == "" {
		return "needs both public and private (PEM)"
	}
	pub, err := ParseRSAPublicKey(public)
	if err != nil {
		return "public: " + err.Error()
	}
	priv, err := ParseRSAPrivateKey(private)
	if err != nil {
		return "private: " + err.Error()
	}
	if !priv.PublicKey.Equal(pub) {
		return "the public key does not belong to the private key"
	}
	return ""
}

// ParseRSAPublicKey reads a PEM "PUBLIC KEY" (PKIX) or "RSA PUBLIC KEY"
// (PKCS#1) block.
func ParseRSAPublicKey(p string) (*rsa.PublicKey, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil, fmt.Errorf("not a PEM block")
	}
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad public key: %v", err)
		}
		rk, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("not an RSA key (%T)", k)
		}
		return rk, nil
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad RSA public key: %v", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a public key", block.Type)
}

// ParseRSAPrivateKey reads a PEM "RSA PRIVATE KEY" (PKCS#1) or "PRIVATE
// KEY" (PKCS#8) block.
func ParseRSAPrivateKey(p string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil {
		return nil, fmt.Errorf("not a PEM block")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad RSA private key: %v", err)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("bad private key: %v", err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("not an RSA key (%T)", k)
		}
		return rk, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
}

// validateHTTP checks the API's address, authentication, TLS and
// timeouts: a non-loopback address needs a token (or an explicit
// http_allow_unauthenticated).
func (c *Config) validateHTTP(e *Errors) {
	loopback := c.HTTPAddress == "localhost"
	if ip := net.ParseIP(c.HTTPAddress); ip != nil && ip.IsLoopback() {
		loopback = true
	}
	switch {
	case c.HTTPAddress == "":
		e.add("http_address", "must not be empty")
	case !loopback && c.HTTPAuthTokenFile == "" && !c.HTTPAllowUnauthenticated:
		e.add("http_address", "%s is not a loopback address: set http_auth_token_file (or http_allow_unauthenticated: true to serve the API to anyone who can reach it)", c.HTTPAddress)
	case !loopback && c.HTTPAuthTokenFile == "":
		c.warnings = append(c.warnings, fmt.Sprintf("http_address %s is not a loopback address and the API has no token (http_allow_unauthenticated)", c.HTTPAddress))
	}
	if c.HTTPAuthTokenFile != "" {
		if tok, err := ReadToken(c.HTTPAuthTokenFile); err != nil {
			e.add("http_auth_token_file", "%v", err)
		} else if len(tok) < 16 {
			c.warnings = append(c.warnings, fmt.Sprintf("http_auth_token_file %s holds a token of %d characters; use at least 16 random ones", c.HTTPAuthTokenFile, len(tok)))
		}
	}
	t := c.HTTPTLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		e.add("http_tls", "needs both cert_file and key_file")
	} else if t.Enabled() {
		if _, err := tlsconfig.Load(tlsconfig.Files{CertFile: t.CertFile, KeyFile: t.KeyFile}); err != nil {
			e.add("http_tls", "%v", err)
		}
	}
	for _, d := range []struct {
		key string
		v   float64
	}{{"http_timeouts.read_header", c.HTTPTimeouts.ReadHeader}, {"http_timeouts.read", c.HTTPTimeouts.Read},
		{"http_timeouts.write", c.HTTPTimeouts.Write}, {"http_timeouts.idle", c.HTTPTimeouts.Idle}} {
		if d.v <= 0 {
			e.add(d.key, "must be a positive number of seconds, not %v", d.v)
		}
	}
}

// ReadToken reads an API token file: one token, surrounding white space
// ignored.
func ReadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("%s holds more than one token (white space inside)", path)
	}
	return tok, nil
}

func (c *Config) validateCluster(e *Errors) {
	cl := c.Cluster
	if cl.NodeID == "" {
		e.add("cluster.node_id", "is required (the host name could not be read)")
	}
	for _, a := range []struct{ key, val string }{
		{"cluster.raft_address", cl.RaftAddress},
		{"cluster.gossip_address", cl.GossipAddress},
		{"cluster.rpc_address", cl.RPCAddress},
	} {
		if a.val != "" {
			if msg := checkHostPort(a.val); msg != "" {
				e.add(a.key, "%s", msg)
			}
		}
	}
	for i, j := range cl.Join {
		if msg := checkHostPort(j); msg != "" {
			e.add(fmt.Sprintf("cluster.join[%d]", i), "%s", msg)
		}
	}
	if cl.GossipKey != "" {
		k, err := base64.StdEncoding.DecodeString(cl.GossipKey)
		if err != nil {
			e.add("cluster.gossip_key", "is not base64: %v", err)
		} else if n := len(k); n != 16 && n != 24 && n != 32 {
			e.add("cluster.gossip_key", "must decode to 16, 24 or 32 bytes (AES-128/192/256), not %d", n)
		}
	}
	if cl.DataDir != "" && !filepath.IsAbs(cl.DataDir) {
		e.add("cluster.data_dir", "must be an absolute path, not %q", cl.DataDir)
	}
	if cl.RaftAddress != "" && cl.GossipAddress == "" {
		e.add("cluster.gossip_address", "is required with cluster.raft_address")
	}
	if cl.RaftAddress != "" && cl.RPCAddress == "" {
		e.add("cluster.rpc_address", "is required with cluster.raft_address (node-to-node calls, mutual TLS)")
	}
	if cl.Enabled() && cl.Insecure {
		c.warnings = append(c.warnings, "cluster.insecure: Raft and node-to-node calls are plaintext and unauthenticated, gossip may be unencrypted: anyone who reaches these ports can take the cluster over (a lab on loopback only)")
	}
	if cl.Enabled() && !cl.Insecure {
		if cl.GossipKey == "" {
			e.add("cluster.gossip_key", "is required (or cluster.insecure: true for a lab on loopback)")
		}
		t := cl.TLS
		if t.CAFile == "" || t.CertFile == "" || t.KeyFile == "" {
			e.add("cluster.tls", "needs ca_file, cert_file and key_file (mutual TLS between the nodes; or cluster.insecure: true for a lab on loopback)")
		} else if store, err := tlsconfig.Load(tlsconfig.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile}); err != nil {
			e.add("cluster.tls", "%v", err)
		} else if !slices.Contains(store.Names(), cl.NodeID) {
			e.add("cluster.tls.cert_file", "names %v, not this node's id %q (a DNS SAN or the Common Name must be cluster.node_id)", store.Names(), cl.NodeID)
		}
	}
	if cl.RaftAddress == "" && (cl.GossipAddress != "" || len(cl.Join) > 0 || cl.AutoRestore) {
		e.add("cluster.raft_address", "is required to take part in a cluster (gossip_address, join or auto_restore are set)")
	}
	if cl.ReplicationUser == "" && cl.ReplicationPassword != "" {
		e.add("cluster.replication_user", "is required with cluster.replication_password")
	}
	if cl.MySQLAddress != "" {
		if msg := checkHostPort(cl.MySQLAddress); msg != "" {
			e.add("cluster.mysql_address", "%s", msg)
		}
	}
	if cl.BootstrapExpect < 1 {
		e.add("cluster.bootstrap_expect", "must be 1 or more, not %d", cl.BootstrapExpect)
	}
	if cl.BootstrapExpect > 1 && len(cl.Join) == 0 {
		e.add("cluster.bootstrap_expect", "is %d, but cluster.join is empty: list the gossip addresses of the members (every node may get the same list, its own address included)", cl.BootstrapExpect)
	}
	if cl.DeadMemberGrace < 0 {
		e.add("cluster.dead_member_grace", "must not be negative, not %v", cl.DeadMemberGrace)
	}
}

func checkHostPort(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q is not host:port: %v", s, err)
	}
	if host == "" {
		return fmt.Sprintf("%q has no host", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("%q has a bad port", s)
	}
	return ""
}

// validateDrill checks restore_drill: a scratch directory of its own,
// never inside the live data directory or holding it, and a port of its
// own.
func (c *Config) validateDrill(e *Errors) {
	d := c.RestoreDrill
	if d.IntervalHours < 0 {
		e.add("restore_drill.interval_hours", "must be 0 (only on request) or a positive number of hours, not %v", d.IntervalHours)
	}
	if !d.Enabled() {
		if d.IntervalHours > 0 {
			e.add("restore_drill.directory", "is required with interval_hours (a scratch directory for the drill's server)")
		}
		return
	}
	dir := filepath.Clean(d.Directory)
	data := filepath.Clean(c.MySQL.DataDirectory)
	switch {
	case !filepath.IsAbs(d.Directory):
		e.add("restore_drill.directory", "must be an absolute path, not %q", d.Directory)
	case c.MySQL.DataDirectory != "" && (dir == data || strings.HasPrefix(dir, data+"/") || strings.HasPrefix(data, dir+"/")):
		e.add("restore_drill.directory", "%s overlaps mysql.data_directory %s: a drill never touches the live data directory", dir, data)
	}
	if d.Port < 1 || d.Port > 65535 {
		e.add("restore_drill.port", "must be a free TCP port (1..65535) for the scratch server, not %d", d.Port)
	} else if d.Port == c.MySQL.ClientParams.Port {
		e.add("restore_drill.port", "is the live server's port (%d)", d.Port)
	}
	if d.ServerID < 0 || d.ServerID > 4294967295 {
		e.add("restore_drill.server_id", "must be 0 (server_id + 1000) or 1..4294967295, not %d", d.ServerID)
	}
}
