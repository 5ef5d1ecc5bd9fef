package cluster

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/myhoard/myhoard/e2e/harness"
)

func TestBootstrapPlan(t *testing.T) {
	p := func(id string, state bool, expect int) peer {
		return peer{ID: id, RaftAddr: id + ":1", HasState: state, Expect: expect}
	}
	tests := []struct {
		name   string
		self   string
		expect int
		seen   []peer
		want   []string // voters; nil: no bootstrap
		status string
	}{
		{"lone node, expect 1", "a", 1, []peer{p("a", false, 1)}, []string{"a"}, "bootstrapping a"},
		{"expect 0 means 1", "a", 0, []peer{p("a", false, 0)}, []string{"a"}, "bootstrapping a"},
		{"waiting for members", "b", 3, []peer{p("b", false, 3), p("a", false, 3)}, nil, "waiting for 3 members, 2 seen"},
		{"three seen, any order", "c", 3, []peer{p("c", false, 3), p("a", false, 3), p("b", false, 3)}, []string{"a", "b", "c"}, "bootstrapping a, b, c"},
		{"a fourth node waits to be added", "d", 3, []peer{p("d", false, 3), p("c", false, 3), p("a", false, 3), p("b", false, 3)}, nil,
			"4 members seen; a, b, c form the cluster: waiting for its leader to add this node"},
		{"an existing cluster: never a second one", "a", 3, []peer{p("a", false, 3), p("b", true, 3), p("c", false, 3)}, nil,
			"joining the existing cluster (b has Raft state): waiting for its leader to add this node"},
		{"expect 1 with a live cluster", "x", 1, []peer{p("x", false, 1), p("a", true, 1)}, nil,
			"joining the existing cluster (a has Raft state): waiting for its leader to add this node"},
		{"expect 1, identical configs: the first id bootstraps", "a", 1, []peer{p("b", false, 1), p("a", false, 1)}, []string{"a"}, "bootstrapping a"},
		{"expect 1, identical configs: the others wait", "b", 1, []peer{p("b", false, 1), p("a", false, 1)}, nil,
			"2 members seen; a form the cluster: waiting for its leader to add this node"},
		{"disagreeing expect", "a", 3, []peer{p("a", false, 3), p("b", false, 5), p("c", false, 3)}, nil,
			"members disagree on cluster.bootstrap_expect: b has 5, this node 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			servers, status := bootstrapPlan(tc.self, tc.expect, tc.seen)
			var got []string
			for _, s := range servers {
				if s.Suffrage != raft.Voter || string(s.Address) != string(s.ID)+":1" {
					t.Errorf("server %+v", s)
				}
				got = append(got, string(s.ID))
			}
			if !reflect.DeepEqual(got, tc.want) || status != tc.status {
				t.Errorf("plan %v %q, want %v %q", got, status, tc.want, tc.status)
			}
		})
	}
}

// symmetric makes n nodes that all get the same seed list (every node's
// gossip address, each node's own included) and bootstrap_expect n.
func symmetric(t *testing.T, count int) ([]*testNode, func(*testNode)) {
	t.Helper()
	var nodes []*testNode
	var seeds []string
	ca := newCA(t)
	for i := 1; i <= count; i++ {
		n := newTestNode(t, ca, fmt.Sprintf("n%d", i))
		nodes = append(nodes, n)
		seeds = append(seeds, n.gossipAddr)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			if n.Node != nil {
				n.Close()
			}
		}
	})
	start := func(n *testNode) {
		startNodeWith(t, n, func(o *Options) { o.Join, o.BootstrapExpect = seeds, count })
	}
	return nodes, start
}

// startAll starts the nodes at once.
func startAll(t *testing.T, nodes []*testNode, start func(*testNode)) {
	t.Helper()
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start(n)
		}()
	}
	wg.Wait()
}

// formed waits until the live nodes agree on one leader, every node of
// want is a voter and each view has the same cluster id; it returns the
// leader.
func formed(t *testing.T, nodes []*testNode, want int) *testNode {
	t.Helper()
	var leader *testNode
	harness.WaitFor(t, fmt.Sprintf("one cluster of %d voters", want), 30*time.Second, func() (bool, string) {
		leader = leaderOf(nodes)
		if leader == nil {
			return false, "no leader"
		}
		if count, voters := voterCount(leader); count != want {
			return false, voters
		}
		id := leader.View().ClusterID
		for _, n := range nodes {
			if n.Node == nil {
				continue
			}
			if v := n.View(); n.Leader() != leader.id || v.ClusterID != id || id == "" || n.Bootstrap() != "" || len(v.Members) != want {
				return false, fmt.Sprintf("%s: leader %q cluster %q bootstrap %q members %v", n.id, n.Leader(), v.ClusterID, n.Bootstrap(), v.MemberIDs())
			}
		}
		return true, ""
	})
	return leader
}

func TestIdenticalConfigsFormOneCluster(t *testing.T) {
	for _, count := range []int{3, 5} {
		t.Run(fmt.Sprint(count, " nodes at once"), func(t *testing.T) {
			nodes, start := symmetric(t, count)
			startAll(t, nodes, start)
			formed(t, nodes, count)
		})
	}
	t.Run("one at a time, a member waits", func(t *testing.T) {
		nodes, start := symmetric(t, 3)
		start(nodes[2])
		start(nodes[0])
		harness.WaitFor(t, "the status of a waiting node", 10*time.Second, func() (bool, string) {
			s := nodes[0].Bootstrap()
			return s == "waiting for 3 members, 2 seen", s
		})
		if l := nodes[0].Leader(); l != "" {
			t.Fatalf("a leader (%s) with two of three members", l)
		}
		start(nodes[1])
		formed(t, nodes, 3)
	})
}

func TestLeaderLostRightAfterFormation(t *testing.T) {
	nodes, start := symmetric(t, 3)
	startAll(t, nodes, start)
	leader := formed(t, nodes, 3)
	// Voters from the first second: the other two elect a new leader.
	leader.Close()
	leader.Node = nil
	var next *testNode
	harness.WaitFor(t, "a new leader", 20*time.Second, func() (bool, string) {
		next = leaderOf(nodes)
		return next != nil, ""
	})
	epoch, err := next.Promote(context.Background(), PromoteRequest{NodeID: next.id})
	if err != nil || epoch != 1 {
		t.Fatalf("promote after the leader was lost: %d %v", epoch, err)
	}
}

func TestRestartsAndLostRaftState(t *testing.T) {
	nodes, start := symmetric(t, 3)
	startAll(t, nodes, start)
	leader := formed(t, nodes, 3)
	ctx := context.Background()
	if _, err := leader.Promote(ctx, PromoteRequest{NodeID: "n2"}); err != nil {
		t.Fatal(err)
	}
	clusterID := leader.View().ClusterID
	// Every node restarts at once: the same cluster, nobody bootstraps.
	for _, n := range nodes {
		n.Close()
		n.Node = nil
	}
	startAll(t, nodes, start)
	leader = formed(t, nodes, 3)
	if v := leader.View(); v.ClusterID != clusterID || v.Epoch != 1 || v.Primary != "n2" {
		t.Fatalf("after restarting every node: cluster %s epoch %d primary %s", v.ClusterID, v.Epoch, v.Primary)
	}
	// Each node in turn loses its Raft directory and restarts: it is
	// taken back into the same cluster (its stale entry replaced), never
	// a second one.
	for _, victim := range nodes {
		old := victim.View().Members[victim.id].Incarnation
		victim.Close()
		victim.Node = nil
		if err := os.RemoveAll(victim.dir); err != nil {
			t.Fatal(err)
		}
		start(victim)
		harness.WaitFor(t, victim.id+" back in the cluster with a new incarnation", 30*time.Second, func() (bool, string) {
			l := leaderOf(nodes)
			if l == nil {
				return false, "no leader"
			}
			m := l.View().Members[victim.id]
			v := victim.View()
			return m.Incarnation != old && m.Incarnation != "" && v.ClusterID == clusterID && v.Epoch == 1 && victim.Bootstrap() == "",
				fmt.Sprintf("incarnation %s (was %s), its view: cluster %q epoch %d, bootstrap %q", m.Incarnation, old, v.ClusterID, v.Epoch, victim.Bootstrap())
		})
		formed(t, nodes, 3)
	}
	for _, n := range nodes {
		if strings.Contains(n.Bootstrap(), "bootstrapping") {
			t.Errorf("%s: %s", n.id, n.Bootstrap())
		}
	}
}
