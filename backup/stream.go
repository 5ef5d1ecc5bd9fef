package backup

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// Phase is where a backup stream is in its life.
type Phase string

// A stream takes its full backup (basebackup), uploads the binlogs written
// since (catchup), is completed once caught up and keeps uploading (binlog),
// and is closed when a newer stream has completed: its closed marker is
// written and this node drops it (Streams.Closed).
const (
	PhaseBasebackup Phase = "basebackup"
	PhaseCatchup    Phase = "catchup"
	PhaseBinlog     Phase = "binlog"
)

// StreamState is an owned stream's persisted state (the controller keeps
// it in its state file; the stream's cursor moves only after an upload is
// complete).
type StreamState struct {
	ID             string    `json:"stream_id"`
	Site           string    `json:"site"`
	Phase          Phase     `json:"phase"`
	CreatedAt      time.Time `json:"created_at"`
	Reason         string    `json:"reason"`
	NormalizedTime time.Time `json:"normalized_time"`
	Epoch          int64     `json:"epoch"`
	// Incremental: the stream's backup is incremental when it can be.
	Incremental bool `json:"incremental,omitempty"`
	// InitialNextIndex is the scanner's next index when the stream was
	// created: older binlogs were complete before its backup began.
	InitialNextIndex int64 `json:"initial_next_index"`
	// FirstLocalIndex is the local binlog holding the basebackup's
	// consistency point: uploads start there.
	FirstLocalIndex int64 `json:"first_local_index"`
	// LastUploadedLocal is the upload cursor: every local binlog from
	// FirstLocalIndex up to it is in storage.
	LastUploadedLocal int64      `json:"last_uploaded_local"`
	NextRemoteIndex   int64      `json:"next_remote_index"`
	Errors            int        `json:"errors"`
	NextAttemptAt     time.Time  `json:"next_attempt_at"`
	LastError         string     `json:"last_error,omitempty"`
	CompletedAt       *time.Time `json:"completed_at,omitempty"`
	LastUploadAt      *time.Time `json:"last_upload_at,omitempty"`
}

// BinlogIndexOf returns the index of a binlog file name (binlog.000042).
func BinlogIndexOf(name string) (int64, error) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return 0, fmt.Errorf("binlog name %q has no index", name)
	}
	n, err := strconv.ParseInt(name[i+1:], 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("binlog name %q has no index", name)
	}
	return n, nil
}

// BackupInfo is one backup as listed from storage: the wire shape of
// GET /backup.
type BackupInfo = wire.Backup

