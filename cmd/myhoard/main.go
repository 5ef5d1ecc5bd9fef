// Command myhoard is the myhoard daemon and its command-line tools, in one
// binary:
//
//	myhoard --config FILE              run the daemon
//	myhoard check-config --config FILE validate a config and summarise it
//	myhoard version                    print the version
//	myhoard status | backups | backup  client commands for a running daemon
//
// It owns flag parsing, logging setup, signals (SIGHUP reloads the config,
// SIGTERM and SIGINT stop), and wiring the node controller to the HTTP API.
// It must not hold any backup or restore logic itself.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"

	"github.com/myhoard/myhoard/config"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if invokedAsEnvUpdate() {
		os.Exit(envUpdateCommand(os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  myhoard [--config FILE] [--log-level LEVEL] [--log-format text|json] [--pprof 127.0.0.1:PORT]
                                                                         run the daemon (--pprof: profiles on loopback)
  myhoard check-config [--config FILE]                                   validate a config
  myhoard version                                                        print the version
  myhoard status  [--url URL | --config FILE]                            the daemon's mode
  myhoard backups [--url URL | --config FILE]                            list the backups
  myhoard binlogs --stream ID [--full] [--url URL | --config FILE]       a backup's binlogs in storage, as a restore uses them
  myhoard backup  [--binlog [--wait SECONDS]] [--url URL | --config FILE] request a full backup or a binlog rotation
  myhoard restore --stream ID [--site S] [--time T | --gtid G] [--approximate] [--url URL | --config FILE]
                                                                         restore a backup, showing progress
  myhoard restore --status [--url URL | --config FILE]                   the restore's progress, once
  myhoard cluster [--url URL | --config FILE]                            the cluster view: leader, primary, members
  myhoard promote [--force] [--url URL | --config FILE]                  make the local node the primary
  myhoard verify [--site S] [--stream ID] [--deep] [--json] [--config FILE]
                                                                         check the backups in storage without restoring:
                                                                         one finding per line; exit 0 clean, 1 findings, 2 could not run
  myhoard drill [--url URL | --config FILE]                              a restore drill now: the newest backup restored
                                                                         into a scratch server and checked, with progress
  myhoard mysql-env-update -f FILE [-o OPTIONS]                          set MYSQLD_OPTS in a systemd environment
                                                                         file (also run as myhoard_mysql_env_update)

The config file is --config, else $MYHOARD_CONFIG.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "version":
			fmt.Fprintf(stdout, "myhoard %s\n", version)
			return 0
		case "check-config":
			return checkConfig(args[1:], stdout, stderr)
		case "status":
			return statusCommand(args[1:], stdout, stderr)
		case "backups":
			return backupsCommand(args[1:], stdout, stderr)
		case "binlogs":
			return binlogsCommand(args[1:], stdout, stderr)
		case "backup":
			return backupCommand(args[1:], stdout, stderr)
		case "restore":
			return restoreCommand(args[1:], stdout, stderr)
		case "cluster":
			return clusterCommand(args[1:], stdout, stderr)
		case "promote":
			return promoteCommand(args[1:], stdout, stderr)
		case "mysql-env-update":
			return envUpdateCommand(args[1:], stderr)
		case "verify":
			return verifyCommand(args[1:], stdout, stderr)
		case "drill":
			return drillCommand(args[1:], stdout, stderr)
		case "help":
			fmt.Fprint(stdout, usage)
			return 0
		default:
			fmt.Fprintf(stderr, "myhoard: unknown command %q\n%s", args[0], usage)
			return 2
		}
	}
	return daemon(args, stderr)
}

type commonFlags struct {
	config    string
	logLevel  string
	logFormat string
	// pprof is the daemon's loopback profiling address ("": off).
	pprof string
}

func parseFlags(name string, args []string, stderr io.Writer, withLog bool) (*commonFlags, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	f := &commonFlags{}
	fs.StringVar(&f.config, "config", "", "config file (default $"+config.EnvConfigPath+")")
	if withLog {
		fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
		fs.StringVar(&f.logFormat, "log-format", "text", "text or json")
		fs.StringVar(&f.pprof, "pprof", "", "serve the Go runtime's profiles on this loopback address (off by default)")
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "myhoard: unexpected arguments %q\n", fs.Args())
		return nil, errors.New("unexpected arguments")
	}
	if f.config == "" {
		f.config = os.Getenv(config.EnvConfigPath)
	}
	if f.config == "" {
		fmt.Fprintf(stderr, "myhoard: no config file: pass --config FILE or set %s\n", config.EnvConfigPath)
		return nil, errors.New("no config")
	}
	return f, nil
}

// loadConfig loads the config and, on failure, prints every problem on its
// own line, prefixed with the file name.
func loadConfig(path string, stderr io.Writer) (*config.Config, bool) {
	cfg, err := config.Load(path)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, p := range errs {
				fmt.Fprintf(stderr, "%s: %s\n", path, p)
			}
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", path, err)
		}
		return nil, false
	}
	return cfg, true
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	f, err := parseFlags("check-config", args, stderr, false)
	if err != nil {
		return 2
	}
	cfg, ok := loadConfig(f.config, stderr)
	if !ok {
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid\n", f.config)
	fmt.Fprintf(stdout, "  http:      %s:%d\n", cfg.HTTPAddress, cfg.HTTPPort)
	where := fmt.Sprintf("%s:%d", cfg.MySQL.ClientParams.Host, cfg.MySQL.ClientParams.Port)
	if cfg.MySQL.ClientParams.Socket != "" {
		where = cfg.MySQL.ClientParams.Socket
	}
	fmt.Fprintf(stdout, "  mysql:     flavor %s, %s as %s, server_id %d\n", cfg.MySQL.Flavor, where, cfg.MySQL.ClientParams.User, cfg.ServerID)
	fmt.Fprintf(stdout, "  state:     %s\n", cfg.StateDirectory)
	fmt.Fprintf(stdout, "  cluster:   node %s\n", cfg.Cluster.NodeID)
	names := make([]string, 0, len(cfg.BackupSites))
	for n := range cfg.BackupSites {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s := cfg.BackupSites[n]
		var notes []string
		if n == cfg.UploadSiteName() {
			notes = append(notes, "upload site")
		}
		if s.RecoveryOnly {
			notes = append(notes, "recovery only")
		}
		if s.EncryptionKeys != nil {
			notes = append(notes, "encrypted")
		}
		notes = append(notes, "compression "+s.Compression.Algorithm)
		fmt.Fprintf(stdout, "  site %s: %s (%s)\n", n, s.ObjectStorage.URL, strings.Join(notes, ", "))
	}
	for _, w := range cfg.Warnings() {
		fmt.Fprintf(stdout, "  warning: %s\n", w)
	}
	return 0
}

func newLogger(f *commonFlags, stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", f.logFormat)
}
