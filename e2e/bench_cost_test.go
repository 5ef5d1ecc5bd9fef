package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
)

// BenchmarkBackupCost measures what a full backup and a restore cost at the
// daemon, as a user meets them, against the raw tools on the same server
// in the same run (issue 21), in interleaved pairs whose order alternates:
//
//   - a full backup (POST /backup until the stream is completed; zstd
//     fastest + encryption, file storage, fsync) against `mariabackup |
//     zstd -1 -T0 > file && sync file`, with the page cache warm and with
//     it dropped before each run; wall time, and the daemon's CPU against
//     the CPU of `zstd -1 -T0` alone on the same xbstream;
//   - a restore (PUT /status restore until phase refreshing_binlogs:
//     backup info, download, decrypt, decode, extract, prepare and move)
//     against `zstd -d | mbstream -x && mariabackup --prepare` of the
//     pipe's own output, warm and cold;
//   - the daemon's peak RSS over all its backups.
//
// MYHOARD_BENCH_PAIRS sets the pairs per row (default 3).
func BenchmarkBackupCost(b *testing.B) {
	zstdCLI, tools, in, _ := sysbenchPrimary(b)
	flushDirtyPages(b, in)
	pairs := 3
	if n, err := strconv.Atoi(os.Getenv("MYHOARD_BENCH_PAIRS")); err == nil && n > 0 {
		pairs = n
	}
	work := harness.ShortTempDir(b)
	target := filepath.Join(work, "t")
	mb := fmt.Sprintf("%s --defaults-file=%s --backup --stream=xbstream --user=root --socket=%s --target-dir=%s",
		tools.Mariabackup, in.ConfigFile, in.Socket, target)
	pipeOut := filepath.Join(work, "pipe.zst")

	// zstd alone on the same stream, from the page cache.
	stream := filepath.Join(work, "stream.xb")
	shell(b, mb+" 2>/dev/null > "+stream)
	_ = os.RemoveAll(target)
	st, err := os.Stat(stream)
	if err != nil {
		b.Fatal(err)
	}
	var zstdCPU []time.Duration
	for range pairs {
		_, cpu := shell(b, zstdCLI+" -1 -T0 -q -c "+stream+" > "+filepath.Join(work, "alone.zst"))
		zstdCPU = append(zstdCPU, cpu)
	}
	_ = os.Remove(stream)

	dir := b.TempDir()
	d, url, sites := startBenchDaemon(b, dir, in)
	doJSON(b, "PUT", url+"/status", map[string]any{"mode": "active"})
	completed := func() int { return strings.Count(d.out.String(), "backup stream completed") }
	harness.WaitFor(b, "the first backup", 10*time.Minute, func() (bool, string) { return completed() >= 1, "" })
	pid := d.cmd.Process.Pid

	type row struct {
		pipe, ours, oursCPU, toolCPU []time.Duration
	}
	var backups [2]row // warm, cold
	var restores [2]row
	pipe := func(cold bool) (time.Duration, time.Duration) {
		_ = os.RemoveAll(target)
		settle(cold)
		t0 := time.Now()
		_, cpu := shell(b, mb+" 2>/dev/null | "+zstdCLI+" -1 -T0 -q > "+pipeOut+" && sync "+pipeOut)
		return time.Since(t0), cpu
	}
	ours := func(cold bool) (wall, cpu, child time.Duration) {
		settle(cold)
		n := completed()
		c0, ch0 := procCPU(b, pid)
		t0 := time.Now()
		if code, body := doJSON(b, "POST", url+"/backup", map[string]any{"backup_type": "basebackup"}); code != 200 {
			b.Fatalf("POST /backup: %d %v", code, body)
		}
		harness.WaitFor(b, "the backup", 10*time.Minute, func() (bool, string) { return completed() > n, "" })
		wall = time.Since(t0)
		c1, ch1 := procCPU(b, pid)
		return wall, c1 - c0, ch1 - ch0
	}
	for k, cold := range []bool{false, true} {
		for i := range pairs {
			for j := range 2 {
				if (i+j)%2 == 0 {
					w, _ := pipe(cold)
					backups[k].pipe = append(backups[k].pipe, w)
				} else {
					w, c, ch := ours(cold)
					backups[k].ours = append(backups[k].ours, w)
					backups[k].oursCPU = append(backups[k].oursCPU, c)
					backups[k].toolCPU = append(backups[k].toolCPU, ch)
				}
			}
		}
	}
	peak := vmHWM(pid)
	list := listBackups(b, url)
	if len(list) == 0 {
		b.Fatal("no backups listed")
	}
	latest := list[len(list)-1]
	_ = d.cmd.Process.Kill()

	// Restores: the pipe's last output by hand, the newest backup by a
	// daemon of its own.
	restoreDir := filepath.Join(work, "r")
	byHand := func(cold bool) (time.Duration, time.Duration) {
		_ = os.RemoveAll(restoreDir)
		if err := os.MkdirAll(restoreDir, 0o750); err != nil {
			b.Fatal(err)
		}
		settle(cold)
		t0 := time.Now()
		_, cpu := shell(b, fmt.Sprintf("%s -d -q -c %s | %s -x -C %s && %s --prepare --target-dir=%s 2>/dev/null",
			zstdCLI, pipeOut, tools.Mbstream, restoreDir, tools.Mariabackup, restoreDir))
		return time.Since(t0), cpu
	}
	phases := map[string]time.Duration{}
	daemonRestore := func(cold bool) (time.Duration, time.Duration) {
		n := newRestoreNode(b, filepath.Join(dir, "backups"), map[string]any{"backup_sites": sites})
		defer n.kill(b)
		settle(cold)
		c0, _ := procCPU(b, n.d.cmd.Process.Pid)
		el := restoreUntilRefreshing(b, n, map[string]any{"mode": "restore", "site": "default", "stream_id": latest.StreamID}, phases)
		c1, _ := procCPU(b, n.d.cmd.Process.Pid)
		return el, c1 - c0
	}
	for k, cold := range []bool{false, true} {
		for i := range pairs {
			for j := range 2 {
				if (i+j)%2 == 0 {
					w, _ := byHand(cold)
					restores[k].pipe = append(restores[k].pipe, w)
				} else {
					w, c := daemonRestore(cold)
					restores[k].ours = append(restores[k].ours, w)
					restores[k].oursCPU = append(restores[k].oursCPU, c)
				}
			}
		}
	}

	var t strings.Builder
	fmt.Fprintf(&t, "\nbackup cost: %d x %d sysbench rows, xbstream %.0f MiB, medians of %d interleaved pairs\n", 8, benchRows(), float64(st.Size())/(1<<20), pairs)
	fmt.Fprintf(&t, "zstd -1 -T0 alone on the stream: CPU %v\n", medianDur(zstdCPU))
	for k, name := range []string{"warm", "cold (page cache dropped before each run)"} {
		r := backups[k]
		fmt.Fprintf(&t, "full backup, %s: myhoard %v, pipe %v (ratio %.2f; runs %v vs %v); daemon CPU %v (%.2f x zstd alone), mariabackup CPU %v\n",
			name, medianDur(r.ours), medianDur(r.pipe), ratioOf(medianDur(r.ours), medianDur(r.pipe)), r.ours, r.pipe,
			medianDur(r.oursCPU), ratioOf(medianDur(r.oursCPU), medianDur(zstdCPU)), medianDur(r.toolCPU))
	}
	for k, name := range []string{"warm", "cold"} {
		r := restores[k]
		fmt.Fprintf(&t, "restore to refreshing_binlogs, %s: myhoard %v, zstd -d | mbstream -x && mariabackup --prepare %v (ratio %.2f; runs %v vs %v); daemon CPU %v\n",
			name, medianDur(r.ours), medianDur(r.pipe), ratioOf(medianDur(r.ours), medianDur(r.pipe)), r.ours, r.pipe, medianDur(r.oursCPU))
	}
	fmt.Fprintf(&t, "restore phases (summed over %d restores): %v\n", 2*pairs, phases)
	fmt.Fprintf(&t, "daemon peak RSS over %d backups: %.1f MiB\n", 4*pairs+1, float64(peak)/(1<<10))
	fmt.Print(t.String())
	b.ReportMetric(ratioOf(medianDur(backups[0].ours), medianDur(backups[0].pipe)), "backup_warm_vs_pipe")
	b.ReportMetric(ratioOf(medianDur(backups[1].ours), medianDur(backups[1].pipe)), "backup_cold_vs_pipe")
	b.ReportMetric(ratioOf(medianDur(backups[0].oursCPU), medianDur(zstdCPU)), "backup_cpu_vs_zstd")
	b.ReportMetric(ratioOf(medianDur(restores[0].ours), medianDur(restores[0].pipe)), "restore_warm_vs_pipe")
	b.ReportMetric(ratioOf(medianDur(restores[1].ours), medianDur(restores[1].pipe)), "restore_cold_vs_pipe")
	b.ReportMetric(float64(peak)/(1<<10), "peak_RSS_MiB")
	for b.Loop() {
	}
}

