package restore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/myhoard/myhoard/mysql"
)

// ApplyOptions describe one batch of binlogs to apply on a restored server
// through its own SQL thread: the binlogs are laid out as relay logs and
// the SQL thread is pointed at them, which applies ~5-8x faster than
// piping mariadb-binlog into the client.
type ApplyOptions struct {
	// DB is connected to the restored server.
	DB *sql.DB
	// RelayPrefix and RelayIndex are the server's relay_log and
	// relay_log_index (mysql.relay_log_prefix, mysql.relay_log_index_file).
	RelayPrefix, RelayIndex string
	// Files are decoded binlogs in order; they are renamed into relay logs.
	Files []string
	// StartFile and StartPos are where to start: the first file's name on
	// the server that wrote it (MASTER_LOG_FILE; without it parallel apply
	// crashes MariaDB) and the position of its first transaction to apply.
	StartFile string
	StartPos  int64
	// Target is the GTID position to reach (GTIDTarget formats it).
	Target string
	// UntilGTID (MySQL) stops right after this GTID (UNTIL
	// SQL_AFTER_GTIDS); MariaDB uses UntilFile/UntilPos.
	UntilGTID string
	// Flavor picks the SQL dialect (default MariaDB).
	Flavor mysql.Flavor
	// UntilFile/UntilPos, when set, stop the SQL thread right after the
	// transaction that ends there (point-in-time recovery); UntilFile is
	// an index into Files.
	UntilFile int
	UntilPos  int64
	// Parallel is slave_parallel_threads during the apply (0: serial).
	Parallel int
	// Timeout bounds the wait for the target (0: as long as the SQL thread
	// runs).
	Timeout time.Duration
	// Purged, when set, hears (in order) about every file the server has
	// removed while applying (relay_log_purge deletes a relay log once it
	// is applied), so that its disk space can be given to the next
	// downloads at once.
	Purged func(i int)
}

// RelayName is the relay log file for the i-th file of a batch (0-based).
func RelayName(prefix string, i int) string {
	return fmt.Sprintf("%s.%06d", prefix, i+1)
}

// ApplyBinlogs lays out the files as relay logs, points the SQL thread at
// the start position and waits until the target GTID position is
// executed, reporting the SQL thread's error if it stops. The server's
// GTID state must already be set (InitGTIDState), so that strict GTID mode
// rejects any replay.
//
// It is long because laying out the relay logs, starting the SQL thread and
// waiting for it share the batch's state.
func ApplyBinlogs(ctx context.Context, o ApplyOptions) error {
	if len(o.Files) == 0 {
		return nil
	}
	// Reset the replica first: it removes the relay logs of an earlier
	// batch, and the new index must be written before the relay log is
	// initialised again (the server reads it only then).
	d := mysql.DialectOf(o.Flavor)
	if err := mysql.ExecAll(ctx, o.DB, d.ResetReplica()); err != nil {
		return fmt.Errorf("apply binlogs: %w", err)
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
	if err := mysql.ExecAll(ctx, o.DB, startStatements(o)); err != nil {
		return fmt.Errorf("apply binlogs: %w", err)
	}
	deadline := time.Now().Add(o.Timeout)
	purged := 0
	notePurged := func() {
		for o.Purged != nil && purged < len(o.Files) {
			if _, err := os.Stat(RelayName(o.RelayPrefix, purged)); !errors.Is(err, os.ErrNotExist) {
				return
			}
			o.Purged(purged)
			purged++
		}
	}
wait:
	for {
		reached, err := gtidWait(ctx, o.DB, o.Flavor, o.Target, pollSeconds)
		if err != nil {
			return err
		}
		if reached {
			break wait
		}
		notePurged()
		running, errno, msg, err := sqlThreadState(ctx, o.DB, o.Flavor)
		switch {
		case err != nil:
			return err
		case errno != 0:
			return fmt.Errorf("apply binlogs: the SQL thread stopped with error %d: %s", errno, msg)
		case !running:
			// it may have stopped right after the wait timed out
			if res, err := gtidWait(ctx, o.DB, o.Flavor, o.Target, 0); err == nil && res {
				break wait
			}
			return fmt.Errorf("apply binlogs: the SQL thread stopped before reaching %s", o.Target)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("apply binlogs: wait for %s: %w", o.Target, ctx.Err())
		}
		if o.Timeout > 0 && time.Now().After(deadline) {
			return fmt.Errorf("apply binlogs: %s not reached within %v", o.Target, o.Timeout)
		}
	}
	if err := mysql.ExecAll(ctx, o.DB, append(d.ResetReplica(), d.ParallelWorkers(0))); err != nil {
		return fmt.Errorf("apply binlogs: %w", err)
	}
	return nil
}

// InitGTIDState gives a restored server the basebackup's GTID state
// (mysql.Dialect.InitGTIDState), so that any replay is rejected.
func InitGTIDState(ctx context.Context, db *sql.DB, flavor mysql.Flavor, gtid mysql.GTIDSet) error {
	if err := mysql.ExecAll(ctx, db, mysql.DialectOf(flavor).InitGTIDState(gtid)); err != nil {
		return fmt.Errorf("set the GTID state %s: %w", gtid, err)
	}
	return nil
}

// startStatements set the batch's workers, point the SQL thread at the
// relay logs and start it.
func startStatements(o ApplyOptions) []string {
	d := mysql.DialectOf(o.Flavor)
	r := mysql.RelayApply{FirstRelay: filepath.Base(RelayName(o.RelayPrefix, 0)), StartFile: o.StartFile, StartPos: o.StartPos, UntilGTID: o.UntilGTID}
	if o.UntilPos > 0 {
		r.UntilRelay, r.UntilPos = filepath.Base(RelayName(o.RelayPrefix, o.UntilFile)), o.UntilPos
	}
	return append([]string{d.ParallelWorkers(o.Parallel)}, d.ApplyRelayLogs(r)...)
}

// pollSeconds is how long one wait for the target lasts before the SQL
// thread's state and the purged relay logs are looked at.
const pollSeconds = 0.25

func gtidWait(ctx context.Context, db *sql.DB, flavor mysql.Flavor, target string, seconds float64) (bool, error) {
	var res sql.NullInt64
	if err := db.QueryRowContext(ctx, mysql.DialectOf(flavor).WaitForGTIDs(), target, seconds).Scan(&res); err != nil {
		return false, fmt.Errorf("apply binlogs: wait for %s: %w", target, err)
	}
	return res.Valid && res.Int64 == 0, nil
}

// sqlThreadState reads Slave_SQL_Running (Replica_SQL_Running),
// Last_SQL_Errno and Last_SQL_Error.
func sqlThreadState(ctx context.Context, db *sql.DB, flavor mysql.Flavor) (running bool, errno int64, msg string, err error) {
	rows, err := db.QueryContext(ctx, mysql.DialectOf(flavor).ReplicaStatus())
	if err != nil {
		return false, 0, "", fmt.Errorf("apply binlogs: SHOW SLAVE STATUS: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return false, 0, "", err
	}
	if !rows.Next() {
		return false, 0, "", errors.New("apply binlogs: SHOW SLAVE STATUS is empty (was the server restarted?)")
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return false, 0, "", err
	}
	for i, c := range cols {
		switch c {
		case "Slave_SQL_Running", "Replica_SQL_Running":
			running = vals[i].String == "Yes"
		case "Last_SQL_Errno":
			fmt.Sscan(vals[i].String, &errno)
		case "Last_SQL_Error":
			msg = vals[i].String
		}
	}
	return running, errno, msg, nil
}
