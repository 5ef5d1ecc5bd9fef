package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/tlsconfig"
	"github.com/myhoard/myhoard/tlsconfig/tlstest"
)

// rawRPC posts body to a node's RPC with the given TLS identity.
func rawRPC(t *testing.T, store *tlsconfig.Store, addr, path, body string) (int, rpcReply) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: store.MutualClient()}}
	resp, err := client.Post("https://"+addr+path, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, rpcReply{Message: err.Error()}
	}
	defer resp.Body.Close()
	var r rpcReply
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &r)
	return resp.StatusCode, r
}

func storeFor(t *testing.T, ca *tlstest.CA, file, id string) *tlsconfig.Store {
	t.Helper()
	c := ca.IssueAs(t, file, id)
	s, err := tlsconfig.Load(tlsconfig.Files{CAFile: ca.File, CertFile: c.CertFile, KeyFile: c.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStrangersNeverReachRaft: a node whose certificate is of another CA
// joins gossip (it has the gossip key) but never Raft; a certificate of
// the cluster's CA for one node id cannot speak for another; bad requests
// are refused before Raft; a plain TCP client on the Raft port is dropped.
// Nothing reaches the Raft log.
func TestStrangersNeverReachRaft(t *testing.T) {
	nodes, start := symmetric(t, 3)
	startAll(t, nodes, start)
	leader := formed(t, nodes, 3)
	ca := newCA(t) // another CA, same name
	stranger := newTestNode(t, ca, "n9")
	startNodeWith(t, stranger, func(o *Options) { o.Join = []string{nodes[0].gossipAddr} })
	defer stranger.Close()
	harness.WaitFor(t, "the stranger in gossip", 10*time.Second, func() (bool, string) {
		return leader.GossipState("n9") == GossipAlive, leader.GossipState("n9")
	})
	before := leader.raft.LastIndex()
	// A certificate of the cluster's own CA, for n2.
	n2cert := storeFor(t, nodes[0].ca, "thief", "n2")
	join := func(id string) string {
		b, _ := json.Marshal(JoinRequest{NodeID: id, RaftAddr: "127.0.0.1:1", RPCAddr: "127.0.0.1:2", Incarnation: "ab"})
		return string(b)
	}
	tests := []struct {
		name   string
		store  *tlsconfig.Store
		path   string
		body   string
		status int
		want   string
	}{
		{"another CA", stranger.tls, rpcJoin, join("n9"), 0, "certificate"},
		{"join as someone else", n2cert, rpcJoin, join("n4"), http.StatusForbidden, "names [n2], not \"n4\""},
		{"publish another node's state", n2cert, rpcState, `{"node_id":"n1","gtids":"","mode":"active"}`, http.StatusForbidden, "not \"n1\""},
		{"claim the primary for another", n2cert, rpcPromote, `{"node_id":"n3","expected_epoch":0}`, http.StatusForbidden, "not \"n3\""},
		{"not JSON", n2cert, rpcState, `{`, http.StatusBadRequest, "bad request"},
		{"unknown field", n2cert, rpcState, `{"node_id":"n2","evil":1}`, http.StatusBadRequest, "unknown field"},
		{"bad GTIDs", n2cert, rpcState, `{"node_id":"n2","gtids":"x-y-z","mode":"active"}`, http.StatusBadRequest, "gtids"},
		{"bad mode", n2cert, rpcState, `{"node_id":"n2","mode":"boss"}`, http.StatusBadRequest, "mode"},
		{"too big", n2cert, rpcExternal, `{"a":"` + strings.Repeat("x", maxRPCBody) + `"}`, http.StatusBadRequest, "bytes"},
		{"bad address", n2cert, rpcJoin, `{"node_id":"n2","raft_addr":"nowhere","rpc_addr":"127.0.0.1:2","incarnation":"ab"}`, http.StatusBadRequest, "not host:port"},
		{"no raw apply", n2cert, "/cluster/apply", `{"type":"promote","data":{"node_id":"n2"}}`, http.StatusNotFound, ""},
	}
	for _, tc := range tests {
		status, r := rawRPC(t, tc.store, leader.rpcAddr, tc.path, tc.body)
		if status != tc.status || !strings.Contains(r.Message, tc.want) {
			t.Errorf("%s: %d %q, want %d with %q", tc.name, status, r.Message, tc.status, tc.want)
		}
	}
	// Raft bytes in plain TCP: the handshake fails, the connection drops.
	conn, err := net.Dial("tcp", leader.raftAddr)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write(append([]byte{0}, bytes.Repeat([]byte{0x81, 0xa4}, 64)...)) // rpcAppendEntries + msgpack
	var ne net.Error
	if _, err := io.ReadAll(conn); errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the plain Raft client was not dropped: %v", err)
	}
	conn.Close()
	// The stranger stays outside: in gossip, not in Raft nor the view,
	// after two more reconciles.
	seen := leader.reconciles.Load()
	harness.WaitFor(t, "two reconciles after the stranger came", 10*time.Second, func() (bool, string) {
		return leader.reconciles.Load() >= seen+2, ""
	})
	voters, _ := leader.Servers()
	if _, in := voters["n9"]; in {
		t.Errorf("the stranger is in the Raft configuration: %v", voters)
	}
	for _, n := range nodes {
		if _, in := n.View().Members["n9"]; in {
			t.Errorf("%s's view has the stranger", n.id)
		}
	}
	if after := leader.raft.LastIndex(); after != before {
		t.Errorf("the Raft log grew from %d to %d", before, after)
	}
	if s := stranger.Bootstrap(); !strings.Contains(s, "waiting") {
		t.Errorf("the stranger's status: %q", s)
	}
}

// TestCertificateRotation: the CA bundle gains a new CA, every node gets a
// certificate of it, the old CA leaves the bundle: the cluster keeps a
// leader throughout, and a certificate of the old CA stops working.
func TestCertificateRotation(t *testing.T) {
	nodes, start := symmetric(t, 3)
	startAll(t, nodes, start)
	formed(t, nodes, 3)
	old := nodes[0].ca
	oldCert := storeFor(t, old, "spare", "n2")
	fresh := tlstest.NewCA(t, t.TempDir(), "fresh")
	both := tlstest.Bundle(t, t.TempDir()+"/both.pem", old, fresh)
	reload := func() {
		t.Helper()
		for _, n := range nodes {
			if err := n.ReloadTLS(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range nodes {
		n.useFiles(t, both, fresh.Issue(t, n.id))
	}
	reload()
	leader := formed(t, nodes, 3)
	if err := leader.PublishState(context.Background(), StateUpdate{NodeID: leader.id, Mode: "active", At: time.Now()}); err != nil {
		t.Fatalf("after the first step: %v", err)
	}
	newOnly := tlstest.Bundle(t, t.TempDir()+"/fresh.pem", fresh)
	for _, n := range nodes {
		n.useFiles(t, newOnly, fresh.Issue(t, n.id))
	}
	reload()
	leader = formed(t, nodes, 3)
	for _, n := range nodes {
		if err := n.PublishState(context.Background(), StateUpdate{NodeID: n.id, Mode: "observe", At: time.Now()}); err != nil {
			t.Errorf("%s after the rotation: %v", n.id, err)
		}
	}
	if status, r := rawRPC(t, oldCert, leader.rpcAddr, rpcHello, `{}`); status != 0 {
		t.Errorf("a certificate of the old CA still works: %d %v", status, r)
	}
}
