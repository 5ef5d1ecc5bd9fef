package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/tlsconfig/tlstest"
	"github.com/myhoard/myhoard/wire"
)

// secureAPI is a daemon (no database) serving its API over HTTPS with a
// token and short timeouts.
type secureAPI struct {
	url, addr, token, cfgPath string
	tls                       *tls.Config
	d                         *daemonProc
}

func startSecureAPI(t *testing.T) *secureAPI {
	t.Helper()
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ca := tlstest.NewCA(t, dir, "api")
	cert := ca.Issue(t, "localhost")
	token := "s3cret-token-0123456789"
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := daemonConfig(t, dir, port, nil)
	cfg["http_auth_token_file"] = tokenFile
	cfg["http_tls"] = map[string]any{"cert_file": cert.CertFile, "key_file": cert.KeyFile, "ca_file": ca.File}
	cfg["http_timeouts"] = map[string]any{"read_header": 1, "read": 2, "write": 10, "idle": 5}
	s := &secureAPI{addr: fmt.Sprintf("127.0.0.1:%d", port), token: token, cfgPath: filepath.Join(dir, "myhoard.json")}
	s.url = "https://" + s.addr
	writeJSON(t, s.cfgPath, cfg)
	pem, _ := os.ReadFile(ca.File)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	s.tls = &tls.Config{RootCAs: pool}
	s.d = startDaemon(t, "--config", s.cfgPath)
	harness.WaitFor(t, "the HTTPS API", 30*time.Second, func() (bool, string) {
		code, _, err := s.get("/status", token)
		return err == nil && code == 200, fmt.Sprint(code, err, s.d.out.String())
	})
	return s
}

func (s *secureAPI) get(path, token string) (int, string, error) {
	return s.do("GET", path, token, nil)
}

func (s *secureAPI) do(method, path, token string, body io.Reader) (int, string, error) {
	req, err := http.NewRequest(method, s.url+path, body)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: s.tls}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// TestAPIAuthenticationAndHardening: the API over HTTPS needs its token
