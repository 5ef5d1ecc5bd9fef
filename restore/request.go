package restore

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// badRequest is a restore request that cannot be carried out as asked.
var badRequest = wire.BadRequest

// Target is what a restore request asks for (none: the latest).
type Target struct {
	Time          *time.Time
	ApproximateOK bool
	GTID          string
}

// CheckRequest checks a restore of backup b (one of backups, the
// listing) to target: the backup is whole and not broken, and the target
// is inside its restorable window (for a GTID: in the binlogs that
// storage holds after it). It returns the request to run.
func CheckRequest(ctx context.Context, site *storage.Site, b wire.Backup, backups []wire.Backup, target Target, now time.Time) (*Request, error) {
	switch {
	case b.BrokenAt != nil:
		return nil, badRequest("backup %s is marked broken (at %s); pick another backup", b.StreamID, b.BrokenAt.Format(time.RFC3339))
	case b.CompletedAt == nil || b.Basebackup == nil:
		return nil, badRequest("backup %s is not completed yet", b.StreamID)
	}
	if _, ok := ChainOf(backups, b); !ok {
		return nil, badRequest("backup %s is incremental and a backup it needs is missing, not completed or broken (it needs %s); pick another backup",
			b.StreamID, strings.Join(b.Basebackup.RequiredStreams, ", "))
	}
	req := &Request{Site: b.Site, StreamID: b.StreamID, ApproximateOK: target.ApproximateOK}
	if target.Time != nil {
		t := target.Time.UTC()
		req.TargetTime = &t
		from := b.Basebackup.EndedAt
		until, open := RestorableUntil(b, backups)
		switch {
		case t.Before(from):
			return nil, badRequest("target_time %s is outside the restorable window of backup %s: it starts at %s (the end of the full backup)",
				t.Format(time.RFC3339Nano), b.StreamID, from.Format(time.RFC3339Nano))
		case t.After(now):
			return nil, badRequest("target_time %s is in the future", t.Format(time.RFC3339Nano))
		case !open && t.After(until):
			return nil, badRequest("target_time %s is outside the restorable window of backup %s: it ends at %s (the last backup stream's close)",
				t.Format(time.RFC3339Nano), b.StreamID, until.Format(time.RFC3339Nano))
		}
	}
	if target.GTID != "" {
		gtid, err := checkGTIDTarget(ctx, site, b, target.GTID)
		if err != nil {
			return nil, err
		}
		req.TargetGTID = &gtid
	}
	return req, nil
}

// checkGTIDTarget parses a GTID target and checks that it is after the
// backup and within the binlogs storage holds.
func checkGTIDTarget(ctx context.Context, site *storage.Site, b wire.Backup, text string) (mysql.GTIDSet, error) {
	target, err := mysql.ParseGTIDSet(b.Basebackup.Flavor, text)
	if err != nil || target.IsEmpty() {
		return target, badRequest("target_gtid %q is not a %s GTID set: %v", text, b.Basebackup.Flavor, err)
	}
	if target.IsSubsetOf(b.Basebackup.GTIDExecuted) {
		return target, badRequest("target_gtid %s is outside the restorable window of backup %s: the full backup already contains it (it is at %s)",
			target, b.StreamID, b.Basebackup.GTIDExecuted)
	}
	chain, err := ListChain(ctx, site, b.Basebackup.BasebackupManifest)
	if err != nil && !errors.Is(err, storage.ErrGap) {
		return target, err
	}
	end := b.Basebackup.GTIDExecuted
	for _, bl := range chain {
		end = end.Union(bl.End())
	}
	if !target.IsSubsetOf(end) {
		return target, badRequest("target_gtid %s is outside the restorable window of backup %s: the binlogs in storage end at %s",
			target, b.StreamID, end)
	}
	return target, nil
}

// RestorableUntil is the end of a backup's point-in-time window: binlogs
// continue through later streams of the same site, so it is the close of
// the last one (open: still growing).
func RestorableUntil(b wire.Backup, backups []wire.Backup) (time.Time, bool) {
	var until time.Time
	for _, o := range backups {
		if o.Site != b.Site || o.StreamID < b.StreamID || o.Basebackup == nil {
			continue
		}
		if o.ClosedAt == nil {
			return time.Time{}, true
		}
		if o.ClosedAt.After(until) {
			until = *o.ClosedAt
		}
	}
	return until, false
}
