package storage

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"

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
//
// Every key of the stream is listed; only the manifests not read before
// (in this process, or in the object cache) are read, up to the site's
// ReadConcurrency at a time. The result is what ReferenceListStreamBinlogs
// gives.
func ListStreamBinlogs(ctx context.Context, site *Site, streamID string) ([]StoredBinlog, error) {
	return site.listBinlogs(ctx, streamID, true)
}

// FollowStreamBinlogs is ListStreamBinlogs for a poller (an observer, the
// backup listing): it lists only the keys from the end of the gapless
// chain it saw last time (S3 StartAfter, GCS StartOffset; the other stores
// list every key and skip the known ones), so a listing reads only what is
// new. A change of the promotion records lists everything again.
//
// What it can miss until the next ListStreamBinlogs of the stream: an
// object deleted below that point, and a second valid binlog written at an
// index already listed (two primaries of one epoch, which the fencing
// prevents; ListStreamBinlogs fails on it).
func FollowStreamBinlogs(ctx context.Context, site *Site, streamID string) ([]StoredBinlog, error) {
	return site.listBinlogs(ctx, streamID, false)
}

// StreamNextIndex is the remote index the next binlog of a stream gets:
// one past the valid, gapless chain ListStreamBinlogs would list (from the
// keys alone, without reading the manifests).
func StreamNextIndex(ctx context.Context, site *Site, streamID string) (int64, error) {
	starts, _, err := promotionStarts(ctx, site, streamID, site.ReadListedManifest)
	if err != nil {
		return 0, err
	}
	keys := map[string]ObjectInfo{}
	if err := site.List(ctx, BinlogsPrefix(streamID), func(o ObjectInfo) error {
		keys[o.Key] = o
		return nil
	}); err != nil {
		return 0, fmt.Errorf("list binlogs of %s: %w", streamID, err)
	}
	refs, err := chainOf(streamID, keys, starts)
	if err != nil {
		return 0, err
	}
	return int64(len(refs)) + 1, nil
}

// streamListing is what a site remembers of a stream's binlogs between
// listings.
type streamListing struct {
	mu sync.Mutex
	// keys are the binlog manifest objects listed, by key; every key up to
	// and including after was listed (after "": nothing is known).
	keys  map[string]ObjectInfo
	after string
	// fence identifies the promotion records the keys were listed under.
	fence string
	// parsed are the manifests read, by key, with the version read.
	parsed map[string]parsedManifest
	used   time.Time
}

type parsedManifest struct {
	m BinlogManifest
	v Validator
}

// maxStreamListings bounds the streams whose listing a site keeps in
// memory (the object cache keeps the manifests of the others).
const maxStreamListings = 8

func (s *Site) streamListing(id string) *streamListing {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	st := s.streams[id]
	if st == nil {
		if len(s.streams) >= maxStreamListings {
			oldest := ""
			for k, v := range s.streams {
				if oldest == "" || v.used.Before(s.streams[oldest].used) {
					oldest = k
				}
			}
			delete(s.streams, oldest)
		}
		st = &streamListing{keys: map[string]ObjectInfo{}, parsed: map[string]parsedManifest{}}
		s.streams[id] = st
	}
	st.used = time.Now()
	return st
}

// CacheName is the site's name in the object cache.
func (s *Site) CacheName() string { return s.cacheID }

// forgetStream drops what the site remembers of a deleted stream.
func (s *Site) forgetStream(id string) {
	s.streamsMu.Lock()
	delete(s.streams, id)
	s.streamsMu.Unlock()
	if s.opts.Cache != nil {
		s.opts.Cache.DropStream(s.cacheID, id)
	}
}

