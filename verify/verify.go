// Package verify owns checking a backup repository without restoring it:
// that everything a restore relies on is there and consistent. The cheap
// check reads only listings and JSON objects: every manifest parses, every
// object a manifest names exists with its recorded size, each stream's
// binlogs are numbered without a hole and continue each other's GTIDs,
// promotion records agree with the binlogs before them, and the binlogs
// after each completed backup continue into the later streams. The deep
// check also downloads and decodes every object (checksums, sizes, the
// binlogs' SHA-256) with bounded memory, several at once.
//
// It must never write to storage, and never stop at the first finding:
// a report lists every problem it found, one per object.
package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/restore"
	"github.com/myhoard/myhoard/storage"
)

// Finding is one problem: the object and what is wrong with it.
type Finding struct {
	Site     string `json:"site"`
	StreamID string `json:"stream_id,omitempty"`
	Key      string `json:"key"`
	Problem  string `json:"problem"`
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s: %s", f.Site, f.Key, f.Problem) }

// Options say what to check.
type Options struct {
	// StreamID limits the check to one stream ("": all).
	StreamID string
	// Deep also decodes every object with Keys.
	Deep bool
	Keys storage.Keyring
	// Workers is how many objects are decoded at once (0: one per core).
	Workers int
}

// Report is what a check found and how much it looked at.
type Report struct {
	Findings []Finding `json:"findings"`
	Streams  int       `json:"streams"`
	Binlogs  int       `json:"binlogs"`
	Parts    int       `json:"basebackup_parts"`
	// DecodedBytes is what the deep check decoded.
	DecodedBytes int64 `json:"decoded_bytes"`
}

// Site checks one site. An error means the check could not run (storage
// unreachable); problems with the objects are findings.
func Site(ctx context.Context, site *storage.Site, o Options) (*Report, error) {
	c := &checker{site: site, o: o, r: &Report{Findings: []Finding{}}}
	backups, err := backup.ListBackups(ctx, site, site.RecoveryOnly)
	if err != nil {
		return nil, fmt.Errorf("verify site %s: list backups: %w", site.Name, err)
	}
	c.chains = runChainSource(site, backups)
	for _, b := range backups {
		if o.StreamID != "" && b.StreamID != o.StreamID {
			continue
		}
		c.r.Streams++
		before := len(c.r.Findings)
		if err := c.stream(ctx, b); err != nil {
			return nil, fmt.Errorf("verify site %s stream %s: %w", site.Name, b.StreamID, err)
		}
		if len(c.r.Findings) > before {
			// retention may have deleted the backup meanwhile (its
			// basebackup.json goes first): then nothing is wrong
			ok, err := site.Exists(ctx, storage.BasebackupManifestKey(b.StreamID))
			if err != nil {
				return nil, fmt.Errorf("verify site %s stream %s: %w", site.Name, b.StreamID, err)
			}
			if !ok {
				c.r.Findings = c.r.Findings[:before]
			}
		}
	}
	if o.StreamID != "" && c.r.Streams == 0 {
		return nil, fmt.Errorf("verify site %s: no backup %q", site.Name, o.StreamID)
	}
	if o.Deep {
		if err := c.deep(ctx); err != nil {
			return nil, err
		}
	}
	sort.SliceStable(c.r.Findings, func(i, j int) bool { return c.r.Findings[i].Key < c.r.Findings[j].Key })
	return c.r, nil
}

// runChainSource is the site as one run saw it: the streams listed once,
// the backups as listed, each stream's binlogs listed once.
func runChainSource(site *storage.Site, backups []backup.BackupInfo) restore.ChainSource {
	src := restore.SiteChainSource(site)
	has := map[string]bool{}
	for _, b := range backups {
		has[b.StreamID] = true
	}
	var ids []string
	var idsErr error
	listed := false
	type result struct {
		list []storage.StoredBinlog
		err  error
	}
	binlogs := map[string]result{}
	return restore.ChainSource{
		Streams: func(ctx context.Context) ([]string, error) {
			if !listed {
				ids, idsErr = src.Streams(ctx)
				listed = idsErr == nil
			}
			return ids, idsErr
		},
		HasBackup: func(_ context.Context, id string) (bool, error) { return has[id], nil },
		Binlogs: func(ctx context.Context, id string) ([]storage.StoredBinlog, error) {
			r, ok := binlogs[id]
			if !ok {
				r.list, r.err = src.Binlogs(ctx, id)
				binlogs[id] = r
			}
			return r.list, r.err
		},
	}
}

type checker struct {
	site *storage.Site
	o    Options
	r    *Report
	// chains reads each stream's binlogs once in a run (every backup's
	// chain goes through the later streams)
	chains restore.ChainSource
	// jobs is what the deep check decodes.
	jobs []deepJob
}

func (c *checker) find(stream, key, format string, args ...any) {
	c.r.Findings = append(c.r.Findings, Finding{Site: c.site.Name, StreamID: stream, Key: key, Problem: fmt.Sprintf(format, args...)})
}

// objects lists a stream's objects by key with their sizes.
func (c *checker) objects(ctx context.Context, streamID string) (map[string]int64, error) {
	out := map[string]int64{}
	err := c.site.List(ctx, storage.StreamPrefix(streamID), func(o storage.ObjectInfo) error {
		out[o.Key] = o.Size
		return nil
	})
	return out, err
}

// stream checks one listed backup: its manifest and parts, its binlogs,
// its promotion records, and what follows it.
func (c *checker) stream(ctx context.Context, b backup.BackupInfo) error {
	objs, err := c.objects(ctx, b.StreamID)
	if err != nil {
		return err
	}
	if b.BrokenReason != "" {
		c.find(b.StreamID, storage.BasebackupManifestKey(b.StreamID), "%s", b.BrokenReason)
	}
	if b.Basebackup == nil {
		return nil
	}
	m := b.Basebackup.BasebackupManifest
	for _, p := range m.Parts {
		c.r.Parts++
		c.sized(b.StreamID, objs, p.Key, p.EncodedSize)
	}
	c.jobs = append(c.jobs, deepJob{stream: b.StreamID, basebackup: m})
	list, err := c.binlogs(ctx, b.StreamID, objs)
	if err != nil {
		return err
	}
	if err := c.promotions(ctx, b.StreamID, objs, m, list); err != nil {
		return err
	}
	if b.CompletedAt != nil {
		// The restorable window GET /backup shows: from the end of the
		// full backup (its own binlogs start at or before its consistency
		// point) to its close (the binlogs continue through the later
		// streams, up to the backup that closed it and on).
		if _, err := restore.ListChainFrom(ctx, c.chains, m); err != nil {
			if storageFailed(err) {
				return err
			}
			c.find(b.StreamID, storage.BasebackupManifestKey(b.StreamID), "the binlogs after this backup do not continue it, so its restorable window is not what GET /backup says: %v", err)
		}
	}
	return nil
}

// sized checks that key exists with size want.
func (c *checker) sized(stream string, objs map[string]int64, key string, want int64) {
	got, ok := objs[key]
	switch {
	case !ok:
		c.find(stream, key, "missing (a manifest names it)")
	case got != want:
		c.find(stream, key, "%d bytes, the manifest says %d", got, want)
	}
}

// binlogs checks a stream's binlog manifests and data objects: numbered
// from 1 without a hole, each readable, its data there with its size, and
// each one's GTIDs continuing the one before. It returns the valid chain
// (as a restore lists it) when there is one. Each manifest is read once:
// through the restore's own listing, and only when that fails one by one,
// to name every problem.
func (c *checker) binlogs(ctx context.Context, streamID string, objs map[string]int64) ([]storage.StoredBinlog, error) {
	list, err := c.chains.Binlogs(ctx, streamID)
	if err == nil {
		for i := range list {
			c.r.Binlogs++
			c.sized(streamID, objs, list[i].Ref.DataKey(), list[i].Manifest.EncodedSize)
			c.jobs = append(c.jobs, deepJob{stream: streamID, binlog: &list[i]})
			if i > 0 && !list[i].Manifest.GTIDsBefore.Equal(list[i-1].End()) {
				c.find(streamID, list[i].Ref.ManifestKey(), "starts at GTIDs %s, but binlog %d ends at %s",
					list[i].Manifest.GTIDsBefore, list[i-1].Ref.RemoteIndex, list[i-1].End())
			}
		}
		return list, nil
	}
	if storageFailed(err) {
		return nil, err
	}
	if !errors.Is(err, storage.ErrGap) && !errors.Is(err, storage.ErrCorrupt) {
		c.find(streamID, storage.BinlogsPrefix(streamID), "%v", err)
	}
	return nil, c.eachManifest(ctx, streamID, objs)
}

// eachManifest reads a stream's binlog manifests one by one and names
// every hole in their numbering and every one that cannot be decoded.
func (c *checker) eachManifest(ctx context.Context, streamID string, objs map[string]int64) error {
	manifests := map[int64][]storage.BinlogRef{}
	for key := range objs {
		// (data whose manifest never came is an upload cut off, which
		// restores never see: not a finding)
		ref, isManifest, err := storage.ParseBinlogKey(key)
		if err == nil && isManifest {
			manifests[ref.RemoteIndex] = append(manifests[ref.RemoteIndex], ref)
		}
	}
	var indexes []int64
	for i := range manifests {
		indexes = append(indexes, i)
	}
	sort.Slice(indexes, func(a, b int) bool { return indexes[a] < indexes[b] })
	next := int64(1)
	for _, idx := range indexes {
		if idx > next {
			c.find(streamID, storage.BinlogsPrefix(streamID)+fmt.Sprintf("%010d", next), "binlog manifests %d to %d are missing (the next stored one is %d)", next, idx-1, idx)
		}
		next = idx + 1
		for _, ref := range manifests[idx] {
			c.r.Binlogs++
			data, err := c.site.GetBytes(ctx, ref.ManifestKey())
			if err != nil {
				return err
			}
			var bm storage.BinlogManifest
			if err := storage.UnmarshalManifest(ref.ManifestKey(), data, &bm); err != nil {
				c.find(streamID, ref.ManifestKey(), "%v", err)
				continue
			}
			c.sized(streamID, objs, ref.DataKey(), bm.EncodedSize)
			c.jobs = append(c.jobs, deepJob{stream: streamID, binlog: &storage.StoredBinlog{Ref: ref, Manifest: bm}})
		}
	}
	return nil
}

// promotions checks a stream's promotion records against its binlogs: a
// record names its own stream and epoch, no binlog is missing before its
// start, and the GTIDs it records are where the backup and the binlogs
// before it end.
func (c *checker) promotions(ctx context.Context, streamID string, objs map[string]int64, m *storage.BasebackupManifest, list []storage.StoredBinlog) error {
	for key := range objs {
		if !strings.Contains(key, "/promotions/") {
			continue
		}
		_, epoch, err := storage.ParsePromotionKey(key)
		if err != nil {
			c.find(streamID, key, "not a promotion record key")
			continue
		}
		rec, err := storage.ReadPromotion(ctx, c.site, streamID, epoch)
		if err != nil {
			if storageFailed(err) {
				return err
			}
			c.find(streamID, key, "%v", err)
			continue
		}
		if rec == nil {
			continue // deleted since the listing
		}
		if rec.StreamID != streamID || rec.Epoch != epoch {
			c.find(streamID, key, "names stream %s epoch %d", rec.StreamID, rec.Epoch)
			continue
		}
		if list == nil {
			continue // the binlogs' own findings come first
		}
		if int64(len(list)) < rec.StartIndex-1 {
			c.find(streamID, key, "epoch %d starts at index %d, but the stream has %d valid binlogs", epoch, rec.StartIndex, len(list))
			continue
		}
		if rec.GTIDs.IsEmpty() {
			continue // a fence of a stream that was not the open one
		}
		want := m.GTIDExecuted
		for _, b := range list[:rec.StartIndex-1] {
			want = want.Union(b.End())
		}
		if !rec.GTIDs.Equal(want) {
			c.find(streamID, key, "records GTIDs %s at index %d, but the backup and the binlogs before it end at %s", rec.GTIDs, rec.StartIndex, want)
		}
	}
	return nil
}

// storageFailed: the error is storage's (the check cannot go on), not a
// problem of the objects.
func storageFailed(err error) bool {
	return storage.StoreFailed(err) && !errors.Is(err, storage.ErrNotFound)
}
