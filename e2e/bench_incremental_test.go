package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/drill"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/verify"
)

// BenchmarkIncremental measures incremental backups against full ones on
// sysbench tables (8 x benchRows rows): a full backup, then twice 20k
// write transactions and an incremental backup; then the restore of the
// chain (full + 2 incrementals) by the daemon against the same chain
// restored by hand (zstd -d | mbstream -x, mariabackup --prepare with
// --incremental-dir) from the same xbstreams compressed with zstd -1, in
// alternating pairs. It prints the ratios and the daemon's phases.
func BenchmarkIncremental(b *testing.B) {
	zstdCLI, tools, in, _ := sysbenchPrimary(b)
	flushDirtyPages(b, in) // as after the prepare on a real server: its checkpoint caught up

	dir := b.TempDir()
	d, url, sites := startBenchDaemon(b, dir, in)
	doJSON(b, "PUT", url+"/status", map[string]any{"mode": "active"})
	uploaded := func() []time.Duration {
		var out []time.Duration
		for _, m := range durationRe.FindAllStringSubmatch(d.out.String(), -1) {
			if v, err := time.ParseDuration(m[1]); err == nil {
				out = append(out, v)
			}
		}
		return out
	}
	var rawIncTime time.Duration
	var rawIncBytes int64
	harness.WaitFor(b, "the full backup", 10*time.Minute, func() (bool, string) { return len(uploaded()) >= 1, "" })
	for i := 1; i <= 2; i++ {
		harness.WaitFor(b, "the stream to complete", 5*time.Minute, func() (bool, string) { return strings.Count(d.out.String(), "backup stream completed") >= i, "" })
		sysbench(b, in, "--threads=2", "--events=20000", "--time=0", "run")
		// As before the full backup (the measurement protocol: the source
		// idle and flushed): an incremental copies the redo log from the
		// server's last checkpoint, which otherwise lags by up to the redo
		// log's size and would be measured instead of the changed pages.
		// MYHOARD_BENCH_NO_FLUSH=1 measures that case.
		if os.Getenv("MYHOARD_BENCH_NO_FLUSH") == "" {
			flushDirtyPages(b, in)
		}
		if code, body := doJSON(b, "POST", url+"/backup", map[string]any{"backup_type": "basebackup", "incremental": true}); code != 200 {
			b.Fatalf("request an incremental: %d %v", code, body)
		}
		harness.WaitFor(b, "the incremental", 10*time.Minute, func() (bool, string) { return len(uploaded()) >= i+1, "" })
		if i == 1 {
			// The tool's floor on the same data: the same incremental
			// (same LSN, nothing written since) piped into zstd -1.
			parent := listBackups(b, url)[0].Basebackup.Checkpoint("to_lsn")
			raw := filepath.Join(dir, "raw-inc.zst")
			cmd := fmt.Sprintf("%s --defaults-file=%s --backup --stream=xbstream --user=root --socket=%s --target-dir=%s --incremental-lsn=%s 2>/dev/null | %s -1 -T0 -q -o %s",
				tools.Mariabackup, in.ConfigFile, in.Socket, filepath.Join(dir, "t"), parent, zstdCLI, raw)
			_ = exec.Command("sync").Run()
			t0 := time.Now()
			if out, err := exec.Command("bash", "-o", "pipefail", "-c", cmd).CombinedOutput(); err != nil {
				b.Fatalf("%s: %v\n%s", cmd, err, out)
			}
			rawIncTime = time.Since(t0)
			if st, err := os.Stat(raw); err == nil {
				rawIncBytes = st.Size()
			}
		}
	}
	harness.WaitFor(b, "the last stream to complete", 5*time.Minute, func() (bool, string) { return strings.Count(d.out.String(), "backup stream completed") >= 3, "" })
	times := uploaded()
	list := listBackups(b, url)
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(b, 10*time.Second)
	if len(list) != 3 || !list[1].Basebackup.Incremental || !list[2].Basebackup.Incremental {
		b.Fatalf("backups %v: want a full one and two incrementals", list)
	}

	// The same xbstreams, compressed with zstd -1, for the restore by hand.
	backups := filepath.Join(dir, "backups")
	site := openFileSite(b, backups)
	keys := storage.NewKeyring(keyOf(b, sites))
	work := harness.ShortTempDir(b)
	var members []string
	for i, bk := range list {
		out := filepath.Join(work, fmt.Sprintf("member%d.zst", i))
		rawTo(b, site, keys, bk.Basebackup.BasebackupManifest, zstdCLI+" -1 -T0 -q -o "+out)
		members = append(members, out)
	}
	composition := map[int]string{}
	byHand := func() time.Duration {
		target := filepath.Join(work, "hand")
		_ = os.RemoveAll(target)
		_ = exec.Command("sync").Run()
		t0 := time.Now()
		for i, f := range members {
			into, prep := target, []string{"--prepare", "--target-dir=" + target}
			if i > 0 {
				into = filepath.Join(work, "inc")
				prep = append(prep, "--incremental-dir="+into)
			}
			for _, cmd := range []string{
				fmt.Sprintf("mkdir -p %s && %s -d -c %s | mbstream -x -C %s", into, zstdCLI, f, into),
				tools.Mariabackup + " " + strings.Join(prep, " "),
			} {
				if out, err := exec.Command("bash", "-o", "pipefail", "-c", cmd).CombinedOutput(); err != nil {
					b.Fatalf("%s: %v\n%s", cmd, err, out)
				}
				if i > 0 && composition[i] == "" {
					composition[i] = whatIsIn(into) // as extracted
				}
			}
			if i > 0 {
				_ = os.RemoveAll(into)
			}
		}
		return time.Since(t0)
	}
	phases := map[string]time.Duration{}
	ours := func() time.Duration {
		n := newRestoreNode(b, backups, map[string]any{"backup_sites": sites})
		defer n.kill(b)
		_ = exec.Command("sync").Run()
		return restoreUntilRefreshing(b, n, map[string]any{"mode": "restore", "site": "default", "stream_id": list[2].StreamID}, phases)
	}
	// Deep verify of the whole repository against decoding the same
	// objects with the codec alone (one object after another, every core
	// in each decoder), in alternating pairs.
	var verifyTimes, codecTimes []time.Duration
	var decoded int64
	for i := 0; i < 2; i++ {
		t0 := time.Now()
		r, err := verify.Site(context.Background(), site, verify.Options{Deep: true, Keys: keys})
		if err != nil || len(r.Findings) > 0 {
			b.Fatalf("deep verify: %v %v", err, r)
		}
		verifyTimes = append(verifyTimes, time.Since(t0))
		decoded = r.DecodedBytes
		t0 = time.Now()
		decodeAll(b, site, keys)
		codecTimes = append(codecTimes, time.Since(t0))
	}
	const pairs = 2
	var hand, daemon []time.Duration
	for i := 0; i < pairs; i++ {
		hand = append(hand, byHand())
		daemon = append(daemon, ours())
	}

	// A drill of the newest backup (restore to the newest transaction,
	// then CHECK TABLE) against the same restore by the daemon, to the end.
	complete := func() time.Duration {
		n := newRestoreNode(b, backups, map[string]any{"backup_sites": sites})
		_ = exec.Command("sync").Run()
		t0 := time.Now()
		n.request(b, map[string]any{"mode": "restore", "site": "default", "stream_id": list[2].StreamID})
		n.waitObserve(b, 10*time.Minute)
		el := time.Since(t0)
		n.kill(b)
		return el
	}
	restoreAll := complete()
	drillPort, _ := harness.FreePort()
	listed, err := backup.ListBackups(context.Background(), site, false)
	if err != nil {
		b.Fatal(err)
	}
	_ = exec.Command("sync").Run()
	t0 := time.Now()
	res := (&drill.Drill{}).Run(context.Background(), site, listed, drill.Options{Dir: filepath.Join(work, "drill"), Port: drillPort, ServerID: 900,
		Conn: mysql.ConnParams{User: "root"}, MaxBinlogBytes: 1 << 30, Keys: keys})
	drillTime := time.Since(t0)
	if !res.OK {
		b.Fatalf("drill: %s", res.Error)
	}
	full, inc1, inc2 := list[0].Basebackup, list[1].Basebackup, list[2].Basebackup
	var t strings.Builder
	fmt.Fprintf(&t, "\nincremental benchmark: sysbench 8 x %d rows, 20k write transactions before each incremental (source flushed before each backup: %v)\n",
		benchRows(), os.Getenv("MYHOARD_BENCH_NO_FLUSH") == "")
	fmt.Fprintf(&t, "backup time: full %v, incrementals %v and %v (%.2f and %.2f of the full one)\n",
		times[0], times[1], times[2], ratioOf(times[1], times[0]), ratioOf(times[2], times[0]))
	fmt.Fprintf(&t, "stored bytes: full %d, incrementals %d and %d (%.3f and %.3f of the full one)\n",
		full.EncodedSize, inc1.EncodedSize, inc2.EncodedSize, float64(inc1.EncodedSize)/float64(full.EncodedSize), float64(inc2.EncodedSize)/float64(full.EncodedSize))
	fmt.Fprintf(&t, "the tool alone, same incremental: mariabackup --incremental-lsn | zstd -1 -T0 > file %v, %d bytes (myhoard %.2f of its time, %.2f of its bytes)\n",
		rawIncTime, rawIncBytes, ratioOf(times[1], rawIncTime), float64(inc1.EncodedSize)/float64(rawIncBytes))
	fmt.Fprintf(&t, "what the incrementals hold (extracted): first %s; second %s\n", composition[1], composition[2])
	fmt.Fprintf(&t, "chain restore (full + 2 incrementals, to the end of the basebackup phases): myhoard %v, by hand %v (ratio %.2f; medians of %d alternating pairs)\n",
		medianDur(daemon), medianDur(hand), ratioOf(medianDur(daemon), medianDur(hand)), pairs)
	fmt.Fprintf(&t, "deep verify of the repository (%d decoded bytes): %v, the codec alone on the same objects %v (throughput %.2f of the codec's)\n",
		decoded, medianDur(verifyTimes), medianDur(codecTimes), ratioOf(medianDur(codecTimes), medianDur(verifyTimes)))
	fmt.Fprintf(&t, "restore drill of the chain (restore to the newest transaction + CHECK TABLE on %d tables): %v, of which the restore %.1f s; the daemon's restore of the same to completion %v (drill %.2f, its restore %.2f of it)\n",
		res.TablesChecked, drillTime, res.RestoreSeconds, restoreAll, ratioOf(drillTime, restoreAll), res.RestoreSeconds/restoreAll.Seconds())
	fmt.Fprintf(&t, "myhoard's phases (sum over %d restores):", pairs)
	for _, k := range sortedKeys(phases) {
		fmt.Fprintf(&t, " %s %v;", k, phases[k].Round(time.Millisecond))
	}
	fmt.Println(t.String())
	b.ReportMetric(ratioOf(times[1], times[0]), "inc_time_vs_full")
	b.ReportMetric(float64(inc1.EncodedSize)/float64(full.EncodedSize), "inc_bytes_vs_full")
	b.ReportMetric(ratioOf(medianDur(daemon), medianDur(hand)), "chain_restore_vs_hand")
	for b.Loop() {
	}
}

