package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
)

// ReplicationSource is a server to replicate from with GTID
// auto-position: its address (as the cluster view advertises it), the
// replication account, and TLS (the config's require_ssl and ca_file).
type ReplicationSource struct {
	Host     string
	Port     int
	User     string
	Password string
	SSL      bool
	CAFile   string
}

// ParseReplicationSource reads a host:port address; the host and port are
// validated before any statement is built from them.
func ParseReplicationSource(addr string) (ReplicationSource, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ReplicationSource{}, fmt.Errorf("replication source %q is not host:port: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return ReplicationSource{}, fmt.Errorf("replication source %q: port %q is not a number", addr, port)
	}
	r := ReplicationSource{Host: host, Port: p}
	return r, r.validate()
}

// hostRe: a host name or an IP address, nothing that could end a SQL
// string.
var hostRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,255}$`)

func (r ReplicationSource) validate() error {
	if !hostRe.MatchString(r.Host) {
		return fmt.Errorf("replication source host %q: want a host name or an IP address", r.Host)
	}
	if r.Port < 1 || r.Port > 65535 {
		return fmt.Errorf("replication source port %d: want 1..65535", r.Port)
	}
	return nil
}

// Execer runs statements (a *sql.DB).
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// replicateStatements builds a dialect's statements that make a server
// replicate from r.
func replicateStatements(pre, change, autoPosition, stop, start string, r ReplicationSource) ([]string, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	opts := []string{
		fmt.Sprintf("%sHOST=%s", pre, quote(r.Host)), fmt.Sprintf("%sPORT=%d", pre, r.Port),
		fmt.Sprintf("%sUSER=%s", pre, quote(r.User)), fmt.Sprintf("%sPASSWORD=%s", pre, quote(r.Password)),
		autoPosition, pre + "CONNECT_RETRY=5",
	}
	if r.SSL {
		opts = append(opts, pre+"SSL=1")
		if r.CAFile != "" {
			opts = append(opts, fmt.Sprintf("%sSSL_CA=%s", pre, quote(r.CAFile)))
		}
	}
	return []string{stop, change + strings.Join(opts, ", "), start}, nil
}

// StartReplication makes the server replicate from r; a failing statement
// is named in the error with its password hidden.
func StartReplication(ctx context.Context, db Execer, d Dialect, r ReplicationSource) error {
	stmts, err := d.ReplicateFrom(r)
	if err != nil {
		return err
	}
	return ExecAll(ctx, db, stmts)
}

// ExecAll runs the statements in order and stops at the first that fails,
// naming it (passwords hidden) in the error.
func ExecAll(ctx context.Context, db Execer, stmts []string) error {
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", RedactSQL(q), err)
		}
	}
	return nil
}

// passwordRe finds a password literal in a statement.
var passwordRe = regexp.MustCompile(`(?i)((?:MASTER_|SOURCE_)?PASSWORD\s*=\s*|IDENTIFIED\s+BY\s+)'(?:[^'\\]|\\.|'')*'`)

// RedactSQL hides the passwords of a statement (MASTER_PASSWORD,
// SOURCE_PASSWORD, PASSWORD=, IDENTIFIED BY), for logs and errors.
func RedactSQL(q string) string {
	return passwordRe.ReplaceAllString(q, "$1'<redacted>'")
}

// quote makes a SQL string literal.
func quote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}
