package storage

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Object layout of a backup site, under the site's prefix:
//
//	streams/<stream_id>/basebackup.json
//	streams/<stream_id>/basebackup/<part:05d>
//	streams/<stream_id>/binlogs/<remote_index:010d>_e<epoch>_s<server_id>
//	streams/<stream_id>/binlogs/<remote_index:010d>_e<epoch>_s<server_id>.json
//	streams/<stream_id>/promotions/e<epoch>.json
//	streams/<stream_id>/{completed,closed,broken,preserved}.json

// StreamsPrefix is the prefix of every stream.
const StreamsPrefix = "streams/"

// streamIDTime is the time part of a stream id: fixed width, so that ids
// sort by creation time.
const streamIDTime = "20060102T150405.000Z"

var streamIDRe = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}\.[0-9]{3}Z_[0-9a-f]{8}$`)

// NewStreamID returns a stream id for a backup created at t: the UTC time
// to the millisecond and a random suffix, e.g. 20261125T103000.123Z_9f2c01ab.
func NewStreamID(t time.Time) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return t.UTC().Format(streamIDTime) + "_" + hex.EncodeToString(b[:])
}

// ParseStreamID checks a stream id and returns its creation time.
func ParseStreamID(id string) (time.Time, error) {
	if !streamIDRe.MatchString(id) {
		return time.Time{}, fmt.Errorf("bad stream id %q: want like 20261125T103000.123Z_9f2c01ab", id)
	}
	return time.Parse(streamIDTime, id[:len(streamIDTime)])
}

// StreamPrefix is the prefix of one stream's objects.
func StreamPrefix(streamID string) string { return StreamsPrefix + streamID + "/" }

// BasebackupManifestKey is the key of a stream's basebackup.json.
func BasebackupManifestKey(streamID string) string {
	return StreamPrefix(streamID) + "basebackup.json"
}

// BasebackupPartKey is the key of one part of a stream's basebackup.
func BasebackupPartKey(streamID string, part int) string {
	return fmt.Sprintf("%sbasebackup/%05d", StreamPrefix(streamID), part)
}

// BinlogsPrefix is the prefix of a stream's binlogs.
func BinlogsPrefix(streamID string) string { return StreamPrefix(streamID) + "binlogs/" }

// BinlogRef names one uploaded binlog of a stream.
type BinlogRef struct {
	StreamID    string
	RemoteIndex int64
	Epoch       int64
	ServerID    uint32
}

// DataKey is the binlog's encoded data.
func (r BinlogRef) DataKey() string {
	return fmt.Sprintf("%s%010d_e%d_s%d", BinlogsPrefix(r.StreamID), r.RemoteIndex, r.Epoch, r.ServerID)
}

// ManifestKey is the binlog's manifest, written after the data.
func (r BinlogRef) ManifestKey() string { return r.DataKey() + ".json" }

var binlogKeyRe = regexp.MustCompile(`^streams/([^/]+)/binlogs/([0-9]{10})_e([0-9]+)_s([0-9]+)(\.json)?$`)

// ParseBinlogKey parses a binlog data or manifest key (relative to the
// site prefix).
func ParseBinlogKey(key string) (ref BinlogRef, manifest bool, err error) {
	m := binlogKeyRe.FindStringSubmatch(key)
	if m == nil {
		return BinlogRef{}, false, fmt.Errorf("not a binlog key: %q", key)
	}
	if _, err := ParseStreamID(m[1]); err != nil {
		return BinlogRef{}, false, fmt.Errorf("binlog key %q: %w", key, err)
	}
	idx, err1 := strconv.ParseInt(m[2], 10, 64)
	epoch, err2 := strconv.ParseInt(m[3], 10, 64)
	sid, err3 := strconv.ParseUint(m[4], 10, 32)
	if err1 != nil || err2 != nil || err3 != nil || idx < 1 {
		return BinlogRef{}, false, fmt.Errorf("binlog key %q: bad number", key)
	}
	return BinlogRef{StreamID: m[1], RemoteIndex: idx, Epoch: epoch, ServerID: uint32(sid)}, m[5] != "", nil
}

// PromotionKey is the promotion record of one epoch in a stream.
func PromotionKey(streamID string, epoch int64) string {
	return fmt.Sprintf("%spromotions/e%d.json", StreamPrefix(streamID), epoch)
}

var promotionKeyRe = regexp.MustCompile(`^streams/([^/]+)/promotions/e([0-9]+)\.json$`)

// ParsePromotionKey returns the stream and epoch of a promotion record key.
func ParsePromotionKey(key string) (streamID string, epoch int64, err error) {
	m := promotionKeyRe.FindStringSubmatch(key)
	if m == nil {
		return "", 0, fmt.Errorf("not a promotion key: %q", key)
	}
	epoch, err = strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("promotion key %q: bad epoch", key)
	}
	return m[1], epoch, nil
}

// Marker is a stream lifecycle marker object.
type Marker string

// The stream markers.
const (
	MarkerCompleted Marker = "completed"
	MarkerClosed    Marker = "closed"
	MarkerBroken    Marker = "broken"
	MarkerPreserved Marker = "preserved"
)

// MarkerKey is the key of a stream's marker.
func MarkerKey(streamID string, m Marker) string {
	return StreamPrefix(streamID) + string(m) + ".json"
}

// StreamOfKey returns the stream id a key belongs to ("" if none).
func StreamOfKey(key string) string {
	rest, ok := strings.CutPrefix(key, StreamsPrefix)
	if !ok {
		return ""
	}
	id, _, ok := strings.Cut(rest, "/")
	if !ok {
		return ""
	}
	return id
}
