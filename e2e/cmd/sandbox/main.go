// Command sandbox is what `make run` runs: it starts a local MariaDB server
// under ./var/run/mariadb (kept between runs), writes a myhoard config for
// it with file storage under ./var/run/backups, and runs the myhoard daemon
// in the foreground. Ctrl-C (or SIGTERM) stops the daemon, then the
// server. It is a development tool, not part of the product.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
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
	flag.Parse()
	dir, err := filepath.Abs(*base)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()

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

	cfgPath := filepath.Join(dir, "myhoard.json")
	if err := writeConfig(cfgPath, dir, *httpPort, in); err != nil {
		return err
	}
	daemon := exec.Command(*bin, "--config", cfgPath)
	daemon.Stdout, daemon.Stderr = os.Stdout, os.Stderr
	// Own process group: the signal reaches it from us, once.
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		return fmt.Errorf("start %s: %w", *bin, err)
	}
	fmt.Printf("sandbox: myhoard pid %d, config %s, API http://127.0.0.1:%d/status (Ctrl-C stops both)\n", daemon.Process.Pid, cfgPath, *httpPort)
	done := make(chan error, 1)
	go func() { done <- daemon.Wait() }()
	select {
	case err := <-done:
		return fmt.Errorf("myhoard exited: %v", err)
	case <-ctx.Done():
	}
	_ = daemon.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			return err
		}
	case <-time.After(30 * time.Second):
		_ = daemon.Process.Kill()
		<-done
	}
	return nil
}

func writeConfig(path, dir string, httpPort int, in *harness.Instance) error {
	cfg := map[string]any{
		"http_address":        "127.0.0.1",
		"http_port":           httpPort,
		"server_id":           in.ServerID,
		"state_directory":     filepath.Join(dir, "state"),
		"temporary_directory": filepath.Join(dir, "tmp"),
		"start_command":       []string{"mariadbd", "--defaults-file=" + in.ConfigFile},
		"mysql":               in.MyhoardMySQLConfig(),
		"backup_sites": map[string]any{
			"default": map[string]any{
				"compression":    map[string]any{"algorithm": "zstd"},
				"object_storage": map[string]any{"storage_type": "local", "directory": filepath.Join(dir, "backups")},
			},
		},
		"cluster": map[string]any{"node_id": "sandbox"},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "backups"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}
