package cluster

import (
	"sort"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/wire"
)

// Status is the cluster view as this node sees it (GET /cluster): the
// members of the view, and those gossip sees that the view does not have
// (in_raft false), with how far each is behind the primary.
func (n *Node) Status() (wire.ClusterStatus, error) {
	view := n.View()
	voters, err := n.Servers()
	if err != nil {
		return wire.ClusterStatus{}, err
	}
	st := wire.ClusterStatus{NodeID: n.o.NodeID, ClusterID: view.ClusterID, Bootstrap: n.Bootstrap(), Leader: n.Leader(), Primary: view.Primary,
		Epoch: view.Epoch, External: view.External, Members: []wire.ClusterMember{},
		Promotions: append([]wire.Promotion{}, view.Promotions...)}
	flavor := mysql.Flavor(view.Members[view.Primary].Flavor)
	primarySet, perr := mysql.ParseGTIDSet(flavor, view.GTIDs[view.Primary])
	ids := view.MemberIDs()
	for _, id := range n.GossipMembers() {
		if _, ok := view.Members[id]; !ok {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		m := view.Members[id]
		voter, inRaft := voters[id]
		gossip := n.GossipState(id)
		row := wire.ClusterMember{ID: id, APIAddr: m.APIAddr, RaftAddr: m.RaftAddr, ServerID: m.ServerID, ServerUUID: m.ServerUUID, Mode: m.Mode,
			Voter: voter, InRaft: inRaft, Gossip: gossip, Alive: gossip == GossipAlive, LastSeen: m.LastSeen, GTIDs: view.GTIDs[id],
			IsPrimary: id == view.Primary, IsLeader: id == st.Leader}
		if view.Primary != "" && perr == nil && view.GTIDs[view.Primary] != "" {
			if set, err := mysql.ParseGTIDSet(flavor, view.GTIDs[id]); err == nil {
				behind := primarySet.Subtract(set).Count()
				row.Behind = &behind
			}
		}
		st.Members = append(st.Members, row)
	}
	sort.Slice(st.Members, func(i, j int) bool { return st.Members[i].ID < st.Members[j].ID })
	return st, nil
}
