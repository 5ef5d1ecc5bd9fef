package harness

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// LatencyProxy stands between myhoard and a storage emulator and makes the
// emulator look remote: every request waits Delay before it is forwarded
// (the first-byte latency of a real object store), and the bodies through
// it, both ways and all connections together, are paced to BytesPerSec
// (0: no cap). The Host header is kept, so signed requests stay valid.
type LatencyProxy struct {
	Port        int
	Delay       time.Duration
	BytesPerSec int64
	// Requests counts the requests forwarded.
	Requests atomic.Int64

	srv    *http.Server
	pace   *pacer
	target *url.URL
}

// Endpoint is the proxy's base URL.
func (p *LatencyProxy) Endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Port) }

// StartLatencyProxy starts a proxy on a free loopback port in front of
// target (a base URL such as StorageServer.Endpoint()); it stops with the
// test.
func StartLatencyProxy(t testing.TB, target string, delay time.Duration, bytesPerSec int64) *LatencyProxy {
	t.Helper()
	p, err := NewLatencyProxy(target, delay, bytesPerSec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// NewLatencyProxy starts a proxy (see StartLatencyProxy); Stop stops it.
func NewLatencyProxy(target string, delay time.Duration, bytesPerSec int64) (*LatencyProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("latency proxy target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("latency proxy: %w", err)
	}
	p := &LatencyProxy{Port: ln.Addr().(*net.TCPAddr).Port, Delay: delay, BytesPerSec: bytesPerSec, target: u}
	if bytesPerSec > 0 {
		p.pace = &pacer{rate: float64(bytesPerSec)}
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
			if pr.Out.Body != nil && p.pace != nil {
				pr.Out.Body = &pacedBody{rc: pr.Out.Body, p: p.pace, ctx: pr.In.Context()}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if p.pace != nil {
				resp.Body = &pacedBody{rc: resp.Body, p: p.pace, ctx: resp.Request.Context()}
			}
			return nil
		},
		Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute},
		// a client that gives up on a request is not news
		ErrorLog: log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.Requests.Add(1)
		select {
		case <-time.After(p.Delay):
		case <-r.Context().Done():
			return
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: time.Minute}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// Stop closes the proxy and its connections.
func (p *LatencyProxy) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.srv.Shutdown(ctx); err != nil {
		p.srv.Close()
	}
}

// pacer spreads bytes over time at rate bytes a second, shared by every
// body that goes through the proxy (one link).
type pacer struct {
	rate float64
	mu   sync.Mutex
	next time.Time // when the link is free again
}

// pacerBurst is how far behind the schedule the link may fall and catch up.
const pacerBurst = 20 * time.Millisecond

// wait blocks until n more bytes may pass.
func (p *pacer) wait(ctx context.Context, n int) error {
	p.mu.Lock()
	// an idle link gives no credit beyond a short burst, and a wait that
	// overslept takes nothing from the rate
	now := time.Now()
	if floor := now.Add(-pacerBurst); p.next.Before(floor) {
		p.next = floor
	}
	p.next = p.next.Add(time.Duration(float64(n) / p.rate * float64(time.Second)))
	until := p.next
	p.mu.Unlock()
	d := time.Until(until)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pacedBody is a body read at the pacer's rate (64 KiB at a time at most,
// so that concurrent bodies share the link fairly).
type pacedBody struct {
	rc  io.ReadCloser
	p   *pacer
	ctx context.Context
}

func (b *pacedBody) Read(buf []byte) (int, error) {
	if len(buf) > 64<<10 {
		buf = buf[:64<<10]
	}
	n, err := b.rc.Read(buf)
	if n > 0 {
		if werr := b.p.wait(b.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

func (b *pacedBody) Close() error { return b.rc.Close() }
