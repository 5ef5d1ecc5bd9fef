package mysql

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestReplicateStatements(t *testing.T) {
	src := ReplicationSource{Host: "10.0.0.2", Port: 3306, User: "repl", Password: "p'w", SSL: true, CAFile: "/etc/ca.pem"}
	my, err := DialectOf(FlavorMySQL).ReplicateFrom(src)
	if err != nil {
		t.Fatal(err)
	}
	want := "CHANGE REPLICATION SOURCE TO SOURCE_HOST='10.0.0.2', SOURCE_PORT=3306, SOURCE_USER='repl', SOURCE_PASSWORD='p\\'w', SOURCE_AUTO_POSITION=1, " +
		"SOURCE_CONNECT_RETRY=5, SOURCE_SSL=1, SOURCE_SSL_CA='/etc/ca.pem'"
	if len(my) != 3 || my[0] != "STOP REPLICA" || my[1] != want || my[2] != "START REPLICA" {
		t.Errorf("MySQL:\n%q\nwant\n%q", my, want)
	}
	src.SSL, src.CAFile = false, ""
	ma, err := DialectOf(FlavorMariaDB).ReplicateFrom(src)
	if err != nil {
		t.Fatal(err)
	}
	want = "CHANGE MASTER TO MASTER_HOST='10.0.0.2', MASTER_PORT=3306, MASTER_USER='repl', MASTER_PASSWORD='p\\'w', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=5"
	if ma[1] != want || ma[0] != "STOP SLAVE" {
		t.Errorf("MariaDB:\n%q\nwant\n%q", ma, want)
	}
}

func TestReplicationSourceValidated(t *testing.T) {
	for _, addr := range []string{"db1:0", "db1:70000", "db1:3306x", "db'1:3306", "db1 ;DROP:3306", "nohost", ":3306"} {
		if _, err := ParseReplicationSource(addr); err == nil {
			t.Errorf("%q accepted", addr)
		}
	}
	for _, addr := range []string{"db1.example.com:3306", "10.0.0.2:3307", "[fd00::2]:3306"} {
		if _, err := ParseReplicationSource(addr); err != nil {
			t.Errorf("%q: %v", addr, err)
		}
	}
	if _, err := DialectOf(FlavorMySQL).ReplicateFrom(ReplicationSource{Host: "x'); DROP TABLE t; --", Port: 3306}); err == nil {
		t.Error("a host with SQL in it was accepted")
	}
}

// failingDB fails the CHANGE statement, as a server refusing it would.
type failingDB struct{}

func (failingDB) ExecContext(_ context.Context, q string, _ ...any) (sql.Result, error) {
	if strings.HasPrefix(q, "CHANGE") {
		return nil, errors.New("Error 1200: the server refused")
	}
	return nil, nil
}

// TestFailedStatementHidesThePassword: the error of a failing CHANGE
// statement, logged, shows the statement without the password, for both
// flavours.
func TestFailedStatementHidesThePassword(t *testing.T) {
	for _, f := range []Flavor{FlavorMySQL, FlavorMariaDB} {
		var logs bytes.Buffer
		log := slog.New(slog.NewTextHandler(&logs, nil))
		err := StartReplication(context.Background(), failingDB{}, DialectOf(f), ReplicationSource{Host: "db1", Port: 3306, User: "repl", Password: "hunter2-secret"})
		if err == nil {
			t.Fatalf("%s: no error", f)
		}
		log.Error("replication failed", "error", err)
		if strings.Contains(logs.String(), "hunter2") || !strings.Contains(logs.String(), "PASSWORD='<redacted>'") || !strings.Contains(logs.String(), "the server refused") {
			t.Errorf("%s: %s", f, logs.String())
		}
	}
}

func TestRedactSQL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"CHANGE MASTER TO MASTER_USER='u', MASTER_PASSWORD='a\\'b', MASTER_PORT=1", "CHANGE MASTER TO MASTER_USER='u', MASTER_PASSWORD='<redacted>', MASTER_PORT=1"},
		{"change replication source to source_password = 'x''y'", "change replication source to source_password = '<redacted>'"},
		{"CREATE USER 'a'@'%' IDENTIFIED BY 'pw'", "CREATE USER 'a'@'%' IDENTIFIED BY '<redacted>'"},
		{"SET PASSWORD = 'pw'", "SET PASSWORD = '<redacted>'"},
		{"SELECT 1", "SELECT 1"},
	}
	for _, tc := range tests {
		if got := RedactSQL(tc.in); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}
