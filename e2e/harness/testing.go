package harness

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// StartInstances starts n instances for a test, with server ids 101..100+n,
// under a short temporary directory, and stops them (by PID) when the test
// ends. A missing MariaDB tool fails the test with the package to install.
func StartInstances(t testing.TB, n int, opts Options) []*Instance {
	t.Helper()
	if _, err := FindTools(); err != nil {
		t.Fatal(err)
	}
	base := ShortTempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out := make([]*Instance, n)
	for i := range out {
		o := opts
		o.Dir = filepath.Join(base, fmt.Sprintf("m%d", i+1))
		o.ServerID = uint32(101 + i)
		o.Port = 0
		in, err := NewInstance(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), time.Minute)
			defer scancel()
			_ = in.Stop(sctx)
		})
		out[i] = in
	}
	return out
}

// ShortTempDir makes a temporary directory whose path is short enough for
// unix sockets (t.TempDir paths can exceed the 108-byte limit) and removes
// it when the test ends.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mh")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// OpenDB opens a pool to the instance and closes it when the test ends.
func OpenDB(t testing.TB, in *Instance) *sql.DB {
	t.Helper()
	db, err := in.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Exec runs statements on db, failing the test on the first error.
func Exec(t testing.TB, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// QueryString returns the single string value of a query.
func QueryString(t testing.TB, db *sql.DB, q string, args ...any) string {
	t.Helper()
	var s sql.NullString
	if err := db.QueryRow(q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return s.String
}

// WaitFor polls cond every 20 ms until it holds; after timeout the test
// fails with what it waited for and cond's last description of the
// state. It is the one poll helper of the tests.
func WaitFor(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s (last: %s)", timeout, what, last)
}
