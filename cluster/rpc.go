package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/myhoard/myhoard/tlsconfig"
)

// The node-to-node RPC: typed requests over HTTP on cluster.rpc_address,
// behind mutual TLS (the caller presents a certificate of the cluster's
// CA that names its node id). Every request is validated before anything
// reaches Raft: a node can only join as itself, publish its own state and
// claim the primary role for itself; membership records and removals are
// written by the leader alone, from what members proved.
const (
	rpcJoin      = "/v1/join"      // JoinRequest: add me (the caller) to the cluster
	rpcState     = "/v1/state"     // StateUpdate: my GTIDs, mode, liveness
	rpcExternal  = "/v1/external"  // map: PUT /replication_state
	rpcPromote   = "/v1/promote"   // PromoteRequest: make me the primary
	rpcPromotion = "/v1/promotion" // Promotion: where my epoch begins
	rpcVerify    = "/v1/verify"    // verifyRequest: writer gate / read barrier
	rpcHello     = "/v1/hello"     // who are you (bootstrap: prove a peer)
)

// maxRPCBody bounds a request body.
const maxRPCBody = 256 << 10

// JoinRequest is what a node says about itself to be added to the
// cluster (and again whenever it changes).
type JoinRequest struct {
	NodeID      string `json:"node_id"`
	RaftAddr    string `json:"raft_addr"`
	RPCAddr     string `json:"rpc_addr"`
	APIAddr     string `json:"api_addr"`
	Incarnation string `json:"incarnation"`
	ServerID    uint32 `json:"server_id,omitempty"`
	ServerUUID  string `json:"server_uuid,omitempty"`
	Flavor      string `json:"flavor,omitempty"`
	MySQLAddr   string `json:"mysql_address,omitempty"`
}

// rpcReply is every RPC's answer.
type rpcReply struct {
	Epoch int64 `json:"epoch"`
	// Index is the leader's applied index after a verification: a
	// follower whose view has applied it is current.
	Index   uint64 `json:"index,omitempty"`
	Message string `json:"message,omitempty"`
	// Code names the sentinel an error wraps, so that errors.Is works
	// across the hop.
	Code string `json:"code,omitempty"`
	// NodeID and Incarnation answer hello.
	NodeID      string `json:"node_id,omitempty"`
	Incarnation string `json:"incarnation,omitempty"`
	// Leader and LeaderRPC name the leader when the answer is not_leader.
	Leader    string `json:"leader,omitempty"`
	LeaderRPC string `json:"leader_rpc,omitempty"`
}

// Errors of the RPC.
var (
	// ErrForbidden: the caller's certificate does not name the node it
	// speaks for.
	ErrForbidden = errors.New("forbidden")
	// ErrBadRequest: the request does not validate.
	ErrBadRequest = errors.New("bad request")
)

var errorCodes = map[string]error{"stale_epoch": ErrStaleEpoch, "not_primary": ErrNotPrimary, "not_leader": ErrNotLeader,
	"no_leader": ErrNoLeader, "forbidden": ErrForbidden, "bad_request": ErrBadRequest}

func codeOf(err error) (string, int) {
	for _, c := range []struct {
		code   string
		status int
	}{{"forbidden", http.StatusForbidden}, {"bad_request", http.StatusBadRequest}, {"stale_epoch", http.StatusConflict},
		{"not_primary", http.StatusConflict}, {"not_leader", http.StatusMisdirectedRequest}, {"no_leader", http.StatusServiceUnavailable}} {
		if errors.Is(err, errorCodes[c.code]) {
			return c.code, c.status
		}
	}
	return "", http.StatusInternalServerError
}

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

// caller is who sent a request: the node ids its certificate names, or
// trusted (this node itself, or a cluster without TLS).
type caller struct {
	names   []string
	trusted bool
}

var self = caller{trusted: true}

func (c caller) is(id string) error {
	if c.trusted || slices.Contains(c.names, id) {
		return nil
	}
	return fmt.Errorf("%w: the caller's certificate names %v, not %q", ErrForbidden, c.names, id)
}

