package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/myhoard/myhoard/mysql"
)

// primaryStaleAfter: a primary that gossip has no news of (this node
// started after it died) counts as alive while it published its state
// this recently.
const primaryStaleAfter = 15 * time.Second

// PrimaryAlive says whether the view's primary is alive as far as this
// node can tell, and why (a promotion without force needs it dead).
func (n *Node) PrimaryAlive(view View) (bool, string) {
	switch st := n.GossipState(view.Primary); st {
	case GossipAlive:
		return true, "gossip sees it alive"
	case GossipFailed, GossipLeft:
		return false, "gossip marks it " + st
	default:
		seen := view.Members[view.Primary].LastSeen
		if age := time.Since(seen); age < primaryStaleAfter {
			return true, fmt.Sprintf("gossip has no news of it, but it published its state %v ago", age.Round(time.Second))
		}
		return false, "gossip has no news of it"
	}
}

// ClaimPrimary makes this node the primary (a compare-and-set on the
// epoch of view) and returns the new epoch; ErrStaleEpoch when another
// node was promoted first. When view already names this node, the leader
// confirms it instead (a repeated request, or one whose daemon died
// before taking up the role). When the outcome is unknown (the leader
// changed while the request was in flight) it watches the view for a few
// seconds: the compare-and-set may have committed.
func (n *Node) ClaimPrimary(ctx context.Context, view View) (int64, error) {
	self := n.o.NodeID
	if view.Primary == self {
		if err := n.VerifyPrimary(ctx, self, view.Epoch); err != nil {
			return 0, fmt.Errorf("this node's view names it the primary at epoch %d, but the leader does not confirm it (%w); try again", view.Epoch, err)
		}
		return view.Epoch, nil
	}
	epoch, err := n.Promote(ctx, PromoteRequest{NodeID: self, ExpectedEpoch: view.Epoch, At: time.Now().UTC()})
	if err == nil || errors.Is(err, ErrStaleEpoch) {
		return epoch, err
	}
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if v := n.View(); v.Epoch > view.Epoch {
			if v.Primary == self && n.VerifyPrimary(ctx, self, v.Epoch) == nil {
				n.log.Info("the promotion committed although its answer was lost", "epoch", v.Epoch, "error", err)
				return v.Epoch, nil
			}
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return 0, fmt.Errorf("promote %s at epoch %d: %w", self, view.Epoch+1, err)
}

// WriterGate is the check before every object that adds to or ends a
// backup stream: a linearizable confirmation, through the leader, that
// this node is still the primary at epoch (bounded to 5 s a call).
func (n *Node) WriterGate(epoch int64) func(context.Context) error {
	return func(ctx context.Context) error {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return n.VerifyPrimary(gctx, n.o.NodeID, epoch)
	}
}

// ReplicationStates are the executed GTID sets of the view's other
// members and of the servers reported through PUT /replication_state, in
// the form the binlog purge rules read. A member whose position is not
// known yet gets an empty state, which blocks purging.
func (v View) ReplicationStates(flavor mysql.Flavor, self string) map[string]mysql.ReplicationState {
	out := map[string]mysql.ReplicationState{}
	add := func(name, text string) {
		set, err := mysql.ParseGTIDSet(flavor, text)
		if err == nil {
			out[name] = set.ReplicationState()
		}
	}
	for id := range v.Members {
		if id != self {
			add(id, v.GTIDs[id])
		}
	}
	for name, text := range v.External {
		add(name, text)
	}
	return out
}

// publishEvery is how often a node publishes its state when nothing
// changed (members' LastSeen is its liveness for a new node's decision).
const publishEvery = 5 * time.Second

// PublishIfChanged publishes this node's executed GTIDs and mode when they
// changed since the last publication, and at least every publishEvery.
func (n *Node) PublishIfChanged(ctx context.Context, gtids, mode string) error {
	now := time.Now().UTC()
	state := gtids + "|" + mode
	n.mu.Lock()
	same := state == n.published && now.Sub(n.publishedAt) < publishEvery
	n.mu.Unlock()
	if same {
		return nil
	}
	if err := n.PublishState(ctx, StateUpdate{NodeID: n.o.NodeID, GTIDs: gtids, Mode: mode, At: now}); err != nil {
		return err
	}
	n.mu.Lock()
	n.published, n.publishedAt = state, now
	n.mu.Unlock()
	return nil
}
