package harness

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// LoadDatabase is the schema the load generator writes to.
const LoadDatabase = "loadgen"

// LoadTables are the tables the load generator writes and checksums.
var LoadTables = []string{"accounts", "events"}

// LoadGen writes transactions to an instance: inserts, updates, deletes and
// multi-statement transactions, with optional binlog rotations, and records
// checkpoints (time, GTID position, table checksums) that restores are
// later compared against.
type LoadGen struct {
	db   *sql.DB
	rng  *rand.Rand
	gate sync.RWMutex // writers hold it shared; Checkpoint holds it exclusive

	mu          sync.Mutex
	checkpoints []Checkpoint
	written     int
}

// Checkpoint is the state of the load tables at one point in time.
type Checkpoint struct {
	Label string
	// Time lies strictly between the last transaction before the
	// checkpoint and the first one after it, in whole seconds: binlog
	// timestamps have one-second resolution, so every transaction before
	// has a timestamp < Time and every one after has one >= Time+1s.
	Time time.Time
	// GTID is @@gtid_binlog_pos at the checkpoint.
	GTID string
	// Checksums holds CHECKSUM TABLE ... EXTENDED per table; Rows the
	// row counts.
	Checksums map[string]int64
	Rows      map[string]int64
}

// NewLoadGen creates the load schema on the instance.
func NewLoadGen(ctx context.Context, db *sql.DB, seed uint64) (*LoadGen, error) {
	stmts := []string{
		"CREATE DATABASE IF NOT EXISTS " + LoadDatabase,
		"CREATE TABLE IF NOT EXISTS " + LoadDatabase + ".accounts (id INT PRIMARY KEY, owner VARCHAR(64) NOT NULL, balance BIGINT NOT NULL) ENGINE=InnoDB",
		"CREATE TABLE IF NOT EXISTS " + LoadDatabase + ".events (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, amount BIGINT NOT NULL, note TEXT, created DATETIME(6) NOT NULL) ENGINE=InnoDB",
	}
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			return nil, fmt.Errorf("load schema: %s: %w", q, err)
		}
	}
	return &LoadGen{db: db, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, nil
}

