package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
)

// slowReader spreads a read over time, so that an upload is still running
// when the server is stopped; midway is closed once half the data was
// read (the upload is then surely under way; half is where).
type slowReader struct {
	r      io.Reader
	chunk  int
	pause  time.Duration
	read   int64
	half   int64
	midway chan struct{}
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > s.chunk {
		p = p[:s.chunk]
	}
	time.Sleep(s.pause)
	n, err := s.r.Read(p)
	s.read += int64(n)
	if s.midway != nil && s.read >= s.half {
		close(s.midway)
		s.midway = nil
	}
	return n, err
}

// restartAt stops the server once midway is closed, keeps it down for a
// while (the outage is the scenario) and starts it again; the returned
// channel is closed when it is up.
func restartAt(t *testing.T, srv *harness.StorageServer, midway chan struct{}) chan struct{} {
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		<-midway
		srv.Stop()
		time.Sleep(2500 * time.Millisecond)
		if err := srv.Start(); err != nil {
			t.Error(err)
		}
	}()
	return restarted
}

// TestUploadAcrossServerRestart stops the S3 server in the middle of a
// large upload and starts it again: a retryable put completes, a one-shot
// stream fails cleanly, and readers never see a partial object.
func TestUploadAcrossServerRestart(t *testing.T) {
	srv := harness.StartS3(t)
	stats := &Stats{}
	s := openSite(t, parseStorage(t, s3Storage(srv, harness.StorageBucket, harness.S3SecretKey)),
		SiteOptions{Stats: stats, Retry: RetryPolicy{Attempts: 12, Base: 100 * time.Millisecond, Max: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := compressible(24<<20, 11)
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	// A watcher asserts that the key is either absent or complete.
	var partial atomic.Value
	stopWatch := make(chan struct{})
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			select {
			case <-stopWatch:
				return
			case <-time.After(20 * time.Millisecond):
			}
			info, err := s.bucket.Attributes(ctx, "restart/big")
			if err == nil && info.Size != int64(len(data)) {
				partial.Store(fmt.Sprintf("saw %d of %d bytes", info.Size, len(data)))
			}
		}
	}()

	attempts := 0
	midway := make(chan struct{})
	restarted := restartAt(t, srv, midway)
	n, err := s.Put(ctx, "restart/big", func() (io.ReadCloser, error) {
		attempts++
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		r := &slowReader{r: f, chunk: 256 << 10, pause: 15 * time.Millisecond, half: int64(len(data) / 2)}
		if attempts == 1 {
			r.midway = midway
		}
		return struct {
			io.Reader
			io.Closer
		}{r, f}, nil
	}, PutOptions{})
	<-restarted
	close(stopWatch)
	watch.Wait()
	if err != nil || n != int64(len(data)) {
		t.Fatalf("put across a restart: %d bytes, %v", n, err)
	}
	t.Logf("put across a restart: %d attempts, %d write errors counted", attempts, stats.WriteErrors.Load())
	if p := partial.Load(); p != nil {
		t.Fatalf("a reader saw a partial object: %s", p)
	}
	got, err := s.GetBytes(ctx, "restart/big")
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("object after restart: %d bytes, %v", len(got), err)
	}

	// A one-shot stream cannot be retried by the site: it either completes
	// (the S3 client retries buffered parts itself) or fails, and then
	// nothing is visible.
	midway = make(chan struct{})
	restarted = restartAt(t, srv, midway)
	_, err = s.PutStream(ctx, "restart/stream", &slowReader{r: bytes.NewReader(data), chunk: 256 << 10, pause: 15 * time.Millisecond,
		half: int64(len(data) * 3 / 4), midway: midway}, PutOptions{}) // parts are buffered ahead: stop later

	<-restarted
	if err != nil {
		if ok, err := s.Exists(ctx, "restart/stream"); ok || err != nil {
			t.Fatalf("after a failed stream: exists=%v err=%v", ok, err)
		}
	} else if got, err := s.GetBytes(ctx, "restart/stream"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("a stream that reported success is not whole: %d bytes, %v", len(got), err)
	}
	t.Logf("one-shot stream across a restart: %v", err)
}

