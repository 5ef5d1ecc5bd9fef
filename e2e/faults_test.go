package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
)

// statsdSink collects statsd packets sent to a loopback UDP port.
type statsdSink struct {
	pc   net.PacketConn
	mu   sync.Mutex
	data strings.Builder
}

func newStatsdSink(t *testing.T) *statsdSink {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &statsdSink{pc: pc}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.data.Write(buf[:n])
			s.data.WriteByte('\n')
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *statsdSink) port() int { return s.pc.LocalAddr().(*net.UDPAddr).Port }

func (s *statsdSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.data.String()
}

func TestStorageOutage(t *testing.T) {
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	srv := harness.StartS3(t)
	sink := newStatsdSink(t)
	dir := t.TempDir()
	port, _ := harness.FreePort()
	cfg := daemonConfig(t, dir, port, in)
	cfg["backup_settings"] = map[string]any{"forced_binlog_rotation_interval": 2}
	cfg["binlog_purge_settings"] = map[string]any{"enabled": false}
	cfg["statsd"] = map[string]any{"host": "127.0.0.1", "port": sink.port(), "tags": map[string]any{"app": "myhoard"}}
	cfg["backup_sites"] = map[string]any{"default": map[string]any{"object_storage": map[string]any{
		"storage_type": "s3", "region": harness.S3Region, "bucket_name": harness.StorageBucket,
		"aws_access_key_id": harness.S3AccessKey, "aws_secret_access_key": harness.S3SecretKey,
		"host": "127.0.0.1", "port": srv.Port, "is_secure": false}}}
	cfgPath := filepath.Join(dir, "myhoard.json")
	writeJSON(t, cfgPath, cfg)
	db := harness.OpenDB(t, in)
	load, err := harness.NewLoadGen(context.Background(), db, 8)
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", cfgPath)
	waitStatus(t, d, port)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	doJSON(t, "PUT", url+"/status", map[string]any{"mode": "active"})
	waitCompletedBackup(t, url)

	// 30 s without storage while the database keeps writing and rotating.
	srv.Stop()
	stopAt := time.Now()
	for time.Since(stopAt) < 30*time.Second {
		if err := load.WriteTransactions(context.Background(), 10); err != nil {
			t.Fatal(err)
		}
		harness.Exec(t, db, "FLUSH BINARY LOGS")
		time.Sleep(time.Second)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 120}); code != 200 {
		t.Fatalf("rotation after the outage: %d %v", code, body)
	}
	pos := harness.QueryString(t, db, "SELECT @@gtid_binlog_pos")
	// Read back through a site on the same server.
	s := &activeSetup{in: in}
	streams, site := s.storedS3(t, srv)
	if len(streams) != 1 {
		t.Fatalf("%d streams", len(streams))
	}
	for id, ms := range streams {
		checkExactlyOnce(t, ms, backupGTID(t, site, id), pos)
	}
	harness.WaitFor(t, "remote_write_errors and uploads in statsd", 10*time.Second, func() (bool, string) {
		got := sink.String()
		return strings.Contains(got, "myhoard.remote_write_errors,app=myhoard,controller_mode=active:") &&
			strings.Contains(got, "myhoard.http.backup_post,app=myhoard,controller_mode=active:") &&
			strings.Contains(got, "myhoard.binlog.upload,app=myhoard,controller_mode=active:1|c"), got
	})
}

func TestBackupToolMissingOrFailing(t *testing.T) {
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	for _, tc := range []struct {
		name   string
		script string // "" : no mariabackup in PATH at all
		want   []string
	}{
		{"missing", "", []string{"basebackup failed; retrying", "mariabackup is not installed (package mariadb-backup)"}},
		{"failing", "#!/bin/sh\n/usr/bin/head -c 100000 /dev/zero\necho 'FATAL ERROR: failed to copy datafile' >&2\nexit 1\n",
			[]string{"basebackup failed; retrying", "failed to copy datafile", "retry_in="}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			if err := os.MkdirAll(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if tc.script != "" {
				if err := os.WriteFile(filepath.Join(bin, "mariabackup"), []byte(tc.script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			port, _ := harness.FreePort()
			cfgPath := filepath.Join(dir, "myhoard.json")
			writeJSON(t, cfgPath, daemonConfig(t, dir, port, in))
			// PATH with only the fake tool (or none) and the shell it needs.
			d := startDaemonEnv(t, []string{"PATH=" + bin}, "--config", cfgPath)
			waitStatus(t, d, port)
			url := fmt.Sprintf("http://127.0.0.1:%d", port)
			doJSON(t, "PUT", url+"/status", map[string]any{"mode": "active"})
			harness.WaitFor(t, "the basebackup error in the log", 30*time.Second, func() (bool, string) {
				out := d.out.String()
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						return false, out
					}
				}
				return true, ""
			})
			if list := listBackups(t, url); len(list) != 0 {
				t.Errorf("a failed backup is listed: %+v", list)
			}
		})
	}
}