// WriteTransactions commits n transactions, each a random mix of inserts,
// updates and deletes.
func (l *LoadGen) WriteTransactions(ctx context.Context, n int) error {
	for i := 0; i < n; i++ {
		if err := l.writeOne(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (l *LoadGen) writeOne(ctx context.Context) error {
	l.gate.RLock()
	defer l.gate.RUnlock()
	l.mu.Lock()
	account := l.rng.IntN(200)
	amount := l.rng.Int64N(10000) - 5000
	kind := l.rng.IntN(10)
	noteLen := l.rng.IntN(400)
	l.mu.Unlock()
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("load: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	q := []struct {
		sql  string
		args []any
	}{
		{"INSERT INTO " + LoadDatabase + ".accounts (id, owner, balance) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE balance = balance + VALUES(balance)",
			[]any{account, fmt.Sprintf("owner-%d", account), amount}},
		{"INSERT INTO " + LoadDatabase + ".events (account, amount, note, created) VALUES (?, ?, ?, NOW(6))",
			[]any{account, amount, strings.Repeat("x", noteLen)}},
	}
	switch {
	case kind == 0:
		q = append(q, struct {
			sql  string
			args []any
		}{"DELETE FROM " + LoadDatabase + ".events WHERE account = ? ORDER BY id LIMIT 1", []any{account}})
	case kind < 3:
		q = append(q, struct {
			sql  string
			args []any
		}{"UPDATE " + LoadDatabase + ".accounts SET owner = CONCAT(owner, '+') WHERE id = ?", []any{account}})
	}
	for _, s := range q {
		if _, err := tx.ExecContext(ctx, s.sql, s.args...); err != nil {
			return fmt.Errorf("load: %s: %w", s.sql, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("load: commit: %w", err)
	}
	l.mu.Lock()
	l.written++
	l.mu.Unlock()
	return nil
}

// Run writes transactions until ctx ends, pausing `pause` between them and
// rotating the binlog (FLUSH BINARY LOGS) with probability rotate per
// transaction. It returns nil when ctx ends.
func (l *LoadGen) Run(ctx context.Context, pause time.Duration, rotate float64) error {
	for ctx.Err() == nil {
		if err := l.writeOne(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		l.mu.Lock()
		doRotate := l.rng.Float64() < rotate
		l.mu.Unlock()
		if doRotate {
			if _, err := l.db.ExecContext(ctx, "FLUSH BINARY LOGS"); err != nil && ctx.Err() == nil {
				return fmt.Errorf("load: flush binary logs: %w", err)
			}
		}
		if pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}
	return nil
}

// Written is the number of transactions committed so far.
func (l *LoadGen) Written() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written
}

// Checkpoint pauses the writers, waits for a whole-second boundary, records
// the GTID position and table checksums, and resumes writers only after the
// next second has begun (see Checkpoint.Time).
func (l *LoadGen) Checkpoint(ctx context.Context, label string) (Checkpoint, error) {
	l.gate.Lock()
	defer l.gate.Unlock()
	boundary := time.Now().Truncate(time.Second).Add(time.Second)
	if err := sleepUntil(ctx, boundary); err != nil {
		return Checkpoint{}, err
	}
	cp := Checkpoint{Label: label, Time: boundary}
	if err := l.db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&cp.GTID); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: read gtid_binlog_pos: %w", label, err)
	}
	var err error
	if cp.Checksums, cp.Rows, err = TableChecksums(ctx, l.db); err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint %s: %w", label, err)
	}
	if err := sleepUntil(ctx, boundary.Add(time.Second)); err != nil {
		return Checkpoint{}, err
	}
	l.mu.Lock()
	l.checkpoints = append(l.checkpoints, cp)
	l.mu.Unlock()
	return cp, nil
}

// Checkpoints returns every checkpoint recorded so far, oldest first.
func (l *LoadGen) Checkpoints() []Checkpoint {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Checkpoint(nil), l.checkpoints...)
}

// TableChecksums returns CHECKSUM TABLE ... EXTENDED and the row count of
// every load table on db.
func TableChecksums(ctx context.Context, db *sql.DB) (sums, rows map[string]int64, err error) {
	sums, rows = map[string]int64{}, map[string]int64{}
	tables := append([]string(nil), LoadTables...)
	sort.Strings(tables)
	for _, t := range tables {
		var name string
		var sum sql.NullInt64
		if err := db.QueryRowContext(ctx, "CHECKSUM TABLE "+LoadDatabase+"."+t+" EXTENDED").Scan(&name, &sum); err != nil {
			return nil, nil, fmt.Errorf("checksum %s: %w", t, err)
		}
		if !sum.Valid {
			return nil, nil, fmt.Errorf("checksum %s: table does not exist", t)
		}
		var n int64
		if err := db.QueryRowContext(ctx, "SELECT COUNT(*) FROM "+LoadDatabase+"."+t).Scan(&n); err != nil {
			return nil, nil, fmt.Errorf("count %s: %w", t, err)
		}
		sums[t], rows[t] = sum.Int64, n
	}
	return sums, rows, nil
}

func sleepUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// Mismatches compares the load tables and the GTID position of db with a
// checkpoint and describes every difference (none: equal).
func Mismatches(ctx context.Context, db *sql.DB, cp Checkpoint) ([]string, error) {
	sums, rows, err := TableChecksums(ctx, db)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, tbl := range LoadTables {
		if sums[tbl] != cp.Checksums[tbl] || rows[tbl] != cp.Rows[tbl] {
			out = append(out, fmt.Sprintf("%s: checksum %d (%d rows), source %d (%d rows) at %q", tbl, sums[tbl], rows[tbl], cp.Checksums[tbl], cp.Rows[tbl], cp.Label))
		}
	}
	var pos string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		return nil, fmt.Errorf("read gtid_binlog_pos: %w", err)
	}
	if pos != cp.GTID {
		out = append(out, fmt.Sprintf("GTID position %s, source %s at %q", pos, cp.GTID, cp.Label))
	}
	return out, nil
}
