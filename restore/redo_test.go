package restore

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
)

func TestRedoGrowthFits(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name         string
		free, growth int64
		want         bool
	}{
		{"plenty", 70 * gib, gib, true},
		{"exactly the headroom left", 3 * gib, gib, true},
		{"a byte short", 3*gib - 1, gib, false},
		{"small disk", 8 << 20, gib, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := redoGrowthFits(tc.free, tc.growth); got != tc.want {
				t.Fatalf("redoGrowthFits(%d, %d) = %v, want %v", tc.free, tc.growth, got, tc.want)
			}
		})
	}
}

// TestGrowRedoLog: the redo log grows online, never shrinks, and the
// configured size is back after a restart (what finalize relies on).
func TestGrowRedoLog(t *testing.T) {
	ctx := context.Background()
	in := harness.StartInstances(t, 1, harness.Options{})[0] // innodb_log_file_size=32M
	db := harness.OpenDB(t, in)
	size := func() int64 {
		t.Helper()
		n, err := strconv.ParseInt(harness.QueryString(t, db, "SELECT @@GLOBAL.innodb_log_file_size"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got := size(); got != 32<<20 {
		t.Fatalf("configured redo log %d, want 32 MiB", got)
	}
	for _, tc := range []struct {
		name       string
		size, want int64
	}{
		{"grows", 64 << 20, 64 << 20},
		{"never shrinks", 48 << 20, 64 << 20},
	} {
		if err := GrowRedoLog(ctx, db, mysql.FlavorMariaDB, in.DataDir, tc.size, nil); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := size(); got != tc.want {
			t.Fatalf("%s: redo log %d, want %d", tc.name, got, tc.want)
		}
	}
	harness.Exec(t, db, "CREATE DATABASE r", "CREATE TABLE r.t (id INT PRIMARY KEY)", "INSERT INTO r.t VALUES (1)")
	if err := in.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	db = harness.OpenDB(t, in)
	if got := size(); got != 32<<20 {
		t.Fatalf("after a restart the redo log is %d, want the configured 32 MiB", got)
	}
	if n := harness.QueryString(t, db, "SELECT COUNT(*) FROM r.t"); n != "1" {
		t.Fatalf("rows after the restart: %s, want 1", n)
	}
}

// TestGrowRedoLogMySQL: MySQL's redo log is innodb_redo_log_capacity,
// and a server that lacks it (before 8.0.30) or refuses the SET keeps its
// log without failing the restore (recorded outputs: no MySQL here).
func TestGrowRedoLogMySQL(t *testing.T) {
	const read, grow = "SELECT @@GLOBAL.innodb_redo_log_capacity", "SET GLOBAL innodb_redo_log_capacity = 1073741824"
	unknown := errors.New("Error 1193 (HY000): Unknown system variable 'innodb_redo_log_capacity'")
	tests := []struct {
		name    string
		answers map[string]string
		fails   map[string]error
		want    []string
	}{
		{"grows", map[string]string{read: "104857600"}, nil, []string{read, grow}},
		{"large enough", map[string]string{read: "2147483648"}, nil, []string{read}},
		{"before 8.0.30", nil, map[string]error{read: unknown}, []string{read}},
		{"SET refused", map[string]string{read: "104857600"}, map[string]error{grow: errors.New("Error 1227 (42000): Access denied")}, []string{read, grow}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &recordedDB{answers: tc.answers, fails: tc.fails}
			if err := GrowRedoLog(context.Background(), openRecorded(t, r), mysql.FlavorMySQL, t.TempDir(), ApplyRedoLogSize, nil); err != nil {
				t.Fatalf("GrowRedoLog: %v", err)
			}
			if got := r.statements(); !slices.Equal(got, tc.want) {
				t.Fatalf("statements %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("a cancelled context is an error", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r := &recordedDB{answers: map[string]string{read: "104857600"}}
		if err := GrowRedoLog(ctx, openRecorded(t, r), mysql.FlavorMySQL, t.TempDir(), ApplyRedoLogSize, nil); err == nil {
			t.Fatal("GrowRedoLog with a cancelled context: no error")
		}
	})
}
