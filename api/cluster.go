package api

import (
	"io"
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// ClusterNode is what the cluster endpoints need from the node.
type ClusterNode interface {
	// ClusterStatus is GET /cluster (a bad request without a cluster).
	ClusterStatus() (any, error)
	// ClusterApply and ClusterVerify answer another member's forwarded
	// write or writer-gate check (the Raft leader's side).
	ClusterApply(body []byte) ([]byte, error)
	ClusterVerify(body []byte) ([]byte, error)
}

// maxClusterBody bounds a forwarded command.
const maxClusterBody = 1 << 20

func (s *Server) routeCluster(n ClusterNode) {
	r := s.router
	r.GET("/cluster", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		st, err := n.ClusterStatus()
		if err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, st)
	})
	internal := func(f func([]byte) ([]byte, error)) httprouter.Handle {
		return func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
			body, err := io.ReadAll(io.LimitReader(req.Body, maxClusterBody))
			if err != nil {
				WriteError(w, http.StatusBadRequest, "read body: "+err.Error())
				return
			}
			out, err := f(body)
			if err != nil {
				writeNodeError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(out)
		}
	}
	r.POST("/cluster/apply", internal(n.ClusterApply))
	r.POST("/cluster/verify", internal(n.ClusterVerify))
}
