package mysql

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	driver "github.com/go-sql-driver/mysql"
)

// ConnParams say how to reach the server (the config's
// mysql.client_params).
type ConnParams struct {
	Host     string
	Port     int
	Socket   string // used instead of Host and Port when set
	User     string
	Password string
	Database string
	// RequireTLS turns on TLS; CAFile, if set, is the CA bundle to verify
	// the server with.
	RequireTLS bool
	CAFile     string
	Timeout    time.Duration
}

// Where names the server for log and error messages.
func (p ConnParams) Where() string {
	if p.Socket != "" {
		return p.Socket
	}
	return net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
}

// Open returns a connection pool (no connection is made yet).
func Open(p ConnParams) (*sql.DB, error) {
	cfg := driver.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = p.User, p.Password, p.Database
	if p.Socket != "" {
		cfg.Net, cfg.Addr = "unix", p.Socket
	} else {
		cfg.Net, cfg.Addr = "tcp", net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
	}
	if p.Timeout > 0 {
		cfg.Timeout = p.Timeout
		cfg.ReadTimeout = 10 * p.Timeout
		cfg.WriteTimeout = 10 * p.Timeout
	}
	cfg.InterpolateParams = true
	if p.RequireTLS {
		tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: p.Host}
		if p.CAFile != "" {
			pem, err := os.ReadFile(p.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read mysql CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("mysql CA file %s holds no PEM certificate", p.CAFile)
			}
			tc.RootCAs = pool
		}
		cfg.TLS = tc
	}
	conn, err := driver.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connection to %s: %w", p.Where(), err)
	}
	db := sql.OpenDB(conn)
	db.SetMaxOpenConns(4)
	db.SetConnMaxIdleTime(time.Minute)
	return db, nil
}

// DetectFlavor asks the server for SELECT VERSION() and tells its flavor.
func DetectFlavor(ctx context.Context, db *sql.DB) (Flavor, string, error) {
	var version string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return "", "", fmt.Errorf("detect flavor: SELECT VERSION(): %w", err)
	}
	f, err := FlavorFromVersion(version)
	if err != nil {
		return "", version, fmt.Errorf("detect flavor: %w", err)
	}
	return f, version, nil
}

// PurgeBinaryLogsTo purges the binlogs before name (PURGE BINARY LOGS TO,
// which keeps name itself).
func PurgeBinaryLogsTo(ctx context.Context, db *sql.DB, name string) error {
	if _, err := db.ExecContext(ctx, "PURGE BINARY LOGS TO '"+escape(name)+"'"); err != nil {
		return fmt.Errorf("PURGE BINARY LOGS TO '%s': %w", name, err)
	}
	return nil
}

// Server is what Connect learns about the server.
type Server struct {
	Flavor  Flavor
	Version string
	UUID    string
}

// Connect opens a connection pool to the server and detects its flavour,
// version and server UUID (within 10 s); errors name the server.
func Connect(ctx context.Context, p ConnParams) (*sql.DB, Server, error) {
	db, err := Open(p)
	if err != nil {
		return nil, Server{}, err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var s Server
	s.Flavor, s.Version, err = DetectFlavor(dctx, db)
	if err == nil {
		s.UUID, err = DialectOf(s.Flavor).ServerUUID(dctx, db)
	}
	if err != nil {
		db.Close()
		return nil, Server{}, fmt.Errorf("%s: %w", p.Where(), err)
	}
	return db, s, nil
}

// ReadOnly reports @@GLOBAL.read_only.
func ReadOnly(ctx context.Context, db *sql.DB) (bool, error) {
	var ro int
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL.read_only").Scan(&ro); err != nil {
		return false, fmt.Errorf("read read_only: %w", err)
	}
	return ro != 0, nil
}

// FlushBinaryLogs closes the current binlog (FLUSH BINARY LOGS) and
// returns the name of the file it closed (the second newest afterwards;
// "" when the server lists fewer than two).
func FlushBinaryLogs(ctx context.Context, db *sql.DB) (string, error) {
	if _, err := db.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil {
		return "", fmt.Errorf("FLUSH BINARY LOGS: %w", err)
	}
	rows, err := db.QueryContext(ctx, "SHOW BINARY LOGS")
	if err != nil {
		return "", fmt.Errorf("SHOW BINARY LOGS: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", err
	}
	var names []string
	for rows.Next() {
		var name string
		vals := make([]any, len(cols))
		vals[0] = &name
		for i := 1; i < len(cols); i++ {
			vals[i] = new(any)
		}
		if err := rows.Scan(vals...); err != nil {
			return "", fmt.Errorf("SHOW BINARY LOGS: %w", err)
		}
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("SHOW BINARY LOGS: %w", err)
	}
	if len(names) < 2 {
		return "", nil
	}
	return names[len(names)-2], nil
}
