// Package api serves myhoard's HTTP API (the spec's endpoints, JSON in and
// out, errors as {"message": ...}) with julienschmidt/httprouter.
//
// It owns request parsing, validation of bodies and the mapping of errors
// to status codes. It must never import the node package: it declares the
// small Node interface it needs and cmd/myhoard wires the controller in. It
// keeps no state of its own beyond the router.
package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/myhoard/myhoard/wire"
)

// Node is everything the API needs from the node controller, declared
// here; cmd/myhoard adapts the controller to it and asserts at compile
// time that it does.
type Node interface {
	StatusNode
	BackupNode
	ClusterNode
}

// StatusNode is what the status endpoints need.
type StatusNode interface {
	// Mode is the current main mode: idle, restore, observe, promote or
	// active.
	Mode() string
	// RequestMode handles PUT /status.
	RequestMode(ctx context.Context, r wire.ModeChange) (string, error)
	// RestoreStatus is GET /status/restore (a bad request when the mode
	// is not restore).
	RestoreStatus() (wire.RestoreStatus, error)
}

// Server is the HTTP handler of the API.
type Server struct {
	node    Node
	log     *slog.Logger
	router  *httprouter.Router
	observe func(name string, d time.Duration)
	// token every request must bear ("": none).
	token atomic.Pointer[string]
	// slots bounds the requests being handled at once.
	slots chan struct{}
}

// MaxInFlight is how many requests are handled at once; more are answered
// 503 at once (slow clients never hold a slot while they send).
const MaxInFlight = 64

// SetToken sets the token every request must bear as "Authorization:
// Bearer <token>" ("" turns authentication off).
func (s *Server) SetToken(token string) { s.token.Store(&token) }

// SetObserver receives each request's duration under a name such as
// "status_get" (for the myhoard.http.<name> timing metric).
func (s *Server) SetObserver(f func(name string, d time.Duration)) { s.observe = f }

// SetMetrics serves GET /metrics (Prometheus) with h; call before
// serving.
func (s *Server) SetMetrics(h http.Handler) {
	s.router.Handler(http.MethodGet, "/metrics", h)
}

// New builds the API handler for a node.
func New(node Node, log *slog.Logger) *Server {
	s := &Server{node: node, log: log, router: httprouter.New(), slots: make(chan struct{}, MaxInFlight)}
	s.SetToken("")
	r := s.router
	r.GET("/status", s.getStatus)
	r.PUT("/status", s.putStatus)
	r.GET("/status/restore", s.getRestoreStatus)
	s.routeBackups()
	r.GET("/cluster", s.getCluster)
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		WriteError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", req.Method, req.URL.Path))
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s (allowed: %s)",
			req.Method, req.URL.Path, w.Header().Get("Allow")))
	})
	r.PanicHandler = func(w http.ResponseWriter, req *http.Request, v any) {
		s.log.Error("panic in HTTP handler", "method", req.Method, "path", req.URL.Path, "panic", v)
		WriteError(w, http.StatusInternalServerError, "internal error")
	}
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	s.serve(rec, r)
	d := time.Since(start)
	s.log.Debug("http request", "method", r.Method, "path", r.URL.Path, "status", rec.status, "duration", d)
	if s.observe != nil {
		first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if first == "" {
			first = "root"
		}
		s.observe(first+"_"+strings.ToLower(r.Method), d)
	}
}

// serve authenticates, reads the body whole (bounded; the server's read
// timeout cuts a client that trickles it), then handles the request in
// one of the slots.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if tok := *s.token.Load(); tok != "" {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="myhoard"`)
			WriteError(w, http.StatusUnauthorized, "missing or wrong API token (Authorization: Bearer <token of http_auth_token_file>)")
			return
		}
	}
	if r.Body != nil && r.Body != http.NoBody {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
		if err != nil {
			WriteError(w, http.StatusBadRequest, "read request body: "+err.Error())
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		WriteError(w, http.StatusServiceUnavailable, fmt.Sprintf("more than %d requests in flight; try again", MaxInFlight))
		return
	}
	s.router.ServeHTTP(w, r)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

// Unwrap lets http.ResponseController reach the connection (a long wait
// extends its write deadline).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// extendWrite gives a handler that waits up to wait the time to answer
// after it, beyond the server's write timeout.
func extendWrite(w http.ResponseWriter, wait time.Duration) {
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + time.Minute))
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// WriteJSON writes v as a JSON response.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// WriteError writes the spec's error body {"message": ...}.
func WriteError(w http.ResponseWriter, status int, message string) {
	WriteJSON(w, status, map[string]string{"message": message})
}

// maxBodyBytes bounds request bodies; the API's bodies are small.
const maxBodyBytes = 1 << 20

// DecodeBody reads a JSON object body into dst. The error, for a 400
// response, says what is wrong: not JSON, not an object, an unknown field,
// or too large.
func DecodeBody(r *http.Request, dst any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if len(body) > maxBodyBytes {
		return fmt.Errorf("request body is larger than %d bytes", maxBodyBytes)
	}
	var probe any
	if err := json.Unmarshal(body, &probe); err != nil {
		return fmt.Errorf("request body is not valid JSON: %w", err)
	}
	if _, ok := probe.(map[string]any); !ok {
		return errors.New("request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("bad request body: %w", err)
	}
	return nil
}
