// Package cluster owns the cluster view of DESIGN.md section 7: gossip
// (hashicorp/memberlist) for membership and node metadata, and a Raft log
// (hashicorp/raft, raft-boltdb/v2 log and stable store, file snapshots
// under cluster.data_dir) for the authoritative view: members, each node's
// executed GTID set, the primary and its epoch (the fencing token) and the
// promotion record of every epoch.
//
// The Raft leader reconciles membership from gossip: new members join as
// non-voters and become voters once they have been alive for a while (at
// most five voters), members that left are removed at once, dead ones
// after a grace period, never below quorum. Writes on a follower are
// forwarded to the leader through the Forward function the daemon gives
// (its HTTP API). It must never touch the database or object storage: the
// node controller tells it what to publish and asks it what is true.
package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// Timing are the cluster's intervals.
type Timing struct {
	// Local uses memberlist's loopback profile and fast Raft timeouts
	// (tests, single-host setups); otherwise the LAN profile.
	Local bool
	// Reconcile is how often the leader reconciles membership.
	Reconcile time.Duration
	// StableFor is how long a non-voter must be alive to become a voter.
	StableFor time.Duration
	// DeadGrace is how long a dead member stays before it is removed.
	DeadGrace time.Duration
}

// Options configure a cluster node.
type Options struct {
	NodeID string
	// RaftAddr and GossipAddr are host:port to listen on (and advertise).
	RaftAddr, GossipAddr string
	// APIAddr is this node's HTTP API (host:port), advertised by gossip
	// so that followers can forward writes to the leader.
	APIAddr string
	// Join are gossip addresses of other members.
	Join []string
	// GossipKey encrypts gossip (16, 24 or 32 bytes; nil: off).
	GossipKey []byte
	DataDir   string
	// Meta is what this node advertises besides its addresses.
	ServerID   uint32
	ServerUUID string
	Flavor     string
	// MySQLAddr is where other members reach this node's server.
	MySQLAddr string
	// Forward sends a request to another node's API; path is
	// "/cluster/apply" or "/cluster/verify".
	Forward func(ctx context.Context, apiAddr, path string, body []byte) ([]byte, error)
	Timing  Timing
	Log     *slog.Logger
}

// Node is this daemon's membership in the cluster.
type Node struct {
	o    Options
	log  *slog.Logger
	fsm  *fsm
	raft *raft.Raft
	bolt *raftboltdb.BoltStore
	ml   *memberlist.Memberlist

	mu        sync.Mutex
	meta      nodeMeta
	deadSince map[string]time.Time
	leftAt    map[string]time.Time
	aliveAt   map[string]time.Time
	// metas are the live members' metadata, copied in the event
	// callbacks (memberlist's Members() shares structs it keeps writing).
	metas  map[string]nodeMeta
	events chan struct{}
	stop   chan struct{}
	done   sync.WaitGroup
	closed bool
}

// nodeMeta is the gossip metadata (memberlist limits it to 512 bytes).
type nodeMeta struct {
	ID         string `json:"i"`
	APIAddr    string `json:"a"`
	RaftAddr   string `json:"r"`
	ServerID   uint32 `json:"s,omitempty"`
	ServerUUID string `json:"u,omitempty"`
	Flavor     string `json:"f,omitempty"`
	MySQLAddr  string `json:"m,omitempty"`
}

// Errors.
var (
	ErrNotLeader  = errors.New("not the raft leader")
	ErrNoLeader   = errors.New("the cluster has no leader")
	ErrNotPrimary = errors.New("not the primary")
)

