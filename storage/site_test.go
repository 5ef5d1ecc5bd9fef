package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/e2e/harness"
)

// fastRetry keeps fault tests short.
var fastRetry = RetryPolicy{Attempts: 6, Base: 20 * time.Millisecond, Max: 300 * time.Millisecond}

type backend struct {
	name string
	// storage returns the object_storage config for a prefix.
	storage func(t *testing.T, prefix string) *config.ObjectStorage
	server  *harness.StorageServer
}

func parseStorage(t *testing.T, m map[string]any) *config.ObjectStorage {
	t.Helper()
	cfg := map[string]any{
		"state_directory": "/tmp/x", "start_command": []string{"x"},
		"backup_sites": map[string]any{"s": map[string]any{"object_storage": m}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := config.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return c.BackupSites["s"].ObjectStorage
}

func s3Storage(server *harness.StorageServer, bucket, key string) map[string]any {
	return map[string]any{"storage_type": "s3", "region": harness.S3Region, "bucket_name": bucket,
		"aws_access_key_id": harness.S3AccessKey, "aws_secret_access_key": key,
		"host": "127.0.0.1", "port": server.Port, "is_secure": false}
}

func azureStorage(server *harness.StorageServer, bucket, key string) map[string]any {
	return map[string]any{"storage_type": "azure", "account_name": harness.AzureAccount, "account_key": key,
		"bucket_name": bucket, "host": "127.0.0.1", "port": server.Port, "is_secure": false}
}

// backends starts the storage servers for one test and describes every
// backend.
func backends(t *testing.T) []backend {
	t.Helper()
	dir := t.TempDir()
	s3 := harness.StartS3(t)
	gcs := harness.StartGCS(t)
	az := harness.StartAzure(t)
	t.Setenv("STORAGE_EMULATOR_HOST", fmt.Sprintf("127.0.0.1:%d", gcs.Port))
	return []backend{
		{name: "file", storage: func(t *testing.T, prefix string) *config.ObjectStorage {
			return parseStorage(t, map[string]any{"storage_type": "local", "directory": filepath.Join(dir, "file"), "prefix": prefix})
		}},
		{name: "mem", storage: func(t *testing.T, prefix string) *config.ObjectStorage {
			return parseStorage(t, map[string]any{"url": "mem://", "prefix": prefix})
		}},
		{name: "s3", server: s3, storage: func(t *testing.T, prefix string) *config.ObjectStorage {
			m := s3Storage(s3, harness.StorageBucket, harness.S3SecretKey)
			m["prefix"] = prefix
			return parseStorage(t, m)
		}},
		{name: "gcs", server: gcs, storage: func(t *testing.T, prefix string) *config.ObjectStorage {
			return parseStorage(t, map[string]any{"url": "gs://" + harness.StorageBucket, "prefix": prefix})
		}},
		{name: "azure", server: az, storage: func(t *testing.T, prefix string) *config.ObjectStorage {
			m := azureStorage(az, harness.StorageBucket, harness.AzureKey)
			m["prefix"] = prefix
			return parseStorage(t, m)
		}},
	}
}

func openSite(t *testing.T, os *config.ObjectStorage, opts SiteOptions) *Site {
	t.Helper()
	if opts.Retry.Attempts == 0 {
		opts.Retry = fastRetry
	}
	if opts.PartSize == 0 {
		opts.PartSize = 5 << 20 // the S3 minimum, so that 12 MiB objects are multipart
	}
	s, err := OpenSite(context.Background(), "test", os, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSiteConformance(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			s := openSite(t, b.storage(t, "conf/"), SiteOptions{})
			if err := s.Check(ctx); err != nil {
				t.Fatal(err)
			}
			conformance(ctx, t, s, b)
		})
	}
}

func conformance(ctx context.Context, t *testing.T, s *Site, b backend) {
	// small put / get / stat / range
	data := []byte("hello, object storage")
	if err := s.PutBytes(ctx, "a/b/small", data, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetBytes(ctx, "a/b/small")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("get: %q %v", got, err)
	}
	if info, err := s.Stat(ctx, "a/b/small"); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("stat: %+v %v", info, err)
	}
	r, err := s.GetRange(ctx, "a/b/small", 7, 6)
	if err != nil {
		t.Fatal(err)
	}
	part, err := io.ReadAll(r)
	r.Close()
	if err != nil || string(part) != "object" {
		t.Fatalf("range: %q %v", part, err)
	}
	if _, err := s.GetBytes(ctx, "a/b/missing"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "a/b/missing") {
		t.Fatalf("missing object: %v", err)
	}
	if _, err := s.Get(ctx, "a/b/missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object stream: %v", err)
	}
	if ok, err := s.Exists(ctx, "a/b/missing"); ok || err != nil {
		t.Fatalf("exists(missing) = %v %v", ok, err)
	}

	// large object, larger than the multipart part size, from a file
	big := compressible(12<<20+12345, 77)
	path := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := s.Put(ctx, "big", func() (io.ReadCloser, error) { return os.Open(path) }, PutOptions{})
	if err != nil || n != int64(len(big)) {
		t.Fatalf("put big: %d %v", n, err)
	}
	r, err = s.Get(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	r.Close()
	if want := sha256.Sum256(big); !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatal("big object differs")
	}
	r, err = s.GetRange(ctx, "big", 7<<20, 100)
	if err != nil {
		t.Fatal(err)
	}
	part, _ = io.ReadAll(r)
	r.Close()
	if !bytes.Equal(part, big[7<<20:7<<20+100]) {
		t.Fatal("range of big object differs")
	}

	// one-shot stream
	if n, err := s.PutStream(ctx, "streamed", bytes.NewReader(big[:3<<20]), PutOptions{}); err != nil || n != 3<<20 {
		t.Fatalf("put stream: %d %v", n, err)
	}

	// write-once
	if err := s.PutBytes(ctx, "once", []byte("first"), PutOptions{IfNotExist: true}); err != nil {
		t.Fatal(err)
	}
	err = s.PutBytes(ctx, "once", []byte("second"), PutOptions{IfNotExist: true})
	if !errors.Is(err, ErrExists) {
		t.Fatalf("second write-once put: %v", err)
	}
	var oe *OpError
	if errors.As(err, &oe) && oe.Attempts > 1 {
		t.Errorf("write-once conflict was retried %d times", oe.Attempts)
	}
	if got, _ := s.GetBytes(ctx, "once"); string(got) != "first" {
		t.Fatalf("write-once object changed to %q", got)
	}

	// copy
	if err := s.Copy(ctx, "a/copy", "a/b/small"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetBytes(ctx, "a/copy"); !bytes.Equal(got, data) {
		t.Fatalf("copy: %q", got)
	}

	// list more than 1000 keys (paged), then delete the prefix
	const many = 1100
	var wg sync.WaitGroup
	errs := make(chan error, many)
	sem := make(chan struct{}, 16)
	for i := 0; i < many; i++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			errs <- s.PutBytes(ctx, fmt.Sprintf("many/%05d", i), []byte{byte(i)}, PutOptions{})
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	if err := s.List(ctx, "many/", func(o ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(keys) != many || !sort.StringsAreSorted(keys) || keys[0] != "many/00000" {
		t.Fatalf("listed %d keys (sorted %v), want %d", len(keys), sort.StringsAreSorted(keys), many)
	}
	if n, err := s.DeletePrefix(ctx, "many/"); err != nil || n != many {
		t.Fatalf("delete prefix: %d %v", n, err)
	}
	count := 0
	_ = s.List(ctx, "many/", func(ObjectInfo) error { count++; return nil })
	if count != 0 {
		t.Fatalf("%d keys left after delete prefix", count)
	}
	if _, err := s.DeletePrefix(ctx, ""); err == nil {
		t.Fatal("deleting the whole site must be refused")
	}

	// delete, and delete of a missing key
	if err := s.Delete(ctx, "a/b/small"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "a/b/small"); err != nil {
		t.Fatalf("delete of a missing key: %v", err)
	}

	// prefixes isolate sites sharing a bucket
	other := openSite(t, b.storage(t, "other/"), SiteOptions{})
	if ok, _ := other.Exists(ctx, "big"); ok {
		t.Fatal("a site with another prefix sees this site's objects")
	}
	var all []string
	_ = s.List(ctx, "", func(o ObjectInfo) error { all = append(all, o.Key); return nil })
	for _, k := range all {
		if strings.HasPrefix(k, "conf/") || strings.HasPrefix(k, ".myhoard-check") {
			t.Fatalf("listing shows %q", k)
		}
	}
}

func TestSiteCheckErrors(t *testing.T) {
	bs := backends(t)
	ctx := context.Background()
	for _, b := range bs {
		if b.server == nil {
			continue
		}
		t.Run(b.name, func(t *testing.T) {
			var missing, wrongKey map[string]any
			switch b.name {
			case "s3":
				missing = s3Storage(b.server, "nosuchbucket", harness.S3SecretKey)
				wrongKey = s3Storage(b.server, harness.StorageBucket, "wrong-secret")
			case "gcs":
				missing = map[string]any{"url": "gs://nosuchbucket"}
			case "azure":
				missing = azureStorage(b.server, "nosuchbucket", harness.AzureKey)
				wrongKey = azureStorage(b.server, harness.StorageBucket, "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==")
			}
			err := openSite(t, parseStorage(t, missing), SiteOptions{}).Check(ctx)
			if err == nil || !strings.Contains(err.Error(), "does not exist") {
				t.Errorf("missing bucket: %v", err)
			}
			assertNotRetried(t, err)
			if wrongKey != nil {
				err := openSite(t, parseStorage(t, wrongKey), SiteOptions{}).Check(ctx)
				if err == nil || !strings.Contains(err.Error(), "access denied") {
					t.Errorf("wrong credentials: %v", err)
				}
				assertNotRetried(t, err)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		port, _ := harness.FreePort()
		stats := &Stats{}
		s := openSite(t, parseStorage(t, map[string]any{"storage_type": "s3", "bucket_name": "b", "aws_access_key_id": "a", "aws_secret_access_key": "b",
			"host": "127.0.0.1", "port": port, "is_secure": false}), SiteOptions{Stats: stats, Retry: RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: 5 * time.Millisecond}})
		err := s.Check(ctx)
		if err == nil || !strings.Contains(err.Error(), "unreachable") || !strings.Contains(err.Error(), "after 3 attempts") {
			t.Errorf("unreachable endpoint: %v", err)
		}
		if stats.WriteErrors.Load() != 3 {
			t.Errorf("write errors counted %d, want 3", stats.WriteErrors.Load())
		}
	})
}

func assertNotRetried(t *testing.T, err error) {
	t.Helper()
	var oe *OpError
	if errors.As(err, &oe) && oe.Attempts > 1 {
		t.Errorf("a permanent error was retried %d times: %v", oe.Attempts, err)
	}
}

// TestFileSiteListWhileUploading: listing a file site while uploads
// create and rename their temporary files never fails (a file that
// vanishes between readdir and stat makes the page be listed again).
func TestFileSiteListWhileUploading(t *testing.T) {
	ctx := context.Background()
	s, err := OpenDirectory(ctx, "f", t.TempDir(), SiteOptions{Retry: RetryPolicy{Attempts: 20, Base: time.Millisecond, Max: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	stop := make(chan struct{})
	var puts atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.PutBytes(ctx, fmt.Sprintf("d/k%05d", n), []byte("x"), PutOptions{}); err != nil {
				t.Error(err)
				return
			}
			puts.Add(1)
		}
	}()
	// 300 lists or 2 s of them, and on until uploads ran among them (the
	// uploader may start late on a busy machine).
	start := time.Now()
	for i := 0; ((i < 300 && time.Since(start) < 2*time.Second) || puts.Load() < 50) && time.Since(start) < 20*time.Second; i++ {
		if err := s.List(ctx, "d/", func(ObjectInfo) error { return nil }); err != nil {
			t.Errorf("list %d: %v", i, err)
			break
		}
	}
	close(stop)
	<-done
	if n := puts.Load(); n < 50 {
		t.Fatalf("only %d uploads ran among the lists in 20 s", n)
	}
}

// TestFileSiteDeletePrefixRemovesKilledUploads: an upload killed with its
// process leaves fileblob's temporary file, which no listing shows;
// deleting the prefix removes it too, and nothing outside the prefix.
func TestFileSiteDeletePrefixRemovesKilledUploads(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenDirectory(ctx, "f", dir, SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, k := range []string{"a/b/part", "other/part"} {
		if err := s.PutBytes(ctx, k, []byte("x"), PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"a/b/part.0123abcd.tmp", "other/part.0123abcd.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, p), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.DeletePrefix(ctx, "a/"); err != nil || n != 1 {
		t.Fatalf("DeletePrefix: %d, %v", n, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a/b/part.0123abcd.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed upload's temporary file under the prefix is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "other/part.0123abcd.tmp")); err != nil {
		t.Errorf("a temporary file outside the prefix was removed: %v", err)
	}
}
