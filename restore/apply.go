package restore

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ApplyOptions describe one batch of binlogs to apply on a restored
// MariaDB server through its own SQL thread (the relay-log method of
// reference/mariadb-notes.md section 11).
type ApplyOptions struct {
	// DB is connected to the restored server.
	DB *sql.DB
	// RelayPrefix and RelayIndex are the server's relay_log and
	// relay_log_index (mysql.relay_log_prefix, mysql.relay_log_index_file).
	RelayPrefix, RelayIndex string
	// Files are decoded binlogs in order; they are renamed into relay logs.
	Files []string
	// StartFile and StartPos are the basebackup's consistency point (the
	// first file's name and the position in it to start at).
	StartFile string
	StartPos  int64
	// GTID is the basebackup's GTID state; Target the position to reach.
	GTID, Target string
	// UntilFile/UntilPos, when set, stop the SQL thread right after the
	// transaction that ends there (point-in-time recovery); UntilFile is
	// an index into Files.
	UntilFile int
	UntilPos  int64
	// Parallel is slave_parallel_threads during the apply (0: serial).
	Parallel int
	// KeepGTIDState skips setting the GTID state (later batches: the
	// server's own state is already right).
	KeepGTIDState bool
	// Timeout bounds the wait for the target (0: an hour).
	Timeout time.Duration
}

// RelayName is the relay log file for the i-th file of a batch (0-based).
func RelayName(prefix string, i int) string {
	return fmt.Sprintf("%s.%06d", prefix, i+1)
}

// ApplyBinlogs lays out the files as relay logs, sets the GTID state of
// the basebackup (so that strict GTID mode rejects any replay), points the
// SQL thread at the consistency point and waits until the target GTID
// position is executed, reporting the SQL thread's error if it stops.
func ApplyBinlogs(ctx context.Context, o ApplyOptions) error {
	if len(o.Files) == 0 {
		return nil
	}
	// Reset the replica first: it removes the relay logs of an earlier
	// batch, and the new index must be written before the relay log is
	// initialised again (the server reads it only then).
	for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL"} {
		if _, err := o.DB.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("apply binlogs: %s: %w", q, err)
		}
	}
	var index strings.Builder
	for i, f := range o.Files {
		name := RelayName(o.RelayPrefix, i)
		if err := os.Rename(f, name); err != nil {
			return fmt.Errorf("apply binlogs: lay out relay log: %w", err)
		}
		abs, err := filepath.Abs(name)
		if err != nil {
			return err
		}
		index.WriteString(abs + "\n")
	}
	if err := os.WriteFile(o.RelayIndex, []byte(index.String()), 0o640); err != nil {
		return fmt.Errorf("apply binlogs: write %s: %w", o.RelayIndex, err)
	}
	first := filepath.Base(RelayName(o.RelayPrefix, 0))
	var stmts []string
	if o.GTID != "" && !o.KeepGTIDState {
		stmts = append(stmts, "SET GLOBAL gtid_slave_pos = '"+sqlEscape(o.GTID)+"'", "RESET MASTER",
			"SET GLOBAL gtid_binlog_state = '"+sqlEscape(o.GTID)+"'")
	}
	stmts = append(stmts,
		fmt.Sprintf("SET GLOBAL slave_parallel_threads = %d", max(0, o.Parallel)),
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='dummy', MASTER_USE_GTID=no, MASTER_LOG_FILE='%s', MASTER_LOG_POS=%d, RELAY_LOG_FILE='%s', RELAY_LOG_POS=%d",
			sqlEscape(o.StartFile), o.StartPos, sqlEscape(first), o.StartPos))
	start := "START SLAVE SQL_THREAD"
	if o.UntilPos > 0 {
		start += fmt.Sprintf(" UNTIL RELAY_LOG_FILE='%s', RELAY_LOG_POS=%d", sqlEscape(filepath.Base(RelayName(o.RelayPrefix, o.UntilFile))), o.UntilPos)
	}
	stmts = append(stmts, start)
	for _, q := range stmts {
		if _, err := o.DB.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("apply binlogs: %s: %w", q, err)
		}
	}
	timeout := o.Timeout
	if timeout == 0 {
		timeout = time.Hour
	}
	deadline := time.Now().Add(timeout)
	for {
		var res sql.NullInt64
		if err := o.DB.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, 1)", o.Target).Scan(&res); err != nil {
			return fmt.Errorf("apply binlogs: wait for %s: %w", o.Target, err)
		}
		if res.Valid && res.Int64 == 0 {
			break
		}
		if errno, msg, err := sqlThreadError(ctx, o.DB); err != nil {
			return err
		} else if errno != 0 {
			return fmt.Errorf("apply binlogs: the SQL thread stopped with error %d: %s", errno, msg)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("apply binlogs: %s not reached within %v", o.Target, timeout)
		}
	}
	for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL slave_parallel_threads = 0"} {
		if _, err := o.DB.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("apply binlogs: %s: %w", q, err)
		}
	}
	return nil
}

// sqlThreadError reads Last_SQL_Errno and Last_SQL_Error.
func sqlThreadError(ctx context.Context, db *sql.DB) (int64, string, error) {
	rows, err := db.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return 0, "", fmt.Errorf("apply binlogs: SHOW SLAVE STATUS: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil || !rows.Next() {
		return 0, "", err
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return 0, "", err
	}
	var errno int64
	var msg string
	for i, c := range cols {
		switch c {
		case "Last_SQL_Errno":
			fmt.Sscan(vals[i].String, &errno)
		case "Last_SQL_Error":
			msg = vals[i].String
		}
	}
	return errno, msg, nil
}

func sqlEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s)
}
