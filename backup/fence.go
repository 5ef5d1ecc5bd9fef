package backup

import (
	"context"
	"fmt"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// Fence is the stream a promoted node continues, with the promotion
// record of its epoch there.
type Fence struct {
	Site   *storage.Site
	Open   BackupInfo
	Record storage.PromotionRecord
}

// NewestOpen is the stream a promoted node continues: the newest completed
// and not closed backup of a writable site (nil: none).
func NewestOpen(backups []BackupInfo) *BackupInfo {
	var open *BackupInfo
	for _, b := range backups {
		if b.ClosedAt == nil && b.CompletedAt != nil && b.Basebackup != nil && !b.RecoverySite && (open == nil || b.StreamID > open.StreamID) {
			open = &b
		}
	}
	return open
}

// FenceStreams writes the promotion record of a new epoch to the stream
// the promoted node continues, at one past its last valid binlog: from
// then on every reader drops what an older epoch writes there at or after
// that index. Every other open stream of the writable sites is fenced at
// its end too (an older one still catching up, a newer one whose backup
// never completed). A record already there (a resumed promotion) is kept
// as it is. site gives a backup's site.
func FenceStreams(ctx context.Context, open BackupInfo, backups []BackupInfo, site func(name string) *storage.Site, rec storage.PromotionRecord) (*Fence, error) {
	f := &Fence{Site: site(open.Site), Open: open}
	list, err := storage.ListStreamBinlogs(ctx, f.Site, open.StreamID)
	if err != nil {
		return nil, fmt.Errorf("list the binlogs of %s: %w", open.StreamID, err)
	}
	existing, err := storage.ReadPromotion(ctx, f.Site, open.StreamID, rec.Epoch)
	if err != nil {
		return nil, err
	}
	if existing == nil {
		rec.StreamID, rec.StartIndex, rec.GTIDs = open.StreamID, int64(len(list)+1), open.Basebackup.GTIDExecuted
		for _, b := range list {
			rec.GTIDs = rec.GTIDs.Union(b.End())
		}
		if existing, err = storage.WritePromotion(ctx, f.Site, &rec); err != nil {
			return nil, err
		}
	}
	if int64(len(list)) < existing.StartIndex-1 {
		return nil, fmt.Errorf("stream %s has %d valid binlogs, but epoch %d starts at index %d", open.StreamID, len(list), existing.Epoch, existing.StartIndex)
	}
	f.Record = *existing
	for _, b := range backups {
		if b.StreamID == open.StreamID || b.ClosedAt != nil || b.Basebackup == nil || b.RecoverySite {
			continue
		}
		s := site(b.Site)
		next, err := storage.StreamNextIndex(ctx, s, b.StreamID)
		if err != nil {
			return nil, fmt.Errorf("fence stream %s: %w", b.StreamID, err)
		}
		other := storage.PromotionRecord{StreamID: b.StreamID, Epoch: existing.Epoch, NodeID: existing.NodeID, ServerID: existing.ServerID,
			StartIndex: next, PromotedAt: existing.PromotedAt}
		if _, err := storage.WritePromotion(ctx, s, &other); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// PromotionEpoch is the epoch of a lone node's promotion (no cluster to
// number it): one above every epoch the stream has seen (its binlogs,
// its promotion records and its backup), unless this node already
// recorded epoch there (a resumed promotion).
func PromotionEpoch(ctx context.Context, site *storage.Site, open BackupInfo, epoch int64, nodeID string) (int64, error) {
	if rec, err := storage.ReadPromotion(ctx, site, open.StreamID, epoch); err != nil || (rec != nil && rec.NodeID == nodeID) {
		return epoch, err
	}
	top, err := storage.HighestEpoch(ctx, site, open.StreamID)
	if err != nil {
		return 0, err
	}
	return max(epoch, top+1, open.Basebackup.Epoch+1), nil
}

// ContinueFrom is the first local binlog a promoted node uploads into the
// stream it continues: the first, by index, that added transactions
// outside stored (what storage holds); next when storage holds them all.
func ContinueFrom(local []LocalBinlog, stored mysql.GTIDSet, next int64) int64 {
	first := next
	for _, b := range local {
		if !b.GTIDsAdded.IsSubsetOf(stored) && b.Index < first {
			first = b.Index
		}
	}
	return first
}
