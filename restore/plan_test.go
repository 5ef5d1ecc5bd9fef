package restore

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

func mustSet(t *testing.T, f mysql.Flavor, s string) mysql.GTIDSet {
	t.Helper()
	set, err := mysql.ParseGTIDSet(f, s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// The SQL each flavor gets; MySQL's is checked here only (no MySQL server
// can be installed on the test machines), against the statements the
// reference restore runs.
func TestStatementPlans(t *testing.T) {
	relay := filepath.Join("/r", "relay")
	mysqlSet := mustSet(t, mysql.FlavorMySQL, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77,4e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")
	tests := []struct {
		name string
		got  []string
		want []string
	}{
		{"mysql gtid state", mysql.DialectOf(mysql.FlavorMySQL).InitGTIDState(mysqlSet), []string{
			"STOP REPLICA", "RESET REPLICA ALL", "RESET MASTER",
			"SET GLOBAL gtid_purged = '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-77,4e11fa47-71ca-11e1-9e33-c80aa9429562:1-5'"}},
		{"mariadb gtid state", mysql.DialectOf(mysql.FlavorMariaDB).InitGTIDState(mustSet(t, mysql.FlavorMariaDB, "0-101-93,1-7-5")), []string{
			"STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL gtid_slave_pos = '0-101-93,1-7-5'", "RESET MASTER", "SET GLOBAL gtid_binlog_state = '0-101-93,1-7-5'"}},
		{"mysql batch", startStatements(ApplyOptions{Flavor: mysql.FlavorMySQL, RelayPrefix: relay, StartFile: "binlog.000003", StartPos: 1234, Parallel: 4}), []string{
			"SET GLOBAL replica_parallel_workers = 4",
			"CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION=0, SOURCE_HOST='dummy', RELAY_LOG_FILE='relay.000001', RELAY_LOG_POS=1234, PRIVILEGE_CHECKS_USER=NULL",
			"START REPLICA SQL_THREAD"}},
		{"mysql point in time", startStatements(ApplyOptions{Flavor: mysql.FlavorMySQL, RelayPrefix: relay, StartPos: 4, UntilGTID: "3e11fa47-71ca-11e1-9e33-c80aa9429562:70"}), []string{
			"SET GLOBAL replica_parallel_workers = 0",
			"CHANGE REPLICATION SOURCE TO SOURCE_AUTO_POSITION=0, SOURCE_HOST='dummy', RELAY_LOG_FILE='relay.000001', RELAY_LOG_POS=4, PRIVILEGE_CHECKS_USER=NULL",
			"START REPLICA SQL_THREAD UNTIL SQL_AFTER_GTIDS = '3e11fa47-71ca-11e1-9e33-c80aa9429562:70'"}},
		{"mariadb point in time", startStatements(ApplyOptions{RelayPrefix: relay, StartFile: "binlog.000003", StartPos: 208614, UntilFile: 1, UntilPos: 160631}), []string{
			"SET GLOBAL slave_parallel_threads = 0",
			"CHANGE MASTER TO MASTER_HOST='dummy', MASTER_USE_GTID=no, MASTER_LOG_FILE='binlog.000003', MASTER_LOG_POS=208614, RELAY_LOG_FILE='relay.000001', RELAY_LOG_POS=208614",
			"START SLAVE SQL_THREAD UNTIL RELAY_LOG_FILE='relay.000002', RELAY_LOG_POS=160631"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got\n%q\nwant\n%q", tc.got, tc.want)
			}
		})
	}
	if got := mysql.DialectOf(mysql.FlavorMySQL).GTIDTarget(mysqlSet); got != mysqlSet.String() {
		t.Errorf("mysql wait target %q", got)
	}
	// A MariaDB set that does not start at 1 still gives a position.
	if got := mysql.DialectOf(mysql.FlavorMariaDB).GTIDTarget(mustSet(t, mysql.FlavorMariaDB, "0-101-50-93")); got != "0-101-93" {
		t.Errorf("mariadb wait target %q", got)
	}
}

func TestApplyServerIDAvoidsBinlogServerIDs(t *testing.T) {
	tests := []struct {
		name       string
		configured uint32
		backup     uint32
		gtids      string
		want       uint32
	}{
		{"configured id unused", 301, 101, "0-101-10,1-102-3", 301},
		{"configured id in the binlogs", 101, 101, "0-101-10", 102},
		{"configured id wrote a domain", 7, 101, "0-7-10,1-8-4", 9},
		{"top of the range wraps", 0x7FFFFFFF, 0x7FFFFFFF, "0-1-5", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Coordinator{o: Options{ServerID: tc.configured, StatePath: filepath.Join(t.TempDir(), "s.json")}, log: discard()}
			c.manifest = &storage.BasebackupManifest{ServerID: tc.backup, GTIDExecuted: mustSet(t, mysql.FlavorMariaDB, "0-101-5")}
			c.chain = []storage.StoredBinlog{{Manifest: storage.BinlogManifest{ServerID: tc.backup, GTIDsAdded: mustSet(t, mysql.FlavorMariaDB, tc.gtids)}}}
			if got := c.applyServerID(); got != tc.want {
				t.Errorf("apply server_id %d, want %d", got, tc.want)
			}
			if got := c.State().ApplyServerID; got != tc.want {
				t.Errorf("persisted %d, want %d", got, tc.want)
			}
		})
	}
}

func TestCleanMySQLBackup(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"binlog.000012": "x", "binlog.index": "./binlog.000012\n", "auto.cnf": "[auto]\nserver-uuid=x\n",
		"ibdata1": "data", "xtrabackup_checkpoints": "backup_type = full-prepared\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := cleanMySQLBackup(dir); err != nil {
		t.Fatal(err)
	}
	var left []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{"ibdata1", "xtrabackup_checkpoints"}; !reflect.DeepEqual(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
}