// Open starts gossip and Raft. A node with no Raft state bootstraps a
// single-node cluster only when no seed answers; otherwise it waits for
// the leader to add it.
func Open(ctx context.Context, o Options) (*Node, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Timing.Reconcile == 0 {
		o.Timing.Reconcile = 5 * time.Second
	}
	if o.Timing.StableFor == 0 {
		o.Timing.StableFor = 10 * time.Second
	}
	if o.Timing.DeadGrace == 0 {
		o.Timing.DeadGrace = 5 * time.Minute
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("cluster data dir: %w", err)
	}
	n := &Node{o: o, log: o.Log.With("component", "cluster"), fsm: newFSM(), deadSince: map[string]time.Time{}, leftAt: map[string]time.Time{},
		aliveAt: map[string]time.Time{}, metas: map[string]nodeMeta{}, events: make(chan struct{}, 1), stop: make(chan struct{}),
		meta: nodeMeta{ID: o.NodeID, APIAddr: o.APIAddr, RaftAddr: o.RaftAddr, ServerID: o.ServerID, ServerUUID: o.ServerUUID, Flavor: o.Flavor, MySQLAddr: o.MySQLAddr}}
	if err := n.openRaft(); err != nil {
		return nil, err
	}
	if err := n.openGossip(); err != nil {
		n.shutdownRaft()
		return nil, err
	}
	joined := 0
	if len(o.Join) > 0 {
		joined, _ = n.ml.Join(o.Join)
	}
	existing, err := raft.HasExistingState(n.bolt, n.bolt, n.snapshots())
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	if !existing && joined == 0 {
		n.log.Info("bootstrapping a new cluster", "node", o.NodeID)
		cfg := raft.Configuration{Servers: []raft.Server{{ID: raft.ServerID(o.NodeID), Address: raft.ServerAddress(o.RaftAddr), Suffrage: raft.Voter}}}
		if err := n.raft.BootstrapCluster(cfg).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.Close()
			return nil, fmt.Errorf("bootstrap the cluster: %w", err)
		}
	} else {
		n.log.Info("joining the cluster", "node", o.NodeID, "existing_state", existing, "seeds_answered", joined)
	}
	n.done.Add(2)
	go n.leaderLoop()
	go n.rejoinLoop()
	return n, nil
}

func (n *Node) snapshots() raft.SnapshotStore {
	s, _ := raft.NewFileSnapshotStoreWithLogger(n.o.DataDir, 2, n.hclog())
	return s
}

func (n *Node) hclog() hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: &slogWriter{log: n.log}})
}

// slogWriter turns the libraries' log lines into slog records.
type slogWriter struct{ log *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	switch {
	case strings.Contains(line, "[ERR") || strings.Contains(line, "[ERROR]"):
		w.log.Error(line)
	case strings.Contains(line, "[WARN"):
		w.log.Warn(line)
	default:
		w.log.Debug(line)
	}
	return len(p), nil
}

