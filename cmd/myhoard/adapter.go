package main

import (
	"context"

	"github.com/myhoard/myhoard/api"
	"github.com/myhoard/myhoard/node"
)

// nodeAPI adapts the controller to the interface the api package declares
// (api must not import node): PUT /status's request becomes the node's.
type nodeAPI struct {
	*node.Controller
}

var _ api.Node = nodeAPI{}

func (n nodeAPI) RequestMode(ctx context.Context, r api.StatusRequest) (string, error) {
	m, err := n.Controller.RequestMode(ctx, node.ModeRequest{Mode: node.Mode(r.Mode), Force: r.Force, Site: r.Site, StreamID: r.StreamID,
		TargetTime: r.TargetTime, ApproximateOK: r.ApproximateOK, TargetGTID: r.TargetGTID})
	return string(m), err
}
