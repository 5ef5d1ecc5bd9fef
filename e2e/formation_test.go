package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/wire"
)

// permutations are all the orders of n items.
func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// startTogether starts the daemons at once (each start waits only for its
// own API).
func startTogether(t testing.TB, nodes []*clusterNode) {
	t.Helper()
	for _, n := range nodes {
		n.d = startDaemon(t, "--config", n.cfgPath)
	}
	for _, n := range nodes {
		harness.WaitFor(t, n.id+"'s API", 30*time.Second, func() (bool, string) {
			_, err := statusOf(n.url)
			return err == nil, fmt.Sprint(err)
		})
	}
}

// clusterOf is what one node's GET /cluster says about the cluster.
type clusterOf struct {
	id, leader, primary, bootstrap string
	epoch                          int64
	voters                         []string
	alive                          int
}

func readCluster(n *clusterNode) (clusterOf, error) {
	v, err := apiClient(n.url).Cluster(context.Background())
	if err != nil {
		return clusterOf{}, fmt.Errorf("%s: GET /cluster: %w", n.id, err)
	}
	c := clusterOf{id: v.ClusterID, leader: v.Leader, primary: v.Primary, bootstrap: v.Bootstrap, epoch: v.Epoch}
	for _, m := range v.Members {
		if m.Voter && m.RaftAddr != "" {
			c.voters = append(c.voters, m.ID)
		}
		if m.Gossip == "alive" {
			c.alive++
		}
	}
	return c, nil
}

// waitOneCluster waits until every node of nodes (the running ones) shows
// the same cluster: one leader, want voters, all alive, the same id,
// primary and epoch, nothing waiting to bootstrap. It returns that view.
func waitOneCluster(t testing.TB, nodes []*clusterNode, want int) clusterOf {
	t.Helper()
	var first clusterOf
	harness.WaitFor(t, fmt.Sprintf("one cluster of %d voters", want), 60*time.Second, func() (bool, string) {
		var views []string
		for i, n := range nodes {
			c, err := readCluster(n)
			if err != nil {
				return false, err.Error()
			}
			views = append(views, fmt.Sprintf("%s: %+v", n.id, c))
			if i == 0 {
				first = c
			}
			if c.leader == "" || c.id == "" || c.bootstrap != "" || len(c.voters) != want || c.alive != want ||
				c.leader != first.leader || c.id != first.id || c.primary != first.primary || c.epoch != first.epoch {
				return false, strings.Join(views, "; ")
			}
		}
		return true, ""
	})
	return first
}

// TestClusterFormationFromOneTemplate starts daemons whose cluster blocks
// come from one template (the same join list with every node, each node's
// own address included, and bootstrap_expect) at once and in every order:
// always one cluster, voters from the start.
func TestClusterFormationFromOneTemplate(t *testing.T) {
	t.Run("3 at once", func(t *testing.T) {
		t.Parallel()
		nodes := newClusterNodes(t, make([]*harness.Instance, 3), t.TempDir())
		startTogether(t, nodes)
		waitOneCluster(t, nodes, 3)
	})
	t.Run("5 at once", func(t *testing.T) {
		t.Parallel()
		nodes := newClusterNodes(t, make([]*harness.Instance, 5), t.TempDir())
		startTogether(t, nodes)
		waitOneCluster(t, nodes, 5)
	})
	for _, order := range permutations(3) {
		t.Run(fmt.Sprintf("in order %v with 1 s gaps", order), func(t *testing.T) {
			t.Parallel()
			nodes := newClusterNodes(t, make([]*harness.Instance, 3), t.TempDir())
			for k, i := range order {
				if k > 0 {
					time.Sleep(time.Second) // the gap between starts is the scenario
				}
				startTogether(t, nodes[i:i+1])
			}
			c := waitOneCluster(t, nodes, 3)
			// The first primary of a new cluster.
			if st := setMode(t, nodes[order[0]].url, wire.ModeRequest{Mode: "active"}); st.Mode != "active" {
				t.Fatalf("active on %s: %+v", nodes[order[0]].id, st)
			}
			c2 := waitOneCluster(t, nodes, 3)
			if c2.primary != nodes[order[0]].id || c2.epoch != 1 || c2.id != c.id {
				t.Fatalf("after PUT active: %+v", c2)
			}
		})
	}
}

// TestClusterRestartsAndLostState: every daemon restarted at once keeps
// the cluster (no bootstrap); a node whose Raft directory is wiped comes
// back into the same cluster; the leader killed right after formation is
// replaced and a promotion still works.
func TestClusterRestartsAndLostState(t *testing.T) {
	nodes := newClusterNodes(t, make([]*harness.Instance, 3), t.TempDir())
	startTogether(t, nodes)
	c := waitOneCluster(t, nodes, 3)
	if code, body := doJSON(t, "PUT", nodes[1].url+"/status", map[string]any{"mode": "active"}); code != 200 {
		t.Fatalf("active on n2: %d %v", code, body)
	}
	c = waitOneCluster(t, nodes, 3)
	for _, n := range nodes {
		_ = n.d.cmd.Process.Kill()
		_, _ = n.d.wait(t, 10*time.Second)
	}
	startTogether(t, nodes)
	after := waitOneCluster(t, nodes, 3)
	if after.id != c.id || after.primary != "n2" || after.epoch != 1 {
		t.Fatalf("after restarting every daemon: %+v, before %+v", after, c)
	}
	for _, n := range nodes {
		if strings.Contains(n.d.out.String(), "bootstrapping a new cluster") {
			t.Errorf("%s bootstrapped again after a restart", n.id)
		}
	}
	// n3 loses its Raft directory.
	n3 := nodes[2]
	_ = n3.d.cmd.Process.Kill()
	_, _ = n3.d.wait(t, 10*time.Second)
	if err := os.RemoveAll(n3.dataDir); err != nil {
		t.Fatal(err)
	}
	startTogether(t, nodes[2:])
	after = waitOneCluster(t, nodes, 3)
	if after.id != c.id || after.primary != "n2" || after.epoch != 1 {
		t.Fatalf("after n3 lost its Raft state: %+v, before %+v", after, c)
	}
	if out := n3.d.out.String(); strings.Contains(out, "bootstrapping a new cluster") {
		t.Errorf("n3 bootstrapped a second cluster after losing its Raft state:\n%s", out)
	}
	// The leader dies 1 s after the cluster is whole again: the other two
	// elect a new one, and a promotion works (with force when the primary
	// n2 is alive, without once gossip marks it failed when it was the
	// leader).
	time.Sleep(time.Second)
	var leader, other *clusterNode
	for _, n := range nodes {
		if n.id == after.leader {
			leader = n
		}
	}
	_ = leader.d.cmd.Process.Kill()
	_, _ = leader.d.wait(t, 10*time.Second)
	var rest []*clusterNode
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
			if n.id != "n2" {
				other = n
			}
		}
	}
	harness.WaitFor(t, "a new leader", 30*time.Second, func() (bool, string) {
		for _, n := range rest {
			c, err := readCluster(n)
			if err != nil || c.leader == "" || c.leader == leader.id {
				return false, fmt.Sprint(c, err)
			}
		}
		return true, ""
	})
	if other == nil { // n2, the primary, was the leader
		other = rest[0]
	}
	body := wire.ModeRequest{Mode: "active"}
	if leader.id == "n2" {
		// the primary died: no force once gossip knows
		harness.WaitFor(t, "gossip marking n2 failed", 30*time.Second, func() (bool, string) {
			m, _ := other.view(t).Member("n2")
			return m.Gossip == "failed", fmt.Sprint(other.view(t))
		})
	} else {
		body.Force = true // n2, the primary, is alive
	}
	if st := setMode(t, other.url, body); st.Mode != "active" {
		t.Fatalf("promote %s after the leader died: %+v", other.id, st)
	}
	harness.WaitFor(t, other.id+" the primary at epoch 2", 30*time.Second, func() (bool, string) {
		c, err := readCluster(rest[0])
		return err == nil && c.primary == other.id && c.epoch == 2, fmt.Sprint(c, err)
	})
}
