// Package drill owns restore drills: proving that the newest backup
// restores, by restoring it into a scratch server (its own data
// directory, port, socket and server_id) up to the newest uploaded
// transaction with the restore coordinator, checking that the server
// starts with exactly that GTID state and that CHECK TABLE finds every
// table sound, then stopping the scratch server and deleting it.
//
// It must never touch the live server or its data directory (every path
// is under the drill's own directory), never write to object storage,
// and never mark a backup broken: a failed drill reports.
package drill

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/myhoard/myhoard/metrics"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/restore"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// Options say where and how a drill runs.
type Options struct {
	// Dir holds everything of the scratch server; it is emptied before
	// and after a drill.
	Dir string
	// Port and ServerID are the scratch server's.
	Port     int
	ServerID uint32
	// StartCommand is the scratch server's command line, a template:
	// {dir}, {datadir}, {socket}, {port}, {server_id} are replaced (nil:
	// DefaultCommand).
	StartCommand []string
	// Conn are the credentials of the backed-up server (the restored
	// server has its users); the drill connects over the scratch socket.
	Conn           mysql.ConnParams
	MaxBinlogBytes int64
	Keys           storage.Keyring
	Log            *slog.Logger
	Metrics        *metrics.Metrics
}

// Result is what a drill found.
type Result = wire.DrillResult

// DefaultCommand is the scratch MariaDB server's command line.
var DefaultCommand = []string{"mariadbd", "--no-defaults", "--datadir={datadir}", "--socket={socket}", "--port={port}",
	"--bind-address=127.0.0.1", "--pid-file={dir}/mysqld.pid", "--log-error={dir}/error.log", "--tmpdir={dir}/tmp",
	"--log-bin={dir}/binlog/binlog", "--relay-log={dir}/relay/relay", "--relay-log-index={dir}/relay/relay.index",
	"--binlog-format=ROW", "--log-slave-updates=ON", "--gtid-strict-mode=ON", "--innodb-buffer-pool-size=128M", "--server-id={server_id}"}

// Command is the scratch server's command line for o.
func Command(o Options) []string {
	tmpl := o.StartCommand
	if len(tmpl) == 0 {
		tmpl = DefaultCommand
		if os.Geteuid() == 0 {
			// mariadbd refuses to run as root unless told so
			if u, err := user.Current(); err == nil {
				tmpl = append(append([]string(nil), tmpl...), "--user="+u.Username)
			}
		}
	}
	r := strings.NewReplacer("{dir}", o.Dir, "{datadir}", filepath.Join(o.Dir, "data"), "{socket}", socket(o),
		"{port}", strconv.Itoa(o.Port), "{server_id}", strconv.FormatUint(uint64(o.ServerID), 10))
	out := make([]string, len(tmpl))
	for i, a := range tmpl {
		out[i] = r.Replace(a)
	}
	if !strings.Contains(out[0], "/") {
		if p, err := exec.LookPath(out[0]); err == nil {
			out[0] = p
		} else if _, err := os.Stat("/usr/sbin/" + out[0]); err == nil {
			out[0] = "/usr/sbin/" + out[0] // not in a non-root PATH on Debian
		}
	}
	return out
}

func socket(o Options) string { return filepath.Join(o.Dir, "mysqld.sock") }

// Drill is one drill running: its progress and result.
type Drill struct {
	mu     sync.Mutex
	coord  *restore.Coordinator
	result *Result
}

// Status is the restore's progress while the drill restores.
func (d *Drill) Status() (wire.RestoreStatus, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.coord == nil {
		return wire.RestoreStatus{}, false
	}
	return d.coord.Status(), true
}

// ErrNoSpace is wrapped when the drill's directory lacks the disk for it.
var ErrNoSpace = errors.New("not enough disk for a restore drill")

// Run drills the newest restorable backup of site among backups. It
// always returns a result (OK or what failed) and leaves Dir empty.
func (d *Drill) Run(ctx context.Context, site *storage.Site, backups []wire.Backup, o Options) Result {
	res := Result{At: time.Now().UTC()}
	err := d.run(ctx, site, backups, o, &res)
	if err != nil {
		res.Error = err.Error()
	}
	res.OK = err == nil
	if cerr := cleanUp(o); cerr != nil && res.OK {
		res.OK, res.Error = false, cerr.Error()
	}
	d.mu.Lock()
	d.result = &res
	d.coord = nil
	d.mu.Unlock()
	return res
}

