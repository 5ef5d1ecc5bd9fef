package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/tlsconfig"
	"github.com/myhoard/myhoard/tlsconfig/tlstest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

// testNode is a cluster node with its certificate from the test's CA.
type testNode struct {
	*Node
	id, dir, raftAddr, gossipAddr, rpcAddr string
	ca                                     *tlstest.CA
	files                                  tlsconfig.Files
	tls                                    *tlsconfig.Store
}

func startNode(t *testing.T, tn *testNode, join []string, grace time.Duration) {
	t.Helper()
	startNodeWith(t, tn, func(o *Options) { o.Join, o.Timing.DeadGrace = join, grace })
}

// startNodeWith starts tn's node with its options changed by edit.
func startNodeWith(t *testing.T, tn *testNode, edit func(*Options)) {
	t.Helper()
	o := Options{NodeID: tn.id, RaftAddr: tn.raftAddr, GossipAddr: tn.gossipAddr, RPCAddr: tn.rpcAddr, APIAddr: "127.0.0.1:1",
		DataDir: tn.dir, TLS: tn.tls, GossipKey: []byte("0123456789abcdef"), Log: testLogger(t, tn.id),
		Timing: Timing{Local: true, Reconcile: 200 * time.Millisecond, StableFor: 500 * time.Millisecond, DeadGrace: time.Hour}}
	edit(&o)
	n, err := Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	tn.Node = n
}

// testLogger logs to the test's output (shown when it fails).
func testLogger(t *testing.T, id string) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.done.Store(true) }) // runs before the nodes close
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo})).With("node", id)
}

