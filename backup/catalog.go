package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// ErrSitesClosed is returned while the backup sites are not open.
var ErrSitesClosed = errors.New("the backup sites are not open yet")

// Catalog is what a node knows of its backup sites: the open sites, the
// encryption keys and the backup listing, cached between refreshes. It is
// safe for concurrent use; storage is read and written outside its lock,
// so a slow site never blocks a reader of the cached listing.
type Catalog struct {
	log *slog.Logger

	mu         sync.Mutex
	sites      map[string]*storage.Site
	keys       storage.Keyring
	backups    []BackupInfo // nil until listed
	listedAt   time.Time
	unreadable int
}

// NewCatalog makes a catalog with no site open.
func NewCatalog(log *slog.Logger) *Catalog {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Catalog{log: log}
}

// Open puts opened sites and their keys in use. The listing is
// refreshed at the next Refresh.
func (k *Catalog) Open(sites map[string]*storage.Site, keys storage.Keyring) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.sites, k.keys = sites, keys
	k.listedAt = time.Time{}
}

// Close closes the sites (a config reload opens them again).
func (k *Catalog) Close() {
	k.mu.Lock()
	sites := k.sites
	k.sites = nil
	k.mu.Unlock()
	for _, s := range sites {
		s.Close()
	}
}

// Ready reports whether the sites are open.
func (k *Catalog) Ready() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sites != nil
}

// Site is an open site by name (nil: not configured or not open).
func (k *Catalog) Site(name string) *storage.Site {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sites[name]
}

// Sites are the open sites, by name.
func (k *Catalog) Sites() map[string]*storage.Site {
	k.mu.Lock()
	defer k.mu.Unlock()
	return maps.Clone(k.sites)
}

// Keys are the sites' encryption keys.
func (k *Catalog) Keys() storage.Keyring {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys
}

// Invalidate makes the next Refresh list again (something was written).
func (k *Catalog) Invalidate() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.listedAt = time.Time{}
}

// Refresh lists every site's backups when the cached listing is older
// than maxAge (0: always). A backup whose objects cannot be read is listed
// broken with its reason (logged, and counted by Unreadable).
func (k *Catalog) Refresh(ctx context.Context, maxAge time.Duration) error {
	k.mu.Lock()
	due := maxAge <= 0 || k.backups == nil || time.Since(k.listedAt) >= maxAge
	sites := k.sites
	k.mu.Unlock()
	if !due {
		return nil
	}
	if sites == nil {
		return ErrSitesClosed
	}
	names := make([]string, 0, len(sites))
	for name := range sites {
		names = append(names, name)
	}
	sort.Strings(names)
	all := []BackupInfo{}
	for _, name := range names {
		list, err := ListBackups(ctx, sites[name], sites[name].RecoveryOnly)
		if err != nil {
			return fmt.Errorf("list backups of site %s: %w", name, err)
		}
		all = append(all, list...)
	}
	bad := 0
	for _, b := range all {
		if b.BrokenReason != "" {
			bad++
			k.log.Warn("a backup's objects cannot be read; it is listed as broken", "stream", b.StreamID, "site", b.Site, "reason", b.BrokenReason)
		}
	}
	k.mu.Lock()
	k.backups, k.listedAt, k.unreadable = all, time.Now(), bad
	k.mu.Unlock()
	return nil
}

// Unreadable is how many backups the last listing could not read.
func (k *Catalog) Unreadable() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.unreadable
}

// Backups is a copy of the cached listing (nil before the first one).
func (k *Catalog) Backups() []BackupInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.backups == nil {
		return nil
	}
	return append([]BackupInfo{}, k.backups...)
}

// Find is a listed backup; when the cached listing lacks it, the sites are
// listed again once before it is reported missing (nil).
func (k *Catalog) Find(ctx context.Context, site, streamID string) (*BackupInfo, error) {
	find := func() *BackupInfo {
		for _, b := range k.Backups() {
			if b.Site == site && b.StreamID == streamID {
				return &b
			}
		}
		return nil
	}
	if b := find(); b != nil {
		return b, nil
	}
	if err := k.Refresh(ctx, 0); err != nil {
		return nil, err
	}
	return find(), nil
}

// WritableSite is the site holding a listed backup, refused for a
// recovery-only site (myhoard never writes there).
func (k *Catalog) WritableSite(streamID string) (*storage.Site, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.backups == nil {
		return nil, ErrSitesClosed
	}
	for _, b := range k.backups {
		if b.StreamID != streamID {
			continue
		}
		if b.RecoverySite {
			return nil, wire.BadRequest("backup %s is on recovery-only site %s, which myhoard never writes to", streamID, b.Site)
		}
		if s := k.sites[b.Site]; s != nil {
			return s, nil
		}
	}
	return nil, wire.BadRequest("no backup %q in the backup list", streamID)
}

