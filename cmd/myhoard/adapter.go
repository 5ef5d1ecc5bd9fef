package main

import (
	"context"

	"github.com/myhoard/myhoard/api"
	"github.com/myhoard/myhoard/node"
)

// nodeAPI adapts the controller to the interfaces the api package declares
// (api must not import node or backup).
type nodeAPI struct {
	*node.Controller
}

func (n nodeAPI) RequestMode(ctx context.Context, r api.StatusRequest) (string, error) {
	m, err := n.Controller.RequestMode(ctx, node.ModeRequest{Mode: node.Mode(r.Mode), Force: r.Force, Site: r.Site, StreamID: r.StreamID,
		TargetTime: r.TargetTime, ApproximateOK: r.ApproximateOK, TargetGTID: r.TargetGTID})
	return string(m), err
}

func (n nodeAPI) Backups() []api.Backup {
	list := n.Controller.Backups()
	if list == nil {
		return nil
	}
	out := make([]api.Backup, 0, len(list))
	for _, b := range list {
		e := api.Backup{
			BasebackupInfo: b.Basebackup, BrokenAt: b.BrokenAt, BrokenReason: b.BrokenReason, ClosedAt: b.ClosedAt, CompletedAt: b.CompletedAt,
			PreserveUntil: b.PreserveUntil, RecoverySite: b.RecoverySite, Resumable: b.Resumable, Site: b.Site, StreamID: b.StreamID,
		}
		if b.CompletedAt != nil && b.Basebackup != nil {
			from := b.Basebackup.EndedAt
			e.RestorableFrom, e.RestorableUntil = &from, b.ClosedAt
		}
		out = append(out, e)
	}
	return out
}
