package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/storage/storagetest"
)

// benchRows is the sysbench table size (8 tables); 500000 gives about
// 1 GiB of data. MYHOARD_BENCH_ROWS overrides it.
func benchRows() int {
	if n, err := strconv.Atoi(os.Getenv("MYHOARD_BENCH_ROWS")); err == nil && n > 0 {
		return n
	}
	return 500000
}

func sysbench(b *testing.B, in *harness.Instance, args ...string) string {
	b.Helper()
	base := []string{"--db-driver=mysql", "--mysql-socket=" + in.Socket, "--mysql-user=root", "--mysql-db=sbtest", "--tables=8",
		fmt.Sprintf("--table-size=%d", benchRows())}
	cmd := exec.Command("sysbench", append(append([]string{"oltp_write_only"}, base...), args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("sysbench %v: %v\n%s", args, err, out.String())
	}
	return out.String()
}

var tpsRe = regexp.MustCompile(`transactions:\s+\d+\s+\(([0-9.]+) per sec`)

func tps(b *testing.B, out string) float64 {
	m := tpsRe.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("no tps in sysbench output:\n%s", out)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func dropCaches() {
	_ = exec.Command("sync").Run()
}

var durationRe = regexp.MustCompile(`msg="basebackup uploaded".* duration=([0-9.]+[a-zµ]+)`)

// sysbenchPrimary starts a server sized for the benchmarks and fills it
// with the sysbench tables; it returns the zstd command line's path, the
// MariaDB tools, the server and a connection to it.
func sysbenchPrimary(b *testing.B) (string, harness.Tools, *harness.Instance, *sql.DB) {
	b.Helper()
	if _, err := exec.LookPath("sysbench"); err != nil {
		b.Fatal("sysbench is missing: apt-get install sysbench (make bench installs it)")
	}
	zstdCLI, err := exec.LookPath("zstd")
	if err != nil {
		b.Fatal("zstd is missing: apt-get install zstd")
	}
	tools, err := harness.FindTools()
	if err != nil {
		b.Fatal(err)
	}
	in := harness.StartInstances(b, 1, harness.Options{Extra: []string{"innodb_buffer_pool_size=512M", "max_binlog_size=64M", "innodb_log_file_size=256M"}})[0]
	db := harness.OpenDB(b, in)
	harness.Exec(b, db, "CREATE DATABASE sbtest")
	start := time.Now()
	sysbench(b, in, "--threads=2", "prepare")
	b.Logf("sysbench prepare: %d x %d rows in %v", 8, benchRows(), time.Since(start))
	return zstdCLI, tools, in, db
}

// BenchmarkPrimary measures myhoard's full backup and binlog upload against
// raw-tool baselines measured in the same run, and prints a table.
func BenchmarkPrimary(b *testing.B) {
	zstdCLI, tools, in, db := sysbenchPrimary(b)
	var dataBytes int64
	_ = db.QueryRow("SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema = 'sbtest'").Scan(&dataBytes)
	work := harness.ShortTempDir(b)
	const runs = 3

	// Baselines: the raw pipe and the tool's own floor.
	mb := fmt.Sprintf("%s --defaults-file=%s --backup --stream=xbstream --user=root --socket=%s --target-dir=%s",
		tools.Mariabackup, in.ConfigFile, in.Socket, filepath.Join(work, "t"))
	var pipeTimes, floorTimes []time.Duration
	var streamBytes int64
	for i := 0; i < runs; i++ {
		for _, c := range []struct {
			cmd   string
			times *[]time.Duration
		}{
			{mb + " 2>/dev/null | " + zstdCLI + " -1 -T0 -q > " + filepath.Join(work, "pipe.zst"), &pipeTimes},
			{mb + " 2>/dev/null | wc -c > " + filepath.Join(work, "size"), &floorTimes},
		} {
			_ = os.RemoveAll(filepath.Join(work, "t"))
			dropCaches()
			t0 := time.Now()
			if out, err := exec.Command("bash", "-o", "pipefail", "-c", c.cmd).CombinedOutput(); err != nil {
				b.Fatalf("%s: %v\n%s", c.cmd, err, out)
			}
			*c.times = append(*c.times, time.Since(t0))
		}
	}
	if s, err := os.ReadFile(filepath.Join(work, "size")); err == nil {
		streamBytes, _ = strconv.ParseInt(strings.TrimSpace(string(s)), 10, 64)
	}

	// Through myhoard: the real daemon, zstd fastest + encryption, file storage.
	dir := b.TempDir()
	d, url, _ := startBenchDaemon(b, dir, in)
	dropCaches()
	doJSON(b, "PUT", url+"/status", map[string]any{"mode": "active"})
	backupsDone := func() int { return len(durationRe.FindAllString(d.out.String(), -1)) }
	harness.WaitFor(b, "the first backup", 10*time.Minute, func() (bool, string) { return backupsDone() >= 1, "" })
	for i := 1; i < runs; i++ {
		harness.WaitFor(b, "the stream to complete", 5*time.Minute, func() (bool, string) { return strings.Count(d.out.String(), "backup stream completed") >= i, "" })
		dropCaches()
		doJSON(b, "POST", url+"/backup", map[string]any{"backup_type": "basebackup"})
		harness.WaitFor(b, "another backup", 10*time.Minute, func() (bool, string) { return backupsDone() >= i+1, "" })
	}
	var ours []time.Duration
	for _, m := range durationRe.FindAllStringSubmatch(d.out.String(), -1) {
		if v, err := time.ParseDuration(m[1]); err == nil {
			ours = append(ours, v)
		}
	}
	peak := vmHWM(d.cmd.Process.Pid)

	// Write throughput of the source: alone, during a myhoard backup,
	// during the raw pipe.
	harness.WaitFor(b, "the stream to complete", 5*time.Minute, func() (bool, string) { return strings.Count(d.out.String(), "backup stream completed") >= runs, "" })
	const load = "--time=20"
	alone := tps(b, sysbench(b, in, "--threads=2", load, "run"))
	done := make(chan struct{})
	go func() {
		time.Sleep(2 * time.Second)
		doJSON(b, "POST", url+"/backup", map[string]any{"backup_type": "basebackup"})
		close(done)
	}()
	duringOurs := tps(b, sysbench(b, in, "--threads=2", load, "run"))
	<-done
	harness.WaitFor(b, "the stream to complete", 5*time.Minute, func() (bool, string) { return strings.Count(d.out.String(), "backup stream completed") >= runs+1, "" })
	go func() {
		time.Sleep(2 * time.Second)
		_ = os.RemoveAll(filepath.Join(work, "t"))
		_ = exec.Command("bash", "-c", mb+" 2>/dev/null | "+zstdCLI+" -1 -T0 -q > "+filepath.Join(work, "pipe2.zst")).Run()
	}()
	duringPipe := tps(b, sysbench(b, in, "--threads=2", load, "run"))

	// Rotation to visible manifest, 100 times under a light load.
	manifests := func() int {
		n := 0
		_ = filepath.WalkDir(filepath.Join(dir, "backups"), func(p string, e os.DirEntry, err error) error {
			if err == nil && strings.Contains(p, "/binlogs/") && strings.HasSuffix(p, ".json") {
				n++
			}
			return nil
		})
		return n
	}
	var lat []time.Duration
	for i := 0; i < 100; i++ {
		harness.Exec(b, db, fmt.Sprintf("UPDATE sbtest.sbtest1 SET k = k + 1 WHERE id = %d", i+1))
		before := manifests()
		t0 := time.Now()
		harness.Exec(b, db, "FLUSH BINARY LOGS")
		for manifests() == before {
			if time.Since(t0) > 30*time.Second {
				b.Fatal("a rotated binlog was not uploaded within 30 s")
			}
			time.Sleep(2 * time.Millisecond)
		}
		lat = append(lat, time.Since(t0))
	}
	_ = d.cmd.Process.Kill()

	// Archiving the big binlogs (sysbench's, 64 MiB files): the upload
	// code path against zstd -1 -T0 file by file.
	files, _ := filepath.Glob(in.BinlogPrefix() + ".[0-9]*")
	var big []string
	var bigBytes int64
	for _, f := range files {
		if st, err := os.Stat(f); err == nil && st.Size() > 32<<20 {
			big = append(big, f)
			bigBytes += st.Size()
		}
	}
	var archive, zstdFiles time.Duration
	if len(big) > 0 {
		site := openFileSite(b, filepath.Join(dir, "archive"))
		kp := storagetest.Key(b)
		enc := storage.EncodeOptions{Compression: storage.CompressionZstd, Key: kp}
		sid := storage.NewStreamID(time.Now())
		t0 := time.Now()
		var us []backup.BinlogUpload
		for i, f := range big {
			info, err := mysql.ReadBinlogFile(f, mysql.FlavorMariaDB, mysql.ReadOptions{AllowInUse: true}, nil)
			if err != nil {
				b.Fatal(err)
			}
			lb := backup.LocalBinlog{Index: int64(i + 1), Name: filepath.Base(f), Path: f, Size: info.Size, GTIDsBefore: info.GTIDsBefore, GTIDsAdded: info.GTIDsAdded}
			us = append(us, backup.BinlogUpload{Ref: storage.BinlogRef{StreamID: sid, RemoteIndex: int64(i + 1), Epoch: 1, ServerID: 1}, Binlog: lb, Flavor: mysql.FlavorMariaDB, Encode: enc})
		}
		// the daemon's upload path: two files' data at once, manifests in order
		if err := backup.UploadBinlogs(context.Background(), site, us, storage.NewKeyring(kp), 2, func(*storage.BinlogManifest, bool) error { return nil }); err != nil {
			b.Fatal(err)
		}
		archive = time.Since(t0)
		t0 = time.Now()
		for _, f := range big {
			if out, err := exec.Command("bash", "-c", zstdCLI+" -1 -T0 -q -c "+f+" > "+filepath.Join(work, "one.zst")).CombinedOutput(); err != nil {
				b.Fatalf("zstd: %v %s", err, out)
			}
		}
		zstdFiles = time.Since(t0)
	}

	var t strings.Builder
	fmt.Fprintf(&t, "\nprimary benchmark: %.0f MiB of sysbench tables, xbstream %.0f MiB, medians of %d\n", float64(dataBytes)/(1<<20), float64(streamBytes)/(1<<20), runs)
	fmt.Fprintf(&t, "full backup: myhoard (zstd fastest + age, file storage) %v; mariabackup | zstd -1 -T0 > file %v (ratio %.2f); mariabackup > /dev/null %v (ratio %.2f)\n",
		medianDur(ours), medianDur(pipeTimes), float64(medianDur(ours))/float64(medianDur(pipeTimes)), medianDur(floorTimes), float64(medianDur(ours))/float64(medianDur(floorTimes)))
	fmt.Fprintf(&t, "daemon peak RSS: %.1f MiB\n", float64(peak)/(1<<10))
	fmt.Fprintf(&t, "sysbench oltp_write_only tps: alone %.0f, during a myhoard backup %.0f (%.2f), during the raw pipe %.0f (%.2f)\n",
		alone, duringOurs, duringOurs/alone, duringPipe, duringPipe/alone)
	fmt.Fprintf(&t, "rotation -> manifest visible over %d rotations: p50 %v, p99 %v\n", len(lat), percentile(lat, 0.5), percentile(lat, 0.99))
	if len(big) > 0 {
		fmt.Fprintf(&t, "archive %d binlogs (%.0f MiB): myhoard upload path %v, zstd -1 -T0 one by one %v (ratio %.2f)\n",
			len(big), float64(bigBytes)/(1<<20), archive, zstdFiles, float64(archive)/float64(zstdFiles))
	}
	fmt.Print(t.String())
	b.ReportMetric(float64(medianDur(ours))/float64(medianDur(pipeTimes)), "backup_vs_pipe")
	b.ReportMetric(float64(peak)/(1<<10), "peak_RSS_MiB")
	b.ReportMetric(float64(percentile(lat, 0.99).Milliseconds()), "upload_p99_ms")
	for b.Loop() {
	}
}

// startBenchDaemon starts a daemon that backs in up as the benchmarks
// measure it: zstd fastest + encryption, file storage under dir/backups,
// one copy thread, no forced rotation, no purge.
// It returns the daemon, its API URL and the backup_sites block (for a
// restore node that reads the same storage).
func startBenchDaemon(b *testing.B, dir string, in *harness.Instance) (*daemonProc, string, map[string]any) {
	b.Helper()
	port, _ := harness.FreePort()
	cfg := daemonConfig(b, dir, port, in)
	pub, priv := storagetest.KeyPEM(b)
	cfg["backup_sites"] = map[string]any{"default": map[string]any{
		"compression":     map[string]any{"algorithm": "zstd"},
		"encryption_keys": map[string]any{"public": pub, "private": priv},
		"object_storage":  map[string]any{"storage_type": "local", "directory": filepath.Join(dir, "backups")},
	}}
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 3600, "backup_count_max": 10, "backup_count_min": 1}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	cfg["xtrabackup"] = map[string]any{"copy_threads": 1}
	cfgPath := filepath.Join(dir, "myhoard.json")
	writeJSON(b, cfgPath, cfg)
	d := startDaemon(b, "--config", cfgPath)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	harness.WaitFor(b, "the daemon", 30*time.Second, func() (bool, string) {
		_, err := statusOf(url)
		return err == nil, fmt.Sprint(err)
	})
	return d, url, cfg["backup_sites"].(map[string]any)
}

// vmHWM is a process's peak resident set in KiB.
func vmHWM(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(data)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return v
}

// BenchmarkCluster measures, on loopback:
//   - formation: 3 daemons from one template (bootstrap_expect 3) with the
//     default timing started together, until every GET /cluster shows one
//     leader and 3 voters (target <= 3 s);
//   - how long a GTID change on the primary takes to show in every node's
//     GET /cluster (target <= 2 s);
//   - failover: the primary's daemon and server killed, until gossip marks
//     it failed (reported on its own), then promote without force until
//     the new primary's first binlog is in storage (target <= 5 s in all);
//
// the last two with mutual TLS (the default) and with cluster.insecure,
// in alternating runs: TLS within 10% of insecure.
func BenchmarkCluster(b *testing.B) {
	var formation []time.Duration
	for i := 0; i < 5; i++ {
		nodes := newClusterNodes(b, make([]*harness.Instance, 3), b.TempDir())
		for _, n := range nodes {
			patchConfig(b, n.cfgPath, func(cfg map[string]any) { cfg["cluster"].(map[string]any)["local_timing"] = false })
		}
		t0 := time.Now()
		startTogether(b, nodes)
		waitOneCluster(b, nodes, 3)
		formation = append(formation, time.Since(t0))
		for _, n := range nodes {
			_ = n.d.cmd.Process.Kill()
			_, _ = n.d.wait(b, 10*time.Second)
		}
	}
	slices.Sort(formation)
	runs := map[bool]*clusterRun{false: {}, true: {}}
	for i := 0; i < 3; i++ {
		for _, insecure := range []bool{i%2 == 1, i%2 == 0} {
			runs[insecure].measure(b, insecure, 51+i)
		}
	}
	tlsRun, plain := runs[false], runs[true]
	fmt.Printf("\ncluster benchmark (3 nodes on loopback, %d runs each with mutual TLS and with cluster.insecure, alternating):\n"+
		"  formation, default timing, 3 daemons started together -> leader and 3 voters everywhere: median %v, max %v of %d (target <= 3s)\n"+
		"  GTID change to every GET /cluster: TLS median %v (max %v), insecure %v: %.2fx (target <= 2s, TLS within 1.10x)\n"+
		"  failover: primary killed -> gossip marks it failed: TLS %v, insecure %v; promote (no force) -> first binlog of the new primary: TLS %v, insecure %v\n"+
		"  failover in all: TLS median %v, insecure %v: %.2fx (target <= 5s, TLS within 1.10x)\n",
		len(tlsRun.failover),
		formation[len(formation)/2].Round(time.Millisecond), formation[len(formation)-1].Round(time.Millisecond), len(formation),
		medianDur(tlsRun.spread).Round(time.Millisecond), slices.Max(tlsRun.spread).Round(time.Millisecond), medianDur(plain.spread).Round(time.Millisecond),
		ratioOf(medianDur(tlsRun.spread), medianDur(plain.spread)),
		medianDur(tlsRun.detect).Round(time.Millisecond), medianDur(plain.detect).Round(time.Millisecond),
		medianDur(tlsRun.promote).Round(time.Millisecond), medianDur(plain.promote).Round(time.Millisecond),
		medianDur(tlsRun.failover).Round(time.Millisecond), medianDur(plain.failover).Round(time.Millisecond),
		ratioOf(medianDur(tlsRun.failover), medianDur(plain.failover)))
	b.ReportMetric(formation[len(formation)/2].Seconds(), "formation_s")
	b.ReportMetric(medianDur(tlsRun.spread).Seconds(), "gtid_spread_s")
	b.ReportMetric(medianDur(tlsRun.failover).Seconds(), "failover_s")
	b.ReportMetric(ratioOf(medianDur(tlsRun.failover), medianDur(plain.failover)), "failover_tls_ratio")
	for b.Loop() {
	}
}

func ratioOf(a, b time.Duration) float64 { return float64(a) / float64(b) }

// clusterRun collects the measures of BenchmarkCluster's runs of one kind.
type clusterRun struct {
	spread, detect, promote, failover []time.Duration
}

// measure starts a replicated cluster (insecure: cluster.insecure), times
// GTID changes reaching every GET /cluster, then a failover.
func (r *clusterRun) measure(b *testing.B, insecure bool, seed int) {
	ins := harness.StartInstances(b, 3, harness.Options{})
	ctx := context.Background()
	for _, in := range ins[1:] {
		if err := in.ReplicateFrom(ctx, ins[0]); err != nil {
			b.Fatal(err)
		}
	}
	backups := filepath.Join(b.TempDir(), "backups")
	nodes := newClusterNodes(b, ins, backups)
	if insecure {
		for _, n := range nodes {
			patchConfig(b, n.cfgPath, func(cfg map[string]any) {
				cl := cfg["cluster"].(map[string]any)
				cl["insecure"] = true
				delete(cl, "tls")
			})
		}
	}
	startTogether(b, nodes)
	waitOneCluster(b, nodes, 3)
	setRoles(b, nodes)
	waitCompletedBackup(b, nodes[0].url)
	db1 := harness.OpenDB(b, ins[0])
	load, err := harness.NewLoadGen(ctx, db1, uint64(seed))
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 7; i++ {
		if err := load.WriteTransactions(ctx, 1); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		pos := harness.QueryString(b, db1, "SELECT @@gtid_binlog_pos")
		harness.WaitFor(b, "the GTID change in every GET /cluster", 30*time.Second, func() (bool, string) {
			for _, n := range nodes {
				if memberGTIDs(n.view(b))["n1"] != pos {
					return false, pos
				}
			}
			return true, ""
		})
		r.spread = append(r.spread, time.Since(t0))
	}
	pos1 := harness.QueryString(b, db1, "SELECT @@gtid_binlog_pos")
	for _, in := range ins[1:] {
		if err := in.WaitForGTID(ctx, pos1); err != nil {
			b.Fatal(err)
		}
	}
	harness.Exec(b, harness.OpenDB(b, ins[1]), "SET GLOBAL read_only = 1")
	t0 := time.Now()
	_ = nodes[0].d.cmd.Process.Kill()
	if err := ins[0].Kill(); err != nil {
		b.Fatal(err)
	}
	harness.WaitFor(b, "gossip marking n1 failed", 30*time.Second, func() (bool, string) {
		m, _ := nodes[1].view(b).Member("n1")
		return m.Gossip == "failed", ""
	})
	detect := time.Since(t0)
	t1 := time.Now()
	if code, body := doJSON(b, "PUT", nodes[1].url+"/status", map[string]any{"mode": "promote"}); code != 200 {
		b.Fatalf("promote: %d %v", code, body)
	}
	harness.WaitFor(b, "the new primary's first binlog in storage", 60*time.Second, func() (bool, string) {
		n, _ := epochUploads(b, backups, 2)
		return n > 0, ""
	})
	r.detect, r.promote, r.failover = append(r.detect, detect), append(r.promote, time.Since(t1)), append(r.failover, time.Since(t0))
	for _, n := range nodes {
		_ = n.d.cmd.Process.Kill()
		_, _ = n.d.wait(b, 10*time.Second)
	}
	for _, in := range ins[1:] {
		_ = in.Stop(ctx)
	}
}
