package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
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

// reconcile runs on the leader: raft membership and member records follow
// gossip.
func (n *Node) reconcile() error {
	future := n.raft.GetConfiguration()
	if err := future.Error(); err != nil {
		return err
	}
	servers := map[string]raft.Server{}
	voters := 0
	for _, s := range future.Configuration().Servers {
		servers[string(s.ID)] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	view := n.fsm.snapshotView()
	alive := map[string]nodeMeta{}
	now := time.Now()
	n.mu.Lock()
	for _, meta := range n.metas {
		if meta.ClusterID != "" && view.ClusterID != "" && meta.ClusterID != view.ClusterID {
			if !n.foreign[meta.ID] {
				n.foreign[meta.ID] = true
				n.log.Error("a member of another cluster is in gossip; it is not added to this one",
					"node", meta.ID, "its_cluster", meta.ClusterID, "this_cluster", view.ClusterID)
			}
			continue
		}
		alive[meta.ID] = meta
	}
	aliveAt := make(map[string]time.Time, len(n.aliveAt))
	for k, v := range n.aliveAt {
		aliveAt[k] = v
	}
	dead := make(map[string]time.Time, len(n.deadSince))
	for k, v := range n.deadSince {
		dead[k] = v
	}
	left := make(map[string]time.Time, len(n.leftAt))
	for k, v := range n.leftAt {
		left[k] = v
	}
	proven := make(map[string]JoinRequest, len(n.proven))
	for k, v := range n.proven {
		proven[k] = v
	}
	n.mu.Unlock()
	self := n.o.NodeID
	// Raft membership and member records follow what live members proved
	// (their join, over mutual TLS): a member seen only in gossip is never
	// added. A member whose Raft state was lost comes back with a new
	// incarnation: its entry in the configuration is stale and replaced.
	for id, j := range proven {
		if _, ok := alive[id]; !ok {
			continue
		}
		rec, known := view.Members[id]
		s, inCfg := servers[id]
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
			m := Member{ID: id, APIAddr: j.APIAddr, RaftAddr: j.RaftAddr, RPCAddr: j.RPCAddr, ServerID: j.ServerID, ServerUUID: j.ServerUUID,
				Flavor: j.Flavor, MySQLAddr: j.MySQLAddr, Mode: rec.Mode, LastSeen: now, Incarnation: j.Incarnation}
			if _, err := n.applyLocal(CmdMember, m); err != nil {
				return err
			}
		}
	}
	// Stable non-voters become voters.
	for id, s := range servers {
		if _, ok := alive[id]; ok && s.Suffrage != raft.Voter && voters < 5 && id != self && now.Sub(aliveAt[id]) >= n.o.Timing.StableFor {
			n.log.Info("member becomes a voter", "node", id)
			if err := n.raft.AddVoter(raft.ServerID(id), s.Address, 0, raftTimeout).Error(); err != nil {
				return err
			}
			voters++
		}
	}
	// Remove members that left, and dead ones after the grace period.
	for id, s := range servers {
		if id == self {
			continue
		}
		if _, ok := alive[id]; ok {
			continue
		}
		_, wentAway := left[id]
		since, isDead := dead[id]
		if !wentAway && !(isDead && now.Sub(since) >= n.o.Timing.DeadGrace) {
			continue
		}
		if s.Suffrage == raft.Voter {
			healthy := 0
			for vid, vs := range servers {
				if _, ok := alive[vid]; (ok || vid == self) && vs.Suffrage == raft.Voter {
					healthy++
				}
			}
			if healthy < (voters-1)/2+1 {
				continue // removing it would leave no quorum among the living
			}
			voters--
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