// ListBackups lists the site's streams: only those whose basebackup.json
// exists (a partial backup is never listed) and whose parts are all there.
// A basebackup.json or marker that cannot be decoded (corrupt, or of a
// newer version) does not fail the listing: that backup is listed as
// broken with the reason, and every other one as usual. Storage errors
// fail it.
func ListBackups(ctx context.Context, site *storage.Site, recoverySite bool) ([]BackupInfo, error) {
	var ids []string
	err := site.ListDir(ctx, storage.StreamsPrefix, func(o storage.ObjectInfo, isDir bool) error {
		if isDir {
			ids = append(ids, strings.TrimSuffix(strings.TrimPrefix(o.Key, storage.StreamsPrefix), "/"))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(ids)
	valid := ids[:0]
	for _, id := range ids {
		if _, err := storage.ParseStreamID(id); err == nil {
			valid = append(valid, id)
		}
	}
	infos := make([]BackupInfo, len(valid))
	found := make([]bool, len(valid))
	err = site.ReadEach(ctx, len(valid), func(ctx context.Context, i int) error {
		var err error
		infos[i], found[i], err = readBackup(ctx, site, valid[i], recoverySite)
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []BackupInfo
	for i, ok := range found {
		if ok {
			out = append(out, infos[i])
		}
	}
	return out, nil
}

// readBackup reads one stream's basebackup.json and markers (ok false: no
// basebackup.json). What cannot be decoded makes the backup broken with
// the reason; storage errors fail.
func readBackup(ctx context.Context, site *storage.Site, id string, recoverySite bool) (BackupInfo, bool, error) {
	info := BackupInfo{Site: site.Name, StreamID: id, RecoverySite: recoverySite}
	objects := map[string]storage.ObjectInfo{}
	err := site.ListDir(ctx, storage.StreamPrefix(id), func(o storage.ObjectInfo, isDir bool) error {
		if !isDir {
			objects[strings.TrimPrefix(o.Key, storage.StreamPrefix(id))] = o
		}
		return nil
	})
	if err != nil {
		return info, false, err
	}
	if _, ok := objects["basebackup.json"]; !ok {
		return info, false, nil
	}
	if err := readManifest(ctx, site, &info, objects); err != nil {
		return info, false, err
	}
	if err := readMarkers(ctx, site, &info, objects); err != nil {
		return info, false, err
	}
	if info.CompletedAt == nil {
		info.ClosedAt = nil
	}
	if info.CompletedAt != nil && info.Basebackup != nil {
		from := info.Basebackup.EndedAt
		info.RestorableFrom, info.RestorableUntil = &from, info.ClosedAt
	}
	return info, true, nil
}

// brokenBy marks a backup broken by an object that cannot be decoded (the
// first such object gives the reason and the time).
func brokenBy(info *BackupInfo, o storage.ObjectInfo, err error) {
	if info.BrokenReason == "" {
		at := o.ModTime.UTC()
		info.BrokenAt, info.BrokenReason = &at, err.Error()
	}
}

// readManifest reads basebackup.json and checks that every part is there
// (Resumable).
func readManifest(ctx context.Context, site *storage.Site, info *BackupInfo, objects map[string]storage.ObjectInfo) error {
	var m storage.BasebackupManifest
	if err := site.ReadListedManifest(ctx, objects["basebackup.json"], &m); err != nil {
		if storage.StoreFailed(err) {
			return err
		}
		brokenBy(info, objects["basebackup.json"], err)
		return nil
	}
	info.Basebackup = InfoOf(&m)
	parts := map[string]bool{}
	_ = site.List(ctx, storage.StreamPrefix(info.StreamID)+"basebackup/", func(o storage.ObjectInfo) error {
		parts[o.Key] = true
		return nil
	})
	info.Resumable = true
	for _, p := range m.Parts {
		if !parts[p.Key] {
			info.Resumable = false
		}
	}
	return nil
}

// InfoOf is the basebackup_info of a basebackup.json.
func InfoOf(m *storage.BasebackupManifest) *wire.BasebackupInfo {
	return &wire.BasebackupInfo{BasebackupManifest: m, StartTS: epoch(m.StartedAt), EndTS: epoch(m.EndedAt),
		CompressedSize: m.EncodedSize, StartSize: m.DataDirSize, EndSize: m.DataDirSize,
		GTID: mysql.DialectOf(m.Flavor).GTIDTarget(m.GTIDExecuted), NumberOfSplits: len(m.Parts)}
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

// readMarkers reads the completed, closed, broken and preserved markers.
func readMarkers(ctx context.Context, site *storage.Site, info *BackupInfo, objects map[string]storage.ObjectInfo) error {
	for _, mk := range []storage.Marker{storage.MarkerCompleted, storage.MarkerClosed, storage.MarkerBroken, storage.MarkerPreserved} {
		o, ok := objects[string(mk)+".json"]
		if !ok {
			continue
		}
		var rec storage.MarkerRecord
		if err := site.ReadListedManifest(ctx, o, &rec); errors.Is(err, storage.ErrNotFound) {
			continue
		} else if storage.StoreFailed(err) {
			return err
		} else if err != nil {
			brokenBy(info, o, err)
			continue
		}
		at := rec.At
		switch mk {
		case storage.MarkerCompleted:
			// a backup whose manifest cannot be read still completed
			// (and ages out like the others)
			if info.Resumable || info.Basebackup == nil {
				info.CompletedAt = &at
			}
		case storage.MarkerClosed:
			info.ClosedAt = &at
		case storage.MarkerBroken:
			if info.BrokenAt == nil || info.BrokenReason != "" {
				info.BrokenAt = &at
			}
		case storage.MarkerPreserved:
			info.PreserveUntil = rec.PreserveUntil
		}
	}
	return nil
}
