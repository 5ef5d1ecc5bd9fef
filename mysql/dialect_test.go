package mysql

import (
	"reflect"
	"testing"
)

// TestDialects: what differs between the flavours, side by side. (MySQL
// is checked here only: no MySQL server can be installed on the test
// machines.)
func TestDialects(t *testing.T) {
	pct := 40
	ma, my := DialectOf(FlavorMariaDB), DialectOf(FlavorMySQL)
	if DialectOf("").Flavor() != FlavorMariaDB || ma.Flavor() != FlavorMariaDB || my.Flavor() != FlavorMySQL {
		t.Fatal("flavours")
	}
	tests := []struct {
		name   string
		ma, my any
		wantMa any
		wantMy any
	}{
		{"stop", ma.StopReplica(), my.StopReplica(), "STOP SLAVE", "STOP REPLICA"},
		{"reset", ma.ResetReplica(), my.ResetReplica(), []string{"STOP SLAVE", "RESET SLAVE ALL"}, []string{"STOP REPLICA", "RESET REPLICA ALL"}},
		{"stop receiving", ma.StopReceiving(), my.StopReceiving(), "STOP SLAVE IO_THREAD", "STOP REPLICA IO_THREAD"},
		{"status", ma.ReplicaStatus(), my.ReplicaStatus(), "SHOW SLAVE STATUS", "SHOW REPLICA STATUS"},
		{"received", ma.ReceivedColumn(), my.ReceivedColumn(), "Gtid_IO_Pos", "Retrieved_Gtid_Set"},
		{"wait", ma.WaitForGTIDs(), my.WaitForGTIDs(), "SELECT MASTER_GTID_WAIT(?, ?)", "SELECT WAIT_FOR_EXECUTED_GTID_SET(?, ?)"},
		{"workers", ma.ParallelWorkers(3), my.ParallelWorkers(-1), "SET GLOBAL slave_parallel_threads = 3", "SET GLOBAL replica_parallel_workers = 0"},
		{"stop by GTID", ma.StopsByGTID(), my.StopsByGTID(), false, true},
		{"skip replica start", ma.SkipReplicaStart(), my.SkipReplicaStart(), "--skip-slave-start", "--skip-replica-start"},
		{"redo", ma.RedoLogSizeVariable(), my.RedoLogSizeVariable(), "innodb_log_file_size", "innodb_redo_log_capacity"},
		{"tools", []string{ma.BackupTool(), ma.StreamTool(), ma.ToolPackage()}, []string{my.BackupTool(), my.StreamTool(), my.ToolPackage()},
			[]string{"mariabackup", "mbstream", "mariadb-backup"}, []string{"xtrabackup", "xbstream", "percona-xtrabackup"}},
		{"backup flags", ma.BackupFlags(true, true), my.BackupFlags(true, true), []string(nil),
			[]string{"--no-version-check", "--register-redo-log-consumer", "--estimate-memory=ON"}},
		{"prepare flags", ma.PrepareFlags(&pct), my.PrepareFlags(&pct), []string(nil), []string{"--no-version-check", "--use-free-memory-pct=40"}},
		{"client TLS", ma.ClientTLS("/c a.pem"), my.ClientTLS(""), []string{"ssl", `ssl-ca="/c a.pem"`, "ssl-verify-server-cert"}, []string{"ssl-mode=REQUIRED"}},
		{"keep for incrementals", ma.KeepForIncrementals(), my.KeepForIncrementals(), []string(nil), []string{"--apply-log-only"}},
		// recorded --version outputs
		{"tool version", ma.ToolVersion("mariabackup based on MariaDB server 10.11.19-MariaDB debian-linux-gnu (x86_64)\n"),
			my.ToolVersion("xtrabackup version 8.0.35-30 based on MySQL server 8.0.35 Linux (x86_64) (revision id: 6beb4b49)\n"),
			"10.11.19-MariaDB", "8.0.35-30"},
		{"no tool version", ma.ToolVersion("garbage"), my.ToolVersion(""), "", ""},
		{"binlogs in the backup", ma.BackupHasBinlogs(), my.BackupHasBinlogs(), false, true},
		{"apply", ma.ApplyRelayLogs(RelayApply{FirstRelay: "relay.000001", StartFile: "binlog.000003", StartPos: 4, UntilRelay: "relay.000002", UntilPos: 99}),
			my.ApplyRelayLogs(RelayApply{FirstRelay: "relay.000001", StartPos: 4, UntilGTID: "u:7"}),
			[]string{"CHANGE MASTER TO MASTER_HOST='dummy', MASTER_USE_GTID=no, MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=4, RELAY_LOG_FILE='relay.000001', RELAY_LOG_POS=4",
				"START SLAVE SQL_THREAD UNTIL RELAY_LOG_FILE='relay.000002', RELAY_LOG_POS=99"},
			[]string{"CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION=0, SOURCE_HOST='dummy', RELAY_LOG_FILE='relay.000001', RELAY_LOG_POS=4, PRIVILEGE_CHECKS_USER=NULL",
				"START REPLICA SQL_THREAD UNTIL SQL_AFTER_GTIDS = 'u:7'"}},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(tc.ma, tc.wantMa) {
			t.Errorf("%s, MariaDB: %#v, want %#v", tc.name, tc.ma, tc.wantMa)
		}
		if !reflect.DeepEqual(tc.my, tc.wantMy) {
			t.Errorf("%s, MySQL: %#v, want %#v", tc.name, tc.my, tc.wantMy)
		}
	}
}