// faultProxy sits in front of a real server and injects failures.
type faultProxy struct {
	mu       sync.Mutex
	fail503  int // next requests answered 503 SlowDown
	drop     int // next requests whose connection is closed at once
	cutAfter int // next GET's body is cut after this many bytes (0: off)
	seen     int
	srv      *http.Server
	port     int
}

func startFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen++
		var mode string
		switch {
		case p.fail503 > 0:
			p.fail503--
			mode = "503"
		case p.drop > 0:
			p.drop--
			mode = "drop"
		case p.cutAfter > 0 && r.Method == http.MethodGet:
			mode = "cut"
		}
		cut := p.cutAfter
		if mode == "cut" {
			p.cutAfter = 0
		}
		p.mu.Unlock()
		switch mode {
		case "503":
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		case "drop":
			_, _ = io.Copy(io.Discard, r.Body)
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
				}
			}
		case "cut":
			rp.ServeHTTP(&cuttingWriter{ResponseWriter: w, left: cut}, r)
		default:
			rp.ServeHTTP(w, r)
		}
	})}
	go func() { _ = p.srv.Serve(l) }()
	t.Cleanup(func() { p.srv.Close() })
	return p
}

func (p *faultProxy) set(f func(p *faultProxy)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// cuttingWriter passes left bytes of a body, then kills the connection.
type cuttingWriter struct {
	http.ResponseWriter
	left int
}

func (c *cuttingWriter) Write(b []byte) (int, error) {
	if c.left <= 0 {
		return 0, errors.New("cut")
	}
	if len(b) > c.left {
		n, _ := c.ResponseWriter.Write(b[:c.left])
		c.left = 0
		if f, ok := c.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		if hj, ok := c.ResponseWriter.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
			}
		}
		return n, errors.New("cut")
	}
	c.left -= len(b)
	return c.ResponseWriter.Write(b)
}

func TestInjectedFaultsAreRetriedAndCounted(t *testing.T) {
	srv := harness.StartS3(t)
	proxy := startFaultProxy(t, srv.Endpoint())
	stats := &Stats{}
	cfg := s3Storage(srv, harness.StorageBucket, harness.S3SecretKey)
	cfg["port"] = proxy.port
	s := openSite(t, parseStorage(t, cfg), SiteOptions{Stats: stats})
	ctx := context.Background()

	proxy.set(func(p *faultProxy) { p.fail503 = 3 })
	if err := s.PutBytes(ctx, "faults/a", []byte("payload"), PutOptions{}); err != nil {
		t.Fatalf("put through three 503s: %v", err)
	}
	if got := stats.WriteErrors.Load(); got != 3 {
		t.Errorf("write errors = %d, want 3", got)
	}

	proxy.set(func(p *faultProxy) { p.drop = 2 })
	got, err := s.GetBytes(ctx, "faults/a")
	if err != nil || string(got) != "payload" {
		t.Fatalf("get through two dropped connections: %q %v", got, err)
	}
	// (Go's HTTP transport itself retries an idempotent request whose
	// reused connection was closed before any response, so one drop may
	// not reach the site.)
	if got := stats.ReadErrors.Load(); got < 1 {
		t.Errorf("read errors = %d, want at least 1", got)
	}
	before := stats.ReadErrors.Load()

	// A download cut in the middle resumes where it stopped.
	data := compressible(3<<20, 12)
	if err := s.PutBytes(ctx, "faults/big", data, PutOptions{}); err != nil {
		t.Fatal(err)
	}
	proxy.set(func(p *faultProxy) { p.cutAfter = 1 << 20 })
	r, err := s.Get(ctx, "faults/big")
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(r)
	r.Close()
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("resumed download: %d of %d bytes, %v", len(back), len(data), err)
	}
	if got := stats.ReadErrors.Load(); got != before+1 {
		t.Errorf("read errors after the cut = %d, want %d", got, before+1)
	}

	// Failures beyond the policy surface with the key and operation.
	proxy.set(func(p *faultProxy) { p.fail503 = 100 })
	err = s.PutBytes(ctx, "faults/never", []byte("x"), PutOptions{})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("put faults/never (after 6 attempts)")) {
		t.Fatalf("exhausted retries: %v", err)
	}
	proxy.set(func(p *faultProxy) { p.fail503 = 0 })
}
