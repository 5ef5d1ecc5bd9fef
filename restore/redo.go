package restore

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	"github.com/myhoard/myhoard/mysql"
)

// ApplyRedoLogSize is the InnoDB redo log the restored server gets for the
// apply when its own is smaller. Applying binlogs is a burst of writes: with
// a small redo log the checkpoint age keeps reaching the point where the
// SQL thread itself must wait for pages to be flushed (BenchmarkRestore:
// see the README's restore section).
const ApplyRedoLogSize = 1 << 30

// redoHeadroom is the free space the data directory's file system must keep
// after the redo log has grown: the apply's own writes come first.
const redoHeadroom = 2 << 30

// GrowRedoLog raises the restored server's InnoDB redo log to size, online
// (MariaDB innodb_log_file_size, MySQL innodb_redo_log_capacity), when it
// is smaller and the file system of dataDir keeps at least 2 GiB free
// after it. It must run while the SQL thread is stopped (no concurrent
// writes while the log file is replaced). It changes no durability: every
// commit is still in the redo log; only checkpoints come less often (and
// crash recovery of the apply may take longer). The configured size comes
// back when finalize restarts the server normally (InnoDB resizes its log
// at startup). A server that cannot resize online (MariaDB < 10.9, MySQL <
// 8.0.30) keeps its log: the apply only runs slower, so that is logged,
// not an error.
func GrowRedoLog(ctx context.Context, db *sql.DB, flavor mysql.Flavor, dataDir string, size int64, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	variable := mysql.DialectOf(flavor).RedoLogSizeVariable()
	var cur int64
	if err := db.QueryRowContext(ctx, "SELECT @@GLOBAL."+variable).Scan(&cur); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("read %s: %w", variable, err)
		}
		log.Info("redo log size unknown, not grown for the apply", "variable", variable, "error", err)
		return nil
	}
	if cur >= size {
		return nil
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dataDir, &fs); err != nil {
		return fmt.Errorf("free space of %s: %w", dataDir, err)
	}
	free := int64(fs.Bavail) * int64(fs.Bsize)
	if !redoGrowthFits(free, size-cur) {
		log.Info("redo log not grown for the apply: too little free disk", "dir", dataDir, "free_bytes", free, "redo_bytes", cur, "wanted_bytes", size)
		return nil
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf("SET GLOBAL %s = %d", variable, size)); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("grow the redo log: %w", err)
		}
		log.Info("redo log not grown for the apply", "variable", variable, "error", err)
		return nil
	}
	log.Info("redo log grown for the apply", "variable", variable, "from_bytes", cur, "to_bytes", size)
	return nil
}

// redoGrowthFits says whether growing the redo log by growth bytes leaves
// the headroom free.
func redoGrowthFits(free, growth int64) bool {
	return free-growth >= redoHeadroom
}
