package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Member is one node of the cluster as the view records it.
type Member struct {
	ID         string    `json:"id"`
	APIAddr    string    `json:"api_addr"`
	RaftAddr   string    `json:"raft_addr"`
	GossipAddr string    `json:"gossip_addr"`
	ServerID   uint32    `json:"server_id,omitempty"`
	ServerUUID string    `json:"server_uuid,omitempty"`
	Flavor     string    `json:"flavor,omitempty"`
	MySQLAddr  string    `json:"mysql_address,omitempty"`
	Mode       string    `json:"mode,omitempty"`
	LastSeen   time.Time `json:"last_seen"`
}

// Promotion is the start of an epoch: from StartIndex on, only NodeID
// writes StreamID.
type Promotion struct {
	Epoch      int64     `json:"epoch"`
	NodeID     string    `json:"node_id"`
	StreamID   string    `json:"stream_id,omitempty"`
	StartIndex int64     `json:"start_index,omitempty"`
	GTIDs      string    `json:"gtids,omitempty"`
	At         time.Time `json:"at"`
}

// View is the replicated cluster view (the FSM's state).
type View struct {
	Members map[string]Member `json:"members"`
	// GTIDs is each node's executed GTID set as it published it, plus
	// the servers reported through PUT /replication_state (External).
	GTIDs    map[string]string `json:"gtids"`
	External map[string]string `json:"external"`
	Primary  string            `json:"primary"`
	Epoch    int64             `json:"epoch"`
	// Promotions are the starts of every epoch, oldest first.
	Promotions []Promotion `json:"promotions"`
}

func (v View) clone() View {
	out := View{Members: maps.Clone(v.Members), GTIDs: maps.Clone(v.GTIDs), External: maps.Clone(v.External),
		Primary: v.Primary, Epoch: v.Epoch, Promotions: append([]Promotion(nil), v.Promotions...)}
	if out.Members == nil {
		out.Members = map[string]Member{}
	}
	if out.GTIDs == nil {
		out.GTIDs = map[string]string{}
	}
	if out.External == nil {
		out.External = map[string]string{}
	}
	return out
}

// MemberIDs are the members' ids, sorted.
func (v View) MemberIDs() []string {
	ids := make([]string, 0, len(v.Members))
	for id := range v.Members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// The command types. New types get new names; an FSM that does not know a
// type rejects the entry with an error (all nodes run the same version in
// a rolling upgrade's window only briefly, and the entry is never lost).
const (
	CmdMember      = "member"    // upsert Member (the leader, from gossip)
	CmdRemove      = "remove"    // remove member ID
	CmdState       = "state"     // a node publishes its GTIDs, mode and liveness
	CmdExternal    = "external"  // PUT /replication_state
	CmdPromote     = "promote"   // compare-and-set the primary
	CmdPromotion   = "promotion" // record where an epoch began
	CmdNoop        = "noop"      // a write to prove leadership in this term
	snapshotFormat = 1
)

// Command is one Raft log entry.
type Command struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// StateUpdate is what a node publishes about itself.
type StateUpdate struct {
	NodeID string    `json:"node_id"`
	GTIDs  string    `json:"gtids"`
	Mode   string    `json:"mode"`
	At     time.Time `json:"at"`
}

// PromoteRequest asks to make NodeID the primary, if the epoch is still
// ExpectedEpoch.
type PromoteRequest struct {
	NodeID        string    `json:"node_id"`
	ExpectedEpoch int64     `json:"expected_epoch"`
	At            time.Time `json:"at"`
}

// ErrStaleEpoch is returned when a promotion's expected epoch is not the
// current one (someone else was promoted meanwhile).
var ErrStaleEpoch = errors.New("stale epoch")

// NewCommand encodes a typed command.
func NewCommand(typ string, v any) (Command, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return Command{}, fmt.Errorf("encode %s command: %w", typ, err)
	}
	return Command{Type: typ, Data: data}, nil
}

// applyResult is what FSM.Apply returns for one entry.
type applyResult struct {
	Epoch int64
	Err   error
}

type fsm struct {
	mu   sync.RWMutex
	view View
	// changed is closed and replaced after every applied entry.
	changed chan struct{}
}

func newFSM() *fsm {
	return &fsm{view: View{}.clone(), changed: make(chan struct{})}
}

func (f *fsm) snapshotView() View {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.view.clone()
}