// restoreUntilRefreshing asks n for a restore and returns the time until
// the basebackup is restored (phase refreshing_binlogs or later), adding
// each phase's time to phases (the chain's members apart).
func restoreUntilRefreshing(b *testing.B, n *restoreNode, request map[string]any, phases map[string]time.Duration) time.Duration {
	b.Helper()
	t0 := time.Now()
	n.request(b, request)
	var last string
	var lastAt time.Duration
	for {
		st := n.restoreStatus(b)
		el := time.Since(t0)
		key := st.Phase
		if st.RestoreChainTotal > 1 && (st.Phase == "restoring_basebackup" || st.Phase == "preparing_backup") {
			key = fmt.Sprintf("%s %d/%d", st.Phase, st.RestoreChainIndex, st.RestoreChainTotal)
		}
		if key != last {
			if last != "" {
				phases[last] += el - lastAt
			}
			last, lastAt = key, el
		}
		switch st.Phase {
		case "refreshing_binlogs", "applying_binlogs", "waiting_for_apply_to_finish", "finalizing", "completed":
			return el
		case "failed", "failed_basebackup":
			b.Fatalf("restore failed: %+v\n%s", st, n.d.out)
		}
		if el > 10*time.Minute {
			b.Fatal("the restore took over 10 minutes")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// shell runs a bash command line (pipefail) and returns its wall time and
// the CPU of the shell and every process it waited for.
func shell(b *testing.B, line string) (time.Duration, time.Duration) {
	b.Helper()
	cmd := exec.Command("bash", "-o", "pipefail", "-c", line)
	t0 := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("%s: %v\n%s", line, err, out)
	}
	return time.Since(t0), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// settle writes dirty pages out and, for a cold run, drops the page cache.
func settle(cold bool) {
	_ = exec.Command("sync").Run()
	if cold {
		_ = os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0)
	}
}

// procCPU is a process's own CPU and that of its reaped children, from
// /proc (clock ticks of 10 ms).
func procCPU(b *testing.B, pid int) (own, children time.Duration) {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// the fields after the command name, which is in parentheses
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	tick := func(i int) time.Duration {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(v) * 10 * time.Millisecond
	}
	// utime, stime, cutime, cstime are fields 14-17 of stat(5); f[0] is field 3
	return tick(11) + tick(12), tick(13) + tick(14)
}
