package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
)

// Dialect is everything that differs between MariaDB and MySQL: statement
// forms, variable and column names, server options, and the backup tools
// with their packages and flags. There is one implementation per flavour
// (DialectOf); the packages above never branch on the flavour themselves.
type Dialect interface {
	Flavor() Flavor

	// StopReplica stops replication; ResetReplica stops it and forgets its
	// configuration and relay logs; StopReceiving stops only the thread
	// that receives from the source.
	StopReplica() string
	ResetReplica() []string
	StopReceiving() string
	// ReplicaStatus is the replica status query; ReceivedColumn its column
	// with the GTIDs received from the source.
	ReplicaStatus() string
	ReceivedColumn() string
	// ReplicateFrom are the statements that make the server replicate
	// from r with GTID auto-position.
	ReplicateFrom(r ReplicationSource) ([]string, error)

	// WaitForGTIDs is a query taking (target, seconds) that waits until
	// the server executed target (0: reached); GTIDTarget formats a set
	// as its target.
	WaitForGTIDs() string
	GTIDTarget(s GTIDSet) string
	// Executed reads the GTID set the server executed.
	Executed(ctx context.Context, db Querier) (GTIDSet, error)
	// InitGTIDState gives a restored server the GTID state s, so that
	// strict GTID mode (MariaDB) or GTID auto-skip (MySQL) rejects any
	// replay: MariaDB its replica position and binlog state, MySQL
	// RESET MASTER and gtid_purged.
	InitGTIDState(s GTIDSet) []string
	// ServerUUID reads the server's UUID ("" where there is none).
	ServerUUID(ctx context.Context, db Querier) (string, error)

	// ParallelWorkers sets the SQL thread's worker count (0: serial).
	ParallelWorkers(n int) string
	// ApplyRelayLogs point the SQL thread at laid-out relay logs and
	// start it.
	ApplyRelayLogs(r RelayApply) []string
	// StopsByGTID tells how a point-in-time stop is named: by the GTID
	// (MySQL's UNTIL SQL_AFTER_GTIDS) or by a relay log position.
	StopsByGTID() bool
	// SkipReplicaStart is the server option that keeps replication
	// stopped when the server starts.
	SkipReplicaStart() string
	// RedoLogSizeVariable sizes the InnoDB redo log, online.
	RedoLogSizeVariable() string

	// BackupTool, StreamTool and ToolPackage are the backup program, its
	// xbstream extractor and the package that installs them.
	BackupTool() string
	StreamTool() string
	ToolPackage() string
	// BackupFlags and PrepareFlags are the flavour's extra flags of the
	// backup tool's --backup and --prepare.
	BackupFlags(registerRedoLogConsumer, estimateMemory bool) []string
	PrepareFlags(freeMemoryPercent *int) []string
	// KeepForIncrementals are the --prepare flags of a chain member that
	// more incrementals are applied to (xtrabackup's --apply-log-only;
	// mariabackup needs none).
	KeepForIncrementals() []string
	// ToolVersion reads the backup tool's version from its --version
	// output, in the form the tool writes to xtrabackup_info's
	// tool_version ("" when it cannot be found).
	ToolVersion(versionOutput string) string
	// ClientTLS are the [client] option-file lines of require_ssl (and of
	// a CA to verify the server with).
	ClientTLS(caFile string) []string
	// BackupHasBinlogs: the backup holds the server's binlogs and their
	// index, which a restore drops.
	BackupHasBinlogs() bool
}

// Querier runs a query returning one row (a *sql.DB).
type Querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// RelayApply is where the SQL thread starts and stops in laid-out relay
// logs.
type RelayApply struct {
	// FirstRelay is the first relay log's file name; StartFile and
	// StartPos the first transaction to apply (StartFile is its binlog's
	// name on the server that wrote it).
	FirstRelay, StartFile string
	StartPos              int64
	// UntilRelay and UntilPos stop right after a position (MariaDB);
	// UntilGTID right after a GTID (MySQL).
	UntilRelay string
	UntilPos   int64
	UntilGTID  string
}

// DialectOf is the dialect of a flavour (MariaDB for anything but MySQL).
func DialectOf(f Flavor) Dialect {
	if f == FlavorMySQL {
		return mysqlDialect{}
	}
	return mariadbDialect{}
}

type mariadbDialect struct{}