func (n *Node) openRaft() error {
	o := n.o
	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(o.NodeID)
	cfg.Logger = n.hclog()
	cfg.SnapshotThreshold = 1024
	if o.Timing.Local {
		cfg.HeartbeatTimeout = 300 * time.Millisecond
		cfg.ElectionTimeout = 300 * time.Millisecond
		cfg.LeaderLeaseTimeout = 200 * time.Millisecond
		cfg.CommitTimeout = 10 * time.Millisecond
	}
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(o.DataDir, "raft.db"))
	if err != nil {
		return fmt.Errorf("open raft log %s: %w", filepath.Join(o.DataDir, "raft.db"), err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(o.DataDir, 2, n.hclog())
	if err != nil {
		bolt.Close()
		return fmt.Errorf("raft snapshots in %s: %w", o.DataDir, err)
	}
	addr, err := net.ResolveTCPAddr("tcp", o.RaftAddr)
	if err != nil {
		bolt.Close()
		return fmt.Errorf("cluster.raft_address %s: %w", o.RaftAddr, err)
	}
	trans, err := raft.NewTCPTransportWithLogger(o.RaftAddr, addr, 3, 10*time.Second, n.hclog())
	if err != nil {
		bolt.Close()
		return fmt.Errorf("listen on cluster.raft_address %s: %w", o.RaftAddr, err)
	}
	logs, err := raft.NewLogCache(256, bolt)
	if err != nil {
		trans.Close()
		bolt.Close()
		return fmt.Errorf("raft log cache: %w", err)
	}
	r, err := raft.NewRaft(cfg, n.fsm, logs, bolt, snaps, trans)
	if err != nil {
		trans.Close()
		bolt.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	n.raft, n.bolt = r, bolt
	return nil
}

func (n *Node) openGossip() error {
	o := n.o
	var cfg *memberlist.Config
	if o.Timing.Local {
		cfg = memberlist.DefaultLocalConfig()
	} else {
		cfg = memberlist.DefaultLANConfig()
	}
	host, port, err := net.SplitHostPort(o.GossipAddr)
	if err != nil {
		return fmt.Errorf("cluster.gossip_address %s: %w", o.GossipAddr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("cluster.gossip_address %s: bad port", o.GossipAddr)
	}
	cfg.Name = o.NodeID
	cfg.BindAddr, cfg.BindPort = host, p
	cfg.AdvertiseAddr, cfg.AdvertisePort = host, p
	cfg.Delegate = n
	cfg.Events = n
	cfg.Label = "myhoard"
	cfg.DeadNodeReclaimTime = time.Second
	cfg.Logger = log.New(&slogWriter{log: n.log}, "", 0)
	if len(o.GossipKey) > 0 {
		cfg.SecretKey = o.GossipKey
	}
	ml, err := memberlist.Create(cfg)
	if err != nil {
		return fmt.Errorf("start gossip on %s: %w", o.GossipAddr, err)
	}
	n.ml = ml
	return nil
}

// memberlist.Delegate: only the node metadata is used.

// NodeMeta is this node's gossip metadata.
func (n *Node) NodeMeta(limit int) []byte {
	n.mu.Lock()
	b, _ := json.Marshal(n.meta)
	n.mu.Unlock()
	if len(b) > limit {
		return nil
	}
	return b
}

// NotifyMsg is unused (memberlist.Delegate).
func (n *Node) NotifyMsg([]byte) {}

// GetBroadcasts is unused (memberlist.Delegate).
func (n *Node) GetBroadcasts(int, int) [][]byte { return nil }

// LocalState is unused (memberlist.Delegate).
func (n *Node) LocalState(bool) []byte { return nil }

// MergeRemoteState is unused (memberlist.Delegate).
func (n *Node) MergeRemoteState([]byte, bool) {}

// memberlist.EventDelegate: record liveness, wake the leader loop. These
// run under memberlist's lock: no memberlist calls here.

// NotifyJoin records a live member.
func (n *Node) NotifyJoin(m *memberlist.Node) {
	n.mu.Lock()
	delete(n.deadSince, m.Name)
	delete(n.leftAt, m.Name)
	n.aliveAt[m.Name] = time.Now()
	n.recordMetaLocked(m)
	n.mu.Unlock()
	n.wake()
}

// recordMetaLocked keeps a copy of a member's metadata (n.mu held).
func (n *Node) recordMetaLocked(m *memberlist.Node) {
	var meta nodeMeta
	if err := json.Unmarshal(m.Meta, &meta); err == nil && meta.ID != "" {
		n.metas[m.Name] = meta
	}
}

// NotifyLeave records a member that left (graceful) or died.
func (n *Node) NotifyLeave(m *memberlist.Node) {
	n.mu.Lock()
	if m.State == memberlist.StateLeft {
		n.leftAt[m.Name] = time.Now()
	} else {
		n.deadSince[m.Name] = time.Now()
	}
	delete(n.aliveAt, m.Name)
	delete(n.metas, m.Name)
	n.mu.Unlock()
	n.wake()
}

// NotifyUpdate is a metadata change.
func (n *Node) NotifyUpdate(m *memberlist.Node) {
	n.mu.Lock()
	n.recordMetaLocked(m)
	n.mu.Unlock()
	n.wake()
}

func (n *Node) wake() {
	select {
	case n.events <- struct{}{}:
	default:
	}
}

// SetMeta changes what this node advertises (server id, uuid, flavor).
func (n *Node) SetMeta(serverID uint32, serverUUID, flavor string) {
	n.mu.Lock()
	changed := n.meta.ServerID != serverID || n.meta.ServerUUID != serverUUID || n.meta.Flavor != flavor
	n.meta.ServerID, n.meta.ServerUUID, n.meta.Flavor = serverID, serverUUID, flavor
	n.mu.Unlock()
	if changed {
		_ = n.ml.UpdateNode(time.Second)
	}
}

// leaderLoop reconciles membership while this node leads.
func (n *Node) leaderLoop() {
	defer n.done.Done()
	tick := time.NewTicker(n.o.Timing.Reconcile)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		case <-n.events:
		case <-n.raft.LeaderCh():
		}
		if n.raft.State() == raft.Leader {
			if err := n.reconcile(); err != nil {
				n.log.Warn("membership reconcile failed", "error", err)
			}
		}
	}
}

// rejoinLoop re-contacts the seeds now and then, so that members that
// were apart for long find each other again.
func (n *Node) rejoinLoop() {
	defer n.done.Done()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
			if len(n.o.Join) > 0 && n.ml.NumMembers() < 2 {
				_, _ = n.ml.Join(n.o.Join)
			}
		}
	}
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
	n.mu.Unlock()
	self := n.o.NodeID
	// Member records from gossip.
	for id, meta := range alive {
		m, ok := view.Members[id]
		if !ok || m.APIAddr != meta.APIAddr || m.RaftAddr != meta.RaftAddr || m.ServerID != meta.ServerID ||
			m.ServerUUID != meta.ServerUUID || m.Flavor != meta.Flavor || m.MySQLAddr != meta.MySQLAddr {
			rec := Member{ID: id, APIAddr: meta.APIAddr, RaftAddr: meta.RaftAddr, ServerID: meta.ServerID, ServerUUID: meta.ServerUUID,
				Flavor: meta.Flavor, MySQLAddr: meta.MySQLAddr, Mode: m.Mode, LastSeen: now}
			if _, err := n.applyLocal(CmdMember, rec); err != nil {
				return err
			}
		}
	}
	// Add new members as non-voters; promote stable ones.
	for id, meta := range alive {
		s, ok := servers[id]
		switch {
		case !ok || s.Address != raft.ServerAddress(meta.RaftAddr):
			if ok {
				if err := n.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
					return err
				}
			}
			n.log.Info("adding cluster member", "node", id, "raft", meta.RaftAddr)
			if err := n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(meta.RaftAddr), 0, 5*time.Second).Error(); err != nil {
				return err
			}
		case s.Suffrage != raft.Voter && voters < 5 && id != self && now.Sub(aliveAt[id]) >= n.o.Timing.StableFor:
			n.log.Info("member becomes a voter", "node", id)
			if err := n.raft.AddVoter(raft.ServerID(id), s.Address, 0, 5*time.Second).Error(); err != nil {
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
		if err := n.raft.RemoveServer(s.ID, 0, 5*time.Second).Error(); err != nil {
			return err
		}
		if _, err := n.applyLocal(CmdRemove, id); err != nil {
			return err
		}
		n.mu.Lock()
		delete(n.leftAt, id)
		delete(n.deadSince, id)
		n.mu.Unlock()
	}
	return nil
}

