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
	starts, _, err := promotionStarts(ctx, site, streamID, func(ctx context.Context, o ObjectInfo, v versioned) error {
		data, err := site.GetBytes(ctx, o.Key)
		if err != nil {
			return err
		}
		return UnmarshalManifest(o.Key, data, v)
	})
	if err != nil {
		return nil, err
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