func (mariadbDialect) Flavor() Flavor         { return FlavorMariaDB }
func (mariadbDialect) StopReplica() string    { return "STOP SLAVE" }
func (mariadbDialect) ResetReplica() []string { return []string{"STOP SLAVE", "RESET SLAVE ALL"} }
func (mariadbDialect) StopReceiving() string  { return "STOP SLAVE IO_THREAD" }
func (mariadbDialect) ReplicaStatus() string  { return "SHOW SLAVE STATUS" }
func (mariadbDialect) ReceivedColumn() string { return "Gtid_IO_Pos" }
func (mariadbDialect) WaitForGTIDs() string   { return "SELECT MASTER_GTID_WAIT(?, ?)" }
func (mariadbDialect) GTIDTarget(s GTIDSet) string {
	return s.MariaDBPosition()
}
func (mariadbDialect) StopsByGTID() bool               { return false }
func (mariadbDialect) SkipReplicaStart() string        { return "--skip-slave-start" }
func (mariadbDialect) RedoLogSizeVariable() string     { return "innodb_log_file_size" }
func (mariadbDialect) BackupTool() string              { return "mariabackup" }
func (mariadbDialect) StreamTool() string              { return "mbstream" }
func (mariadbDialect) ToolPackage() string             { return "mariadb-backup" }
func (mariadbDialect) BackupFlags(bool, bool) []string { return nil }
func (mariadbDialect) PrepareFlags(*int) []string      { return nil }
func (mariadbDialect) BackupHasBinlogs() bool          { return false }
func (mariadbDialect) KeepForIncrementals() []string   { return nil }

// ToolVersion: "mariabackup based on MariaDB server 10.11.19-MariaDB
// debian-linux-gnu (x86_64)" is tool_version 10.11.19-MariaDB.
func (mariadbDialect) ToolVersion(out string) string {
	return firstMatch(mariabackupVersion, out)
}

var (
	mariabackupVersion = regexp.MustCompile(`based on MariaDB server (\S+)`)
	xtrabackupVersion  = regexp.MustCompile(`xtrabackup version (\S+)`)
)

func firstMatch(re *regexp.Regexp, s string) string {
	if m := re.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}
func (mariadbDialect) ParallelWorkers(n int) string {
	return fmt.Sprintf("SET GLOBAL slave_parallel_threads = %d", max(0, n))
}

func (d mariadbDialect) ReplicateFrom(r ReplicationSource) ([]string, error) {
	return replicateStatements("MASTER_", "CHANGE MASTER TO ", "MASTER_USE_GTID=slave_pos", d.StopReplica(), "START SLAVE", r)
}

func (mariadbDialect) Executed(ctx context.Context, db Querier) (GTIDSet, error) {
	var slave, binlog string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_slave_pos, @@GLOBAL.gtid_binlog_pos").Scan(&slave, &binlog); err != nil {
		return GTIDSet{}, fmt.Errorf("read the GTID position: %w", err)
	}
	a, err := ParseMariaDBGTIDSet(slave)
	if err != nil {
		return a, err
	}
	b, err := ParseMariaDBGTIDSet(binlog)
	if err != nil {
		return b, err
	}
	return a.Union(b), nil
}

func (d mariadbDialect) InitGTIDState(s GTIDSet) []string {
	pos := escape(s.MariaDBPosition())
	return append(d.ResetReplica(), "SET GLOBAL gtid_slave_pos = '"+pos+"'", "RESET MASTER", "SET GLOBAL gtid_binlog_state = '"+pos+"'")
}

// ServerUUID: MariaDB has no server_uuid.
func (mariadbDialect) ServerUUID(context.Context, Querier) (string, error) { return "", nil }

// ApplyRelayLogs: MariaDB needs MASTER_USE_GTID=no and both MASTER_LOG_*
// and RELAY_LOG_* (without MASTER_LOG_* its parallel workers crash).
func (d mariadbDialect) ApplyRelayLogs(r RelayApply) []string {
	start := "START SLAVE SQL_THREAD"
	if r.UntilPos > 0 {
		start += fmt.Sprintf(" UNTIL RELAY_LOG_FILE='%s', RELAY_LOG_POS=%d", escape(r.UntilRelay), r.UntilPos)
	}
	return []string{fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='dummy', MASTER_USE_GTID=no, MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d, RELAY_LOG_FILE='%s', RELAY_LOG_POS=%d",
		escape(r.StartFile), r.StartPos, escape(r.FirstRelay), r.StartPos), start}
}

func (mariadbDialect) ClientTLS(caFile string) []string {
	if caFile == "" {
		return []string{"ssl"}
	}
	return []string{"ssl", "ssl-ca=" + OptionValue(caFile), "ssl-verify-server-cert"}
}

type mysqlDialect struct{}