// applyLocal applies a command on this node, which must be the leader.
func (n *Node) applyLocal(typ string, v any) (int64, error) {
	c, err := NewCommand(typ, v)
	if err != nil {
		return 0, err
	}
	b, _ := json.Marshal(c)
	return n.applyRaw(b)
}

func (n *Node) applyRaw(b []byte) (int64, error) {
	if n.raft.State() != raft.Leader {
		return 0, ErrNotLeader
	}
	f := n.raft.Apply(b, 10*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return 0, err
	}
	res, _ := f.Response().(applyResult)
	return res.Epoch, res.Err
}

// forwardReply is the body of /cluster/apply and /cluster/verify answers.
type forwardReply struct {
	Epoch int64  `json:"epoch"`
	Error string `json:"error,omitempty"`
	// Code names the sentinel the error wraps (stale_epoch, not_primary,
	// not_leader), so errors.Is works across the hop.
	Code string `json:"code,omitempty"`
}

var errorCodes = map[string]error{"stale_epoch": ErrStaleEpoch, "not_primary": ErrNotPrimary, "not_leader": ErrNotLeader}

// Apply applies a command through the leader: here when this node leads,
// else forwarded to the leader's API. It returns the epoch after it.
func (n *Node) Apply(ctx context.Context, typ string, v any) (int64, error) {
	c, err := NewCommand(typ, v)
	if err != nil {
		return 0, err
	}
	b, _ := json.Marshal(c)
	for attempt := 0; ; attempt++ {
		epoch, err := n.applyRaw(b)
		if !errors.Is(err, ErrNotLeader) {
			return epoch, err
		}
		_, leaderID := n.raft.LeaderWithID()
		if leaderID != "" && string(leaderID) != n.o.NodeID {
			return n.forward(ctx, string(leaderID), "/cluster/apply", b)
		}
		if attempt >= 50 || ctx.Err() != nil {
			return 0, ErrNoLeader
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (n *Node) forward(ctx context.Context, leaderID, path string, body []byte) (int64, error) {
	view := n.fsm.snapshotView()
	m, ok := view.Members[leaderID]
	if !ok || m.APIAddr == "" || n.o.Forward == nil {
		return 0, fmt.Errorf("%w (leader %s has no known API address)", ErrNoLeader, leaderID)
	}
	out, err := n.o.Forward(ctx, m.APIAddr, path, body)
	if err != nil {
		return 0, fmt.Errorf("forward to the leader %s at %s: %w", leaderID, m.APIAddr, err)
	}
	var r forwardReply
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("forward to the leader %s: bad answer %q", leaderID, bytes.TrimSpace(out))
	}
	if r.Error == "" {
		return r.Epoch, nil
	}
	if sentinel, ok := errorCodes[r.Code]; ok {
		return r.Epoch, fmt.Errorf("leader %s: %s: %w", leaderID, r.Error, sentinel)
	}
	return r.Epoch, fmt.Errorf("leader %s: %s", leaderID, r.Error)
}

// HandleApply is the leader's side of /cluster/apply.
func (n *Node) HandleApply(body []byte) []byte {
	epoch, err := n.applyRaw(body)
	return reply(epoch, err)
}

func reply(epoch int64, err error) []byte {
	r := forwardReply{Epoch: epoch}
	if err != nil {
		r.Error = err.Error()
		for code, sentinel := range errorCodes {
			if errors.Is(err, sentinel) {
				r.Code = code
			}
		}
	}
	b, _ := json.Marshal(r)
	return b
}

// verifyRequest is the body of /cluster/verify.
type verifyRequest struct {
	NodeID string `json:"node_id"`
	Epoch  int64  `json:"epoch"`
}

// VerifyPrimary is a linearizable check that nodeID is the primary at
// epoch: the leader proves its leadership to a quorum first, so a node cut
// off from the quorum always fails it.
func (n *Node) VerifyPrimary(ctx context.Context, nodeID string, epoch int64) error {
	if n.raft.State() == raft.Leader {
		return n.verifyLocal(nodeID, epoch)
	}
	_, leaderID := n.raft.LeaderWithID()
	if leaderID == "" {
		return ErrNoLeader
	}
	// A follower that has not heard from the leader within a lease is
	// cut off: it fails at once instead of waiting for a forward that
	// cannot succeed.
	if last := n.raft.LastContact(); time.Since(last) > n.lease() {
		return fmt.Errorf("%w: no contact with leader %s for %v", ErrNoLeader, leaderID, time.Since(last).Round(time.Millisecond))
	}
	b, _ := json.Marshal(verifyRequest{NodeID: nodeID, Epoch: epoch})
	_, err := n.forward(ctx, string(leaderID), "/cluster/verify", b)
	return err
}

// lease is how long a follower trusts a leader it has not heard from.
func (n *Node) lease() time.Duration {
	if n.o.Timing.Local {
		return time.Second
	}
	return 2 * time.Second
}

func (n *Node) verifyLocal(nodeID string, epoch int64) error {
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	if err := n.raft.Barrier(5 * time.Second).Error(); err != nil {
		return err
	}
	v := n.fsm.snapshotView()
	if v.Primary != nodeID || v.Epoch != epoch {
		return fmt.Errorf("%s at epoch %d: the primary is %q at epoch %d: %w", nodeID, epoch, v.Primary, v.Epoch, ErrNotPrimary)
	}
	return nil
}

// HandleVerify is the leader's side of /cluster/verify.
func (n *Node) HandleVerify(body []byte) []byte {
	var r verifyRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return reply(0, fmt.Errorf("bad verify request: %w", err))
	}
	if n.raft.State() != raft.Leader {
		return reply(0, ErrNotLeader)
	}
	return reply(r.Epoch, n.verifyLocal(r.NodeID, r.Epoch))
}

// View is this node's copy of the cluster view (it may lag the leader).
func (n *Node) View() View { return n.fsm.snapshotView() }

// Changed is closed at the next change of the view.
func (n *Node) Changed() <-chan struct{} {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return n.fsm.changed
}

// Leader is the Raft leader's node id ("" when there is none).
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	return string(id)
}

