// Command sandbox is what `make run` and `make run-restore` run, to show
// myhoard's main job on one machine. It is a development tool, not part of
// the product.
//
// `make run` starts a local MariaDB server under ./var/run/mariadb (kept
// between runs), writes a myhoard config for it with file storage under
// ./var/run/backups, runs the daemon in active mode and a small write load,
// and prints what is backed up: the backups, the restorable window, and
// how to restore. Ctrl-C (or SIGTERM) stops the load, has the last binlog
// uploaded, prints the tables' checksums and GTID position, and stops the
// daemon, then the server.
//
// `make run-restore` (-restore) restores the latest of those backups into a
// second, empty server under ./var/restore with a second daemon, prints
// the same checksums and position, and stops both.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/myhoard/myhoard/client"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/wire"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		os.Exit(1)
	}
}

func run() error {
	base := flag.String("dir", "var/run", "sandbox directory")
	bin := flag.String("myhoard", "bin/myhoard", "myhoard binary")
	httpPort := flag.Int("http-port", 16001, "myhoard HTTP port")
	restoreMode := flag.Bool("restore", false, "restore the latest backup of -backups into a new server under -dir")
	backups := flag.String("backups", "var/run/backups", "with -restore: the storage directory to restore from")
	flag.Parse()
	dir, err := filepath.Abs(*base)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	if *restoreMode {
		from, err := filepath.Abs(*backups)
		if err != nil {
			return err
		}
		return restoreLatest(ctx, dir, from, *bin, *httpPort)
	}
	return backUp(ctx, dir, *bin, *httpPort)
}

// backUp is `make run`.
func backUp(ctx context.Context, dir, bin string, httpPort int) error {
	fmt.Printf("sandbox: starting MariaDB under %s/mariadb\n", dir)
	in, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(dir, "mariadb"), ServerID: 1, KeepData: true})
	if err != nil {
		return err
	}
	if err := in.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		fmt.Println("sandbox: stopping MariaDB")
		_ = in.Stop(sctx)
	}()
	fmt.Printf("sandbox: MariaDB pid %d on 127.0.0.1:%d, socket %s\n", in.PID(), in.Port, in.Socket)
	fmt.Printf("sandbox: connect with: mariadb --defaults-file=%s\n", in.ConfigFile)
	storageDir := filepath.Join(dir, "backups")
	d, api, err := sandboxDaemon(dir, storageDir, bin, httpPort, in, nil)
	if err != nil {
		return err
	}
	defer d.stop()
	fmt.Printf("sandbox: myhoard pid %d, config %s/myhoard.json, API %s/status (Ctrl-C stops the load, the daemon and the server)\n", d.cmd.Process.Pid, dir, d.url)
	if err := waitFor(ctx, d, "the daemon's API", func() bool { _, err := api.Status(ctx); return err == nil }); err != nil {
		return err
	}
	if _, err := api.SetMode(ctx, wire.ModeRequest{Mode: "active"}); err != nil {
		return fmt.Errorf("PUT /status active: %w", err)
	}
	fmt.Println("sandbox: myhoard is in active mode: a full backup now, then every binlog within seconds")

	db, err := in.Open()
	if err != nil {
		return err
	}
	defer db.Close()
	load, err := harness.NewLoadGen(ctx, db, uint64(time.Now().UnixNano()))
	if err != nil {
		return err
	}
	lctx, stopLoad := context.WithCancel(ctx)
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Run(lctx, 20*time.Millisecond, 0.01) }()
	fmt.Println("sandbox: a write load runs against the server (about 50 transactions a second)")

	reported := ""
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case err := <-d.done:
			stopLoad()
			return fmt.Errorf("myhoard exited: %v", err)
		case <-tick.C:
			list, err := api.Backups(ctx, "asc")
			if err != nil || len(list) == 0 {
				continue
			}
			if line := summary(list, load.Written()); line != reported {
				fmt.Println(line)
				reported = line
			}
		}
	}
	stopLoad()
	if err := <-loadDone; err != nil {
		fmt.Println("sandbox: the load stopped:", err)
	}
	// The last transactions into storage, then the state to compare a
	// restore with.
	uctx, ucancel := context.WithTimeout(context.Background(), time.Minute)
	defer ucancel()
	wait := 30.0
	if err := api.Backup(uctx, wire.BackupRequest{BackupType: "binlog", WaitForUpload: &wait}); err != nil {
		fmt.Println("sandbox: the last binlog upload:", err)
	}
	if err := printState(uctx, "this server", db); err != nil {
		return err
	}
	fmt.Printf("sandbox: the backups are in %s; restore the latest into a second server with:  make run-restore\n", storageDir)
	return nil
}

// summary is one status line: the backups and what they cover.
func summary(list []wire.Backup, written int) string {
	var complete []wire.Backup
	for _, b := range list {
		if b.CompletedAt != nil {
			complete = append(complete, b)
		}
	}
	if len(complete) == 0 {
		return fmt.Sprintf("sandbox: the first backup is running (%d transactions written)", written)
	}
	last := complete[len(complete)-1]
	window := "now (binlogs keep coming)"
	if last.RestorableUntil != nil {
		window = last.RestorableUntil.Format(time.RFC3339)
	}
	from := "-"
	if complete[0].RestorableFrom != nil {
		from = complete[0].RestorableFrom.Format(time.RFC3339)
	}
	return fmt.Sprintf("sandbox: backup completed: %d backup(s), the latest %s (%s stored); restorable from %s to %s",
		len(complete), last.StreamID, bytes(last.Basebackup.EncodedSize), from, window)
}

func bytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// restoreLatest is `make run-restore`.
func restoreLatest(ctx context.Context, dir, backups, bin string, httpPort int) error {
	if _, err := os.Stat(backups); err != nil {
		return fmt.Errorf("no backups to restore (run `make run` first): %w", err)
	}
	_ = os.RemoveAll(dir) // a restore needs an empty server
	fmt.Printf("sandbox: an empty MariaDB under %s/mariadb, to restore into\n", dir)
	in, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(dir, "mariadb"), ServerID: 2, NoInit: true})
	if err != nil {
		return err
	}
	argv := []string{"mariadbd", "--defaults-file=" + in.ConfigFile}
	defer func() {
		sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
		defer scancel()
		fmt.Println("sandbox: stopping the restored MariaDB")
		_ = (&mysql.CommandControl{Argv: argv, StopTimeout: time.Minute}).Stop(sctx)
	}()
	d, api, err := sandboxDaemon(dir, backups, bin, httpPort, in, argv)
	if err != nil {
		return err
	}
	defer d.stop()
	var latest wire.Backup
	if err := waitFor(ctx, d, "the backup listing", func() bool {
		list, err := api.Backups(ctx, "asc")
		for _, b := range list {
			if b.CompletedAt != nil && b.BrokenAt == nil {
				latest = b
			}
		}
		return err == nil && latest.StreamID != ""
	}); err != nil {
		return err
	}
	fmt.Printf("sandbox: restoring backup %s to its latest transaction\n", latest.StreamID)
	if _, err := api.SetMode(ctx, wire.ModeRequest{Mode: "restore", Site: latest.Site, StreamID: latest.StreamID}); err != nil {
		return fmt.Errorf("PUT /status restore: %w", err)
	}
	last := ""
	if err := waitFor(ctx, d, "the restore", func() bool {
		st, _ := api.RestoreStatus(ctx)
		if st.Phase != last && st.Phase != "" {
			fmt.Printf("sandbox: restore phase %s\n", st.Phase)
			last = st.Phase
		}
		if st.Phase == "failed" || st.Phase == "failed_basebackup" {
			return true
		}
		mode, err := api.Status(ctx)
		return err == nil && mode.Mode == "observe"
	}); err != nil {
		return err
	}
	if last == "failed" || last == "failed_basebackup" {
		st, _ := api.RestoreStatus(ctx)
		return fmt.Errorf("the restore failed: %s", st.LastError)
	}
	db, err := in.Open()
	if err != nil {
		return err
	}
	defer db.Close()
	return printState(ctx, "the restored server", db)
}

// printState prints the load tables' checksums and the GTID position.
func printState(ctx context.Context, who string, db *sql.DB) error {
	sums, rows, err := harness.TableChecksums(ctx, db)
	if err != nil {
		return err
	}
	var gtid string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&gtid); err != nil {
		return err
	}
	names := make([]string, 0, len(sums))
	for t := range sums {
		names = append(names, t)
	}
	sort.Strings(names)
	var parts []string
	for _, t := range names {
		parts = append(parts, fmt.Sprintf("%s=%d (%d rows)", t, sums[t], rows[t]))
	}
	fmt.Printf("sandbox: %s: checksums %s\n", who, strings.Join(parts, " "))
	fmt.Printf("sandbox: %s: GTID position %s\n", who, gtid)
	return nil
}

// daemon is a running myhoard.
type daemon struct {
	cmd  *exec.Cmd
	done chan error
	url  string
}

// sandboxDaemon writes the config of a daemon for in (file storage at
// storageDir; startCommand starts a restored server) under dir and starts
// it, with a client of its API.
func sandboxDaemon(dir, storageDir, bin string, httpPort int, in *harness.Instance, startCommand []string) (*daemon, *client.Client, error) {
	cfgPath := filepath.Join(dir, "myhoard.json")
	if err := writeConfig(cfgPath, dir, storageDir, httpPort, in, startCommand); err != nil {
		return nil, nil, err
	}
	d, err := startDaemon(bin, cfgPath)
	if err != nil {
		return nil, nil, err
	}
	d.url = fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	return d, client.New(d.url), nil
}

func startDaemon(bin, cfgPath string) (*daemon, error) {
	cmd := exec.Command(bin, "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	// Own process group: the terminal's Ctrl-C reaches the sandbox only,
	// which stops the daemon in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	d := &daemon{cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	return d, nil
}

func (d *daemon) stop() {
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			fmt.Println("sandbox: myhoard:", err)
		}
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// waitFor polls cond until it holds, the daemon exits or ctx ends.
func waitFor(ctx context.Context, d *daemon, what string, cond func() bool) error {
	for {
		if cond() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped while waiting for %s", what)
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("myhoard exited while waiting for %s: %v", what, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// writeConfig writes the daemon's config: the sandbox server, file
// storage at storageDir; startCommand starts a restored server.
func writeConfig(path, dir, storageDir string, httpPort int, in *harness.Instance, startCommand []string) error {
	if startCommand == nil {
		startCommand = []string{"mariadbd", "--defaults-file=" + in.ConfigFile}
	}
	cfg := map[string]any{
		"http_address":        "127.0.0.1",
		"http_port":           httpPort,
		"server_id":           in.ServerID,
		"state_directory":     filepath.Join(dir, "state"),
		"temporary_directory": filepath.Join(dir, "tmp"),
		"start_command":       startCommand,
		"mysql":               in.MyhoardMySQLConfig(),
		"backup_settings":     map[string]any{"forced_binlog_rotation_interval": 10},
		"backup_sites": map[string]any{
			"default": map[string]any{
				"compression":    map[string]any{"algorithm": "zstd"},
				"object_storage": map[string]any{"storage_type": "local", "directory": storageDir},
			},
		},
		"cluster": map[string]any{"node_id": "sandbox"},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(storageDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}