// StreamBinlogs lists a listed backup's binlogs (storage.ListStreamBinlogs
// when full, else storage.FollowStreamBinlogs).
func (k *Catalog) StreamBinlogs(ctx context.Context, streamID string, full bool) (wire.StreamBinlogs, error) {
	var b *BackupInfo
	for _, x := range k.Backups() {
		if x.StreamID == streamID {
			b = &x
			break
		}
	}
	if b == nil {
		return wire.StreamBinlogs{}, wire.BadRequest("no backup %q in the backup list", streamID)
	}
	site := k.Site(b.Site)
	if site == nil {
		return wire.StreamBinlogs{}, ErrSitesClosed
	}
	list := storage.FollowStreamBinlogs
	if full {
		list = storage.ListStreamBinlogs
	}
	binlogs, err := list(ctx, site, streamID)
	if err != nil {
		return wire.StreamBinlogs{}, fmt.Errorf("list the binlogs of %s: %w", streamID, err)
	}
	out := wire.StreamBinlogs{Site: b.Site, StreamID: streamID, Binlogs: make([]storage.BinlogManifest, len(binlogs))}
	for i, bl := range binlogs {
		out.Binlogs[i] = bl.Manifest
	}
	return out, nil
}

// SetMarker writes (rec not nil) or removes a listed backup's marker and
// lists again, so that the listing shows the change when it returns.
func (k *Catalog) SetMarker(ctx context.Context, streamID string, m storage.Marker, rec *storage.MarkerRecord) error {
	site, err := k.WritableSite(streamID)
	if err != nil {
		return err
	}
	if rec == nil {
		err = site.Delete(ctx, storage.MarkerKey(streamID, m))
	} else {
		err = storage.WriteMarker(ctx, site, streamID, m, *rec)
	}
	if err != nil {
		return fmt.Errorf("backup %s: %s marker: %w", streamID, m, err)
	}
	return k.Refresh(ctx, 0)
}

// DeleteOld deletes, oldest first and at most max, the backups the
// retention rules let go (never one of own, this node's open streams):
// basebackup.json first, so the backup leaves every listing at once, then
// the rest of the stream.
func (k *Catalog) DeleteOld(ctx context.Context, r Retention, own map[string]bool, max int) error {
	for i := 0; i < max; i++ {
		k.mu.Lock()
		victim := r.ToDelete(k.backups, own, time.Now())
		var site *storage.Site
		if victim != nil {
			site = k.sites[victim.Site]
		}
		k.mu.Unlock()
		if victim == nil || site == nil {
			return nil
		}
		k.log.Info("deleting old backup", "stream", victim.StreamID, "site", victim.Site, "closed_at", victim.ClosedAt)
		if err := site.Delete(ctx, storage.BasebackupManifestKey(victim.StreamID)); err != nil {
			return fmt.Errorf("delete backup %s: %w", victim.StreamID, err)
		}
		if _, err := site.DeletePrefix(ctx, storage.StreamPrefix(victim.StreamID)); err != nil {
			return fmt.Errorf("delete backup %s: %w", victim.StreamID, err)
		}
		k.mu.Lock()
		keep := k.backups[:0:0]
		for _, b := range k.backups {
			if b.StreamID != victim.StreamID {
				keep = append(keep, b)
			}
		}
		k.backups = keep
		k.mu.Unlock()
	}
	return nil
}

// StoredByOpenStreams is the backed-up rule of an observing node: a local
// binlog is backed up when the transactions it added are in what the
// listed open streams hold in storage (the full backup's GTIDs and every
// binlog uploaded since). ok is false when no stream is open.
func (k *Catalog) StoredByOpenStreams(ctx context.Context) (backedUp func(LocalBinlog) bool, ok bool, err error) {
	var stored []mysql.GTIDSet
	for _, b := range k.Backups() {
		if b.ClosedAt != nil || b.Basebackup == nil || b.RecoverySite {
			continue
		}
		site := k.Site(b.Site)
		if site == nil {
			return nil, false, ErrSitesClosed
		}
		list, err := storage.FollowStreamBinlogs(ctx, site, b.StreamID)
		if err != nil {
			return nil, false, err
		}
		set := b.Basebackup.GTIDExecuted
		if len(list) > 0 {
			set = set.Union(list[len(list)-1].End())
		}
		stored = append(stored, set)
	}
	if len(stored) == 0 {
		return nil, false, nil
	}
	return func(l LocalBinlog) bool {
		if l.GTIDsAdded.IsEmpty() {
			return true
		}
		for _, s := range stored {
			if l.GTIDsAdded.IsSubsetOf(s) {
				return true
			}
		}
		return false
	}, true, nil
}
