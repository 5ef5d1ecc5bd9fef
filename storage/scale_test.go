package storage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/storage/storagetest"
)

const genUUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"

// oneTrx is a generated binlog's GTIDs: binlog i of a stream whose
// first binlog holds transaction first.
func oneTrx(first uint64) func(i int) mysql.GTIDSet {
	return func(i int) mysql.GTIDSet {
		s, err := mysql.ParseMySQLGTIDSet(fmt.Sprintf("%s:%d", genUUID, first+uint64(i)))
		if err != nil {
			panic(err)
		}
		return s
	}
}

func gtids(t testing.TB, text string) mysql.GTIDSet {
	t.Helper()
	s, err := mysql.ParseMySQLGTIDSet(text)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// scaleRepo is a generated repository on a file site.
type scaleRepo struct {
	dir     string
	streams []string // oldest first; the binlogs are in big
	big     string
	next    int64         // the next index of big
	end     mysql.GTIDSet // the GTID state after big's last binlog
	start   time.Time
	data    []byte // each binlog's data object (nil: none)

	// the reference listing of big, until the repository changes
	refVersion, version int
	refList             []storage.StoredBinlog
	refErr              error
}

// changed says the repository changed behind the generator's back.
func (r *scaleRepo) changed() { r.version++ }

// genRepo writes backups streams on site, the last of them open with n
// binlogs.
func genRepo(t testing.TB, site *storage.Site, backups, n int, data []byte) *scaleRepo {
	t.Helper()
	ctx := context.Background()
	r := &scaleRepo{start: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), data: data}
	for i := 0; i < backups; i++ {
		at := r.start.Add(time.Duration(i) * 24 * time.Hour)
		id := fmt.Sprintf("%s_%08x", at.Format("20060102T150405.000Z"), i)
		r.streams = append(r.streams, id)
		if err := storagetest.WriteBackup(ctx, site, id, mysql.FlavorMySQL, gtids(t, fmt.Sprintf("%s:1-%d", genUUID, 1000+i)), at, i < backups-1); err != nil {
			t.Fatal(err)
		}
	}
	r.big = r.streams[len(r.streams)-1]
	r.end = gtids(t, fmt.Sprintf("%s:1-%d", genUUID, 1000+backups-1))
	r.next = 1
	r.add(t, site, 1, n)
	return r
}

// add appends n binlogs of epoch to the big stream.
func (r *scaleRepo) add(t testing.TB, site *storage.Site, epoch int64, n int) {
	t.Helper()
	first := uint64(r.end.Count()) + 1
	end, err := storagetest.WriteBinlogs(context.Background(), site, storagetest.Binlogs{StreamID: r.big, Flavor: mysql.FlavorMySQL,
		Epoch: epoch, ServerID: uint32(epoch), FirstIndex: r.next, Count: n, Before: r.end, Added: oneTrx(first),
		Start: r.start.Add(time.Duration(r.next) * time.Minute), Data: r.data}, 32)
	if err != nil {
		t.Fatal(err)
	}
	r.end, r.next = end, r.next+int64(n)
	r.changed()
}