type testWriter struct {
	t    *testing.T
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// newCA makes the test's cluster CA.
func newCA(t *testing.T) *tlstest.CA {
	t.Helper()
	return tlstest.NewCA(t, t.TempDir(), "cluster")
}

// newTestNode makes a node with a certificate of ca naming id (its own
// copies of the files, as on a host of its own).
func newTestNode(t *testing.T, ca *tlstest.CA, id string) *testNode {
	t.Helper()
	dir := t.TempDir()
	tn := &testNode{id: id, dir: filepath.Join(dir, "raft"), raftAddr: freeAddr(t), gossipAddr: freeAddr(t), rpcAddr: freeAddr(t), ca: ca,
		files: tlsconfig.Files{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem")}}
	tn.useFiles(t, ca.File, ca.Issue(t, id))
	store, err := tlsconfig.Load(tn.files)
	if err != nil {
		t.Fatal(err)
	}
	tn.tls = store
	return tn
}

// useFiles puts a CA bundle and a certificate where the node reads them.
func (tn *testNode) useFiles(t *testing.T, bundle string, c tlstest.Cert) {
	t.Helper()
	for _, f := range [][2]string{{bundle, tn.files.CAFile}, {c.CertFile, tn.files.CertFile}, {c.KeyFile, tn.files.KeyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func threeNodes(t *testing.T, grace time.Duration) ([]*testNode, *tlstest.CA) {
	t.Helper()
	ca := newCA(t)
	nodes := []*testNode{newTestNode(t, ca, "n1"), newTestNode(t, ca, "n2"), newTestNode(t, ca, "n3")}
	startNode(t, nodes[0], nil, grace)
	for _, n := range nodes[1:] {
		startNode(t, n, []string{nodes[0].gossipAddr}, grace)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.Node != nil {
				n.Close()
			}
		}
	})
	harness.WaitFor(t, "three voters", 20*time.Second, func() (bool, string) {
		count, voters := voterCount(nodes[0])
		return count == 3, voters
	})
	return nodes, ca
}

func TestClusterFormsForwardsAndFences(t *testing.T) {
	nodes, _ := threeNodes(t, time.Hour)
	ctx := context.Background()
	leader := nodes[0].Leader()
	var follower *testNode
	for _, n := range nodes {
		if n.id != leader {
			follower = n
			break
		}
	}
	// A follower's write is forwarded and reaches every view.
	if err := follower.PublishState(ctx, StateUpdate{NodeID: follower.id, GTIDs: "0-101-42", Mode: "observe", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		harness.WaitFor(t, "the published GTIDs on "+n.id, 5*time.Second, func() (bool, string) {
			v := n.View()
			return v.GTIDs[follower.id] == "0-101-42" && len(v.Members) == 3, fmt.Sprint(v)
		})
	}
	// Promotion is a compare-and-set on the epoch.
	epoch, err := follower.Promote(ctx, PromoteRequest{NodeID: follower.id, ExpectedEpoch: 0})
	if err != nil || epoch != 1 {
		t.Fatalf("promote: epoch %d, %v", epoch, err)
	}
	if _, err := nodes[0].Promote(ctx, PromoteRequest{NodeID: "n1", ExpectedEpoch: 0}); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("a promotion with a stale epoch: %v, want ErrStaleEpoch", err)
	}
	// The writer gate: only the primary at its epoch passes, from any node.
	for _, n := range nodes {
		if err := n.VerifyPrimary(ctx, follower.id, 1); err != nil {
			t.Errorf("verify from %s: %v", n.id, err)
		}
		if err := n.VerifyPrimary(ctx, "n1", 1); !errors.Is(err, ErrNotPrimary) {
			t.Errorf("verify a non-primary from %s: %v", n.id, err)
		}
	}
	if err := follower.RecordPromotion(ctx, Promotion{Epoch: 1, NodeID: follower.id, StreamID: "s", StartIndex: 7}); err != nil {
		t.Fatal(err)
	}
	if p := nodes[0].View().Promotions; len(p) != 1 || p[0].StartIndex != 7 {
		harness.WaitFor(t, "the promotion record", 5*time.Second, func() (bool, string) {
			p := nodes[0].View().Promotions
			return len(p) == 1 && p[0].StartIndex == 7, fmt.Sprint(p)
		})
	}
}

func TestClusterRestartLeaveAndDeadMembers(t *testing.T) {
	nodes, ca := threeNodes(t, 2*time.Second)
	ctx := context.Background()
	if _, err := nodes[1].Promote(ctx, PromoteRequest{NodeID: "n2", ExpectedEpoch: 0}); err != nil {
		t.Fatal(err)
	}
	// Every node restarts: the view survives, no second bootstrap.
	for _, n := range nodes {
		n.Close()
	}
	startNode(t, nodes[0], nil, 2*time.Second)
	for _, n := range nodes[1:] {
		startNode(t, n, []string{nodes[0].gossipAddr}, 2*time.Second)
	}
	harness.WaitFor(t, "a leader after the restart", 20*time.Second, func() (bool, string) {
		return nodes[0].Leader() != "", ""
	})
	for _, n := range nodes {
		if v := n.View(); v.Epoch != 1 || v.Primary != "n2" {
			harness.WaitFor(t, "the view on "+n.id+" after the restart", 10*time.Second, func() (bool, string) {
				v := n.View()
				return v.Epoch == 1 && v.Primary == "n2", fmt.Sprint(v.Epoch, v.Primary)
			})
		}
	}
	voters, _ := nodes[0].Servers()
	if len(voters) != 3 {
		t.Fatalf("after the restart the configuration has %d servers: %v", len(voters), voters)
	}
	// A fourth node joins and becomes a voter; then it leaves and is removed.
	n4 := newTestNode(t, ca, "n4")
	startNode(t, n4, []string{nodes[0].gossipAddr}, 2*time.Second)
	harness.WaitFor(t, "n4 a voter", 20*time.Second, func() (bool, string) {
		voters, _ := nodes[0].Servers()
		return voters["n4"], fmt.Sprint(voters)
	})
	if err := n4.Leave(); err != nil {
		t.Fatal(err)
	}
	harness.WaitFor(t, "n4 removed after leaving", 20*time.Second, func() (bool, string) {
		voters, _ := leaderOf(nodes).Servers()
		_, still := voters["n4"]
		return !still, fmt.Sprint(voters)
	})
	// A dead follower is removed after the grace period.
	var victim *testNode
	for _, n := range nodes {
		if n.id != leaderOf(nodes).id {
			victim = n
			break
		}
	}
	victim.Close() // no leave: it looks dead
	victim.Node = nil
	harness.WaitFor(t, victim.id+" removed after the grace period", 30*time.Second, func() (bool, string) {
		l := leaderOf(nodes)
		if l == nil {
			return false, "no leader"
		}
		voters, _ := l.Servers()
		_, still := voters[victim.id]
		return !still, fmt.Sprint(voters)
	})
}

// voterCount is how many voters n's configuration has, and the
// configuration as text.
func voterCount(n *testNode) (int, string) {
	voters, err := n.Servers()
	if err != nil {
		return 0, err.Error()
	}
	count := 0
	for _, v := range voters {
		if v {
			count++
		}
	}
	return count, fmt.Sprint(voters)
}

func leaderOf(nodes []*testNode) *testNode {
	for _, n := range nodes {
		if n.Node != nil && n.Leader() == n.id {
			return n
		}
	}
	return nil
}

func TestFSMSnapshotRoundTrip(t *testing.T) {
	f := newFSM()
	for _, c := range []struct {
		typ string
		v   any
	}{
		{CmdMember, Member{ID: "a", APIAddr: "127.0.0.1:1"}},
		{CmdState, StateUpdate{NodeID: "a", GTIDs: "0-1-5", Mode: "active", At: time.Unix(100, 0).UTC()}},
		{CmdPromote, PromoteRequest{NodeID: "a", ExpectedEpoch: 0}},
		{CmdPromotion, Promotion{Epoch: 1, NodeID: "a", StreamID: "s", StartIndex: 3}},
		{CmdExternal, map[string]string{"x": "0-9-9"}},
	} {
		cmd, err := NewCommand(c.typ, c.v)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(cmd)
		if res := f.Apply(&raft.Log{Data: b}).(applyResult); res.Err != nil {
			t.Fatalf("%s: %v", c.typ, res.Err)
		}
	}
	// Bad entries are errors, the same on every node; the view is unchanged.
	for _, bad := range []string{`not json`, `{"type":"bogus","data":{}}`, `{"type":"promote","data":{"node_id":"b","expected_epoch":0}}`} {
		if res := f.Apply(&raft.Log{Data: []byte(bad)}).(applyResult); res.Err == nil {
			t.Errorf("%s: applied", bad)
		}
	}
	snap, _ := f.Snapshot()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.snapshotView(), g.snapshotView()) {
		t.Fatalf("restored view differs:\n%+v\n%+v", f.snapshotView(), g.snapshotView())
	}
	if v := g.snapshotView(); v.Epoch != 1 || v.Primary != "a" || v.Promotions[0].StartIndex != 3 || v.GTIDs["a"] != "0-1-5" {
		t.Fatalf("restored view: %+v", v)
	}
	if err := g.Restore(io.NopCloser(strings.NewReader(`{"format":99,"view":{}}`))); err == nil || !strings.Contains(err.Error(), "format 99") {
		t.Fatalf("unknown snapshot format: %v", err)
	}
}

type memSink struct{ bytes.Buffer }

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }
