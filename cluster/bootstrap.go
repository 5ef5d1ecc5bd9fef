package cluster

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/raft"
)

// peer is a member as gossip shows it, for the bootstrap decision.
type peer struct {
	ID       string
	RaftAddr string
	RPCAddr  string
	// HasState: the member has Raft state (it bootstrapped, or a leader
	// added it): a cluster exists, and nobody may start a second one.
	HasState bool
	// Expect is the member's bootstrap_expect.
	Expect int
	// ClusterID is the cluster the member belongs to ("" until it knows).
	ClusterID string
}

// bootstrapPlan decides whether a node without Raft state bootstraps now
// (the servers of the new cluster's first configuration, nil when not)
// and says why not in a line for GET /cluster.
//
// Every node of a group started from one template computes the same plan
// from the same gossip view: the members without Raft state, sorted by
// node id, the first expect of them as voters. So simultaneous starts,
// any start order and restarts give one configuration, and hashicorp/raft
// accepts identical BootstrapCluster calls on every server. A member with
// Raft state means a cluster exists: nobody bootstraps, the leader adds the
// newcomer (this also covers a node whose Raft directory was lost). A node
// past the first expect waits to be added too. With expect 1 a lone node
// bootstraps at once when no other member is seen.
func bootstrapPlan(self string, expect int, seen []peer) ([]raft.Server, string) {
	if expect < 1 {
		expect = 1
	}
	var fresh []peer
	for _, p := range seen {
		if p.HasState && p.ID != self {
			return nil, fmt.Sprintf("joining the existing cluster (%s has Raft state): waiting for its leader to add this node", p.ID)
		}
		if p.Expect != 0 && p.Expect != expect {
			return nil, fmt.Sprintf("members disagree on cluster.bootstrap_expect: %s has %d, this node %d", p.ID, p.Expect, expect)
		}
		fresh = append(fresh, p)
	}
	sort.Slice(fresh, func(i, j int) bool { return fresh[i].ID < fresh[j].ID })
	if len(fresh) < expect {
		return nil, fmt.Sprintf("waiting for %d members, %d seen", expect, len(fresh))
	}
	chosen := fresh[:expect]
	var ids []string
	in := false
	servers := make([]raft.Server, 0, expect)
	for _, p := range chosen {
		ids = append(ids, p.ID)
		in = in || p.ID == self
		servers = append(servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
	}
	if !in {
		return nil, fmt.Sprintf("%d members seen; %s form the cluster: waiting for its leader to add this node", len(fresh), strings.Join(ids, ", "))
	}
	for _, s := range servers {
		if s.Address == "" {
			return nil, fmt.Sprintf("waiting for the Raft address of %s", s.ID)
		}
	}
	return servers, "bootstrapping " + strings.Join(ids, ", ")
}

// sameServers reports whether two plans name the same configuration.
func sameServers(a, b []raft.Server) bool {
	if len(a) != len(b) || len(a) == 0 {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
