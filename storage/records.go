package storage

import (
	"context"
	"errors"
	"fmt"
)

// ReadPromotion reads a stream's promotion record of epoch (nil: none).
func ReadPromotion(ctx context.Context, site *Site, streamID string, epoch int64) (*PromotionRecord, error) {
	key := PromotionKey(streamID, epoch)
	data, err := site.GetBytes(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", key, err)
	}
	var rec PromotionRecord
	if err := UnmarshalManifest(key, data, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// WritePromotion writes a promotion record once: when one is there
// already, that one stands and is returned.
func WritePromotion(ctx context.Context, site *Site, rec *PromotionRecord) (*PromotionRecord, error) {
	rec.Version = ManifestVersion
	body, err := MarshalManifest(rec)
	if err != nil {
		return nil, err
	}
	key := PromotionKey(rec.StreamID, rec.Epoch)
	err = site.PutBytes(ctx, key, body, PutOptions{IfNotExist: true, ContentType: "application/json"})
	if errors.Is(err, ErrExists) {
		if existing, rerr := ReadPromotion(ctx, site, rec.StreamID, rec.Epoch); rerr != nil || existing != nil {
			return existing, rerr
		}
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", key, err)
	}
	return rec, nil
}

// HighestEpoch is the highest epoch of a stream's binlog keys and
// promotion records.
func HighestEpoch(ctx context.Context, site *Site, streamID string) (int64, error) {
	var top int64
	err := site.List(ctx, StreamPrefix(streamID), func(o ObjectInfo) error {
		if ref, _, err := ParseBinlogKey(o.Key); err == nil && ref.Epoch > top {
			top = ref.Epoch
		}
		if _, e, err := ParsePromotionKey(o.Key); err == nil && e > top {
			top = e
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", streamID, err)
	}
	return top, nil
}

// WriteMarker writes a stream marker (completed, closed, broken,
// preserved).
func WriteMarker(ctx context.Context, site *Site, streamID string, m Marker, rec MarkerRecord) error {
	rec.Version = ManifestVersion
	body, err := MarshalManifest(&rec)
	if err != nil {
		return err
	}
	return site.PutBytes(ctx, MarkerKey(streamID, m), body, PutOptions{ContentType: "application/json"})
}
