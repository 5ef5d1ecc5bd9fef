package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

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
	// Index is the leader's applied index after a verification: a
	// follower whose view has applied it is current.
	Index uint64 `json:"index,omitempty"`
}

var errorCodes = map[string]error{"stale_epoch": ErrStaleEpoch, "not_primary": ErrNotPrimary, "not_leader": ErrNotLeader}

// PublishState publishes this node's state (through the leader).
func (n *Node) PublishState(ctx context.Context, s StateUpdate) error {
	_, err := n.apply(ctx, CmdState, s)
	return err
}

// SetExternal records the replication state reported by PUT
// /replication_state.
func (n *Node) SetExternal(ctx context.Context, states map[string]string) error {
	_, err := n.apply(ctx, CmdExternal, states)
	return err
}

// Promote is the compare-and-set on the epoch that makes p.NodeID the
// primary; it returns the new epoch (ErrStaleEpoch: someone else was
// promoted first).
func (n *Node) Promote(ctx context.Context, p PromoteRequest) (int64, error) {
	return n.apply(ctx, CmdPromote, p)
}

// RecordPromotion records where the current primary's epoch begins.
func (n *Node) RecordPromotion(ctx context.Context, p Promotion) error {
	_, err := n.apply(ctx, CmdPromotion, p)
	return err
}

// apply applies a command through the leader: here when this node leads,
// else forwarded to the leader's API. It returns the epoch after it.
func (n *Node) apply(ctx context.Context, typ string, v any) (int64, error) {
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
			if b := n.Bootstrap(); b != "" {
				return 0, fmt.Errorf("%w: the cluster is not formed yet (%s)", ErrNoLeader, b)
			}
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
	r, err := n.forwardReply(ctx, leaderID, path, body)
	return r.Epoch, err
}

// forwardReply sends a request to the leader's API: its address from the
// view, or from gossip when the view does not have it yet (a node that
// just started).
func (n *Node) forwardReply(ctx context.Context, leaderID, path string, body []byte) (forwardReply, error) {
	addr := n.fsm.snapshotView().Members[leaderID].APIAddr
	if addr == "" {
		n.mu.Lock()
		addr = n.metas[leaderID].APIAddr
		n.mu.Unlock()
	}
	if addr == "" || n.o.Forward == nil {
		return forwardReply{}, fmt.Errorf("%w (leader %s has no known API address)", ErrNoLeader, leaderID)
	}
	out, err := n.o.Forward(ctx, addr, path, body)
	if err != nil {
		return forwardReply{}, fmt.Errorf("forward to the leader %s at %s: %w", leaderID, addr, err)
	}
	var r forwardReply
	if err := json.Unmarshal(out, &r); err != nil {
		return forwardReply{}, fmt.Errorf("forward to the leader %s: bad answer %q", leaderID, bytes.TrimSpace(out))
	}
	if r.Error == "" {
		return r, nil
	}
	if sentinel, ok := errorCodes[r.Code]; ok {
		return r, fmt.Errorf("leader %s: %s: %w", leaderID, r.Error, sentinel)
	}
	return r, fmt.Errorf("leader %s: %s", leaderID, r.Error)
}

// HandleApply is the leader's side of /cluster/apply.
func (n *Node) HandleApply(body []byte) []byte {
	epoch, err := n.applyRaw(body)
	return reply(epoch, err)
}

func reply(epoch int64, err error) []byte {
	return replyWith(forwardReply{Epoch: epoch}, err)
}

func replyWith(r forwardReply, err error) []byte {
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

// verifyRequest is the body of /cluster/verify: check that NodeID is the
// primary at Epoch, or (NodeID empty) only that the leader leads.
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
	// cut off: it fails at once instead of waiting for a forward that
	// cannot succeed.
	if last := n.raft.LastContact(); time.Since(last) > n.lease() {
		return 0, fmt.Errorf("%w: no contact with leader %s for %v", ErrNoLeader, leaderID, time.Since(last).Round(time.Millisecond))
	}
	b, _ := json.Marshal(r)
	reply, err := n.forwardReply(ctx, string(leaderID), "/cluster/verify", b)
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

// HandleVerify is the leader's side of /cluster/verify.
func (n *Node) HandleVerify(body []byte) []byte {
	var r verifyRequest
	if err := json.Unmarshal(body, &r); err != nil {
		return reply(0, fmt.Errorf("bad verify request: %w", err))
	}
	if n.raft.State() != raft.Leader {
		return reply(0, ErrNotLeader)
	}
	index, err := n.verifyLocal(r)
	return replyWith(forwardReply{Epoch: r.Epoch, Index: index}, err)
}
