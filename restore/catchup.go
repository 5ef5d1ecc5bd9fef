package restore

import (
	"context"
	"fmt"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// CatchUp applies to a promoted node's server the binlogs below a
// promotion record's start index that it lacks: the chain from the newest
// backup of the site the server is already past (a server far behind
// needs older streams' binlogs too), up to the fenced stream's start
// index, never what a deposed primary wrote at or after it.
func CatchUp(ctx context.Context, backups []wire.Backup, rec storage.PromotionRecord, executed mysql.GTIDSet, o FromStorageOptions) error {
	var from *wire.Backup
	for _, b := range backups {
		if b.Site == o.Site.Name && b.CompletedAt != nil && b.Basebackup != nil && b.Basebackup.GTIDExecuted.IsSubsetOf(executed) &&
			b.StreamID <= rec.StreamID && (from == nil || b.StreamID > from.StreamID) {
			from = &b
		}
	}
	if from == nil {
		return fmt.Errorf("this server (%s) is older than every backup on site %s; it cannot catch up from storage", executed, o.Site.Name)
	}
	chain, err := ListChain(ctx, o.Site, from.Basebackup.BasebackupManifest)
	if err != nil {
		return fmt.Errorf("list the binlogs since backup %s: %w", from.StreamID, err)
	}
	return ApplyFromStorage(ctx, belowStart(chain, rec), o)
}

// belowStart keeps the chain up to a promotion: binlogs of older streams
// and of the fenced stream below its start index.
func belowStart(chain []storage.StoredBinlog, rec storage.PromotionRecord) []storage.StoredBinlog {
	var out []storage.StoredBinlog
	for _, b := range chain {
		if b.Ref.StreamID < rec.StreamID || (b.Ref.StreamID == rec.StreamID && b.Ref.RemoteIndex < rec.StartIndex) {
			out = append(out, b)
		}
	}
	return out
}