func (mysqlDialect) Flavor() Flavor         { return FlavorMySQL }
func (mysqlDialect) StopReplica() string    { return "STOP REPLICA" }
func (mysqlDialect) ResetReplica() []string { return []string{"STOP REPLICA", "RESET REPLICA ALL"} }
func (mysqlDialect) StopReceiving() string  { return "STOP REPLICA IO_THREAD" }
func (mysqlDialect) ReplicaStatus() string  { return "SHOW REPLICA STATUS" }
func (mysqlDialect) ReceivedColumn() string { return "Retrieved_Gtid_Set" }
func (mysqlDialect) WaitForGTIDs() string   { return "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)" }
func (mysqlDialect) GTIDTarget(s GTIDSet) string {
	return s.String()
}
func (mysqlDialect) StopsByGTID() bool           { return true }
func (mysqlDialect) SkipReplicaStart() string    { return "--skip-replica-start" }
func (mysqlDialect) RedoLogSizeVariable() string { return "innodb_redo_log_capacity" }
func (mysqlDialect) BackupTool() string          { return "xtrabackup" }
func (mysqlDialect) StreamTool() string          { return "xbstream" }
func (mysqlDialect) ToolPackage() string         { return "percona-xtrabackup" }
func (mysqlDialect) BackupHasBinlogs() bool      { return true }
func (mysqlDialect) KeepForIncrementals() []string {
	return []string{"--apply-log-only"}
}

// ToolVersion: "xtrabackup version 8.0.35-30 based on MySQL server 8.0.35
// Linux (x86_64) (revision id: ...)" is tool_version 8.0.35-30.
func (mysqlDialect) ToolVersion(out string) string {
	return firstMatch(xtrabackupVersion, out)
}
func (mysqlDialect) ParallelWorkers(n int) string {
	return fmt.Sprintf("SET GLOBAL replica_parallel_workers = %d", max(0, n))
}

func (d mysqlDialect) ReplicateFrom(r ReplicationSource) ([]string, error) {
	return replicateStatements("SOURCE_", "CHANGE REPLICATION SOURCE TO ", "SOURCE_AUTO_POSITION=1", d.StopReplica(), "START REPLICA", r)
}

func (mysqlDialect) Executed(ctx context.Context, db Querier) (GTIDSet, error) {
	var s string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.gtid_executed").Scan(&s); err != nil {
		return GTIDSet{}, fmt.Errorf("read gtid_executed: %w", err)
	}
	return ParseMySQLGTIDSet(s)
}

// InitGTIDState: RESET MASTER and gtid_purged leave mysql.gtid_executed
// exactly as the original's row patching does (the binlog stays on during
// the apply, so the server keeps it right).
func (d mysqlDialect) InitGTIDState(s GTIDSet) []string {
	return append(d.ResetReplica(), "RESET MASTER", "SET GLOBAL gtid_purged = '"+escape(s.String())+"'")
}

func (mysqlDialect) ServerUUID(ctx context.Context, db Querier) (string, error) {
	var uuid string
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.server_uuid").Scan(&uuid); err != nil {
		return "", fmt.Errorf("read server_uuid: %w", err)
	}
	return uuid, nil
}

// ApplyRelayLogs: MySQL needs SOURCE_AUTO_POSITION=0 and no privilege
// checks user.
func (mysqlDialect) ApplyRelayLogs(r RelayApply) []string {
	start := "START REPLICA SQL_THREAD"
	if r.UntilGTID != "" {
		start += " UNTIL SQL_AFTER_GTIDS = '" + escape(r.UntilGTID) + "'"
	}
	return []string{fmt.Sprintf("CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION=0, SOURCE_HOST='dummy', RELAY_LOG_FILE='%s', RELAY_LOG_POS=%d, PRIVILEGE_CHECKS_USER=NULL",
		escape(r.FirstRelay), r.StartPos), start}
}

func (mysqlDialect) BackupFlags(registerRedoLogConsumer, estimateMemory bool) []string {
	flags := []string{"--no-version-check"}
	if registerRedoLogConsumer {
		flags = append(flags, "--register-redo-log-consumer")
	}
	if estimateMemory {
		flags = append(flags, "--estimate-memory=ON")
	}
	return flags
}

func (mysqlDialect) PrepareFlags(freeMemoryPercent *int) []string {
	flags := []string{"--no-version-check"}
	if freeMemoryPercent != nil {
		flags = append(flags, fmt.Sprintf("--use-free-memory-pct=%d", *freeMemoryPercent))
	}
	return flags
}

func (mysqlDialect) ClientTLS(caFile string) []string {
	if caFile == "" {
		return []string{"ssl-mode=REQUIRED"}
	}
	return []string{"ssl-mode=VERIFY_CA", "ssl-ca=" + OptionValue(caFile)}
}

// escape escapes a SQL string literal's content.
func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}

// OptionValue writes a value for an option file, quoted when it holds
// what the file's syntax would otherwise take (a '#' starts a comment).
func OptionValue(v string) string {
	if v == "" || strings.ContainsAny(v, "#;\"'\\ \t\n") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\t", `\t`).Replace(v) + `"`
	}
	return v
}