// Apply applies one committed entry; a bad entry is an error result, the
// same on every node, so the views never diverge.
func (f *fsm) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return applyResult{Err: fmt.Errorf("raft entry %d is not a command: %w", l.Index, err)}
	}
	f.mu.Lock()
	defer func() {
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}()
	return f.applyLocked(c)
}

func (f *fsm) applyLocked(c Command) applyResult {
	v := &f.view
	bad := func(err error) applyResult { return applyResult{Err: fmt.Errorf("%s command: %w", c.Type, err)} }
	switch c.Type {
	case CmdNoop:
	case CmdMember:
		var m Member
		if err := json.Unmarshal(c.Data, &m); err != nil || m.ID == "" {
			return bad(fmt.Errorf("bad member %s: %v", c.Data, err))
		}
		if old, ok := v.Members[m.ID]; ok {
			if m.Mode == "" {
				m.Mode = old.Mode
			}
			if m.LastSeen.Before(old.LastSeen) {
				m.LastSeen = old.LastSeen
			}
		}
		v.Members[m.ID] = m
	case CmdRemove:
		var id string
		if err := json.Unmarshal(c.Data, &id); err != nil {
			return bad(err)
		}
		delete(v.Members, id)
		delete(v.GTIDs, id)
	case CmdState:
		var s StateUpdate
		if err := json.Unmarshal(c.Data, &s); err != nil || s.NodeID == "" {
			return bad(fmt.Errorf("bad state %s: %v", c.Data, err))
		}
		m := v.Members[s.NodeID]
		m.ID = s.NodeID
		if s.Mode != "" {
			m.Mode = s.Mode
		}
		if s.At.After(m.LastSeen) {
			m.LastSeen = s.At
		}
		v.Members[s.NodeID] = m
		if s.GTIDs != "" || v.GTIDs[s.NodeID] == "" {
			v.GTIDs[s.NodeID] = s.GTIDs
		}
	case CmdExternal:
		var ext map[string]string
		if err := json.Unmarshal(c.Data, &ext); err != nil {
			return bad(err)
		}
		v.External = ext
	case CmdPromote:
		var p PromoteRequest
		if err := json.Unmarshal(c.Data, &p); err != nil || p.NodeID == "" {
			return bad(fmt.Errorf("bad promotion %s: %v", c.Data, err))
		}
		if p.ExpectedEpoch != v.Epoch {
			return applyResult{Epoch: v.Epoch, Err: fmt.Errorf("promote %s: expected epoch %d, but it is %d (primary %s): %w",
				p.NodeID, p.ExpectedEpoch, v.Epoch, v.Primary, ErrStaleEpoch)}
		}
		v.Epoch++
		v.Primary = p.NodeID
		v.Promotions = append(v.Promotions, Promotion{Epoch: v.Epoch, NodeID: p.NodeID, At: p.At})
		return applyResult{Epoch: v.Epoch}
	case CmdPromotion:
		var p Promotion
		if err := json.Unmarshal(c.Data, &p); err != nil {
			return bad(err)
		}
		if p.Epoch != v.Epoch || p.NodeID != v.Primary {
			return applyResult{Epoch: v.Epoch, Err: fmt.Errorf("promotion record of %s for epoch %d: the primary is %s at epoch %d: %w",
				p.NodeID, p.Epoch, v.Primary, v.Epoch, ErrStaleEpoch)}
		}
		for i := range v.Promotions {
			if v.Promotions[i].Epoch == p.Epoch {
				v.Promotions[i].StreamID, v.Promotions[i].StartIndex, v.Promotions[i].GTIDs = p.StreamID, p.StartIndex, p.GTIDs
			}
		}
	default:
		return bad(errors.New("unknown command type"))
	}
	return applyResult{Epoch: v.Epoch}
}

// snapshotDoc is the versioned snapshot format.
type snapshotDoc struct {
	Format int  `json:"format"`
	View   View `json:"view"`
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{doc: snapshotDoc{Format: snapshotFormat, View: f.snapshotView()}}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var doc snapshotDoc
	if err := json.NewDecoder(rc).Decode(&doc); err != nil {
		return fmt.Errorf("restore cluster snapshot: %w", err)
	}
	if doc.Format != snapshotFormat {
		return fmt.Errorf("restore cluster snapshot: format %d, this version reads %d", doc.Format, snapshotFormat)
	}
	f.mu.Lock()
	f.view = doc.View.clone()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	return nil
}

type fsmSnapshot struct{ doc snapshotDoc }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.doc); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist cluster snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