// rpcServer serves the RPC on cluster.rpc_address.
type rpcServer struct {
	srv   *http.Server
	ln    net.Listener
	conns *connSet
	done  chan struct{}
}

func (n *Node) startRPC() error {
	ln, err := net.Listen("tcp", n.o.RPCAddr)
	if err != nil {
		return fmt.Errorf("listen on cluster.rpc_address %s: %w", n.o.RPCAddr, err)
	}
	s := &rpcServer{ln: ln, conns: newConnSet(), done: make(chan struct{})}
	mux := http.NewServeMux()
	route := func(path string, h func(caller, []byte) (rpcReply, error)) {
		mux.HandleFunc("POST "+path, func(w http.ResponseWriter, r *http.Request) {
			who := caller{trusted: n.o.TLS == nil}
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				who.names = tlsconfig.NodeIDs(r.TLS.PeerCertificates[0])
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, maxRPCBody+1))
			if err == nil && len(body) > maxRPCBody {
				err = badRequest("body over %d bytes", maxRPCBody)
			}
			var rep rpcReply
			if err == nil {
				rep, err = h(who, body)
			}
			status := http.StatusOK
			if err != nil {
				rep.Message = err.Error()
				rep.Code, status = codeOf(err)
			}
			if errors.Is(err, ErrNotLeader) {
				if _, id := n.raft.LeaderWithID(); id != "" {
					rep.Leader, rep.LeaderRPC = string(id), n.rpcAddrOf(string(id))
				}
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(rep)
		})
	}
	route(rpcJoin, decoded(n.onJoin))
	route(rpcState, decoded(n.onState))
	route(rpcExternal, decoded(n.onExternal))
	route(rpcPromote, decoded(n.onPromote))
	route(rpcPromotion, decoded(n.onPromotion))
	route(rpcVerify, decoded(n.onVerify))
	route(rpcHello, func(caller, []byte) (rpcReply, error) {
		n.mu.Lock()
		defer n.mu.Unlock()
		return rpcReply{NodeID: n.o.NodeID, Incarnation: n.meta.Incarnation}, nil
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(n.log.Handler(), slog.LevelDebug)}
	if n.o.TLS != nil {
		cfg := n.o.TLS.MutualServer()
		s.srv.ConnState = func(c net.Conn, st http.ConnState) {
			tc, ok := c.(*tls.Conn)
			switch {
			case !ok:
			case st == http.StateNew:
				s.conns.add(tc, x509.ExtKeyUsageClientAuth)
			case st == http.StateClosed || st == http.StateHijacked:
				s.conns.remove(tc)
			}
		}
		ln = tls.NewListener(ln, cfg)
	}
	n.rpc = s
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("cluster RPC server failed", "addr", n.o.RPCAddr, "error", err)
		}
	}()
	return nil
}

func (s *rpcServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	<-s.done
}

// decoded decodes a request body (unknown fields refused) for a handler.
func decoded[T any](h func(caller, T) (rpcReply, error)) func(caller, []byte) (rpcReply, error) {
	return func(who caller, body []byte) (rpcReply, error) {
		var v T
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			return rpcReply{}, badRequest("%v", err)
		}
		return h(who, v)
	}
}

// rpcClient calls other nodes' RPC.
type rpcClient struct {
	http   *http.Client
	scheme string
	tls    *tlsconfig.Store
}

func newRPCClient(store *tlsconfig.Store) *rpcClient {
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second, TLSHandshakeTimeout: 10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second}
	c := &rpcClient{http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, scheme: "http", tls: store}
	if store != nil {
		tr.TLSClientConfig = store.MutualClient()
		c.scheme = "https"
	}
	return c
}

func (c *rpcClient) closeIdle() {
	if tr, ok := c.http.Transport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}

