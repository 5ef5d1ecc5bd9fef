package api

import (
	"net/http"

	"github.com/julienschmidt/httprouter"

	"github.com/myhoard/myhoard/wire"
)

// ClusterNode is what the cluster endpoint needs from the node. Node-to-
// node calls are not served here: they go to cluster.rpc_address, behind
// mutual TLS.
type ClusterNode interface {
	// ClusterStatus is GET /cluster (a bad request without a cluster).
	ClusterStatus() (wire.ClusterStatus, error)
}

func (s *Server) getCluster(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	st, err := s.node.ClusterStatus()
	if err != nil {
		writeNodeError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, st)
}
