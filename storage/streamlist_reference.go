package storage

import (
	"context"
	"fmt"
)

// ReferenceListStreamBinlogs is the plain listing of a stream's binlogs:
// every key listed, every manifest read from the store one after another,
// nothing remembered. It gives what ListStreamBinlogs gives; the tests
// compare the two and the benchmarks measure against it.
func ReferenceListStreamBinlogs(ctx context.Context, site *Site, streamID string) ([]StoredBinlog, error) {
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
	keys := map[string]ObjectInfo{}
	if err := site.List(ctx, BinlogsPrefix(streamID), func(o ObjectInfo) error {
		keys[o.Key] = o
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list binlogs of %s: %w", streamID, err)
	}
	refs, err := chainOf(streamID, keys, starts)
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