// (the CLI reads it and the CA from the config), the node-to-node routes
// are gone, and slow clients are cut off without stopping anyone else.
func TestAPIAuthenticationAndHardening(t *testing.T) {
	s := startSecureAPI(t)
	for _, tc := range []struct {
		name, method, path, token string
		code                      int
		want                      string
	}{
		{"no token", "GET", "/status", "", 401, "missing or wrong API token"},
		{"a wrong token", "GET", "/status", "nope", 401, "missing or wrong API token"},
		{"the token", "GET", "/status", s.token, 200, `"mode"`},
		{"no raw Raft apply", "POST", "/cluster/apply", s.token, 404, "no such endpoint"},
		{"no remote gate check", "POST", "/cluster/verify", s.token, 404, "no such endpoint"},
	} {
		code, body, err := s.do(tc.method, tc.path, tc.token, strings.NewReader(`{"type":"promote","data":{"node_id":"x"}}`))
		if err != nil || code != tc.code || !strings.Contains(body, tc.want) {
			t.Errorf("%s: %d %s %v, want %d with %q", tc.name, code, body, err, tc.code, tc.want)
		}
	}
	// Plain HTTP on the HTTPS port gets nothing useful.
	if resp, err := http.Get("http://" + s.addr + "/status"); err == nil {
		if resp.StatusCode == 200 {
			t.Error("plain HTTP answered 200")
		}
		resp.Body.Close()
	}
	// The CLI, with the token and the CA from the config.
	code, out, errOut := runCLI(t, nil, "status", "--config", s.cfgPath)
	if code != 0 || !strings.Contains(out, "mode: idle") {
		t.Errorf("myhoard status over HTTPS with the config's token: %d %s %s", code, out, errOut)
	}
	code, _, errOut = runCLI(t, []string{"MYHOARD_TOKEN=wrong"}, "status", "--config", s.cfgPath)
	if code == 0 || !strings.Contains(errOut, "HTTP 401") {
		t.Errorf("myhoard status with a wrong MYHOARD_TOKEN: %d %s", code, errOut)
	}

	dial := func() net.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", s.addr, s.tls)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// closedWithin reports whether the server closed c within d.
	closedWithin := func(c net.Conn, d time.Duration) bool {
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return false
		}
		return true
	}
	// Headers sent slowly: cut off after read_header (1 s).
	slow := dial()
	fmt.Fprintf(slow, "GET /status HTTP/1.1\r\nHost: x\r\n")
	if !closedWithin(slow, 8*time.Second) {
		t.Error("a client that never finishes its headers was not cut off")
	}
	slow.Close()
	// A body trickled a byte at a time: cut off after read (2 s).
	trickle := dial()
	fmt.Fprintf(trickle, "PUT /status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 100\r\n\r\n", s.token)
	start := time.Now()
	cut := false
	for time.Since(start) < 10*time.Second {
		if _, err := trickle.Write([]byte("{")); err != nil {
			cut = true
			break
		}
		_ = trickle.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if line, err := bufio.NewReader(trickle).ReadString('\n'); err == nil || !isTimeout(err) {
			cut = !strings.Contains(line, "200")
			break
		}
	}
	if !cut {
		t.Error("a client trickling its body was not cut off")
	}
	trickle.Close()
	// 200 slow connections at once: GET /status still answers.
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := tls.Dial("tcp", s.addr, s.tls)
			if err != nil {
				return
			}
			fmt.Fprintf(c, "GET /status HTTP/1.1\r\nHost: x\r\n")
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(conns) < 150 {
		t.Errorf("only %d of 200 slow connections were accepted", len(conns))
	}
	if code, _, err := s.get("/status", s.token); err != nil || code != 200 {
		t.Errorf("GET /status with %d slow connections open: %d %v", len(conns), code, err)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestClusterStrangersAndRotation: a daemon with a certificate of another
// CA (and the cluster's gossip key) stays out of Raft; a configuration
// whose certificate names another node is refused; the cluster's CA
// rotates with SIGHUP (both CAs, new certificates, the new CA alone)
// while it keeps a leader, and a certificate of the old CA then stops
// working.
func TestClusterStrangersAndRotation(t *testing.T) {
	nodes := newClusterNodes(t, make([]*harness.Instance, 3), t.TempDir())
	startTogether(t, nodes)
	waitOneCluster(t, nodes, 3)
	old := nodes[0].ca

	// A stranger with the gossip key and the template, but a certificate
	// of another CA.
	other := tlstest.NewCA(t, t.TempDir(), "other")
	stranger := newClusterNodeAt(t, other, "n9", 109, nil, t.TempDir(), freeAddr(t),
		map[string]any{"join": []string{nodes[0].gossip, nodes[1].gossip, nodes[2].gossip}, "bootstrap_expect": 3})
	startTogether(t, []*clusterNode{stranger})
	harness.WaitFor(t, "the stranger seen in gossip and kept out of Raft", 30*time.Second, func() (bool, string) {
		v := nodes[0].view(t)
		m, ok := v.Member("n9")
		return ok && m.Gossip == "alive" && !m.InRaft, fmt.Sprint(v)
	})
	if c, err := readCluster(nodes[0]); err != nil || len(c.voters) != 3 {
		t.Errorf("voters with the stranger around: %v %v", c, err)
	}
	if c, _ := readCluster(stranger); c.bootstrap == "" {
		t.Errorf("the stranger thinks it is in a cluster: %+v", c)
	}
	_ = stranger.d.cmd.Process.Kill()
	_, _ = stranger.d.wait(t, 10*time.Second)
	// A certificate for another node id: refused before it starts.
	n5 := newClusterNodeAt(t, old, "n5", 105, nil, t.TempDir(), freeAddr(t), map[string]any{"join": []string{nodes[0].gossip}})
	patchConfig(t, n5.cfgPath, func(cfg map[string]any) {
		cfg["cluster"].(map[string]any)["tls"] = n5.useCert(t, old.File, old.IssueAs(t, "n5-as-n2", "n2"))
	})
	if code, _, errOut := runCLI(t, nil, "check-config", "--config", n5.cfgPath); code == 0 || !strings.Contains(errOut, `names [n2], not this node's id "n5"`) {
		t.Errorf("check-config with a certificate for another node: %d %s", code, errOut)
	}

	// Rotation: both CAs everywhere, new certificates, then the new CA
	// alone; SIGHUP each time.
	fresh := tlstest.NewCA(t, t.TempDir(), "fresh")
	both := tlstest.Bundle(t, filepath.Join(t.TempDir(), "both.pem"), old, fresh)
	freshOnly := tlstest.Bundle(t, filepath.Join(t.TempDir(), "fresh.pem"), fresh)
	spare := old.Issue(t, "n1") // a certificate of the old CA kept aside
	hup := func(hups int) {
		t.Helper()
		for _, n := range nodes {
			if err := n.d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range nodes {
			harness.WaitFor(t, n.id+" reloading", 20*time.Second, func() (bool, string) {
				return strings.Count(n.d.out.String(), "cluster certificates reloaded") >= hups, ""
			})
		}
	}
	for _, n := range nodes {
		n.useCert(t, both, old.Issue(t, n.id))
	}
	hup(1)
	for _, n := range nodes {
		n.useCert(t, both, fresh.Issue(t, n.id))
	}
	hup(2)
	waitOneCluster(t, nodes, 3)
	for _, n := range nodes {
		n.useCert(t, freshOnly, fresh.Issue(t, n.id))
	}
	hup(3)
	c := waitOneCluster(t, nodes, 3)
	// The cluster writes through Raft and the RPC with the new CA alone.
	if code, body := doJSON(t, "PUT", nodes[2].url+"/status", map[string]any{"mode": "active"}); code != 200 {
		t.Fatalf("promote after the rotation: %d %v", code, body)
	}
	if c2 := waitOneCluster(t, nodes, 3); c2.primary != "n3" || c2.id != c.id {
		t.Errorf("after the rotation: %+v", c2)
	}
	// The old CA's certificate no longer gets in, on RPC nor Raft.
	cert, err := tls.LoadX509KeyPair(spare.CertFile, spare.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	for port, addr := range map[string]string{"rpc_address": nodes[0].rpcAddr, "raft_address": nodes[0].raftAddr} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Read(make([]byte, 1))
			conn.Close()
		}
		if err == nil || isTimeout(err) {
			t.Errorf("%s: a certificate of the old CA still connects (%v)", port, err)
		}
	}
}

// copyStream copies every object of a stream to a new stream id, with the
// stream id inside its manifests changed too (as if another backup of the
// same data had been taken).
func copyStream(t *testing.T, site *storage.Site, from, to string) {
	t.Helper()
	ctx := context.Background()
	err := site.List(ctx, storage.StreamPrefix(from), func(o storage.ObjectInfo) error {
		suffix := strings.TrimPrefix(o.Key, storage.StreamPrefix(from))
		dst := storage.StreamPrefix(to) + suffix
		data, err := site.GetBytes(ctx, o.Key)
		if err != nil {
			return err
		}
		switch _, manifest, perr := storage.ParseBinlogKey(o.Key); {
		case suffix == "basebackup.json":
			var m storage.BasebackupManifest
			if err := storage.UnmarshalManifest(o.Key, data, &m); err != nil {
				return err
			}
			m.StreamID = to
			for i := range m.Parts {
				m.Parts[i].Key = strings.Replace(m.Parts[i].Key, from, to, 1)
			}
			data, err = storage.MarshalManifest(&m)
		case perr == nil && manifest:
			var m storage.BinlogManifest
			if err := storage.UnmarshalManifest(o.Key, data, &m); err != nil {
				return err
			}
			m.StreamID = to
			data, err = storage.MarshalManifest(&m)
		}
		if err != nil {
			return err
		}
		return site.PutBytes(ctx, dst, data, storage.PutOptions{})
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCorruptManifestAmongTenBackups: of ten backups one has a corrupt
// basebackup.json: GET /backup lists all ten, that one broken with the
// reason; a backup before it restores through it to the latest
// transaction.
func TestCorruptManifestAmongTenBackups(t *testing.T) {
	s := newActiveSetup(t)
	db := harness.OpenDB(t, s.in)
	ctx := context.Background()
	load, err := harness.NewLoadGen(ctx, db, 81)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 300); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--config", s.cfgPath)
	waitStatus(t, d, s.port)
	doJSON(t, "PUT", s.url+"/status", map[string]any{"mode": "active"})
	first := waitCompletedBackup(t, s.url).StreamID
	if err := load.WriteTransactions(ctx, 300); err != nil {
		t.Fatal(err)
	}
	if code, body := doJSON(t, "POST", s.url+"/backup", map[string]any{"backup_type": "binlog", "wait_for_upload": 30}); code != 200 {
		t.Fatalf("rotation: %d %v", code, body)
	}
	cp, err := load.Checkpoint(ctx, "latest")
	if err != nil {
		t.Fatal(err)
	}
	_ = d.cmd.Process.Kill()
	_, _ = d.wait(t, 10*time.Second)
	site := openFileSite(t, s.backups)
	at, err := storage.ParseStreamID(first)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{first}
	for i := 1; i < 10; i++ {
		id := storage.NewStreamID(at.Add(time.Duration(i) * time.Second))
		copyStream(t, site, first, id)
		ids = append(ids, id)
	}
	if err := site.PutBytes(ctx, storage.BasebackupManifestKey(ids[5]), []byte(`{"version": 1, "stream_id": "`), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	rn := newRestoreNode(t, s.backups, nil)
	var list []wire.Backup
	harness.WaitFor(t, "ten backups listed", 30*time.Second, func() (bool, string) {
		list = listBackups(t, rn.url)
		return len(list) == 10, fmt.Sprint(len(list))
	})
	for _, b := range list {
		if bad := b.StreamID == ids[5]; bad != (b.BrokenAt != nil) || bad != strings.Contains(b.BrokenReason, "not JSON") {
			t.Errorf("%v: broken_at %v, reason %q", b.StreamID, b.BrokenAt, b.BrokenReason)
		}
	}
	if code, body := doJSON(t, "PUT", rn.url+"/status", map[string]any{"mode": "restore", "site": "default", "stream_id": ids[5]}); code != 400 {
		t.Errorf("restore of the broken backup: %d %v", code, body)
	}
	if code, body := doJSON(t, "PUT", rn.url+"/status", map[string]any{"mode": "restore", "site": "default", "stream_id": ids[4]}); code != 200 {
		t.Fatalf("restore: %d %v", code, body)
	}
	rn.waitObserve(t, 3*time.Minute)
	rn.assertRestored(t, cp)
}