func (d *Drill) run(ctx context.Context, site *storage.Site, backups []wire.Backup, o Options, res *Result) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b := restore.NewestRestorable(backups, site.Name, "")
	if b == nil {
		return fmt.Errorf("site %s has no restorable backup to drill", site.Name)
	}
	res.Site, res.StreamID = b.Site, b.StreamID
	m := b.Basebackup.BasebackupManifest
	chain, err := restore.ListChain(ctx, site, m)
	if err != nil {
		return fmt.Errorf("list the binlogs after backup %s: %w", b.StreamID, err)
	}
	target := m.GTIDExecuted
	var binlogBytes int64
	for _, bl := range chain {
		target = target.Union(bl.End())
		binlogBytes += bl.Manifest.Size
	}
	res.TargetGTID = target.String()
	members, _ := restore.ChainOf(backups, *b)
	var need int64
	for _, mb := range members {
		need += mb.Basebackup.Size
		res.Bytes += mb.Basebackup.EncodedSize
	}
	for _, bl := range chain {
		res.Bytes += bl.Manifest.EncodedSize
	}
	need += min(binlogBytes, max(o.MaxBinlogBytes, 1<<30))
	if err := cleanUp(o); err != nil {
		return err
	}
	for _, sub := range []string{"data", "tmp", "relay", "binlog"} {
		if err := os.MkdirAll(filepath.Join(o.Dir, sub), 0o750); err != nil {
			return fmt.Errorf("restore drill: %w", err)
		}
	}
	if free, err := freeBytes(o.Dir); err == nil && free < need {
		return fmt.Errorf("restore drill in %s: %w: it needs about %d bytes (backup %s and its binlogs), %d are free", o.Dir, ErrNoSpace, need, b.StreamID, free)
	}
	conn := o.Conn
	conn.Host, conn.Port, conn.Socket = "", 0, socket(o)
	argv := Command(o)
	server := &mysql.CommandControl{Argv: argv, LogFile: filepath.Join(o.Dir, "mysqld.log"), Ready: mysql.PingReady(conn),
		StartTimeout: 5 * time.Minute, StopTimeout: 2 * time.Minute, KillAfter: 2 * time.Minute}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		if err := server.Stop(sctx); err != nil {
			log.Warn("restore drill: stopping the scratch server", "error", err)
		}
	}()
	req := &restore.Request{Site: site.Name, StreamID: b.StreamID, TargetGTID: &target}
	if target.IsSubsetOf(m.GTIDExecuted) {
		req.TargetGTID = nil // nothing was written after the backup: the backup is the target
	}
	coord, err := restore.New(restore.Options{StatePath: filepath.Join(o.Dir, "restore_state.json"), Site: site, Keys: o.Keys, Server: server,
		Conn: conn, DataDir: filepath.Join(o.Dir, "data"), TempDir: filepath.Join(o.Dir, "tmp"), RelayPrefix: filepath.Join(o.Dir, "relay", "relay"),
		RelayIndex: filepath.Join(o.Dir, "relay", "relay.index"), MaxBinlogBytes: o.MaxBinlogBytes, ServerID: o.ServerID,
		Log: log.With("component", "drill"), Metrics: o.Metrics},
		req)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.coord = coord
	d.mu.Unlock()
	log.Info("restore drill started", "backup", b.StreamID, "target_gtid", res.TargetGTID, "dir", o.Dir)
	start := time.Now()
	phase, err := coord.Run(ctx)
	res.RestoreSeconds = time.Since(start).Seconds()
	if err != nil {
		return fmt.Errorf("restore drill of %s: %w", b.StreamID, err)
	}
	if phase != restore.PhaseCompleted {
		return fmt.Errorf("restore drill of %s ended in %s: %s", b.StreamID, phase, coord.State().LastError)
	}
	db, err := mysql.Open(conn)
	if err != nil {
		return fmt.Errorf("restore drill: connect to the scratch server: %w", err)
	}
	defer db.Close()
	got, err := mysql.DialectOf(m.Flavor).Executed(ctx, db)
	if err != nil {
		return fmt.Errorf("restore drill: %w", err)
	}
	if !got.Equal(target) {
		return fmt.Errorf("restore drill of %s: the scratch server executed %s, the target was %s", b.StreamID, got, target)
	}
	n, err := checkTables(ctx, db)
	res.TablesChecked = n
	if err != nil {
		return fmt.Errorf("restore drill of %s: %w", b.StreamID, err)
	}
	log.Info("restore drill passed", "backup", b.StreamID, "target_gtid", res.TargetGTID, "restore_seconds", res.RestoreSeconds, "tables", n)
	return nil
}

// checkTables runs CHECK TABLE on every table; any answer but OK (or a
// note) is an error naming the table.
func checkTables(ctx context.Context, db *sql.DB) (int, error) {
	rows, err := db.QueryContext(ctx, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "+
		"AND TABLE_SCHEMA NOT IN ('information_schema', 'performance_schema', 'sys')")
	if err != nil {
		return 0, fmt.Errorf("list tables: %w", err)
	}
	var tables []string
	for rows.Next() {
		var schema, name string
		if err := rows.Scan(&schema, &name); err != nil {
			rows.Close()
			return 0, err
		}
		tables = append(tables, "`"+strings.ReplaceAll(schema, "`", "``")+"`.`"+strings.ReplaceAll(name, "`", "``")+"`")
	}
	rows.Close()
	var bad []string
	for _, t := range tables {
		res, err := db.QueryContext(ctx, "CHECK TABLE "+t)
		if err != nil {
			return 0, fmt.Errorf("CHECK TABLE %s: %w", t, err)
		}
		for res.Next() {
			var table, op, msgType, msg string
			if err := res.Scan(&table, &op, &msgType, &msg); err != nil {
				res.Close()
				return 0, err
			}
			if msgType == "error" || (msgType == "status" && msg != "OK") {
				bad = append(bad, fmt.Sprintf("%s: %s %s", t, msgType, msg))
			}
		}
		res.Close()
	}
	if len(bad) > 0 {
		return len(tables), fmt.Errorf("CHECK TABLE found problems: %s", strings.Join(bad, "; "))
	}
	return len(tables), nil
}

// cleanUp empties the drill's directory.
func cleanUp(o Options) error {
	entries, err := os.ReadDir(o.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore drill: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(o.Dir, e.Name())); err != nil {
			return fmt.Errorf("restore drill: clean %s: %w", o.Dir, err)
		}
	}
	return nil
}

func freeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
