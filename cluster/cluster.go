// Package cluster owns the cluster view: gossip (hashicorp/memberlist)
// for membership and node metadata, and a Raft log (hashicorp/raft,
// raft-boltdb/v2 log and stable store, file snapshots under
// cluster.data_dir) for the authoritative view: the cluster's id, members,
// each node's executed GTID set, the primary and its epoch (the fencing
// token) and the promotion record of every epoch.
//
// Formation (bootstrap.go): every node gets the same seed list and
// bootstrap_expect N; a node without Raft state waits until gossip shows
// N members without Raft state and then they all bootstrap one identical
// configuration of N voters. A node with Raft state never bootstraps, and
// nobody bootstraps while gossip shows a member with Raft state: such a
// node is added by the existing cluster's leader, also after it lost its
// Raft directory (its incarnation changed: the leader replaces the stale
// entry).
//
// The leader (leader.go, the Nomad/Consul leader loop) establishes its
// leadership with a Barrier, then reconciles membership from gossip: new
// members join as non-voters and become voters once they have been alive
// for a while (at most five voters), members that left are removed at
// once, dead ones after a grace period, never below quorum. Writes on a
// follower are forwarded to the leader through the Forward function the
// daemon gives (apply.go). It must never touch the database or object
// storage: the node controller tells it what to publish and asks it what
// is true.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/myhoard/myhoard/tlsconfig"
)

// Timing are the cluster's intervals.
type Timing struct {
	// Local uses fast gossip and Raft timeouts (loopback, tests);
	// otherwise memberlist's LAN profile and Raft's defaults.
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
	// RPCAddr is where this node serves the node-to-node RPC (host:port;
	// mutual TLS with TLS set).
	RPCAddr string
	// APIAddr is this node's HTTP API (host:port), shown in GET /cluster.
	APIAddr string
	// Join are gossip addresses of the members (this node's own may be
	// among them: every node can get the same list).
	Join []string
	// BootstrapExpect is how many members form a new cluster (0 or 1: a
	// node alone bootstraps when no other member answers).
	BootstrapExpect int
	// GossipKey encrypts gossip (16, 24 or 32 bytes; nil: off).
	GossipKey []byte
	DataDir   string
	// Meta is what this node advertises besides its addresses.
	ServerID   uint32
	ServerUUID string
	Flavor     string
	// MySQLAddr is where other members reach this node's server.
	MySQLAddr string
	// TLS is this node's certificate and the cluster's CA bundle: Raft and
	// the RPC run over mutual TLS 1.3. nil: plain TCP (cluster.insecure,
	// for a lab on loopback).
	TLS    *tlsconfig.Store
	Timing Timing
	Log    *slog.Logger
}

// Node is this daemon's membership in the cluster.
type Node struct {
	o     Options
	log   *slog.Logger
	fsm   *fsm
	raft  *raft.Raft
	bolt  *raftboltdb.BoltStore
	snaps raft.SnapshotStore
	ml    *memberlist.Memberlist
	layer *streamLayer
	rpc   *rpcServer
	rpcc  *rpcClient

	mu        sync.Mutex
	meta      nodeMeta
	deadSince map[string]time.Time
	leftAt    map[string]time.Time
	aliveAt   map[string]time.Time
	// metas are the live members' metadata, copied in the event
	// callbacks (memberlist's Members() shares structs it keeps writing).
	metas map[string]nodeMeta
	// addrs are the live members' gossip addresses (for re-joining seeds).
	addrs map[string]string
	// bootstrap says what a node without Raft state waits for ("" once
	// it has state).
	bootstrap string
	// foreign are members of another cluster already logged.
	foreign map[string]bool
	// proven are the members that proved who they are by calling the
	// leader's RPC (join): only they are added to Raft (leader only).
	proven map[string]JoinRequest
	// hellos are the bootstrap peers whose certificate this node checked
	// (node id -> RPC address).
	hellos map[string]string
	// published is the state last published, at publishedAt
	// (PublishIfChanged).
	published   string
	publishedAt time.Time
	events      chan struct{}
	// reconciles counts the leader's reconcile passes (tests wait for one
	// to prove the leader looked).
	reconciles atomic.Int64
	stop       chan struct{}
	done       sync.WaitGroup
	closed     bool
}

// nodeMeta is the gossip metadata (memberlist limits it to 512 bytes).
type nodeMeta struct {
	ID          string `json:"i"`
	APIAddr     string `json:"a"`
	RaftAddr    string `json:"r"`
	RPCAddr     string `json:"p"`
	ServerID    uint32 `json:"s,omitempty"`
	ServerUUID  string `json:"u,omitempty"`
	Flavor      string `json:"f,omitempty"`
	MySQLAddr   string `json:"m,omitempty"`
	HasState    bool   `json:"h,omitempty"`
	Expect      int    `json:"x,omitempty"`
	Incarnation string `json:"n,omitempty"`
	ClusterID   string `json:"c,omitempty"`
}