func (s *Site) listBinlogs(ctx context.Context, id string, full bool) ([]StoredBinlog, error) {
	starts, fence, err := promotionStarts(ctx, s, id, s.ReadListedManifest)
	if err != nil {
		return nil, err
	}
	st := s.streamListing(id)
	st.mu.Lock()
	defer st.mu.Unlock()
	if full || fence != st.fence {
		st.after = ""
	}
	listed := map[string]ObjectInfo{}
	after := st.after
	// manifests not read yet are read while the listing goes on
	pre := s.newPrefetch(ctx)
	lo := &blob.ListOptions{Prefix: BinlogsPrefix(id), BeforeList: s.startAfter(after)}
	err = s.listPages(ctx, lo, func(o *blob.ListObject) error {
		if o.IsDir || (after != "" && o.Key <= after) {
			return nil
		}
		ref, manifest, err := ParseBinlogKey(o.Key)
		if err != nil || !manifest {
			return nil
		}
		info := infoOf(o)
		listed[o.Key] = info
		if p, ok := st.parsed[o.Key]; (!ok || !p.v.equal(info.Validator())) && validUnderFence(ref, starts) {
			pre.read(info)
		}
		return nil
	})
	if err != nil {
		pre.cancel()
	}
	read := pre.wait()
	if err != nil {
		return nil, fmt.Errorf("list binlogs of %s: %w", id, err)
	}
	// what was listed replaces everything known past after
	for k := range st.keys {
		if k > after {
			delete(st.keys, k)
		}
	}
	for k, o := range listed {
		st.keys[k] = o
	}
	for k, p := range st.parsed {
		if o, ok := st.keys[k]; !ok || !o.Validator().equal(p.v) {
			delete(st.parsed, k)
		}
	}
	for k, p := range read {
		st.parsed[k] = p
	}
	st.fence = fence
	refs, chainErr := chainOf(id, st.keys, starts)
	// the next listing starts at the last index of the gapless chain
	// (listing that index's keys again)
	st.after = ""
	if len(refs) > 0 {
		st.after = fmt.Sprintf("%s%010d", BinlogsPrefix(id), refs[len(refs)-1].RemoteIndex)
	}
	if chainErr != nil {
		return nil, chainErr
	}
	if err := s.readBinlogManifests(ctx, st, refs); err != nil {
		return nil, err
	}
	out := make([]StoredBinlog, len(refs))
	for i, ref := range refs {
		out[i] = StoredBinlog{Ref: ref, Manifest: st.parsed[ref.ManifestKey()].m}
	}
	return out, nil
}

// prefetch reads binlog manifests as a listing finds them, up to the
// site's ReadConcurrency at a time. What fails is left out: it is read
// again, in index order, when the chain needs it (readBinlogManifests),
// so that the error is the first binlog's.
type prefetch struct {
	s      *Site
	ctx    context.Context
	cancel context.CancelFunc
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	got    map[string]parsedManifest
}

func (s *Site) newPrefetch(ctx context.Context) *prefetch {
	ctx, cancel := context.WithCancel(ctx)
	return &prefetch{s: s, ctx: ctx, cancel: cancel, sem: make(chan struct{}, s.opts.ReadConcurrency), got: map[string]parsedManifest{}}
}

// read starts reading a manifest (it waits while the most are in flight).
func (p *prefetch) read(o ObjectInfo) {
	select {
	case p.sem <- struct{}{}:
	case <-p.ctx.Done():
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() { <-p.sem }()
		var m BinlogManifest
		if err := p.s.ReadListedManifest(p.ctx, o, &m); err != nil {
			return
		}
		p.mu.Lock()
		p.got[o.Key] = parsedManifest{m: m, v: o.Validator()}
		p.mu.Unlock()
	}()
}

// wait returns what was read, once every read ended.
func (p *prefetch) wait() map[string]parsedManifest {
	p.wg.Wait()
	p.cancel()
	return p.got
}

// readBinlogManifests reads the manifests of refs that are not parsed yet,
// up to the site's ReadConcurrency at a time; the error is that of the
// first failing binlog in index order.
func (s *Site) readBinlogManifests(ctx context.Context, st *streamListing, refs []BinlogRef) error {
	var todo []ObjectInfo
	for _, ref := range refs {
		if _, ok := st.parsed[ref.ManifestKey()]; !ok {
			todo = append(todo, st.keys[ref.ManifestKey()])
		}
	}
	got := make([]BinlogManifest, len(todo))
	err := s.ReadEach(ctx, len(todo), func(ctx context.Context, i int) error {
		return s.ReadListedManifest(ctx, todo[i], &got[i])
	})
	if err != nil {
		return err
	}
	for i, o := range todo {
		st.parsed[o.Key] = parsedManifest{m: got[i], v: o.Validator()}
	}
	return nil
}

