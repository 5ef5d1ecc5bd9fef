package metrics

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestStatsdTelegrafFormat(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	m, err := New(Options{Host: "127.0.0.1", Port: port, Tags: map[string]string{"app": "myhoard", "bad tag": "a b"}, Mode: func() string { return "active" }})
	if err != nil {
		t.Fatal(err)
	}
	m.Inc("myhoard.binlog.upload", 1, map[string]string{"site": "default"})
	m.Gauge("myhoard.basebackup.estimated_progress", 42.5, nil)
	m.Cumulative("myhoard.remote_write_errors", 3)
	m.Cumulative("myhoard.remote_write_errors", 5)
	m.Close()
	var got strings.Builder
	buf := make([]byte, 65536)
	_ = pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	for !strings.Contains(got.String(), "remote_write_errors") || strings.Count(got.String(), "remote_write_errors") < 2 {
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			break
		}
		got.Write(buf[:n])
	}
	for _, want := range []string{
		"myhoard.binlog.upload,app=myhoard,INVALID=INVALID,controller_mode=active,site=default:1|c",
		"myhoard.basebackup.estimated_progress,app=myhoard,INVALID=INVALID,controller_mode=active:42.5|g",
		"myhoard.remote_write_errors,app=myhoard,INVALID=INVALID,controller_mode=active:3|c",
		"myhoard.remote_write_errors,app=myhoard,INVALID=INVALID,controller_mode=active:2|c",
	} {
		if !strings.Contains(got.String(), want) {
			t.Errorf("missing %q in:\n%s", want, got.String())
		}
	}
}

func TestNoopWithoutHost(t *testing.T) {
	m, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	m.Inc("x", 1, nil)
	m.Error("here", errors.New("boom"))
	m.Close()
	var nilM *Metrics
	nilM.Inc("x", 1, nil)
	nilM.Close()
}

func TestSentryReceivesErrors(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.URL.Path+" "+string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	dsn := "http://publickey@" + strings.TrimPrefix(srv.URL, "http://") + "/1"
	m, err := New(Options{SentryDSN: dsn, Tags: map[string]string{"app": "myhoard"}, Mode: func() string { return "idle" }})
	if err != nil {
		t.Fatal(err)
	}
	m.Error("controller", errors.New("disk on fire"))
	m.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) == 0 || !strings.Contains(strings.Join(bodies, "\n"), "disk on fire") {
		t.Fatalf("sentry got %q", bodies)
	}
	if _, err := New(Options{SentryDSN: "::not a dsn"}); err == nil {
		t.Error("a bad DSN must be an error")
	}
}
