package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/raft"

	"github.com/myhoard/myhoard/mysql"
)

// The typed writes a node makes. Each runs on the leader (here, or over
// the RPC) and is validated there before it reaches Raft.

// PublishState publishes this node's state.
func (n *Node) PublishState(ctx context.Context, s StateUpdate) error {
	_, err := n.callLeader(ctx, rpcState, s, func() (rpcReply, error) { return n.onState(self, s) })
	return err
}

// SetExternal records the replication state reported by PUT
// /replication_state.
func (n *Node) SetExternal(ctx context.Context, states map[string]string) error {
	_, err := n.callLeader(ctx, rpcExternal, states, func() (rpcReply, error) { return n.onExternal(self, states) })
	return err
}

// Promote is the compare-and-set on the epoch that makes this node the
// primary; it returns the new epoch (ErrStaleEpoch: someone else was
// promoted first).
func (n *Node) Promote(ctx context.Context, p PromoteRequest) (int64, error) {
	r, err := n.callLeader(ctx, rpcPromote, p, func() (rpcReply, error) { return n.onPromote(self, p) })
	return r.Epoch, err
}

// RecordPromotion records where this node's epoch begins.
func (n *Node) RecordPromotion(ctx context.Context, p Promotion) error {
	_, err := n.callLeader(ctx, rpcPromotion, p, func() (rpcReply, error) { return n.onPromotion(self, p) })
	return err
}

