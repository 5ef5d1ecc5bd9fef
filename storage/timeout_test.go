package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// tarpit accepts connections and never answers.
func tarpit(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestEveryAttemptIsBounded: a storage server that never answers, and one
// that stops in the middle of a body, fail each attempt after the attempt
// timeout (retried like a network error) instead of hanging, on every
// remote backend.
func TestEveryAttemptIsBounded(t *testing.T) {
	port := tarpit(t)
	t.Setenv("STORAGE_EMULATOR_HOST", fmt.Sprintf("127.0.0.1:%d", port))
	opts := SiteOptions{AttemptTimeout: 300 * time.Millisecond, Retry: RetryPolicy{Attempts: 2, Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}}
	sites := map[string]map[string]any{
		"s3": {"storage_type": "s3", "region": "us-east-1", "bucket_name": "b", "aws_access_key_id": "k", "aws_secret_access_key": "s",
			"host": "127.0.0.1", "port": port, "is_secure": false},
		"azure": {"storage_type": "azure", "account_name": "devstoreaccount1", "account_key": "a2V5", "bucket_name": "b",
			"host": "127.0.0.1", "port": port, "is_secure": false},
		"gcs": {"storage_type": "google", "bucket_name": "b", "project_id": "p"},
	}
	for name, m := range sites {
		t.Run(name, func(t *testing.T) {
			s := openSite(t, parseStorage(t, m), opts)
			for _, op := range []struct {
				name string
				run  func(ctx context.Context) error
			}{
				{"get", func(ctx context.Context) error { _, err := s.GetBytes(ctx, "k"); return err }},
				{"stat", func(ctx context.Context) error { _, err := s.Stat(ctx, "k"); return err }},
				{"put", func(ctx context.Context) error { return s.PutBytes(ctx, "k", []byte("x"), PutOptions{}) }},
				{"list", func(ctx context.Context) error { return s.List(ctx, "p/", func(ObjectInfo) error { return nil }) }},
			} {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := op.run(ctx)
				cancel()
				var oe *OpError
				if !errors.Is(err, errStalled) || !errors.As(err, &oe) || oe.Attempts != 2 {
					t.Errorf("%s: %v, want 2 attempts that stalled", op.name, err)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("%s took %v", op.name, d)
				}
			}
		})
	}
}

// TestStalledBodyIsRetried: a server that sends headers and part of a
// body, then nothing: the read fails after the attempt timeout and is
// resumed; a second stall ends it with an error that says so.
func TestStalledBodyIsRetried(t *testing.T) {
	requests := make(chan string, 10)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests <- r.Header.Get("Range")
		w.Header().Set("Content-Length", "1000000")
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(strings.Repeat("x", 1000)))
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	s := openSite(t, parseStorage(t, map[string]any{"storage_type": "s3", "region": "us-east-1", "bucket_name": "b", "aws_access_key_id": "k",
		"aws_secret_access_key": "s", "host": "127.0.0.1", "port": port, "is_secure": false}),
		SiteOptions{AttemptTimeout: 300 * time.Millisecond, Retry: RetryPolicy{Attempts: 2, Base: 10 * time.Millisecond, Max: 10 * time.Millisecond}})
	r, err := s.Get(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	start := time.Now()
	n, err := io.Copy(io.Discard, r)
	if !errors.Is(err, errStalled) || n < 1000 {
		t.Errorf("read %d bytes, %v; want a stall after the first bytes", n, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the stalled read took %v", d)
	}
	if len(requests) < 2 {
		t.Errorf("%d requests: the read was not resumed", len(requests))
	}
}
