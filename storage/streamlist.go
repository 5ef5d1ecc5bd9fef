package storage

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/myhoard/myhoard/mysql"
)

// StoredBinlog is a binlog in storage: its key and its manifest.
type StoredBinlog struct {
	Ref      BinlogRef
	Manifest BinlogManifest
}

// End is the GTID state after the binlog.
func (b StoredBinlog) End() mysql.GTIDSet {
	return b.Manifest.GTIDsBefore.Union(b.Manifest.GTIDsAdded)
}

// ErrGap is wrapped when a stream's binlog chain has a hole.
var ErrGap = errors.New("the binlog chain has a gap")

// ListStreamBinlogs lists the binlogs of a stream that a restore may use,
// in order: only objects whose manifest exists, ordered by remote index
// (never by modification time), fenced by the stream's promotion records
// (a binlog uploaded under epoch E at or after the start index of any
// later epoch is ignored, so a deposed primary can never change a
// restore), and with no gap: a missing index is an error, never skipped.
func ListStreamBinlogs(ctx context.Context, site *Site, streamID string) ([]StoredBinlog, error) {
	refs, err := streamRefs(ctx, site, streamID)
	if err != nil {
		return nil, err
	}
	out := make([]StoredBinlog, 0, len(refs))
	for _, ref := range refs {
		data, err := site.GetBytes(ctx, ref.ManifestKey())
		if err != nil {
			return nil, err
		}
		var m BinlogManifest
		if err := UnmarshalManifest(ref.ManifestKey(), data, &m); err != nil {
			return nil, err
		}
		out = append(out, StoredBinlog{Ref: ref, Manifest: m})
	}
	return out, nil
}

// StreamNextIndex is the remote index the next binlog of a stream gets:
// one past the valid, gapless chain ListStreamBinlogs would list (from the
// keys alone, without reading the manifests).
func StreamNextIndex(ctx context.Context, site *Site, streamID string) (int64, error) {
	refs, err := streamRefs(ctx, site, streamID)
	if err != nil {
		return 0, err
	}
	return int64(len(refs)) + 1, nil
}

// streamRefs lists the valid binlog keys of a stream (manifest present,
// not fenced by a promotion record) in remote index order, with no gap.
func streamRefs(ctx context.Context, site *Site, streamID string) ([]BinlogRef, error) {
	starts, err := promotionStarts(ctx, site, streamID)
	if err != nil {
		return nil, err
	}
	byIndex := map[int64][]BinlogRef{}
	err = site.List(ctx, BinlogsPrefix(streamID), func(o ObjectInfo) error {
		ref, manifest, err := ParseBinlogKey(o.Key)
		if err != nil || !manifest {
			return nil
		}
		if !validUnderFence(ref, starts) {
			return nil
		}
		byIndex[ref.RemoteIndex] = append(byIndex[ref.RemoteIndex], ref)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list binlogs of %s: %w", streamID, err)
	}
	indexes := make([]int64, 0, len(byIndex))
	for i := range byIndex {
		indexes = append(indexes, i)
	}
	sort.Slice(indexes, func(a, b int) bool { return indexes[a] < indexes[b] })
	out := make([]BinlogRef, 0, len(indexes))
	for n, idx := range indexes {
		if idx != int64(n+1) {
			return nil, fmt.Errorf("stream %s: binlog %d is missing (the next stored one is %d): %w", streamID, n+1, idx, ErrGap)
		}
		refs := byIndex[idx]
		if len(refs) > 1 {
			return nil, fmt.Errorf("stream %s: %d valid binlogs at index %d (%s and %s)", streamID, len(refs), idx, refs[0].DataKey(), refs[1].DataKey())
		}
		out = append(out, refs[0])
	}
	return out, nil
}

// promotionStarts maps each promoted epoch of a stream to the remote index
// from which only its primary may write.
func promotionStarts(ctx context.Context, site *Site, streamID string) (map[int64]int64, error) {
	starts := map[int64]int64{}
	err := site.List(ctx, StreamPrefix(streamID)+"promotions/", func(o ObjectInfo) error {
		_, epoch, err := ParsePromotionKey(o.Key)
		if err != nil {
			return nil
		}
		data, err := site.GetBytes(ctx, o.Key)
		if err != nil {
			return err
		}
		var rec PromotionRecord
		if err := UnmarshalManifest(o.Key, data, &rec); err != nil {
			return err
		}
		if rec.Epoch != epoch {
			return fmt.Errorf("promotion record %s says epoch %d", o.Key, rec.Epoch)
		}
		starts[epoch] = rec.StartIndex
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read promotion records of %s: %w", streamID, err)
	}
	return starts, nil
}

func validUnderFence(ref BinlogRef, starts map[int64]int64) bool {
	for epoch, start := range starts {
		if epoch > ref.Epoch && ref.RemoteIndex >= start {
			return false
		}
	}
	return true
}
