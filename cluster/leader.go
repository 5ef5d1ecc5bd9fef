package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// raftTimeout bounds every Raft call the leader loop makes, so that a
// leadership change never leaves it blocked.
const raftTimeout = 5 * time.Second

// monitorLeadership runs the leader loop while this node leads: it starts
// it when Raft reports leadership and stops it, waiting for it to end,
// when leadership is lost. A leadership lost and regained between two
// reads of LeaderCh (which keeps only the latest value) starts over.
func (n *Node) monitorLeadership() {
	defer n.done.Done()
	var stopLeader chan struct{}
	var wg sync.WaitGroup
	revoke := func() {
		if stopLeader != nil {
			close(stopLeader)
			wg.Wait()
			stopLeader = nil
		}
	}
	defer revoke()
	for {
		select {
		case <-n.stop:
			return
		case leader := <-n.raft.LeaderCh():
			revoke()
			if leader {
				stopLeader = make(chan struct{})
				wg.Add(1)
				go func(stop <-chan struct{}) {
					defer wg.Done()
					n.leaderLoop(stop)
				}(stopLeader)
			}
		}
	}
}

// leaderLoop establishes this node's leadership (a Barrier, so that the
// FSM has applied everything of earlier terms; then the cluster is named
// if it has no id yet), then reconciles membership on member events and
// on a timer until stop.
func (n *Node) leaderLoop(stop <-chan struct{}) {
	for {
		err := n.raft.Barrier(raftTimeout).Error()
		if err == nil {
			break
		}
		n.log.Warn("leader barrier failed", "error", err)
		select {
		case <-stop:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := n.establish(); err != nil {
		n.log.Warn("establishing leadership failed", "error", err)
	} else {
		n.log.Info("cluster leadership established", "node", n.o.NodeID, "term", n.raft.CurrentTerm())
	}
	tick := time.NewTicker(n.o.Timing.Reconcile)
	defer tick.Stop()
	for {
		if err := n.reconcile(); err != nil {
			n.log.Warn("membership reconcile failed", "error", err)
		}
		n.reconciles.Add(1)
		select {
		case <-stop:
			return
		case <-tick.C:
		case <-n.events:
		}
	}
}

// establish names a new cluster: members of another cluster seen in
// gossip are never added to this one.
func (n *Node) establish() error {
	if n.fsm.clusterID() != "" {
		return nil
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return fmt.Errorf("make a cluster id: %w", err)
	}
	_, err := n.applyLocal(CmdInit, initRequest{ClusterID: hex.EncodeToString(raw[:])})
	return err
}

// membership is what one reconcile pass works from: the Raft
// configuration, the view, and gossip's live members (those of another
// cluster left out) with their liveness times, as copied at its start.
type membership struct {
	servers map[string]raft.Server
	voters  int
	view    View
	alive   map[string]nodeMeta
	aliveAt map[string]time.Time
	dead    map[string]time.Time
	left    map[string]time.Time
	proven  map[string]JoinRequest
	now     time.Time
}

// reconcile runs on the leader: Raft membership and member records follow
// what live members proved (join, over mutual TLS), stable non-voters
// become voters, and members that left or stayed dead are removed.
func (n *Node) reconcile() error {
	m, err := n.membership()
	if err != nil {
		return err
	}
	if err := n.addProven(m); err != nil {
		return err
	}
	if err := n.promoteStable(m); err != nil {
		return err
	}
	return n.removeGone(m)
}

func (n *Node) membership() (*membership, error) {
	future := n.raft.GetConfiguration()
	if err := future.Error(); err != nil {
		return nil, err
	}
	m := &membership{servers: map[string]raft.Server{}, view: n.fsm.snapshotView(), alive: map[string]nodeMeta{}, now: time.Now()}
	for _, s := range future.Configuration().Servers {
		m.servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			m.voters++
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, meta := range n.metas {
		if meta.ClusterID != "" && m.view.ClusterID != "" && meta.ClusterID != m.view.ClusterID {
			if !n.foreign[meta.ID] {
				n.foreign[meta.ID] = true
				n.log.Error("a member of another cluster is in gossip; it is not added to this one",
					"node", meta.ID, "its_cluster", meta.ClusterID, "this_cluster", m.view.ClusterID)
			}
			continue
		}
		m.alive[meta.ID] = meta
	}
	m.aliveAt, m.dead, m.left, m.proven = maps.Clone(n.aliveAt), maps.Clone(n.deadSince), maps.Clone(n.leftAt), maps.Clone(n.proven)
	return m, nil
}

// addProven adds the live members that proved who they are to Raft (a
// member seen only in gossip never is), replaces the entry of one that
// comes back with a new incarnation (its Raft state was lost), and keeps
// their member records as they proved them.
func (n *Node) addProven(m *membership) error {
	self := n.o.NodeID
	for id, j := range m.proven {
		if _, ok := m.alive[id]; !ok {
			continue
		}
		rec, known := m.view.Members[id]
		s, inCfg := m.servers[id]
		switch {
		case inCfg && id != self && known && rec.Incarnation != "" && rec.Incarnation != j.Incarnation:
			n.log.Info("a member lost its Raft state; replacing its entry", "node", id, "raft", j.RaftAddr)
			if err := n.raft.RemoveServer(s.ID, 0, raftTimeout).Error(); err != nil {
				return err
			}
			add := n.raft.AddNonvoter
			if s.Suffrage == raft.Voter {
				add = n.raft.AddVoter
			}
			if err := add(raft.ServerID(id), raft.ServerAddress(j.RaftAddr), 0, raftTimeout).Error(); err != nil {
				return err
			}
		case !inCfg || s.Address != raft.ServerAddress(j.RaftAddr):
			if inCfg {
				if err := n.raft.RemoveServer(s.ID, 0, raftTimeout).Error(); err != nil {
					return err
				}
			}
			n.log.Info("adding cluster member", "node", id, "raft", j.RaftAddr)
			if err := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(j.RaftAddr), 0, raftTimeout).Error(); err != nil {
				return err
			}
		}
		if !known || rec.APIAddr != j.APIAddr || rec.RaftAddr != j.RaftAddr || rec.RPCAddr != j.RPCAddr || rec.ServerID != j.ServerID ||
			rec.ServerUUID != j.ServerUUID || rec.Flavor != j.Flavor || rec.MySQLAddr != j.MySQLAddr || rec.Incarnation != j.Incarnation {
			mem := Member{ID: id, APIAddr: j.APIAddr, RaftAddr: j.RaftAddr, RPCAddr: j.RPCAddr, ServerID: j.ServerID, ServerUUID: j.ServerUUID,
				Flavor: j.Flavor, MySQLAddr: j.MySQLAddr, Mode: rec.Mode, LastSeen: m.now, Incarnation: j.Incarnation}
			if _, err := n.applyLocal(CmdMember, mem); err != nil {
				return err
			}
		}
	}
	return nil
}

// promoteStable makes live non-voters voters once they have been alive
// for StableFor (at most five voters).
func (n *Node) promoteStable(m *membership) error {
	for id, s := range m.servers {
		if _, ok := m.alive[id]; ok && s.Suffrage != raft.Voter && m.voters < 5 && id != n.o.NodeID && m.now.Sub(m.aliveAt[id]) >= n.o.Timing.StableFor {
			n.log.Info("member becomes a voter", "node", id)
			if err := n.raft.AddVoter(raft.ServerID(id), s.Address, 0, raftTimeout).Error(); err != nil {
				return err
			}
			m.voters++
		}
	}
	return nil
}

// removeGone removes members that left at once, and dead ones after the
// grace period, never below quorum among the living.
func (n *Node) removeGone(m *membership) error {
	self := n.o.NodeID
	for id, s := range m.servers {
		if id == self {
			continue
		}
		if _, ok := m.alive[id]; ok {
			continue
		}
		_, wentAway := m.left[id]
		since, isDead := m.dead[id]
		if !wentAway && !(isDead && m.now.Sub(since) >= n.o.Timing.DeadGrace) {
			continue
		}
		if s.Suffrage == raft.Voter {
			healthy := 0
			for vid, vs := range m.servers {
				if _, ok := m.alive[vid]; (ok || vid == self) && vs.Suffrage == raft.Voter {
					healthy++
				}
			}
			if healthy < (m.voters-1)/2+1 {
				continue // removing it would leave no quorum among the living
			}
			m.voters--
		}
		n.log.Info("removing cluster member", "node", id, "left", wentAway)
		if err := n.raft.RemoveServer(s.ID, 0, raftTimeout).Error(); err != nil {
			return err
		}
		if _, err := n.applyLocal(CmdRemove, id); err != nil {
			return err
		}
		n.mu.Lock()
		delete(n.leftAt, id)
		delete(n.deadSince, id)
		delete(n.proven, id)
		n.mu.Unlock()
	}
	return nil
}