// Errors.
var (
	ErrNotLeader  = errors.New("not the raft leader")
	ErrNoLeader   = errors.New("the cluster has no leader")
	ErrNotPrimary = errors.New("not the primary")
)

// Open starts gossip and Raft, joins the seeds and, for a node without
// Raft state, starts waiting to bootstrap or to be added (bootstrap.go).
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
	if o.BootstrapExpect < 1 {
		o.BootstrapExpect = 1
	}
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("cluster data dir: %w", err)
	}
	n := &Node{o: o, log: o.Log.With("component", "cluster"), fsm: newFSM(), deadSince: map[string]time.Time{}, leftAt: map[string]time.Time{},
		aliveAt: map[string]time.Time{}, metas: map[string]nodeMeta{}, addrs: map[string]string{}, foreign: map[string]bool{},
		proven: map[string]JoinRequest{}, hellos: map[string]string{}, events: make(chan struct{}, 1), stop: make(chan struct{}),
		rpcc: newRPCClient(o.TLS),
		meta: nodeMeta{ID: o.NodeID, APIAddr: o.APIAddr, RaftAddr: o.RaftAddr, RPCAddr: o.RPCAddr, ServerID: o.ServerID, ServerUUID: o.ServerUUID,
			Flavor: o.Flavor, MySQLAddr: o.MySQLAddr, Expect: o.BootstrapExpect}}
	if o.RPCAddr == "" || o.RaftAddr == "" || o.GossipAddr == "" {
		return nil, fmt.Errorf("a cluster node needs its Raft, gossip and RPC addresses (got %q, %q, %q)", o.RaftAddr, o.GossipAddr, o.RPCAddr)
	}
	if o.TLS != nil && !slices.Contains(o.TLS.Names(), o.NodeID) {
		return nil, fmt.Errorf("cluster.tls.cert_file names %v, not this node's id %q (cluster.node_id)", o.TLS.Names(), o.NodeID)
	}
	if err := n.openRaft(); err != nil {
		return nil, err
	}
	if err := n.startRPC(); err != nil {
		n.shutdownRaft()
		return nil, err
	}
	existing, err := raft.HasExistingState(n.bolt, n.bolt, n.snaps)
	if err != nil {
		n.shutdownRaft()
		return nil, fmt.Errorf("read raft state in %s: %w", o.DataDir, err)
	}
	if n.meta.Incarnation, err = incarnation(o.DataDir, existing); err != nil {
		n.rpc.close()
		n.shutdownRaft()
		return nil, err
	}
	n.meta.HasState = existing
	if !existing {
		n.bootstrap = fmt.Sprintf("waiting for %d members, 1 seen", o.BootstrapExpect)
	}
	if err := n.openGossip(); err != nil {
		n.rpc.close()
		n.shutdownRaft()
		return nil, err
	}
	answered := n.joinSeeds()
	n.log.Info("cluster node started", "node", o.NodeID, "raft_state", existing, "seeds_answered", answered,
		"bootstrap_expect", o.BootstrapExpect, "incarnation", n.meta.Incarnation)
	n.done.Add(2)
	go n.monitorLeadership()
	go n.maintain()
	return n, nil
}

