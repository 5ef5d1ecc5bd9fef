package e2e

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/storage/storagetest"
)

// scaleBinlogs is how many binlogs each stream of the scale tests holds.
const scaleBinlogs = 10000

// s3SiteConfig is the object_storage block of the S3 emulator's bucket
// reached at port (the emulator's, or a proxy's in front of it).
func s3SiteConfig(port int) map[string]any {
	return map[string]any{"storage_type": "s3", "region": harness.S3Region, "bucket_name": harness.StorageBucket,
		"aws_access_key_id": harness.S3AccessKey, "aws_secret_access_key": harness.S3SecretKey,
		"host": "127.0.0.1", "port": port, "is_secure": false}
}

// openS3Site opens the S3 emulator's bucket for the test itself.
func openS3Site(t testing.TB, port int) *storage.Site {
	t.Helper()
	oc := storagetest.ObjectStorage(t, s3SiteConfig(port))
	site, err := storage.OpenSite(context.Background(), "s3", oc, storage.SiteOptions{ReadConcurrency: 32})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { site.Close() })
	return site
}

// copySite copies every object of one site to another, as stored.
func copySite(t testing.TB, from, to *storage.Site) int {
	t.Helper()
	ctx := context.Background()
	var keys []string
	if err := from.List(ctx, "", func(o storage.ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err := to.ReadEach(ctx, len(keys), func(ctx context.Context, i int) error {
		_, err := to.Put(ctx, keys[i], func() (io.ReadCloser, error) { return from.Get(ctx, keys[i]) }, storage.PutOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(keys)
}

// padStreams appends binlogs of an idle server (rotated, nothing written:
// what forced_binlog_rotation_interval gives a quiet primary) to every
// stream of site until each holds n.
func padStreams(t testing.TB, site *storage.Site, n int) {
	t.Helper()
	ctx := context.Background()
	var ids []string
	if err := site.ListDir(ctx, storage.StreamsPrefix, func(o storage.ObjectInfo, isDir bool) error {
		if isDir {
			ids = append(ids, storage.StreamOfKey(o.Key))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		list, err := storage.ListStreamBinlogs(ctx, site, id)
		if err != nil || len(list) == 0 {
			t.Fatalf("stream %s: %d binlogs, %v", id, len(list), err)
		}
		last := list[len(list)-1]
		start := time.Now()
		if last.Manifest.LastEventAt != nil {
			start = last.Manifest.LastEventAt.Add(time.Minute)
		}
		_, err = storagetest.WriteBinlogs(ctx, site, storagetest.Binlogs{StreamID: id, Flavor: last.Manifest.Flavor, Epoch: last.Ref.Epoch,
			ServerID: last.Ref.ServerID, FirstIndex: last.Ref.RemoteIndex + 1, Count: n - len(list), Before: last.End(),
			Start: start, Data: []byte("an idle binlog")}, 32)
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestRestoreAtScale: a source backed up into three streams is moved to
// S3 and every stream padded to 10,000 binlogs; a restore of the oldest
// backup to the latest transaction, which lists all three streams, gives
// the same data through a proxy that adds 20 ms to every request as
// straight from the emulator.
func TestRestoreAtScale(t *testing.T) {
	src := newScaleSource(t)
	srv := harness.StartS3(t)
	direct := openS3Site(t, srv.Port)
	t0 := time.Now()
	copied := copySite(t, openFileSite(t, src.backups), direct)
	padStreams(t, direct, scaleBinlogs)
	t.Logf("%d objects copied to S3 and three streams padded to %d binlogs in %v", copied, scaleBinlogs, time.Since(t0))
	proxy := harness.StartLatencyProxy(t, srv.Endpoint(), 20*time.Millisecond, 0)

	for _, tc := range []struct {
		name string
		port int
	}{{"through the 20 ms proxy", proxy.Port}, {"straight", srv.Port}} {
		t.Run(tc.name, func(t *testing.T) {
			n := newRestoreNode(t, "", map[string]any{"backup_sites": map[string]any{
				"default": map[string]any{"object_storage": s3SiteConfig(tc.port)}}})
			requests := proxy.Requests.Load()
			t0 := time.Now()
			n.request(t, map[string]any{"mode": "restore", "site": "default", "stream_id": src.b1, "target_time": nil})
			n.waitObserve(t, 10*time.Minute)
			t.Logf("restored across three streams of %d binlogs in %v (%d requests through the proxy; daemon peak RSS %d MiB)",
				scaleBinlogs, time.Since(t0), proxy.Requests.Load()-requests, vmHWM(n.d.cmd.Process.Pid)>>10)
			n.assertRestored(t, src.final)
		})
	}
}

// scaleSource is a primary backed up into three streams while a load ran.
type scaleSource struct {
	backups string
	b1      string
	final   harness.Checkpoint
}

func newScaleSource(t *testing.T) *scaleSource {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := startLoadedPrimary(ctx, t, 23, 500)
	s, d := p.activeSetup, p.d
	src := &scaleSource{backups: s.backups}
	src.b1 = waitCompletedBackup(t, s.url).StreamID
	for n := 2; n <= 3; n++ {
		if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "basebackup"}); code != 200 {
			t.Fatalf("request backup: %d %v", code, body)
		}
		harness.WaitFor(t, fmt.Sprintf("backup %d completed and the one before closed", n), 120*time.Second, func() (bool, string) {
			list := listBackups(t, s.url)
			return len(list) == n && list[n-1].CompletedAt != nil && list[n-2].ClosedAt != nil, fmt.Sprint(list)
		})
	}
	src.final = stopLoad(t, cancel, p.errc, p.load, s.url)
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(t, 10*time.Second)
	return src
}
