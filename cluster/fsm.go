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
	"github.com/myhoard/myhoard/wire"
)

// Member is one node of the cluster as the view records it.
type Member struct {
	ID         string    `json:"id"`
	APIAddr    string    `json:"api_addr"`
	RaftAddr   string    `json:"raft_addr"`
	RPCAddr    string    `json:"rpc_addr,omitempty"`
	GossipAddr string    `json:"gossip_addr"`
	ServerID   uint32    `json:"server_id,omitempty"`
	ServerUUID string    `json:"server_uuid,omitempty"`
	Flavor     string    `json:"flavor,omitempty"`
	MySQLAddr  string    `json:"mysql_address,omitempty"`
	Mode       string    `json:"mode,omitempty"`
	LastSeen   time.Time `json:"last_seen"`
	// Incarnation names the member's Raft state: it changes when the
	// member lost its Raft directory, and the leader then replaces the
	// member's stale entry in the Raft configuration.
	Incarnation string `json:"incarnation,omitempty"`
}

// Promotion is the start of an epoch: from StartIndex on, only NodeID
// writes StreamID. The view keeps it in the shape GET /cluster shows.
type Promotion = wire.Promotion

// View is the replicated cluster view (the FSM's state).
type View struct {
	// ClusterID names the cluster (set once by its first leader): gossip
	// members of another cluster are never added to this one.
	ClusterID string            `json:"cluster_id,omitempty"`
	Members   map[string]Member `json:"members"`
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
	out := View{ClusterID: v.ClusterID, Members: maps.Clone(v.Members), GTIDs: maps.Clone(v.GTIDs), External: maps.Clone(v.External),
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
	CmdInit        = "init"      // name the cluster (the first leader, once)
	CmdMember      = "member"    // upsert Member (the leader, from gossip)
	CmdRemove      = "remove"    // remove member ID
	CmdState       = "state"     // a node publishes its GTIDs, mode and liveness
	CmdExternal    = "external"  // PUT /replication_state
	CmdPromote     = "promote"   // compare-and-set the primary
	CmdPromotion   = "promotion" // record where an epoch began
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

// initRequest names a new cluster.
type initRequest struct {
	ClusterID string `json:"cluster_id"`
}

// ErrStaleEpoch is returned when a promotion's expected epoch is not the
// current one (someone else was promoted meanwhile).
var ErrStaleEpoch = errors.New("stale epoch")

// NewCommand encodes a typed command.
func NewCommand(typ string, v any) (Command, error) {
	if _, ok := applyFuncs[typ]; !ok {
		return Command{}, fmt.Errorf("encode %s command: unknown command type", typ)
	}
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

func (f *fsm) clusterID() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.view.ClusterID
}

// Apply applies one committed entry; a bad entry is an error result, the
// same on every node, so the views never diverge.
func (f *fsm) Apply(l *raft.Log) any {
	var c Command
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return applyResult{Err: fmt.Errorf("raft entry %d is not a command: %w", l.Index, err)}
	}
	apply, ok := applyFuncs[c.Type]
	if !ok {
		return applyResult{Err: fmt.Errorf("raft entry %d: unknown command type %q", l.Index, c.Type)}
	}
	f.mu.Lock()
	defer func() {
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}()
	res := apply(&f.view, c.Data)
	if res.Err != nil {
		res.Err = fmt.Errorf("%s command: %w", c.Type, res.Err)
	}
	return res
}

// applyFunc applies one command's payload to the view.
type applyFunc func(v *View, data json.RawMessage) applyResult

// applyFuncs has one typed function per command (read-only).
var applyFuncs = map[string]applyFunc{
	CmdInit:      typed(applyInit),
	CmdMember:    typed(applyMember),
	CmdRemove:    typed(applyRemove),
	CmdState:     typed(applyState),
	CmdExternal:  typed(applyExternal),
	CmdPromote:   typed(applyPromote),
	CmdPromotion: typed(applyPromotion),
}

// typed decodes a command's payload into its type before applying it.
func typed[T any](apply func(v *View, c T) applyResult) applyFunc {
	return func(v *View, data json.RawMessage) applyResult {
		var c T
		if err := json.Unmarshal(data, &c); err != nil {
			return applyResult{Epoch: v.Epoch, Err: fmt.Errorf("bad payload %.200s: %w", data, err)}
		}
		return apply(v, c)
	}
}

func result(v *View, err error) applyResult { return applyResult{Epoch: v.Epoch, Err: err} }

// applyInit names the cluster once; later inits change nothing.
func applyInit(v *View, c initRequest) applyResult {
	if c.ClusterID == "" {
		return result(v, errors.New("empty cluster id"))
	}
	if v.ClusterID == "" {
		v.ClusterID = c.ClusterID
	}
	return result(v, nil)
}

func applyMember(v *View, m Member) applyResult {
	if m.ID == "" {
		return result(v, errors.New("member without an id"))
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
	return result(v, nil)
}

func applyRemove(v *View, id string) applyResult {
	delete(v.Members, id)
	delete(v.GTIDs, id)
	return result(v, nil)
}

func applyState(v *View, s StateUpdate) applyResult {
	if s.NodeID == "" {
		return result(v, errors.New("state without a node id"))
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
	return result(v, nil)
}

func applyExternal(v *View, ext map[string]string) applyResult {
	v.External = ext
	if v.External == nil {
		v.External = map[string]string{}
	}
	return result(v, nil)
}

func applyPromote(v *View, p PromoteRequest) applyResult {
	if p.NodeID == "" {
		return result(v, errors.New("promotion without a node id"))
	}
	if p.ExpectedEpoch != v.Epoch {
		return result(v, fmt.Errorf("promote %s: expected epoch %d, but it is %d (primary %s): %w",
			p.NodeID, p.ExpectedEpoch, v.Epoch, v.Primary, ErrStaleEpoch))
	}
	v.Epoch++
	v.Primary = p.NodeID
	v.Promotions = append(v.Promotions, Promotion{Epoch: v.Epoch, NodeID: p.NodeID, At: p.At})
	return result(v, nil)
}

func applyPromotion(v *View, p Promotion) applyResult {
	if p.Epoch != v.Epoch || p.NodeID != v.Primary {
		return result(v, fmt.Errorf("promotion record of %s for epoch %d: the primary is %s at epoch %d: %w",
			p.NodeID, p.Epoch, v.Primary, v.Epoch, ErrStaleEpoch))
	}
	for i := range v.Promotions {
		if v.Promotions[i].Epoch == p.Epoch {
			v.Promotions[i].StreamID, v.Promotions[i].StartIndex, v.Promotions[i].GTIDs = p.StreamID, p.StartIndex, p.GTIDs
		}
	}
	return result(v, nil)
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