// Voters are the node ids with a vote, and Servers all of them.
func (n *Node) Servers() (voters map[string]bool, err error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	voters = map[string]bool{}
	for _, s := range f.Configuration().Servers {
		voters[string(s.ID)] = s.Suffrage == raft.Voter
	}
	return voters, nil
}

// Alive are the ids of the members gossip sees alive.
func (n *Node) Alive() map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := map[string]bool{}
	for name := range n.metas {
		out[name] = true
	}
	return out
}

// Close leaves the gossip pool (so that the leader removes this node at
// once) when leave is true, and shuts Raft down.
func (n *Node) Close() error { return n.close(false) }

// Leave leaves the cluster for good and shuts down.
func (n *Node) Leave() error { return n.close(true) }

func (n *Node) close(leave bool) error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	close(n.stop)
	if n.ml != nil {
		if leave {
			_ = n.ml.Leave(2 * time.Second)
		}
		_ = n.ml.Shutdown()
	}
	n.done.Wait()
	return n.shutdownRaft()
}

func (n *Node) shutdownRaft() error {
	var err error
	if n.raft != nil {
		err = n.raft.Shutdown().Error()
	}
	if n.bolt != nil {
		if cerr := n.bolt.Close(); err == nil {
			err = cerr
		}
	}
	return err
}

var _ io.Writer = (*slogWriter)(nil)