func openFile(t testing.TB, dir string, cache *storage.ObjectCache, conc int) *storage.Site {
	t.Helper()
	s, err := storage.OpenDirectory(context.Background(), "gen", dir, storage.SiteOptions{Cache: cache, ReadConcurrency: conc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openCache(t testing.TB, dir string) *storage.ObjectCache {
	t.Helper()
	c, err := storage.OpenObjectCache(dir, 256<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type lister func(context.Context, *storage.Site, string) ([]storage.StoredBinlog, error)

// sameListing checks that list gives on site what the reference gives on
// ref (a site without cache), error for error.
func (r *scaleRepo) sameListing(t *testing.T, what string, list lister, site, ref *storage.Site) []storage.StoredBinlog {
	t.Helper()
	ctx := context.Background()
	if r.refList == nil && r.refErr == nil || r.refVersion != r.version {
		r.refList, r.refErr = storage.ReferenceListStreamBinlogs(ctx, ref, r.big)
		r.refVersion = r.version
	}
	want, werr := r.refList, r.refErr
	got, gerr := list(ctx, site, r.big)
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("%s: error %v, the reference's %v", what, gerr, werr)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s: %d binlogs differ from the reference's %d", what, len(got), len(want))
	}
	return got
}

// TestListingsAtScale: a generated repository of 20 backups, one of them
// with 10,000 binlogs: the cached, parallel and incremental listings equal
// the plain sequential ones through appends, a fence, a gap, an object
// rewritten behind the cache's back, restarts, a truncated and a damaged
// cache file.
func TestListingsAtScale(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ref := openFile(t, dir, nil, 1)
	// no data objects: listings read manifests only, and a file site's
	// listing is slower the more files it has
	r := genRepo(t, ref, 20, 10000, nil)
	r.dir = dir
	cacheDir := t.TempDir()
	cache := openCache(t, cacheDir)
	site := openFile(t, r.dir, cache, 16)

	r.sameListing(t, "first listing", storage.ListStreamBinlogs, site, ref)
	if hits := site.Stats().CacheHits.Load(); hits != 0 {
		t.Fatalf("a cold cache served %d objects", hits)
	}
	gets := site.Stats().Gets.Load()
	list := r.sameListing(t, "listing again", storage.FollowStreamBinlogs, site, ref)
	if n := site.Stats().Gets.Load() - gets; n != 0 {
		t.Fatalf("listing again read %d objects", n)
	}
	if len(list) != 10000 {
		t.Fatalf("listed %d binlogs", len(list))
	}

	// the backup listing, parallel and cached, equals the sequential one
	wantB, err := backup.ListBackups(ctx, ref, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		gotB, err := backup.ListBackups(ctx, site, false)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotB, wantB) || len(gotB) != 20 {
			t.Fatalf("backup listing %d: %d backups differ from the reference's %d", i, len(gotB), len(wantB))
		}
	}

	t.Run("50 new binlogs", func(t *testing.T) {
		r.add(t, ref, 1, 50)
		gets := site.Stats().Gets.Load()
		r.sameListing(t, "after 50 new", storage.FollowStreamBinlogs, site, ref)
		if n := site.Stats().Gets.Load() - gets; n != 50 {
			t.Fatalf("%d objects read for 50 new binlogs", n)
		}
		r.sameListing(t, "full after 50 new", storage.ListStreamBinlogs, site, ref)
	})

	t.Run("fence", func(t *testing.T) {
		// the old primary goes on uploading past the new epoch's start
		start := r.next - 5
		r.add(t, ref, 1, 3)
		r.sameListing(t, "before the promotion record", storage.FollowStreamBinlogs, site, ref)
		rec := storage.PromotionRecord{StreamID: r.big, Epoch: 2, NodeID: "b", ServerID: 2, StartIndex: start, GTIDs: r.end, PromotedAt: time.Now()}
		if _, err := storage.WritePromotion(ctx, ref, &rec); err != nil {
			t.Fatal(err)
		}
		r.changed()
		r.sameListing(t, "fenced", storage.FollowStreamBinlogs, site, ref)
		// the new primary continues from the start index (a key that
		// sorts below what was listed before the fence)
		list, err := storage.ReferenceListStreamBinlogs(ctx, ref, r.big)
		if err != nil {
			t.Fatal(err)
		}
		r.next, r.end = start, list[len(list)-1].End()
		r.add(t, ref, 2, 10)
		got := r.sameListing(t, "the new epoch", storage.FollowStreamBinlogs, site, ref)
		if e := got[len(got)-1].Ref.Epoch; e != 2 {
			t.Fatalf("the last binlog is of epoch %d", e)
		}
	})

	t.Run("gap", func(t *testing.T) {
		hole := storage.BinlogRef{StreamID: r.big, RemoteIndex: r.next, Epoch: 2, ServerID: 2}
		r.add(t, ref, 2, 3)
		data, err := ref.GetBytes(ctx, hole.ManifestKey())
		if err != nil {
			t.Fatal(err)
		}
		if err := ref.Delete(ctx, hole.ManifestKey()); err != nil {
			t.Fatal(err)
		}
		r.changed()
		got, err := storage.FollowStreamBinlogs(ctx, site, r.big)
		if !errors.Is(err, storage.ErrGap) || got != nil {
			t.Fatalf("a gap: %d binlogs, %v", len(got), err)
		}
		r.sameListing(t, "gap", storage.FollowStreamBinlogs, site, ref)
		r.sameListing(t, "gap, full", storage.ListStreamBinlogs, site, ref)
		// the missing manifest arrives late
		if err := ref.PutBytes(ctx, hole.ManifestKey(), data, storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		r.changed()
		r.sameListing(t, "gap filled", storage.FollowStreamBinlogs, site, ref)
	})

	t.Run("rewritten behind the cache's back", func(t *testing.T) {
		m := list[4].Manifest
		m.LocalName = "binlog.rewritten"
		data, err := storage.MarshalManifest(&m)
		if err != nil {
			t.Fatal(err)
		}
		if err := ref.PutBytes(ctx, list[4].Ref.ManifestKey(), data, storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		r.changed()
		got := r.sameListing(t, "rewritten", storage.ListStreamBinlogs, site, ref)
		if got[4].Manifest.LocalName != "binlog.rewritten" {
			t.Fatalf("the rewritten manifest was not read again: %s", got[4].Manifest.LocalName)
		}
	})

	t.Run("restart", func(t *testing.T) {
		cache.Close()
		cache = openCache(t, cacheDir)
		site := openFile(t, r.dir, cache, 16)
		got := r.sameListing(t, "after a restart", storage.ListStreamBinlogs, site, ref)
		if hits := site.Stats().CacheHits.Load(); hits < int64(len(got)) {
			t.Fatalf("after a restart the cache served %d of %d manifests", hits, len(got))
		}
	})

	files, err := filepath.Glob(filepath.Join(cacheDir, "*-"+r.big+".cache"))
	if err != nil || len(files) != 1 {
		t.Fatalf("cache files of the stream: %v %v", files, err)
	}
	t.Run("truncated cache file", func(t *testing.T) {
		cache.Close()
		st, err := os.Stat(files[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(files[0], st.Size()/2-7); err != nil {
			t.Fatal(err)
		}
		cache = openCache(t, cacheDir)
		site := openFile(t, r.dir, cache, 16)
		got := r.sameListing(t, "truncated cache", storage.ListStreamBinlogs, site, ref)
		hits := site.Stats().CacheHits.Load()
		if hits < int64(len(got))/3 || hits >= int64(len(got)) {
			t.Fatalf("a cache file cut in half served %d of %d manifests", hits, len(got))
		}
		// what was read again is cached again
		cache.Close()
		cache = openCache(t, cacheDir)
		site = openFile(t, r.dir, cache, 16)
		r.sameListing(t, "after the truncation", storage.ListStreamBinlogs, site, ref)
		if hits := site.Stats().CacheHits.Load(); hits < int64(len(got)) {
			t.Fatalf("after refilling, the cache served %d of %d manifests", hits, len(got))
		}
	})

	t.Run("damaged cache file", func(t *testing.T) {
		cache.Close()
		f, err := os.OpenFile(files[0], os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		if _, err := f.WriteAt([]byte("garbage!"), st.Size()/3); err != nil {
			t.Fatal(err)
		}
		f.Close()
		cache = openCache(t, cacheDir)
		site := openFile(t, r.dir, cache, 16)
		r.sameListing(t, "damaged cache", storage.ListStreamBinlogs, site, ref)
	})

	t.Run("cached copy that does not decode", func(t *testing.T) {
		cache.Close()
		cache = openCache(t, cacheDir)
		site := openFile(t, r.dir, cache, 16)
		var o storage.ObjectInfo
		if err := ref.List(ctx, list[7].Ref.ManifestKey(), func(oi storage.ObjectInfo) error { o = oi; return nil }); err != nil || o.Key == "" {
			t.Fatalf("list %s: %v", list[7].Ref.ManifestKey(), err)
		}
		cache.Put(site.CacheName(), o.Key, o.Validator(), []byte(`{"version": 1, "stream_id": 12}`))
		r.sameListing(t, "undecodable cached copy", storage.ListStreamBinlogs, site, ref)
	})

	t.Run("deleted stream", func(t *testing.T) {
		if _, err := site.DeletePrefix(ctx, storage.StreamPrefix(r.big)); err != nil {
			t.Fatal(err)
		}
		r.changed()
		if _, err := os.Stat(files[0]); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the deleted stream's cache file is still there: %v", err)
		}
		r.sameListing(t, "deleted", storage.FollowStreamBinlogs, site, ref)
	})
}

// emulatorStorage is the object_storage block of a site on a storage
// emulator (reached at port), under prefix.
func emulatorStorage(t *testing.T, kind string, port int, prefix string) *config.ObjectStorage {
	t.Helper()
	var m map[string]any
	switch kind {
	case "s3":
		m = map[string]any{"storage_type": "s3", "region": harness.S3Region, "bucket_name": harness.StorageBucket,
			"aws_access_key_id": harness.S3AccessKey, "aws_secret_access_key": harness.S3SecretKey,
			"host": "127.0.0.1", "port": port, "is_secure": false}
	case "gcs":
		m = map[string]any{"url": "gs://" + harness.StorageBucket}
	case "azure":
		m = map[string]any{"storage_type": "azure", "account_name": harness.AzureAccount, "account_key": harness.AzureKey,
			"bucket_name": harness.StorageBucket, "host": "127.0.0.1", "port": port, "is_secure": false}
	}
	m["prefix"] = prefix
	return storagetest.ObjectStorage(t, m)
}

// TestFollowOnEmulators: on S3 (through a 20 ms latency proxy), GCS and
// Azure, under a prefix, the listing that continues where it stopped
// (S3 StartAfter, GCS StartOffset, Azure's full key listing) equals the
// plain one through appends and a fence, and reads only what is new.
func TestFollowOnEmulators(t *testing.T) {
	s3 := harness.StartS3(t)
	proxy := harness.StartLatencyProxy(t, s3.Endpoint(), 20*time.Millisecond, 0)
	gcs := harness.StartGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", fmt.Sprintf("127.0.0.1:%d", gcs.Port))
	az := harness.StartAzure(t)
	for _, tc := range []struct {
		kind            string
		port, proxyPort int
	}{{"s3", s3.Port, proxy.Port}, {"gcs", gcs.Port, gcs.Port}, {"azure", az.Port, az.Port}} {
		t.Run(tc.kind, func(t *testing.T) {
			ctx := context.Background()
			// the generator and the reference go straight to the
			// emulator; the listings under test through the proxy
			open := func(cache *storage.ObjectCache, conc, port int) *storage.Site {
				oc := emulatorStorage(t, tc.kind, port, "follow/"+tc.kind+"/")
				s, err := storage.OpenSite(ctx, "emu", oc, storage.SiteOptions{Cache: cache, ReadConcurrency: conc})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { s.Close() })
				return s
			}
			ref := open(nil, 1, tc.port)
			site := open(openCache(t, t.TempDir()), 16, tc.proxyPort)
			r := genRepo(t, ref, 3, 300, []byte("x"))
			r.sameListing(t, "first", storage.FollowStreamBinlogs, site, ref)
			for round := 0; round < 2; round++ {
				r.add(t, ref, 1, 20)
				gets, listed := site.Stats().Gets.Load(), site.Stats().Listed.Load()
				r.sameListing(t, "20 new", storage.FollowStreamBinlogs, site, ref)
				if n := site.Stats().Gets.Load() - gets; n != 20 {
					t.Fatalf("%d objects read for 20 new binlogs", n)
				}
				// the new keys and the last index's again (Azure lists
				// every key)
				n := site.Stats().Listed.Load() - listed
				if want := int64(2*21 + 1); tc.kind != "azure" && n > want || tc.kind == "azure" && n < int64(2*(r.next-1)) {
					t.Fatalf("the listing returned %d entries", n)
				}
			}
			rec := storage.PromotionRecord{StreamID: r.big, Epoch: 12, NodeID: "b", ServerID: 2, StartIndex: r.next - 4, PromotedAt: time.Now()}
			if _, err := storage.WritePromotion(ctx, ref, &rec); err != nil {
				t.Fatal(err)
			}
			r.changed()
			list := r.sameListing(t, "fenced", storage.FollowStreamBinlogs, site, ref)
			// epoch 12's keys at the start index sort below epoch 1's
			r.next, r.end = rec.StartIndex, list[len(list)-1].End()
			r.add(t, ref, 12, 6)
			got := r.sameListing(t, "epoch 12", storage.FollowStreamBinlogs, site, ref)
			if last := got[len(got)-1]; last.Ref.Epoch != 12 || last.Ref.RemoteIndex != r.next-1 {
				t.Fatalf("the last binlog is %+v", last.Ref)
			}
			r.sameListing(t, "full", storage.ListStreamBinlogs, site, ref)
			want, err := backup.ListBackups(ctx, ref, false)
			if err != nil {
				t.Fatal(err)
			}
			gotB, err := backup.ListBackups(ctx, site, false)
			if err != nil || !reflect.DeepEqual(gotB, want) || len(want) != 3 {
				t.Fatalf("backup listing: %d backups, the reference's %d (%v)", len(gotB), len(want), err)
			}
		})
	}
}
