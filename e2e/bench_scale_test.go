package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/client"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/storage/storagetest"
)

// BenchmarkScale measures listings and a restore against a remote-looking
// store: the S3 emulator behind a proxy that adds 20 ms to every request
// and caps the bandwidth (MYHOARD_BENCH_CAP_MIB, default 64 MiB/s). The
// repository is generated: 20 backups, the newest with a stream of 10,000
// binlogs. Every figure is printed next to the sequential, uncached path
// measured in the same run:
//   - the daemon's first listing of the stream (GET
//     /backup/<stream>/binlogs?full=true, cold cache; target <= 20 s);
//   - the same after 50 new binlogs, continuing (target <= 1 s) and full;
//   - the backup listing of 20 backups with a warm cache (target <=
//     200 ms) and GET /backup as served;
//   - the first full listing after a daemon restart (the disk cache);
//   - the restore of a 1 GiB basebackup (random data, so the stored bytes
//     are the data's) through the cap: its download rate against the cap
//     and against a plain download of the same objects (target >= 0.9x);
//   - the daemon's peak RSS through all of it (target <= 128 MiB).
//
// MYHOARD_BENCH_BINLOGS and MYHOARD_BENCH_RESTORE_MIB shrink the stream and
// the backup, and MYHOARD_BENCH_NO_REFERENCE=1 skips timing the sequential
// listing (about 4 minutes), for trying changes.
func BenchmarkScale(b *testing.B) {
	ctx := context.Background()
	capMiB := int64(benchEnvInt("MYHOARD_BENCH_CAP_MIB", 64))
	srv := harness.StartS3(b)
	proxy := harness.StartLatencyProxy(b, srv.Endpoint(), 20*time.Millisecond, capMiB<<20)
	gen := openS3SitePrefix(b, srv.Port, "gen/", nil, 32)
	binlogs := benchEnvInt("MYHOARD_BENCH_BINLOGS", scaleBinlogs)
	big, backups := generateRepository(b, gen, 20, binlogs)

	// the 1 GiB backup, taken straight to the emulator
	pub, priv := storagetest.KeyPEM(b)
	keys := map[string]any{"public": pub, "private": priv}
	realStream, stored := bigBackup(b, srv.Port, keys)

	// the sequential, uncached path through the proxy
	seq := openS3SitePrefix(b, proxy.Port, "gen/", nil, 1)
	refSite := seq
	if os.Getenv("MYHOARD_BENCH_NO_REFERENCE") != "" {
		refSite = gen // for trying changes: the reference listing is not timed
	}
	t0 := time.Now()
	ref, err := storage.ReferenceListStreamBinlogs(ctx, refSite, big)
	if err != nil || len(ref) != binlogs {
		b.Fatalf("reference listing: %d binlogs, %v", len(ref), err)
	}
	seqList := time.Since(t0)
	t0 = time.Now()
	refBackups, err := backup.ListBackups(ctx, seq, false)
	if err != nil || len(refBackups) != backups {
		b.Fatalf("reference backup listing: %d, %v", len(refBackups), err)
	}
	seqBackups := time.Since(t0)

	// the daemon
	site := func(prefix string) map[string]any {
		os := s3SiteConfig(proxy.Port)
		os["prefix"] = prefix
		return map[string]any{"object_storage": os, "encryption_keys": keys, "compression": map[string]any{"algorithm": "zstd"}}
	}
	genSite := site("gen/")
	genSite["recovery_only"] = true
	n := newRestoreNode(b, "", map[string]any{"backup_sites": map[string]any{"gen": genSite, "real": site("real/")},
		"restore_max_binlog_bytes": 1 << 30,
		// the check at start would list the repository beside the measures
		"verify_interval_hours": 0})
	c := apiClient(n.url)
	harness.WaitFor(b, "the daemon's backup listing", 5*time.Minute, func() (bool, string) {
		list, err := c.Backups(ctx, "")
		return err == nil && len(list) == backups+1, fmt.Sprint(len(list), err)
	})
	listing := func(full bool) time.Duration {
		t0 := time.Now()
		got, err := client.New(n.url).StreamBinlogs(ctx, big, full)
		d := time.Since(t0)
		if err != nil {
			b.Fatalf("GET /backup/%s/binlogs: %v", big, err)
		}
		if len(got.Binlogs) < binlogs {
			b.Fatalf("GET /backup/%s/binlogs: %d binlogs", big, len(got.Binlogs))
		}
		return d
	}
	first := listing(true)
	if _, err := storagetest.WriteBinlogs(ctx, gen, storagetest.Binlogs{StreamID: big, Flavor: mysql.FlavorMySQL, Epoch: 1, ServerID: 1,
		FirstIndex: int64(binlogs) + 1, Count: 50, Before: ref[len(ref)-1].End(), Added: oneTrxAfter(ref[len(ref)-1].End()),
		Start: time.Now(), Data: []byte("x")}, 32); err != nil {
		b.Fatal(err)
	}
	follow := listing(false)
	again := listing(true)

	// the backup listing with a warm cache, in this process (the daemon
	// refreshes its own on a timer), and GET /backup as served
	cacheDir := b.TempDir()
	cache, err := storage.OpenObjectCache(cacheDir, 256<<20, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	cached := openS3SitePrefix(b, proxy.Port, "gen/", cache, 16)
	t0 = time.Now()
	if _, err := backup.ListBackups(ctx, cached, false); err != nil {
		b.Fatal(err)
	}
	coldBackups := time.Since(t0)
	var warm []time.Duration
	for i := 0; i < 5; i++ {
		t0 = time.Now()
		if _, err := backup.ListBackups(ctx, cached, false); err != nil {
			b.Fatal(err)
		}
		warm = append(warm, time.Since(t0))
	}
	var gets []time.Duration
	for i := 0; i < 20; i++ {
		t0 = time.Now()
		if _, err := c.Backups(ctx, ""); err != nil {
			b.Fatal(err)
		}
		gets = append(gets, time.Since(t0))
	}
	rssListing := vmHWM(n.d.cmd.Process.Pid)

	// a restart: the manifests come from the disk cache
	n.kill(b)
	n.start(b)
	harness.WaitFor(b, "the restarted daemon's backup listing", 5*time.Minute, func() (bool, string) {
		list, err := c.Backups(ctx, "")
		return err == nil && len(list) == backups+1, fmt.Sprint(len(list), err)
	})
	restarted := listing(true)

	// the 1 GiB restore through the cap, against a plain download of the
	// same objects through the same proxy
	plain := plainDownload(b, openS3SitePrefix(b, proxy.Port, "real/", nil, 1), realStream)
	t0 = time.Now()
	n.request(b, map[string]any{"mode": "restore", "site": "real", "stream_id": realStream, "target_time": nil})
	var firstByte, downloaded time.Time
	var total int64
	harness.WaitFor(b, "the basebackup downloaded", 20*time.Minute, func() (bool, string) {
		st := n.restoreStatus(b)
		if st.Phase == "failed" {
			b.Fatalf("restore failed: %v", st)
		}
		if st.BasebackupBytesDownloaded > 0 && firstByte.IsZero() {
			firstByte = time.Now()
		}
		total = st.BasebackupBytesTotal
		done := total > 0 && st.BasebackupBytesDownloaded >= total
		if done {
			downloaded = time.Now()
		}
		return done, fmt.Sprint(st)
	})
	n.waitObserve(b, 20*time.Minute)
	restoreAll := time.Since(t0)
	dl := downloaded.Sub(t0)
	rss := vmHWM(n.d.cmd.Process.Pid)
	capRate := float64(capMiB << 20)
	rate := float64(total) / dl.Seconds()

	var out strings.Builder
	fmt.Fprintf(&out, "\nscale (S3 emulator behind a proxy: 20 ms a request, %d MiB/s; %d backups, a stream of %d binlogs)\n", capMiB, backups, binlogs)
	fmt.Fprintf(&out, "  first listing of the stream (daemon, cold)    %8v   sequential uncached %v (%.3fx; target <= 20 s)\n", first.Round(time.Millisecond), seqList.Round(time.Millisecond), ratioOf(first, seqList))
	fmt.Fprintf(&out, "  again with 50 new binlogs, continuing          %8v   (%.4fx; target <= 1 s)\n", follow.Round(time.Millisecond), ratioOf(follow, seqList))
	fmt.Fprintf(&out, "  again, every key listed                        %8v   (%.4fx)\n", again.Round(time.Millisecond), ratioOf(again, seqList))
	fmt.Fprintf(&out, "  first full listing after a daemon restart      %8v   (%.4fx)\n", restarted.Round(time.Millisecond), ratioOf(restarted, seqList))
	fmt.Fprintf(&out, "  listing %d backups, warm cache (median of 5)   %8v   cold %v, sequential uncached %v (%.3fx; target <= 200 ms)\n", backups, medianDur(warm).Round(time.Millisecond), coldBackups.Round(time.Millisecond), seqBackups.Round(time.Millisecond), ratioOf(medianDur(warm), seqBackups))
	fmt.Fprintf(&out, "  GET /backup as served (median of 20)           %8v\n", medianDur(gets).Round(time.Microsecond))
	fmt.Fprintf(&out, "  restore of %.2f GiB stored: download          %8v   %.1f MiB/s = %.2fx the cap, %.2fx a plain download (%.1f MiB/s) (target >= 0.9x)\n",
		float64(total)/(1<<30), dl.Round(time.Millisecond), rate/(1<<20), rate/capRate, rate/plain, plain/(1<<20))
	fromFirst := float64(total) / downloaded.Sub(firstByte).Seconds()
	fmt.Fprintf(&out, "  the same from the first byte seen                        %.1f MiB/s = %.2fx the cap\n", fromFirst/(1<<20), fromFirst/capRate)
	fmt.Fprintf(&out, "  restore in all (to observe mode)               %8v   (%d bytes stored for the backup)\n", restoreAll.Round(time.Millisecond), stored)
	fmt.Fprintf(&out, "  daemon peak RSS: %d MiB after the listings, %d MiB after the restore (target <= 128 MiB)\n", rssListing>>10, rss>>10)
	b.Log(out.String())
	fmt.Print(out.String())
}

// benchEnvInt is an integer from the environment (def when unset or bad).
func benchEnvInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// openS3SitePrefix opens the S3 emulator's bucket (at port: the emulator
// or a proxy) under prefix.
func openS3SitePrefix(t testing.TB, port int, prefix string, cache *storage.ObjectCache, conc int) *storage.Site {
	t.Helper()
	m := s3SiteConfig(port)
	m["prefix"] = prefix
	site, err := storage.OpenSite(context.Background(), "s3", storagetest.ObjectStorage(t, m), storage.SiteOptions{Cache: cache, ReadConcurrency: conc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Close() })
	return site
}

// generateRepository writes backups generated backups, the newest open
// with n binlogs; it returns the newest's stream.
func generateRepository(t testing.TB, site *storage.Site, backups, n int) (string, int) {
	t.Helper()
	ctx := context.Background()
	start := time.Now().Add(-time.Duration(backups) * 24 * time.Hour).UTC().Truncate(time.Hour)
	const uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
	var id string
	var gtids mysql.GTIDSet
	for i := 0; i < backups; i++ {
		at := start.Add(time.Duration(i) * 24 * time.Hour)
		id = fmt.Sprintf("%s_%08x", at.Format("20060102T150405.000Z"), i)
		var err error
		if gtids, err = mysql.ParseMySQLGTIDSet(fmt.Sprintf("%s:1-%d", uuid, 1000*(i+1))); err != nil {
			t.Fatal(err)
		}
		if err := storagetest.WriteBackup(ctx, site, id, mysql.FlavorMySQL, gtids, at, i < backups-1); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	if _, err := storagetest.WriteBinlogs(ctx, site, storagetest.Binlogs{StreamID: id, Flavor: mysql.FlavorMySQL, Epoch: 1, ServerID: 1,
		FirstIndex: 1, Count: n, Before: gtids, Added: oneTrxAfter(gtids), Start: start.Add(time.Duration(backups-1) * 24 * time.Hour),
		Data: []byte("x")}, 32); err != nil {
		t.Fatal(err)
	}
	t.Logf("generated %d backups and %d binlogs in %v", backups, n, time.Since(t0))
	return id, backups
}

// oneTrxAfter gives binlog i one transaction, continuing after state (one
// source).
func oneTrxAfter(state mysql.GTIDSet) func(i int) mysql.GTIDSet {
	src := state.Sources()[0]
	last, _ := state.Last(src)
	return func(i int) mysql.GTIDSet {
		g := last
		g.Seq = last.Seq + uint64(i) + 1
		return mysql.NewGTIDSet(state.Flavor()).WithGTID(g)
	}
}

// bigBackup takes a full backup of about 1 GiB of random rows (so the
// stored bytes are the data's) with a daemon into the S3 emulator under
// "real/"; it returns the stream and its stored size.
func bigBackup(b *testing.B, s3Port int, keys map[string]any) (string, int64) {
	b.Helper()
	in := harness.StartInstances(b, 1, harness.Options{Extra: []string{"innodb_buffer_pool_size=256M", "max_binlog_size=256M", "innodb_log_file_size=512M"}})[0]
	db := harness.OpenDB(b, in)
	harness.Exec(b, db, "CREATE DATABASE big")
	harness.Exec(b, db, "CREATE TABLE big.r (id INT AUTO_INCREMENT PRIMARY KEY, v VARBINARY(4096)) ENGINE=InnoDB")
	t0 := time.Now()
	mib := benchEnvInt("MYHOARD_BENCH_RESTORE_MIB", 1024)
	for i := 0; i < mib/16; i++ { // 4096 rows of 4 KiB: 16 MiB a statement
		harness.Exec(b, db, "INSERT INTO big.r (v) SELECT CONCAT(RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024), RANDOM_BYTES(1024)) FROM big.seq_1_to_4096")
	}
	b.Logf("%d MiB of random rows in %v", mib, time.Since(t0))
	dir := b.TempDir()
	port, _ := harness.FreePort()
	cfg := daemonConfig(b, dir, port, in)
	os3 := s3SiteConfig(s3Port)
	os3["prefix"] = "real/"
	cfg["backup_sites"] = map[string]any{"real": map[string]any{"object_storage": os3, "encryption_keys": keys, "compression": map[string]any{"algorithm": "zstd"}}}
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 3600}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	cfgPath := filepath.Join(dir, "myhoard.json")
	writeJSON(b, cfgPath, cfg)
	d := startDaemon(b, "--config", cfgPath)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitStatus(b, d, port)
	doJSON(b, "PUT", url+"/status", map[string]any{"mode": "active"})
	done := waitCompletedBackupWithin(b, url, 15*time.Minute)
	if code, body := doJSON(b, "POST", url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 60}); code != 200 {
		b.Fatalf("rotation: %d %v", code, body)
	}
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(b, 10*time.Second)
	return done.StreamID, done.Basebackup.CompressedSize
}

// plainDownload reads a backup's parts through site (one after another,
// nothing decoded) and returns the rate in bytes a second.
func plainDownload(t testing.TB, site *storage.Site, streamID string) float64 {
	t.Helper()
	ctx := context.Background()
	var keys []string
	if err := site.List(ctx, storage.StreamPrefix(streamID)+"basebackup/", func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	t0 := time.Now()
	var n int64
	for _, k := range keys {
		r, err := site.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		m, err := io.Copy(io.Discard, r)
		r.Close()
		if err != nil {
			t.Fatal(err)
		}
		n += m
	}
	return float64(n) / time.Since(t0).Seconds()
}
