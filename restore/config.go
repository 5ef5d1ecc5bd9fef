package restore

import (
	"path/filepath"
	"time"

	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/mysql"
)

// OptionsFor are a coordinator's options from the config (the server, its
// directories and the restore limits); the caller adds the state path,
// the site, the keys, the log and the metrics.
func OptionsFor(cfg *config.Config, conn mysql.ConnParams) Options {
	tmp := cfg.TemporaryDirectory
	if tmp == "" {
		tmp = filepath.Dir(filepath.Clean(cfg.MySQL.DataDirectory))
	}
	return Options{
		Server: ServerControl(cfg, conn), Conn: conn,
		DataDir: cfg.MySQL.DataDirectory, TempDir: tmp, RelayPrefix: cfg.MySQL.RelayLogPrefix, RelayIndex: cfg.MySQL.RelayLogIndexFile,
		MaxBinlogBytes: cfg.RestoreMaxBinlogBytes, FreeMemoryPercent: cfg.RestoreFreeMemoryPercentage, ServerID: uint32(cfg.ServerID),
	}
}

// ServerControl is how a restore starts and stops the database server:
// start_command as its own process, or the systemd service.
func ServerControl(cfg *config.Config, conn mysql.ConnParams) mysql.ServerControl {
	ready := mysql.PingReady(conn)
	if len(cfg.StartCommand) > 0 {
		return &mysql.CommandControl{Argv: cfg.StartCommand, LogFile: filepath.Join(cfg.StateDirectory, "mysqld.log"), Ready: ready,
			KillAfter: 2 * time.Minute}
	}
	service := ""
	if cfg.SystemdService != nil {
		service = *cfg.SystemdService
	}
	return &mysql.SystemdControl{Systemctl: cfg.SystemctlCommand, Service: service, EnvUpdate: cfg.SystemdEnvUpdateCommand, Ready: ready}
}
