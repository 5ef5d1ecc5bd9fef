package main

import (
	"github.com/myhoard/myhoard/api"
	"github.com/myhoard/myhoard/node"
)

// nodeAPI adapts the controller to the interfaces the api package declares
// (api must not import node or backup).
type nodeAPI struct {
	*node.Controller
}

func (n nodeAPI) SetMode(mode string) (string, error) {
	m, err := n.Controller.SetMode(node.Mode(mode))
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
			BasebackupInfo: b.Basebackup, BrokenAt: b.BrokenAt, ClosedAt: b.ClosedAt, CompletedAt: b.CompletedAt,
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
