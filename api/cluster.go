package api

import (
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// ClusterNode is what the cluster endpoint needs from the node. Node-to-
// node calls are not served here: they go to cluster.rpc_address, behind
// mutual TLS.
type ClusterNode interface {
	// ClusterStatus is GET /cluster (a bad request without a cluster).
	ClusterStatus() (any, error)
}

func (s *Server) routeCluster(n ClusterNode) {
	s.router.GET("/cluster", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		st, err := n.ClusterStatus()
		if err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, st)
	})
}
