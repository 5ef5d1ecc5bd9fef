package restore

import (
	"context"
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