// decodeAll decodes every object of the site with the codec alone: each
// basebackup's parts as one stream, each binlog, one after another.
func decodeAll(b *testing.B, site *storage.Site, keys storage.Keyring) {
	b.Helper()
	var keysToRead [][]string
	parts := map[string][]string{}
	_ = site.List(context.Background(), storage.StreamsPrefix, func(o storage.ObjectInfo) error {
		if i := strings.Index(o.Key, "/basebackup/"); i > 0 {
			parts[o.Key[:i]] = append(parts[o.Key[:i]], o.Key)
		} else if ref, manifest, err := storage.ParseBinlogKey(o.Key); err == nil && !manifest {
			keysToRead = append(keysToRead, []string{ref.DataKey()})
		}
		return nil
	})
	for _, p := range parts {
		keysToRead = append(keysToRead, p)
	}
	for _, ks := range keysToRead {
		pr := storage.NewConcatReader(context.Background(), site, ks, nil)
		dec, _, err := storage.NewDecoder(pr, keys)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, dec); err != nil {
			b.Fatal(err)
		}
		dec.Close()
		pr.Close()
	}
}

// whatIsIn sums an extracted incremental's files by kind: page deltas,
// the redo log, the rest.
func whatIsIn(dir string) string {
	var deltas, redo, other int64
	_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return nil
		}
		info, err := e.Info()
		if err != nil {
			return nil
		}
		switch {
		case strings.HasSuffix(p, ".delta"):
			deltas += info.Size()
		case strings.HasPrefix(e.Name(), "ib_logfile"):
			redo += info.Size()
		default:
			other += info.Size()
		}
		return nil
	})
	return fmt.Sprintf("page deltas %.0f MiB, redo log %.0f MiB, other %.0f MiB", float64(deltas)/(1<<20), float64(redo)/(1<<20), float64(other)/(1<<20))
}

// rawTo decodes a stored basebackup (its parts in order) into a shell
// command's standard input.
func rawTo(b *testing.B, site *storage.Site, keys storage.Keyring, m *storage.BasebackupManifest, shell string) {
	b.Helper()
	cmd := exec.Command("bash", "-o", "pipefail", "-c", shell)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	pr := storage.NewConcatReader(context.Background(), site, storage.PartKeys(m), nil)
	defer pr.Close()
	dec, _, err := storage.NewDecoder(pr, keys)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(stdin, dec); err != nil {
		b.Fatal(err)
	}
	dec.Close()
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatalf("%s: %v", shell, err)
	}
}

// keyOf is the key pair of the benchmark's backup site.
func keyOf(b *testing.B, sites map[string]any) *storage.KeyPair {
	b.Helper()
	k := sites["default"].(map[string]any)["encryption_keys"].(map[string]any)
	kp, err := storage.NewKeyPair(k["public"].(string), k["private"].(string))
	if err != nil {
		b.Fatal(err)
	}
	return kp
}

func sortedKeys(m map[string]time.Duration) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
