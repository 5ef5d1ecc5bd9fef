package harness_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
)

func TestReplicaFollowsPrimaryAndCheckpoints(t *testing.T) {
	ins := harness.StartInstances(t, 2, harness.Options{})
	primary, replica := ins[0], ins[1]
	pdb, rdb := harness.OpenDB(t, primary), harness.OpenDB(t, replica)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if err := replica.ReplicateFrom(ctx, primary); err != nil {
		t.Fatal(err)
	}
	load, err := harness.NewLoadGen(ctx, pdb, 7)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 30); err != nil {
		t.Fatal(err)
	}
	// Writers run while checkpoints are taken.
	runCtx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- load.Run(runCtx, 5*time.Millisecond, 0.05) }()
	var cps []harness.Checkpoint
	for _, label := range []string{"a", "b"} {
		time.Sleep(300 * time.Millisecond) // let the writers write between checkpoints
		cp, err := load.Checkpoint(ctx, label)
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, cp)
	}
	time.Sleep(300 * time.Millisecond)
	stop()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if load.Written() < 35 || len(load.Checkpoints()) != 2 {
		t.Fatalf("written %d, checkpoints %d", load.Written(), len(load.Checkpoints()))
	}
	final, err := load.Checkpoint(ctx, "final")
	if err != nil {
		t.Fatal(err)
	}
	if err := replica.WaitForGTID(ctx, final.GTID); err != nil {
		t.Fatal(err)
	}
	sums, rows, err := harness.TableChecksums(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	for _, tbl := range harness.LoadTables {
		if sums[tbl] != final.Checksums[tbl] || rows[tbl] != final.Rows[tbl] || rows[tbl] == 0 {
			t.Errorf("%s: replica checksum %d rows %d, primary %d rows %d", tbl, sums[tbl], rows[tbl], final.Checksums[tbl], final.Rows[tbl])
		}
	}

	// The checkpoint contract, checked on the primary's binlogs: every
	// transaction up to a checkpoint's GTID is older than its Time, every
	// later one is at least a second newer.
	files, err := filepath.Glob(primary.BinlogPrefix() + ".[0-9]*")
	if err != nil || len(files) < 2 {
		t.Fatalf("binlogs %v %v", files, err)
	}
	for _, cp := range cps {
		at, err := mysql.ParseMariaDBGTIDSet(cp.GTID)
		if err != nil {
			t.Fatal(err)
		}
		before, after := 0, 0
		for _, f := range files {
			_, err := mysql.ReadBinlogFile(f, mysql.FlavorMariaDB, mysql.ReadOptions{AllowInUse: true}, func(tx mysql.Transaction) error {
				if at.Contains(tx.GTID) {
					before++
					if !tx.Timestamp.Before(cp.Time) {
						t.Errorf("checkpoint %s at %v: earlier transaction %s has time %v", cp.Label, cp.Time, tx.GTID, tx.Timestamp)
					}
				} else {
					after++
					if tx.Timestamp.Before(cp.Time.Add(time.Second)) {
						t.Errorf("checkpoint %s at %v: later transaction %s has time %v", cp.Label, cp.Time, tx.GTID, tx.Timestamp)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if before == 0 || after == 0 {
			t.Errorf("checkpoint %s splits nothing: %d before, %d after", cp.Label, before, after)
		}
	}
}

func TestStopAndKill(t *testing.T) {
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	ctx := context.Background()
	pid := in.PID()
	if err := in.Kill(); err != nil {
		t.Fatal(err)
	}
	if in.Running() || in.PID() != 0 {
		t.Fatal("still running after Kill")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("process %d is still alive", pid)
	}
	// It restarts on the same data after a crash.
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := in.Stop(ctx); err != nil || in.Running() {
		t.Fatalf("stop: %v", err)
	}
}

// TestAsNormalUser runs the harness as a user other than root. Run as root
// (as CI does), it rebuilds this test binary and runs the replication test
// as the system user myhoard-test (created if missing); run as a normal
// user, the other tests of this package already are that case, and this
// one checks mariadbd runs as that user.
func TestAsNormalUser(t *testing.T) {
	if os.Getuid() != 0 {
		in := harness.StartInstances(t, 1, harness.Options{})[0]
		owner, err := processUser(in.PID())
		if err != nil {
			t.Fatal(err)
		}
		me, _ := user.Current()
		if owner != me.Uid {
			t.Fatalf("mariadbd runs as uid %s, want %s", owner, me.Uid)
		}
		return
	}
	const name = "myhoard-test"
	if _, err := user.Lookup(name); err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput()
		if err != nil {
			t.Fatalf("useradd %s: %v\n%s", name, err, out)
		}
	}
	dir := harness.ShortTempDir(t)
	bin := filepath.Join(dir, "harness.test")
	build := exec.Command("go", "test", "-c", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build test binary: %v\n%s", err, out)
	}
	u, _ := user.Lookup(name)
	if out, err := exec.Command("chown", "-R", u.Uid+":"+u.Gid, dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v\n%s", err, out)
	}
	cmd := exec.Command("runuser", "-u", name, "--", bin, "-test.run", "^(TestReplicaFollowsPrimaryAndCheckpoints|TestAsNormalUser)$", "-test.v", "-test.count=1")
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "TMPDIR=" + dir, "HOME=" + dir}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestReplicaFollowsPrimaryAndCheckpoints") ||
		!strings.Contains(string(out), "--- PASS: TestAsNormalUser") {
		t.Fatalf("as %s: %v\n%s", name, err, out)
	}
}

func processUser(pid int) (string, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Uid:") {
			return strings.Fields(line)[1], nil
		}
	}
	return "", os.ErrNotExist
}

// TestStartMovesOffATakenPort: a port picked free but taken by another
// process before mariadbd binds it is replaced by another free one.
func TestStartMovesOffATakenPort(t *testing.T) {
	ctx := context.Background()
	in, err := harness.NewInstance(ctx, harness.Options{Dir: filepath.Join(harness.ShortTempDir(t), "m")})
	if err != nil {
		t.Fatal(err)
	}
	taken := in.Port
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", taken))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := in.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Stop(ctx) }()
	if in.Port == taken {
		t.Errorf("still on the taken port %d", taken)
	}
	db, err := in.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.PingContext(ctx); err != nil {
		t.Errorf("the moved server does not answer on %d: %v", in.Port, err)
	}
}
