package node

import (
	"context"
	"sort"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/verify"
)

// verifyResult is the last check of the repository (persisted).
type verifyResult struct {
	At       time.Time        `json:"at"`
	Deep     bool             `json:"deep"`
	Findings []verify.Finding `json:"findings"`
	// Error says why the check could not run to its end.
	Error string `json:"error,omitempty"`
}

// verifyDue starts a check of every site in the background when one was
// requested, or (the cheap one) when verify_interval_hours passed since
// the last one.
func (c *Controller) verifyDue(ctx context.Context) {
	c.mu.Lock()
	hours, last, asked := c.cfg.VerifyIntervalHours, c.state.LastVerify, c.verifyAsked
	c.verifyAsked = nil
	c.mu.Unlock()
	switch {
	case asked != nil:
		c.startVerify(ctx, *asked)
	case hours > 0 && (last == nil || time.Since(last.At) >= time.Duration(hours*float64(time.Hour))):
		c.startVerify(ctx, false)
	}
}

// RequestVerify asks for a check of the repository now (POST /verify);
// the next tick starts it.
func (c *Controller) RequestVerify(deep bool) error {
	if !c.catalog.Ready() {
		return errNotReady
	}
	if c.verifying.Load() {
		return badRequest("a check of the backups is already running")
	}
	c.mu.Lock()
	c.verifyAsked = &deep
	c.mu.Unlock()
	c.poke()
	return nil
}

// startVerify runs one check of every open site in the background; one
// runs at a time.
func (c *Controller) startVerify(ctx context.Context, deep bool) {
	if !c.verifying.CompareAndSwap(false, true) {
		return
	}
	sites, keys := c.catalog.Sites(), c.catalog.Keys()
	go func() {
		defer c.verifying.Store(false)
		started := time.Now().UTC()
		res := &verifyResult{At: started, Deep: deep, Findings: []verify.Finding{}}
		names := make([]string, 0, len(sites))
		for name := range sites {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			r, err := verify.Site(ctx, sites[name], verify.Options{Deep: deep, Keys: keys})
			if err != nil {
				res.Error = err.Error()
				break
			}
			res.Findings = append(res.Findings, r.Findings...)
		}
		for _, f := range res.Findings {
			c.log.Warn("backup check: finding", "site", f.Site, "key", f.Key, "problem", f.Problem)
		}
		c.log.Info("backup check done", "deep", deep, "findings", len(res.Findings), "error", res.Error, "duration", time.Since(started))
		c.m().Gauge("myhoard.verify.findings", float64(len(res.Findings)), nil)
		c.mu.Lock()
		c.state.LastVerify = res
		err := c.saveLocked()
		c.mu.Unlock()
		if err != nil {
			c.log.Error("save the backup check's result", "error", err)
		}
	}()
}

// withVerify adds the last check's time and findings to the backups it
// covered (those whose full backup ended before it started).
func (c *Controller) withVerify(list []backup.BackupInfo) []backup.BackupInfo {
	c.mu.Lock()
	last := c.state.LastVerify
	c.mu.Unlock()
	if list == nil || last == nil || last.Error != "" {
		return list
	}
	out := make([]backup.BackupInfo, len(list))
	for i, b := range list {
		if b.Basebackup != nil && b.Basebackup.EndedAt.Before(last.At) {
			at := last.At
			b.VerifiedAt = &at
			for _, f := range last.Findings {
				if f.Site == b.Site && f.StreamID == b.StreamID {
					b.VerifyFindings = append(b.VerifyFindings, f.Key+": "+f.Problem)
				}
			}
		}
		out[i] = b
	}
	return out
}