// ReadEach runs fn for 0..n-1 with at most the site's ReadConcurrency
// running; the error is that of the lowest i that failed.
func (s *Site) ReadEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	errs := make([]error, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < min(s.opts.ReadConcurrency, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				errs[i] = fn(ctx, i)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// startAfter asks the store to list from after on where it can (the key
// is relative to the site's prefix, the store's is not).
func (s *Site) startAfter(after string) func(as func(any) bool) error {
	if after == "" {
		return nil
	}
	full := s.Prefix + after
	return func(as func(any) bool) error {
		var in *s3.ListObjectsV2Input
		if as(&in) {
			in.StartAfter = &full
			return nil
		}
		var q *gcs.Query
		if as(&q) {
			q.StartOffset = full + "\x00" // StartOffset is inclusive
		}
		return nil
	}
}

// chainOf is the valid binlog chain of a stream's manifest keys: not
// fenced by a promotion record, in remote index order, with no gap. On a
// gap it returns the chain before it with the error.
func chainOf(streamID string, keys map[string]ObjectInfo, starts map[int64]int64) ([]BinlogRef, error) {
	byIndex := map[int64][]BinlogRef{}
	for k := range keys {
		ref, manifest, err := ParseBinlogKey(k)
		if err != nil || !manifest || !validUnderFence(ref, starts) {
			continue
		}
		byIndex[ref.RemoteIndex] = append(byIndex[ref.RemoteIndex], ref)
	}
	indexes := make([]int64, 0, len(byIndex))
	for i := range byIndex {
		indexes = append(indexes, i)
	}
	sort.Slice(indexes, func(a, b int) bool { return indexes[a] < indexes[b] })
	out := make([]BinlogRef, 0, len(indexes))
	for n, idx := range indexes {
		if idx != int64(n+1) {
			return out, fmt.Errorf("stream %s: binlog %d is missing (the next stored one is %d): %w", streamID, n+1, idx, ErrGap)
		}
		refs := byIndex[idx]
		if len(refs) > 1 {
			sort.Slice(refs, func(a, b int) bool { return refs[a].DataKey() < refs[b].DataKey() })
			return out, fmt.Errorf("stream %s: %d valid binlogs at index %d (%s and %s)", streamID, len(refs), idx, refs[0].DataKey(), refs[1].DataKey())
		}
		out = append(out, refs[0])
	}
	return out, nil
}

// promotionStarts maps each promoted epoch of a stream to the remote index
// from which only its primary may write, each record read with read;
// fence identifies the records (their keys and versions).
func promotionStarts(ctx context.Context, site *Site, streamID string, read func(context.Context, ObjectInfo, versioned) error) (starts map[int64]int64, fence string, err error) {
	var objs []ObjectInfo
	err = site.List(ctx, StreamPrefix(streamID)+"promotions/", func(o ObjectInfo) error {
		if _, _, err := ParsePromotionKey(o.Key); err == nil {
			objs = append(objs, o)
		}
		return nil
	})
	if err != nil {
		return nil, "", fmt.Errorf("read promotion records of %s: %w", streamID, err)
	}
	starts = map[int64]int64{}
	for _, o := range objs {
		_, epoch, _ := ParsePromotionKey(o.Key)
		var rec PromotionRecord
		if err := read(ctx, o, &rec); err != nil {
			return nil, "", fmt.Errorf("read promotion records of %s: %w", streamID, err)
		}
		if rec.Epoch != epoch {
			return nil, "", fmt.Errorf("read promotion records of %s: promotion record %s says epoch %d", streamID, o.Key, rec.Epoch)
		}
		starts[epoch] = rec.StartIndex
		fence += fmt.Sprintf("%s %d %s %d\n", o.Key, o.Size, o.ETag, o.ModTime.UnixNano())
	}
	return starts, fence, nil
}

func validUnderFence(ref BinlogRef, starts map[int64]int64) bool {
	for epoch, start := range starts {
		if epoch > ref.Epoch && ref.RemoteIndex >= start {
			return false
		}
	}
	return true
}

// ReadListed reads a small object that a listing gave, through the
// object cache when the site has one (ok: the copy came from the cache).
func (s *Site) ReadListed(ctx context.Context, o ObjectInfo) (data []byte, cached bool, err error) {
	c := s.opts.Cache
	if c != nil {
		if data, ok := c.Get(s.cacheID, o.Key, o.Validator()); ok {
			s.stats.CacheHits.Add(1)
			return data, true, nil
		}
	}
	if data, err = s.GetBytes(ctx, o.Key); err != nil {
		return nil, false, err
	}
	if c != nil && int64(len(data)) == o.Size && !o.ModTime.IsZero() {
		c.Put(s.cacheID, o.Key, o.Validator(), data)
	}
	return data, false, nil
}

// ReadListedManifest decodes a listed manifest object (ReadListed); a
// cached copy that does not decode is dropped and the object read again.
func (s *Site) ReadListedManifest(ctx context.Context, o ObjectInfo, v versioned) error {
	data, cached, err := s.ReadListed(ctx, o)
	if err != nil {
		return err
	}
	err = UnmarshalManifest(o.Key, data, v)
	if err == nil || !cached {
		return err
	}
	s.log.Warn("object cache: a cached copy does not decode; reading the object again", "site", s.Name, "key", o.Key, "error", err)
	s.opts.Cache.Drop(s.cacheID, o.Key)
	rv := reflect.ValueOf(v).Elem()
	rv.Set(reflect.Zero(rv.Type()))
	if data, _, err = s.ReadListed(ctx, o); err != nil {
		return err
	}
	return UnmarshalManifest(o.Key, data, v)
}
