package storage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/myhoard/myhoard/e2e/harness"
)

// recorded is one request a recordingProxy saw.
type recorded struct {
	method, path, query string
	header              http.Header
	size                int64
	body                string // the first 4 KiB
}

// recordingProxy forwards every request to a real storage server and
// records what the client sent.
type recordingProxy struct {
	mu   sync.Mutex
	reqs []recorded
}

func (p *recordingProxy) handler(t *testing.T, port int) http.Handler {
	target, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", port))
	rp := httputil.NewSingleHostReverseProxy(target)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("proxy: %v", err)
		}
		r.Body = io.NopCloser(bytes.NewReader(data))
		head := data[:min(len(data), 4096)]
		p.mu.Lock()
		p.reqs = append(p.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), int64(len(data)), string(head)})
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	})
}

func (p *recordingProxy) requests() []recorded {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]recorded(nil), p.reqs...)
}

// TestS3StorageClassAndSegmentSize: storage_class reaches every object
// written (single puts, multipart uploads and server-side copies), and
// segment_size is the multipart part size, seen on the wire to a real S3
// server.
func TestS3StorageClassAndSegmentSize(t *testing.T) {
	s3 := harness.StartS3(t)
	var rec recordingProxy
	proxy := httptest.NewServer(rec.handler(t, s3.Port))
	defer proxy.Close()
	port := proxy.Listener.Addr().(*net.TCPAddr).Port
	m := s3Storage(&harness.StorageServer{Port: port}, harness.StorageBucket, harness.S3SecretKey)
	m["storage_class"], m["segment_size"] = "STANDARD_IA", 6<<20
	site := openSite(t, parseStorage(t, m), SiteOptions{PartSize: -1})
	ctx := context.Background()
	if err := site.PutBytes(ctx, "small", []byte("x"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789abcdef"), (20<<20)/16)
	if err := site.PutBytes(ctx, "big", big, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := site.Copy(ctx, "copied", "small"); err != nil {
		t.Fatal(err)
	}
	classed := map[string]bool{}
	var parts []int64
	for _, r := range rec.requests() {
		if r.method == http.MethodPut && strings.Contains(r.query, "partNumber") {
			parts = append(parts, r.size)
			continue
		}
		if (r.method == http.MethodPut || (r.method == http.MethodPost && strings.Contains(r.query, "uploads"))) &&
			r.header.Get("X-Amz-Storage-Class") == "STANDARD_IA" {
			classed[r.path[strings.LastIndex(r.path, "/")+1:]] = true
		}
	}
	for _, k := range []string{"small", "big", "copied"} {
		if !classed[k] {
			t.Errorf("%s was written without storage class STANDARD_IA", k)
		}
	}
	// (uploads under the transfer manager's 16 MiB threshold are single
	// puts)
	slices.Sort(parts) // sent in parallel
	if !slices.Equal(parts, []int64{2 << 20, 6 << 20, 6 << 20, 6 << 20}) {
		t.Errorf("multipart parts %v, want 6, 6, 6 and 2 MiB (segment_size 6 MiB)", parts)
	}
}

// TestGCSStorageClass: storage_class reaches the objects a GCS site
// writes and copies.
func TestGCSStorageClass(t *testing.T) {
	gcs := harness.StartGCS(t)
	var rec recordingProxy
	proxy := httptest.NewServer(rec.handler(t, gcs.Port))
	defer proxy.Close()
	t.Setenv("STORAGE_EMULATOR_HOST", proxy.Listener.Addr().String())
	site := openSite(t, parseStorage(t, map[string]any{"storage_type": "google", "bucket_name": harness.StorageBucket, "storage_class": "NEARLINE"}), SiteOptions{})
	ctx := context.Background()
	if err := site.PutBytes(ctx, "obj", []byte("x"), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := site.Copy(ctx, "copied", "obj"); err != nil {
		t.Fatal(err)
	}
	var writes, classed int
	for _, r := range rec.requests() {
		if r.method == http.MethodPost && (strings.Contains(r.path, "/upload/") || strings.Contains(r.path, "rewriteTo") || strings.Contains(r.path, "copyTo")) {
			writes++
			if strings.Contains(r.body, `"storageClass":"NEARLINE"`) {
				classed++
			}
		}
	}
	if writes != 2 || classed != 2 {
		t.Errorf("%d writes, %d of them with storageClass NEARLINE; want 2 and 2", writes, classed)
	}
}

// TestS3IsVerifyTLS: an S3 server behind a certificate nobody trusts is
// refused, unless is_verify_tls is false.
func TestS3IsVerifyTLS(t *testing.T) {
	s3 := harness.StartS3(t)
	var rec recordingProxy
	proxy := httptest.NewTLSServer(rec.handler(t, s3.Port))
	defer proxy.Close()
	port := proxy.Listener.Addr().(*net.TCPAddr).Port
	for _, verify := range []bool{true, false} {
		m := s3Storage(&harness.StorageServer{Port: port}, harness.StorageBucket, harness.S3SecretKey)
		m["is_secure"], m["is_verify_tls"] = true, verify
		site, err := OpenSite(context.Background(), "tls", parseStorage(t, m), SiteOptions{Retry: fastRetry})
		if err != nil {
			t.Fatal(err)
		}
		err = site.Check(context.Background())
		site.Close()
		switch {
		case verify && (err == nil || !strings.Contains(err.Error(), "certificate")):
			t.Errorf("is_verify_tls true: %v, want a certificate error", err)
		case !verify && err != nil:
			t.Errorf("is_verify_tls false: %v", err)
		}
	}
}