// EnsureMember returns once the view has this node's member record,
// asking the leader to add it when it is missing (right after formation
// the record may not be written yet).
func (n *Node) EnsureMember(ctx context.Context) error {
	for {
		if _, ok := n.fsm.snapshotView().Members[n.o.NodeID]; ok {
			return nil
		}
		if err := n.join(ctx); err != nil {
			return fmt.Errorf("join the cluster: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("this node is not a member of the cluster view yet: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// join asks the leader to add this node (or to update its record).
func (n *Node) join(ctx context.Context) error {
	n.mu.Lock()
	m := n.meta
	n.mu.Unlock()
	j := JoinRequest{NodeID: m.ID, RaftAddr: m.RaftAddr, RPCAddr: m.RPCAddr, APIAddr: m.APIAddr, Incarnation: m.Incarnation,
		ServerID: m.ServerID, ServerUUID: m.ServerUUID, Flavor: m.Flavor, MySQLAddr: m.MySQLAddr}
	if _, leader := n.raft.LeaderWithID(); leader != "" || n.raft.State() == raft.Leader {
		_, err := n.callLeader(ctx, rpcJoin, j, func() (rpcReply, error) { return n.onJoin(self, j) })
		return err
	}
	// Not in the cluster yet: ask the members with Raft state; one that is
	// not the leader names it.
	n.mu.Lock()
	var asks [][2]string
	for id, meta := range n.metas {
		if id != n.o.NodeID && meta.HasState && meta.RPCAddr != "" {
			asks = append(asks, [2]string{id, meta.RPCAddr})
		}
	}
	n.mu.Unlock()
	err := fmt.Errorf("%w: no member with Raft state to ask", ErrNoLeader)
	for _, a := range asks {
		var r rpcReply
		r, err = n.rpcc.call(ctx, a[0], a[1], rpcJoin, j)
		if errors.Is(err, ErrNotLeader) && r.Leader != "" && r.LeaderRPC != "" {
			_, err = n.rpcc.call(ctx, r.Leader, r.LeaderRPC, rpcJoin, j)
		}
		if err == nil {
			return nil
		}
	}
	return err
}

// The leader's side of each request.

var incarnationRe = regexp.MustCompile(`^[0-9a-f]{1,64}$`)

// onJoin records a member that proved who it is (its certificate names
// the node id it joins as); the reconcile adds it to Raft.
func (n *Node) onJoin(who caller, j JoinRequest) (rpcReply, error) {
	if err := validNodeID(j.NodeID); err != nil {
		return rpcReply{}, err
	}
	if err := who.is(j.NodeID); err != nil {
		return rpcReply{}, err
	}
	for _, a := range []struct {
		what, addr string
		optional   bool
	}{{"raft_addr", j.RaftAddr, false}, {"rpc_addr", j.RPCAddr, false}, {"api_addr", j.APIAddr, true}, {"mysql_address", j.MySQLAddr, true}} {
		if err := validAddr(a.what, a.addr, a.optional); err != nil {
			return rpcReply{}, err
		}
	}
	if !incarnationRe.MatchString(j.Incarnation) {
		return rpcReply{}, badRequest("incarnation %q: want 1 to 64 hex digits", j.Incarnation)
	}
	if _, err := mysql.ParseFlavor(j.Flavor); err != nil && j.Flavor != "" {
		return rpcReply{}, badRequest("flavor %q", j.Flavor)
	}
	if err := validText("server_uuid", j.ServerUUID, 64); err != nil {
		return rpcReply{}, err
	}
	if n.raft.State() != raft.Leader {
		return rpcReply{}, ErrNotLeader
	}
	n.mu.Lock()
	changed := n.proven[j.NodeID] != j
	n.proven[j.NodeID] = j
	n.mu.Unlock()
	if changed {
		n.log.Info("member proved its identity", "node", j.NodeID, "raft", j.RaftAddr, "rpc", j.RPCAddr)
		n.wake()
	}
	return rpcReply{Epoch: n.fsm.snapshotView().Epoch}, nil
}

func (n *Node) onState(who caller, s StateUpdate) (rpcReply, error) {
	if err := who.is(s.NodeID); err != nil {
		return rpcReply{}, err
	}
	view := n.fsm.snapshotView()
	m, ok := view.Members[s.NodeID]
	if !ok {
		return rpcReply{}, badRequest("node %q is not a member", s.NodeID)
	}
	if !validModes[s.Mode] {
		return rpcReply{}, badRequest("mode %q", s.Mode)
	}
	if err := validGTIDs("gtids", m.Flavor, s.GTIDs); err != nil {
		return rpcReply{}, err
	}
	return n.applyLocal(CmdState, s)
}

// maxExternal bounds PUT /replication_state's servers.
const maxExternal = 1000

func (n *Node) onExternal(who caller, ext map[string]string) (rpcReply, error) {
	if len(ext) > maxExternal {
		return rpcReply{}, badRequest("%d servers, more than %d", len(ext), maxExternal)
	}
	for name, set := range ext {
		if err := validText("server name", name, 255); err != nil {
			return rpcReply{}, err
		}
		if err := validGTIDs("GTIDs of "+name, "", set); err != nil {
			return rpcReply{}, err
		}
	}
	return n.applyLocal(CmdExternal, ext)
}

func (n *Node) onPromote(who caller, p PromoteRequest) (rpcReply, error) {
	if err := who.is(p.NodeID); err != nil {
		return rpcReply{}, err
	}
	if _, ok := n.fsm.snapshotView().Members[p.NodeID]; !ok {
		return rpcReply{}, badRequest("node %q is not a member", p.NodeID)
	}
	if p.ExpectedEpoch < 0 {
		return rpcReply{}, badRequest("expected_epoch %d", p.ExpectedEpoch)
	}
	return n.applyLocal(CmdPromote, p)
}

var streamIDRe = regexp.MustCompile(`^[0-9A-Za-z._-]{1,128}$`)

func (n *Node) onPromotion(who caller, p Promotion) (rpcReply, error) {
	if err := who.is(p.NodeID); err != nil {
		return rpcReply{}, err
	}
	m, ok := n.fsm.snapshotView().Members[p.NodeID]
	if !ok {
		return rpcReply{}, badRequest("node %q is not a member", p.NodeID)
	}
	if p.StartIndex < 1 || p.Epoch < 1 || !streamIDRe.MatchString(p.StreamID) {
		return rpcReply{}, badRequest("promotion record: epoch %d, stream %q, start index %d", p.Epoch, p.StreamID, p.StartIndex)
	}
	if err := validGTIDs("gtids", m.Flavor, p.GTIDs); err != nil {
		return rpcReply{}, err
	}
	return n.applyLocal(CmdPromotion, p)
}

func (n *Node) onVerify(_ caller, r verifyRequest) (rpcReply, error) {
	if n.raft.State() != raft.Leader {
		return rpcReply{}, ErrNotLeader
	}
	index, err := n.verifyLocal(r)
	return rpcReply{Epoch: r.Epoch, Index: index}, err
}

// maxGTIDText bounds a GTID set's text.
const maxGTIDText = 64 << 10

// validGTIDs checks a GTID set's text (of the flavor, or of either when
// the flavor is not known).
func validGTIDs(what, flavor, text string) error {
	if err := validText(what, text, maxGTIDText); err != nil {
		return err
	}
	if text == "" {
		return nil
	}
	flavors := []mysql.Flavor{mysql.FlavorMariaDB, mysql.FlavorMySQL}
	if f, err := mysql.ParseFlavor(flavor); err == nil && f != mysql.FlavorAuto {
		flavors = []mysql.Flavor{f}
	}
	var last error
	for _, f := range flavors {
		if _, err := mysql.ParseGTIDSet(f, text); err == nil {
			return nil
		} else {
			last = err
		}
	}
	return badRequest("%s: %v", what, last)
}

// applyLocal applies a command on this node, which must be the leader.
func (n *Node) applyLocal(typ string, v any) (rpcReply, error) {
	c, err := NewCommand(typ, v)
	if err != nil {
		return rpcReply{}, err
	}
	b, _ := json.Marshal(c)
	if n.raft.State() != raft.Leader {
		return rpcReply{}, ErrNotLeader
	}
	f := n.raft.Apply(b, 10*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return rpcReply{}, fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return rpcReply{}, err
	}
	res, _ := f.Response().(applyResult)
	return rpcReply{Epoch: res.Epoch}, res.Err
}

// verifyRequest: check that NodeID is the primary at Epoch, or (NodeID
// empty) only that the leader leads.
type verifyRequest struct {
	NodeID string `json:"node_id"`
	Epoch  int64  `json:"epoch"`
}

// VerifyPrimary is a linearizable check that nodeID is the primary at
// epoch: the leader proves its leadership to a quorum first, so a node cut
// off from the quorum always fails it.
func (n *Node) VerifyPrimary(ctx context.Context, nodeID string, epoch int64) error {
	_, err := n.verify(ctx, verifyRequest{NodeID: nodeID, Epoch: epoch})
	return err
}

// CatchUp is a read barrier: it returns once this node's view holds
// everything the leader had applied when asked, so that what the view
// says next is current (a restarted node replays an old view first).
func (n *Node) CatchUp(ctx context.Context) error {
	for attempt := 0; ; attempt++ {
		_, leaderID := n.raft.LeaderWithID()
		if leaderID != "" || n.raft.State() == raft.Leader {
			break
		}
		if attempt >= 50 {
			if b := n.Bootstrap(); b != "" {
				return fmt.Errorf("%w: the cluster is not formed yet (%s)", ErrNoLeader, b)
			}
			return ErrNoLeader
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	index, err := n.verify(ctx, verifyRequest{})
	if err != nil {
		return err
	}
	for n.raft.AppliedIndex() < index {
		select {
		case <-ctx.Done():
			return fmt.Errorf("catch up with the leader's view (applied %d of %d): %w", n.raft.AppliedIndex(), index, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

// verify runs a verification on the leader and returns its applied index.
func (n *Node) verify(ctx context.Context, r verifyRequest) (uint64, error) {
	if n.raft.State() == raft.Leader {
		return n.verifyLocal(r)
	}
	_, leaderID := n.raft.LeaderWithID()
	if leaderID == "" {
		return 0, ErrNoLeader
	}
	// A follower that has not heard from the leader within a lease is
	// cut off: it fails at once instead of waiting for a call that
	// cannot succeed.
	if last := n.raft.LastContact(); time.Since(last) > n.lease() {
		return 0, fmt.Errorf("%w: no contact with leader %s for %v", ErrNoLeader, leaderID, time.Since(last).Round(time.Millisecond))
	}
	addr := n.rpcAddrOf(string(leaderID))
	if addr == "" {
		return 0, fmt.Errorf("%w (leader %s has no known RPC address)", ErrNoLeader, leaderID)
	}
	reply, err := n.rpcc.call(ctx, string(leaderID), addr, rpcVerify, r)
	return reply.Index, err
}

// lease is how long a follower trusts a leader it has not heard from.
func (n *Node) lease() time.Duration {
	if n.o.Timing.Local {
		return time.Second
	}
	return 2 * time.Second
}

// verifyLocal is the leader's side of a verification: leadership proven
// to a quorum, everything committed applied, then the view checked.
func (n *Node) verifyLocal(r verifyRequest) (uint64, error) {
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	if err := n.raft.Barrier(raftTimeout).Error(); err != nil {
		return 0, err
	}
	index := n.raft.AppliedIndex()
	if r.NodeID == "" {
		return index, nil
	}
	v := n.fsm.snapshotView()
	if v.Primary != r.NodeID || v.Epoch != r.Epoch {
		return index, fmt.Errorf("%s at epoch %d: the primary is %q at epoch %d: %w", r.NodeID, r.Epoch, v.Primary, v.Epoch, ErrNotPrimary)
	}
	return index, nil
}