// call sends a request to the node id at addr; with TLS the answer counts
// only when the answering certificate names id.
func (c *rpcClient) call(ctx context.Context, id, addr, path string, req any) (rpcReply, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return rpcReply{}, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.scheme+"://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return rpcReply{}, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		return rpcReply{}, fmt.Errorf("%s at %s: %w", id, addr, err)
	}
	defer resp.Body.Close()
	if c.tls != nil && (resp.TLS == nil || len(resp.TLS.PeerCertificates) == 0 || !tlsconfig.Names(resp.TLS.PeerCertificates[0], id)) {
		var names []string
		if resp.TLS != nil && len(resp.TLS.PeerCertificates) > 0 {
			names = tlsconfig.NodeIDs(resp.TLS.PeerCertificates[0])
		}
		return rpcReply{}, fmt.Errorf("%w: %s answered with a certificate for %v, not %s", ErrForbidden, addr, names, id)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxRPCBody))
	if err != nil {
		return rpcReply{}, fmt.Errorf("%s at %s: %w", id, addr, err)
	}
	var r rpcReply
	if err := json.Unmarshal(raw, &r); err != nil {
		return rpcReply{}, fmt.Errorf("%s at %s: HTTP %d, bad answer %q", id, addr, resp.StatusCode, bytes.TrimSpace(raw))
	}
	if resp.StatusCode == http.StatusOK {
		return r, nil
	}
	if sentinel, ok := errorCodes[r.Code]; ok {
		return r, fmt.Errorf("%s: %s: %w", id, r.Message, sentinel)
	}
	return r, fmt.Errorf("%s: HTTP %d: %s", id, resp.StatusCode, r.Message)
}

// rpcAddrOf is a member's RPC address: from the view, else from gossip
// (a node that just started, or one not in the view yet).
func (n *Node) rpcAddrOf(id string) string {
	if a := n.fsm.snapshotView().Members[id].RPCAddr; a != "" {
		return a
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.metas[id].RPCAddr
}

// callLeader runs a request on the leader: here when this node leads,
// else over the RPC. It waits up to 5 s for a leader.
func (n *Node) callLeader(ctx context.Context, path string, req any, local func() (rpcReply, error)) (rpcReply, error) {
	for attempt := 0; ; attempt++ {
		if n.raft.State() == raft.Leader {
			r, err := local()
			if !errors.Is(err, ErrNotLeader) {
				return r, err
			}
		}
		_, leaderID := n.raft.LeaderWithID()
		if id := string(leaderID); id != "" && id != n.o.NodeID {
			addr := n.rpcAddrOf(id)
			if addr == "" {
				return rpcReply{}, fmt.Errorf("%w (leader %s has no known RPC address)", ErrNoLeader, id)
			}
			return n.rpcc.call(ctx, id, addr, path, req)
		}
		if attempt >= 50 || ctx.Err() != nil {
			if b := n.Bootstrap(); b != "" {
				return rpcReply{}, fmt.Errorf("%w: the cluster is not formed yet (%s)", ErrNoLeader, b)
			}
			return rpcReply{}, ErrNoLeader
		}
		select {
		case <-ctx.Done():
			return rpcReply{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Validation of what members send.

// validNodeID: 1 to 128 of letters, digits, '.', '_', '-'.
func validNodeID(id string) error {
	if id == "" || len(id) > 128 || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
	}) >= 0 {
		return badRequest("node id %q: want 1 to 128 letters, digits, '.', '_' or '-'", id)
	}
	return nil
}

func validAddr(what, a string, optional bool) error {
	if a == "" && optional {
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || len(a) > 300 {
		return badRequest("%s %q is not host:port", what, a)
	}
	if p, err := net.LookupPort("tcp", port); err != nil || p == 0 {
		return badRequest("%s %q: bad port", what, a)
	}
	return nil
}

func validText(what, s string, max int) error {
	if len(s) > max {
		return badRequest("%s is %d bytes, more than %d", what, len(s), max)
	}
	return nil
}

// validModes are the modes a node may publish.
var validModes = map[string]bool{"": true, "idle": true, "restore": true, "observe": true, "promote": true, "active": true}
