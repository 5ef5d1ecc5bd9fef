package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/wire"
)

// restoreCommand starts a restore and follows it with a progress line, or
// (--status) prints its state once.
//
// It is long because it is the command's whole dialogue: flags, the
// request, then the progress loop.
func restoreCommand(args []string, stdout, stderr io.Writer) int {
	var stream, site, at, gtid *string
	var approx, status *bool
	var interval *time.Duration
	srv, _, ok := clientFlags("restore", args, stderr, func(fs *flag.FlagSet) {
		stream = fs.String("stream", "", "the backup (stream id) to restore, see `myhoard backups`")
		site = fs.String("site", "", "the backup site (default: the only site that has the backup)")
		at = fs.String("time", "", "restore up to the last transaction before this time (ISO 8601)")
		gtid = fs.String("gtid", "", "restore up to and including this GTID set")
		approx = fs.Bool("approximate", false, "with --time: apply the last binlog whole (faster)")
		status = fs.Bool("status", false, "show the restore's progress once and exit")
		interval = fs.Duration("interval", time.Second, "how often the progress is refreshed")
	})
	if !ok {
		return 2
	}
	ctx := context.Background()
	if *status {
		st, err := srv.RestoreStatus(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "myhoard restore: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, progressLine(st, time.Time{}))
		if st.LastError != "" {
			fmt.Fprintf(stdout, "last error: %s\n", st.LastError)
		}
		return 0
	}
	if *stream == "" {
		fmt.Fprintln(stderr, "myhoard restore: --stream is required (see `myhoard backups`)")
		return 2
	}
	if *at != "" && *gtid != "" {
		fmt.Fprintln(stderr, "myhoard restore: give --time or --gtid, not both")
		return 2
	}
	if *site == "" {
		list, err := srv.Backups(ctx, "")
		if err != nil {
			fmt.Fprintf(stderr, "myhoard restore: %v\n", err)
			return 1
		}
		for _, b := range list {
			if b.StreamID == *stream {
				*site = b.Site
			}
		}
		if *site == "" {
			fmt.Fprintf(stderr, "myhoard restore: no backup %q in the daemon's backup list\n", *stream)
			return 1
		}
	}
	body := wire.ModeRequest{Mode: "restore", Site: *site, StreamID: *stream, TargetGTID: *gtid}
	if *at != "" {
		body.TargetTime, body.TargetTimeApproximateOK = *at, *approx
	}
	if _, err := srv.SetMode(ctx, body); err != nil {
		fmt.Fprintf(stderr, "myhoard restore: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "restoring %s from site %s\n", *stream, *site)
	started := time.Now()
	tty := isTerminal(stdout)
	last := ""
	for {
		mode, err := srv.Status(ctx)
		if err != nil {
			fmt.Fprintf(stderr, "\nmyhoard restore: %v\n", err)
			return 1
		}
		if mode.Mode != "restore" {
			fmt.Fprintf(stdout, "\nrestore completed in %s; the node is in %s mode\n", time.Since(started).Round(time.Second), mode.Mode)
			return 0
		}
		if st, err := srv.RestoreStatus(ctx); err == nil {
			line := progressLine(st, started)
			switch {
			case tty:
				fmt.Fprintf(stdout, "\r\033[K%s", line)
			case line != last:
				fmt.Fprintln(stdout, line)
			}
			last = line
			if st.Phase == "failed" {
				fmt.Fprintf(stderr, "\nmyhoard restore: the restore failed: %s\n", st.LastError)
				return 1
			}
		}
		time.Sleep(*interval)
	}
}

// progressLine is one line: phase, a bar, bytes, binlogs and an ETA.
func progressLine(st wire.RestoreStatus, started time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-28s", st.Phase)
	switch st.Phase {
	case "restoring_basebackup", "preparing_backup", "initiating_binlog_downloads", "getting_backup_info":
		frac := 0.0
		if st.BasebackupBytesTotal > 0 {
			frac = float64(st.BasebackupBytesDownloaded) / float64(st.BasebackupBytesTotal)
		}
		if st.Phase == "preparing_backup" && st.BasebackupPrepareProgress != nil {
			frac = *st.BasebackupPrepareProgress / 100
		}
		fmt.Fprintf(&b, " %s %5.1f%% %s/%s", bar(frac, 24), 100*frac, humanBytes(st.BasebackupBytesDownloaded), humanBytes(st.BasebackupBytesTotal))
		if st.Phase == "restoring_basebackup" && !started.IsZero() && frac > 0.01 && frac < 1 {
			el := time.Since(started)
			fmt.Fprintf(&b, " ETA %s", (time.Duration(float64(el)/frac) - el).Round(time.Second))
		}
		if st.RestoreChainTotal > 1 && st.RestoringStream != "" {
			kind := "full"
			if st.CurrentBackupIncremental {
				kind = "incremental"
			}
			fmt.Fprintf(&b, " chain %d/%d: %s %s", st.RestoreChainIndex, st.RestoreChainTotal, kind, st.RestoringStream)
		}
	default:
		total := st.BinlogsRestored + st.BinlogsBeingRestored + st.BinlogsPending
		frac := 1.0
		if total > 0 {
			frac = float64(st.BinlogsRestored) / float64(total)
		}
		fmt.Fprintf(&b, " %s binlogs %d applied, %d applying, %d pending", bar(frac, 24), st.BinlogsRestored, st.BinlogsBeingRestored, st.BinlogsPending)
	}
	if st.CurrentBackupName != "" {
		fmt.Fprintf(&b, " [%s]", st.CurrentBackupName)
	}
	return b.String()
}

func bar(frac float64, width int) string {
	n := int(frac*float64(width) + 0.5)
	n = max(0, min(width, n))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// envUpdateCommand is `myhoard mysql-env-update` (also run as
// myhoard_mysql_env_update): it sets the MYSQLD_OPTS line of the systemd
// environment file that the database service reads.
func envUpdateCommand(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("mysql-env-update", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("f", "", "the systemd environment file")
	opts := fs.String("o", "", "the options (empty: remove MYSQLD_OPTS)")
	withBinlog := fs.String("b", "", "original helper: true|false, the binlog on")
	withGTIDs := fs.String("g", "", "original helper: true|false, GTIDs on")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *file == "" {
		fmt.Fprintln(stderr, "mysql-env-update: -f FILE is required")
		return 2
	}
	options := *opts
	if *withBinlog != "" || *withGTIDs != "" {
		options = mysql.LegacyEnvOptions(*withBinlog != "false", *withGTIDs != "false")
	}
	if err := mysql.UpdateEnvironmentFile(*file, options); err != nil {
		fmt.Fprintf(stderr, "mysql-env-update: %v\n", err)
		return 1
	}
	return 0
}

func invokedAsEnvUpdate() bool {
	return filepath.Base(os.Args[0]) == "myhoard_mysql_env_update"
}