// incarnation reads the name of this node's Raft state, or makes a new one
// when there is no Raft state (a new node, or one whose state was lost).
func incarnation(dir string, existing bool) (string, error) {
	path := filepath.Join(dir, "incarnation")
	if existing {
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b)), nil
		}
	}
	var raw [8]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("make a raft incarnation: %w", err)
	}
	id := hex.EncodeToString(raw[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o640); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return id, nil
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

var _ io.Writer = (*slogWriter)(nil)

func (n *Node) openRaft() error {
	o := n.o
	cfg := raft.DefaultConfig()
	cfg.LocalID = raft.ServerID(o.NodeID)
	cfg.Logger = n.hclog()
	cfg.SnapshotThreshold = 1024
	// A leader never removes itself here; a removed follower waits to be
	// added again instead of shutting down.
	cfg.ShutdownOnRemove = false
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
	layer, err := newStreamLayer(o.RaftAddr, o.TLS)
	if err != nil {
		bolt.Close()
		return fmt.Errorf("listen on cluster.raft_address %s: %w", o.RaftAddr, err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: n.hclog()})
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
	n.raft, n.bolt, n.snaps, n.layer = r, bolt, snaps, layer
	return nil
}

func (n *Node) openGossip() error {
	o := n.o
	var cfg *memberlist.Config
	if o.Timing.Local {
		cfg = memberlist.DefaultLocalConfig()
		// Loopback: a dead member is known within about a second.
		cfg.ProbeInterval = 300 * time.Millisecond
		cfg.ProbeTimeout = 200 * time.Millisecond
		cfg.GossipInterval = 100 * time.Millisecond
		cfg.SuspicionMult = 3
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

// joinSeeds contacts the configured seeds that are not this node and not
// already live members, and returns how many answered.
func (n *Node) joinSeeds() int {
	n.mu.Lock()
	live := map[string]bool{}
	for _, a := range n.addrs {
		live[a] = true
	}
	n.mu.Unlock()
	var seeds []string
	for _, s := range n.o.Join {
		if !sameAddr(s, n.o.GossipAddr) && !live[s] {
			seeds = append(seeds, s)
		}
	}
	if len(seeds) == 0 {
		return 0
	}
	answered, _ := n.ml.Join(seeds)
	return answered
}

// sameAddr compares two host:port addresses after resolving their hosts.
func sameAddr(a, b string) bool {
	if a == b {
		return true
	}
	ra, err1 := net.ResolveTCPAddr("tcp", a)
	rb, err2 := net.ResolveTCPAddr("tcp", b)
	return err1 == nil && err2 == nil && ra.Port == rb.Port && ra.IP.Equal(rb.IP)
}

// maintain runs for the node's life: it keeps the gossip metadata in step
// with the Raft state, has the leader add (or update) this node when the
// view does not show it as it is, bootstraps a node without Raft state
// when the plan says so, and re-contacts seeds that are not live members
// (after a long partition nobody else would).
func (n *Node) maintain() {
	defer n.done.Done()
	every, joinEvery, rejoinEvery := 500*time.Millisecond, 2*time.Second, 30*time.Second
	if n.o.Timing.Local {
		every, joinEvery, rejoinEvery = 100*time.Millisecond, 500*time.Millisecond, 2*time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastRejoin, lastJoin := time.Now(), time.Time{}
	lastJoinErr := ""
	var lastPlan []raft.Server
	for {
		select {
		case <-n.stop:
			return
		case <-tick.C:
		}
		hasState, clusterID := n.hasState(), n.fsm.clusterID()
		n.updateMeta(func(m *nodeMeta) { m.HasState, m.ClusterID = hasState, clusterID })
		if !hasState {
			lastPlan = n.tryBootstrap(lastPlan)
		} else {
			n.setBootstrapStatus("")
		}
		if (hasState || n.clusterSeen()) && n.needsJoin() && time.Since(lastJoin) >= joinEvery {
			lastJoin = time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := n.join(ctx)
			cancel()
			msg := ""
			if err != nil {
				msg = err.Error()
			}
			if msg != lastJoinErr && msg != "" {
				n.log.Warn("joining the cluster failed; retrying", "error", err)
			}
			lastJoinErr = msg
		}
		if time.Since(lastRejoin) >= rejoinEvery {
			lastRejoin = time.Now()
			n.joinSeeds()
		}
	}
}

// clusterSeen reports whether gossip shows a member with Raft state.
func (n *Node) clusterSeen() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id, m := range n.metas {
		if id != n.o.NodeID && m.HasState {
			return true
		}
	}
	return false
}

// needsJoin reports whether the view does not show this node as it is.
func (n *Node) needsJoin() bool {
	rec, ok := n.fsm.snapshotView().Members[n.o.NodeID]
	n.mu.Lock()
	m := n.meta
	n.mu.Unlock()
	return !ok || rec.RaftAddr != m.RaftAddr || rec.RPCAddr != m.RPCAddr || rec.APIAddr != m.APIAddr || rec.Incarnation != m.Incarnation ||
		rec.ServerID != m.ServerID || rec.ServerUUID != m.ServerUUID || rec.Flavor != m.Flavor || rec.MySQLAddr != m.MySQLAddr
}

// hasState reports whether this node has a Raft configuration (it
// bootstrapped, or a leader added it).
func (n *Node) hasState() bool {
	f := n.raft.GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// tryBootstrap computes the bootstrap plan and carries it out once the
// same plan came out twice in a row (the gossip view settled) and every
// other member of it proved its identity (its RPC answered with a
// certificate of the cluster's CA naming it).
func (n *Node) tryBootstrap(last []raft.Server) []raft.Server {
	n.mu.Lock()
	seen := []peer{{ID: n.o.NodeID, RaftAddr: n.o.RaftAddr, RPCAddr: n.o.RPCAddr, Expect: n.o.BootstrapExpect}}
	for name, m := range n.metas {
		if name != n.o.NodeID {
			seen = append(seen, peer{ID: m.ID, RaftAddr: m.RaftAddr, RPCAddr: m.RPCAddr, HasState: m.HasState, Expect: m.Expect, ClusterID: m.ClusterID})
		}
	}
	n.mu.Unlock()
	plan, status := bootstrapPlan(n.o.NodeID, n.o.BootstrapExpect, seen)
	if plan != nil {
		if err := n.helloAll(plan, seen); err != nil {
			n.setBootstrapStatus("waiting to verify " + err.Error())
			return nil
		}
	}
	n.setBootstrapStatus(status)
	if plan == nil || !sameServers(plan, last) {
		return plan
	}
	n.log.Info("bootstrapping a new cluster", "node", n.o.NodeID, "voters", status)
	err := n.raft.BootstrapCluster(raft.Configuration{Servers: plan}).Error()
	if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		n.log.Error("bootstrap failed", "error", err)
	}
	return nil
}

// helloAll checks that every other server of a bootstrap plan answers its
// RPC with a certificate naming it (once per address).
func (n *Node) helloAll(plan []raft.Server, seen []peer) error {
	for _, s := range plan {
		id := string(s.ID)
		if id == n.o.NodeID {
			continue
		}
		var addr string
		for _, p := range seen {
			if p.ID == id {
				addr = p.RPCAddr
			}
		}
		n.mu.Lock()
		done := addr != "" && n.hellos[id] == addr
		n.mu.Unlock()
		if done {
			continue
		}
		if addr == "" {
			return fmt.Errorf("%s: no RPC address in gossip", id)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := n.rpcc.call(ctx, id, addr, rpcHello, struct{}{})
		cancel()
		if err == nil && r.NodeID != id {
			err = fmt.Errorf("it says it is %q", r.NodeID)
		}
		if err != nil {
			return fmt.Errorf("%s: %v", id, err)
		}
		n.mu.Lock()
		n.hellos[id] = addr
		n.mu.Unlock()
	}
	return nil
}

func (n *Node) setBootstrapStatus(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if s != n.bootstrap && s != "" {
		n.log.Info("cluster formation", "status", s)
	}
	n.bootstrap = s
}

// Bootstrap says what a node without Raft state is waiting for ("" once
// it is part of a cluster).
func (n *Node) Bootstrap() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bootstrap
}

// updateMeta changes this node's gossip metadata and re-advertises it
// when it changed.
func (n *Node) updateMeta(f func(*nodeMeta)) {
	n.mu.Lock()
	old := n.meta
	f(&n.meta)
	changed := n.meta != old
	n.mu.Unlock()
	if changed {
		_ = n.ml.UpdateNode(time.Second)
	}
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
	n.addrs[m.Name] = m.Address()
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
	delete(n.addrs, m.Name)
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
	n.updateMeta(func(m *nodeMeta) { m.ServerID, m.ServerUUID, m.Flavor = serverID, serverUUID, flavor })
}

// ReloadTLS reads the certificate, key and CA bundle again (SIGHUP): new
// connections use them at once, and live ones whose peer the new bundle
// refuses are closed.
func (n *Node) ReloadTLS() error {
	if n.o.TLS == nil {
		return nil
	}
	if err := n.o.TLS.Reload(); err != nil {
		return err
	}
	if !slices.Contains(n.o.TLS.Names(), n.o.NodeID) {
		n.log.Error("the reloaded certificate does not name this node; peers will refuse it", "names", n.o.TLS.Names(), "node", n.o.NodeID)
	}
	closed := n.layer.conns.closeRefused(n.o.TLS) + n.rpc.conns.closeRefused(n.o.TLS)
	n.rpcc.closeIdle()
	n.log.Info("cluster certificates reloaded", "connections_closed", closed)
	return nil
}

// Gossip states of a member, as GET /cluster shows them.
const (
	GossipAlive   = "alive"
	GossipFailed  = "failed"
	GossipLeft    = "left"
	GossipUnknown = "unknown"
)

// GossipState is what this node's gossip knows of a member: alive,
// failed, left, or unknown (never seen since this node started).
func (n *Node) GossipState(id string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if id == n.o.NodeID {
		return GossipAlive
	}
	if _, ok := n.metas[id]; ok {
		return GossipAlive
	}
	if _, ok := n.leftAt[id]; ok {
		return GossipLeft
	}
	if _, ok := n.deadSince[id]; ok {
		return GossipFailed
	}
	return GossipUnknown
}

// GossipMembers are the ids of the members gossip sees alive.
func (n *Node) GossipMembers() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := []string{n.o.NodeID}
	for id := range n.metas {
		if id != n.o.NodeID {
			out = append(out, id)
		}
	}
	return out
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
	if leave {
		_ = n.ml.Leave(2 * time.Second)
	}
	n.done.Wait()
	_ = n.ml.Shutdown()
	n.rpc.close()
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
