package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gcs "cloud.google.com/go/storage"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/myhoard/myhoard/config"
)

// Stats are a site's error counters, for the remote_read_errors and
// remote_write_errors metrics. Every failed attempt counts, retried or not.
type Stats struct {
	ReadErrors  atomic.Int64
	WriteErrors atomic.Int64
	// Reads counts read requests (list, get, stat attempts), Gets the
	// gets among them, and CacheHits the objects the object cache served
	// instead.
	Reads     atomic.Int64
	Gets      atomic.Int64
	CacheHits atomic.Int64
	// Listed counts the entries listings returned.
	Listed atomic.Int64
}

// RetryPolicy is exponential backoff with full jitter.
type RetryPolicy struct {
	// Attempts is the most tries of one operation (>= 1).
	Attempts int
	// Base is the first backoff; it doubles up to Max.
	Base, Max time.Duration
}

// DefaultRetry rides out a minute or so of outage per operation.
var DefaultRetry = RetryPolicy{Attempts: 10, Base: 250 * time.Millisecond, Max: 15 * time.Second}

func (p RetryPolicy) backoff(attempt int) time.Duration {
	d := float64(p.Base) * math.Pow(2, float64(attempt))
	if d > float64(p.Max) {
		d = float64(p.Max)
	}
	return time.Duration(mrand.Int64N(int64(d) + 1))
}

// SiteOptions tune a site.
type SiteOptions struct {
	Retry RetryPolicy
	// PartSize is the multipart upload part size (default 8 MiB); at most
	// PartSize * UploadConcurrency bytes are buffered per upload.
	PartSize          int
	UploadConcurrency int
	// AttemptTimeout bounds each attempt of a request: an attempt that
	// makes no progress for this long (no answer, no bytes moved) is
	// cancelled and retried like a network error (default 2 min).
	AttemptTimeout time.Duration
	Log            *slog.Logger
	Stats          *Stats
	// Cache, when set, keeps the small write-once objects a listing
	// reads (see ObjectCache); ReadConcurrency bounds the reads in flight
	// of one listing (default 16).
	Cache           *ObjectCache
	ReadConcurrency int
}

// Site is one opened backup site. Keys are relative to the site's prefix.
// Its methods are safe for concurrent use.
type Site struct {
	Name   string
	URL    string
	Prefix string
	// Encode is how new objects of this site are encoded (its
	// compression and encryption key) and RecoveryOnly that myhoard never
	// writes to it; OpenSites sets both from the config.
	Encode       EncodeOptions
	RecoveryOnly bool

	bucket *blob.Bucket
	opts   SiteOptions
	stats  *Stats
	log    *slog.Logger
	// isFile marks file:// sites, whose in-progress uploads are sibling
	// "<key>.<hex>.tmp" files that listings must not show; fileDir is
	// their directory (objects are fsynced there, see syncFile).
	isFile  bool
	fileDir string
	// storageClass is the class new objects are written in (S3, GCS;
	// "": the bucket's default).
	storageClass string
	// noIfNotExist is set once the backend refuses conditional writes;
	// write-once puts then fall back to check-then-write (see PutOptions).
	noIfNotExist atomic.Bool
	// cacheID names the site in the object cache; streams are the
	// binlog listings kept between calls (streamlist.go).
	cacheID   string
	streamsMu sync.Mutex
	streams   map[string]*streamListing
}

// Sentinel errors; an *OpError matches them with errors.Is.
var (
	ErrNotFound = errors.New("object not found")
	ErrExists   = errors.New("object already exists")
)

// StoreFailed tells a failure of the store (an *OpError: unreachable,
// refused, missing object) from an object that was read but does not
// decode.
func StoreFailed(err error) bool {
	var oe *OpError
	return errors.As(err, &oe)
}

// OpError is an operation that failed, with the site, operation and key.
type OpError struct {
	Site, Op, Key string
	Err           error
	Attempts      int
}

func (e *OpError) Error() string {
	key := e.Key
	if key == "" {
		key = "(site)"
	}
	tries := ""
	if e.Attempts > 1 {
		tries = fmt.Sprintf(" (after %d attempts)", e.Attempts)
	}
	return fmt.Sprintf("storage site %s: %s %s%s: %v", e.Site, e.Op, key, tries, explain(e.Err))
}

func (e *OpError) Unwrap() error { return e.Err }

// Is maps the backend's error codes onto the sentinels.
func (e *OpError) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return classify(e.Err) == kindNotFound
	case ErrExists:
		c := gcerrors.Code(e.Err)
		return c == gcerrors.FailedPrecondition || c == gcerrors.AlreadyExists || errors.Is(e.Err, errExistsFallback)
	}
	return false
}

var errExistsFallback = errors.New("object already exists")

// errKind sorts backend errors for retries and messages.
type errKind int

const (
	kindTransient errKind = iota // network, timeouts, 5xx, throttling: retry
	kindNotFound                 // missing object or bucket
	kindDenied                   // credentials or permissions
	kindPermanent                // preconditions, bad arguments, ...
)

var (
	deniedMarkers   = []string{"invalidaccesskeyid", "signaturedoesnotmatch", "accessdenied", "authorizationfailure", "authenticationfailed", "invalid_grant", "unauthorized", "forbidden", "statuscode: 403", "response 403"}
	notFoundMarkers = []string{"nosuchbucket", "containernotfound", "bucket not found", "notfound: bucket"}
)

func classify(err error) errKind {
	if errors.Is(err, errRetryUnconditional) || errors.Is(err, errListVanished) || errors.Is(err, errStalled) {
		return kindTransient
	}
	if errors.Is(err, errExistsFallback) || errors.Is(err, context.Canceled) {
		return kindPermanent
	}
	switch gcerrors.Code(err) {
	case gcerrors.NotFound:
		return kindNotFound
	case gcerrors.PermissionDenied:
		return kindDenied
	case gcerrors.FailedPrecondition, gcerrors.InvalidArgument, gcerrors.AlreadyExists, gcerrors.Unimplemented, gcerrors.Canceled:
		return kindPermanent
	}
	msg := strings.ToLower(err.Error())
	for _, m := range deniedMarkers {
		if strings.Contains(msg, m) {
			return kindDenied
		}
	}
	for _, m := range notFoundMarkers {
		if strings.Contains(msg, m) {
			return kindNotFound
		}
	}
	return kindTransient
}

// explain adds what an error usually means to an operator.
func explain(err error) string {
	msg := err.Error()
	switch classify(err) {
	case kindDenied:
		return msg + " (access denied: check the credentials and the bucket's permissions)"
	case kindNotFound:
		if strings.Contains(strings.ToLower(msg), "bucket") || strings.Contains(msg, "container") {
			return msg + " (does the bucket exist?)"
		}
	}
	return msg
}

// transient tells whether an error is worth retrying: network failures,
// timeouts, 5xx and throttling are; not found, access denied,
// preconditions and bad arguments are not.
func transient(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() == nil && classify(err) == kindTransient
}

// do runs op with the site's retry policy; read tells which error counter
// to bump.
func (s *Site) do(ctx context.Context, opName, key string, read bool, op func(ctx context.Context) error) error {
	return s.doPolicy(ctx, s.opts.Retry, opName, key, read, op)
}

func (s *Site) doPolicy(ctx context.Context, p RetryPolicy, opName, key string, read bool, op func(ctx context.Context) error) error {
	var err error
	attempt := 0
	for ; attempt < p.Attempts; attempt++ {
		if attempt > 0 {
			wait := p.backoff(attempt - 1)
			s.log.Warn("storage operation failed, retrying", "site", s.Name, "op", opName, "key", key, "attempt", attempt, "retry_in", wait, "error", err)
			select {
			case <-ctx.Done():
				return &OpError{Site: s.Name, Op: opName, Key: key, Err: ctx.Err(), Attempts: attempt}
			case <-time.After(wait):
			}
		}
		if read {
			s.stats.Reads.Add(1)
			if opName == "get" {
				s.stats.Gets.Add(1)
			}
		}
		g := newGuard(ctx, s.opts.AttemptTimeout)
		err = g.stalled(op(g.ctx))
		g.stop()
		if err == nil {
			return nil
		}
		if read {
			s.stats.ReadErrors.Add(1)
		} else {
			s.stats.WriteErrors.Add(1)
		}
		if !transient(ctx, err) {
			attempt++
			break
		}
	}
	return &OpError{Site: s.Name, Op: opName, Key: key, Err: err, Attempts: attempt}
}

// OpenSite opens the bucket of a backup site. It does not touch the bucket
// yet; call Check for that.
func OpenSite(ctx context.Context, name string, oc *config.ObjectStorage, opts SiteOptions) (*Site, error) {
	if opts.Retry.Attempts < 1 {
		opts.Retry = DefaultRetry
	}
	if opts.PartSize <= 0 {
		opts.PartSize = 8 << 20
	}
	if opts.UploadConcurrency <= 0 {
		opts.UploadConcurrency = 2
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Stats == nil {
		opts.Stats = &Stats{}
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 2 * time.Minute
	}
	if opts.ReadConcurrency <= 0 {
		opts.ReadConcurrency = 16
	}
	if n := oc.SegmentSize(); n > 0 {
		opts.PartSize = int(n)
	}
	if oc.SkipTLSVerify() {
		opts.Log.Warn("is_verify_tls is false: the storage server's certificate is not verified, so anyone on the path can read and change the backups", "site", name)
	}
	bucket, err := openBucket(ctx, oc)
	if err != nil {
		return nil, fmt.Errorf("storage site %s: open %s: %w", name, redact(oc.URL), err)
	}
	if oc.Prefix != "" {
		bucket = blob.PrefixedBucket(bucket, oc.Prefix)
	}
	site := &Site{Name: name, URL: redact(oc.URL), Prefix: oc.Prefix, bucket: bucket, opts: opts, stats: opts.Stats, log: opts.Log,
		storageClass: oc.StorageClass(), cacheID: name + "\x00" + redact(oc.URL) + "\x00" + oc.Prefix, streams: map[string]*streamListing{}}
	if u, err := url.Parse(oc.URL); err == nil && u.Scheme == "file" {
		site.isFile, site.fileDir = true, filepath.Join(filepath.Clean(u.Path), filepath.FromSlash(oc.Prefix))
	}
	return site, nil
}

// OpenDirectory opens a site on a local directory (file storage), for tools
// and tests that need no config file.
func OpenDirectory(ctx context.Context, name, dir string, opts SiteOptions) (*Site, error) {
	u := (&url.URL{Scheme: "file", Path: dir}).String()
	return OpenSite(ctx, name, &config.ObjectStorage{StorageType: "url", URL: u}, opts)
}

// redact drops secrets a URL might carry in its query.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	q := u.Query()
	for k := range q {
		lk := strings.ToLower(k)
		if strings.Contains(lk, "key") || strings.Contains(lk, "secret") || strings.Contains(lk, "token") || strings.Contains(lk, "sig") {
			q.Set(k, "REDACTED")
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Stats returns the site's error counters.
func (s *Site) Stats() *Stats { return s.stats }

// Close releases the bucket.
func (s *Site) Close() error { return s.bucket.Close() }

// PutOptions tune a put.
type PutOptions struct {
	// IfNotExist makes the put write-once: it fails with ErrExists when
	// the key is taken. Backends that honour conditional writes (S3 with
	// If-None-Match, GCS, Azure, file, mem) decide atomically. Where the
	// backend refuses them, the fallback checks for the key first and
	// then writes: a concurrent writer of the same key can win in between,
	// which myhoard's single-writer-per-epoch rule prevents.
	IfNotExist  bool
	ContentType string
}

// Put writes an object from a source that can be opened again for each
// attempt (a file, a buffer), so that transient failures are retried. The
// object becomes visible only when complete. It returns the bytes written.
func (s *Site) Put(ctx context.Context, key string, open func() (io.ReadCloser, error), opts PutOptions) (int64, error) {
	var n int64
	err := s.do(ctx, "put", key, false, func(ctx context.Context) error {
		r, err := open()
		if err != nil {
			return fmt.Errorf("open source: %w", err)
		}
		defer r.Close()
		n, err = s.write(ctx, key, r, opts)
		return err
	})
	return n, err
}

// PutBytes writes a small object, with retries.
func (s *Site) PutBytes(ctx context.Context, key string, data []byte, opts PutOptions) error {
	_, err := s.Put(ctx, key, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }, opts)
	return err
}

// PutStream writes an object from a one-shot stream (a pipe). It cannot be
// retried here: on failure nothing is visible and the caller decides.
func (s *Site) PutStream(ctx context.Context, key string, r io.Reader, opts PutOptions) (int64, error) {
	var n int64
	err := s.doPolicy(ctx, RetryPolicy{Attempts: 1}, "put", key, false, func(ctx context.Context) error {
		var err error
		n, err = s.write(ctx, key, r, opts)
		return err
	})
	return n, err
}

// write makes one attempt. The writer's context is cancelled on any
// failure, which makes every backend abort the upload (no partial object).
func (s *Site) write(ctx context.Context, key string, r io.Reader, opts PutOptions) (int64, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ifNotExist := opts.IfNotExist && !s.noIfNotExist.Load()
	if opts.IfNotExist && !ifNotExist {
		ok, err := s.bucket.Exists(wctx, key)
		if err != nil {
			return 0, err
		}
		if ok {
			return 0, errExistsFallback
		}
	}
	ct := opts.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	// Bucket.Upload hands the reader to the driver in one call. (It also
	// avoids a nil-pipe panic in gocloud v0.47's azureblob writer when an
	// upload fails after NewWriter+Write.)
	cr := &countingReader{r: r, touch: touchOf(ctx)}
	err := s.bucket.Upload(wctx, key, cr, &blob.WriterOptions{
		BufferSize: s.opts.PartSize, MaxConcurrency: s.opts.UploadConcurrency,
		ContentType: ct, DisableContentTypeDetection: true, IfNotExist: ifNotExist,
		BeforeWrite: s.beforeWrite,
	})
	if err != nil {
		if ifNotExist && gcerrors.Code(err) == gcerrors.Unimplemented {
			s.log.Warn("backend refuses conditional writes; falling back to check-then-write", "site", s.Name)
			s.noIfNotExist.Store(true)
			return cr.n, errRetryUnconditional
		}
		return cr.n, err
	}
	if s.isFile {
		if err := s.syncFile(key); err != nil {
			return cr.n, err
		}
	}
	return cr.n, nil
}

// beforeWrite sets the storage class of a new object on the backends
// that have one.
func (s *Site) beforeWrite(as func(any) bool) error {
	if s.storageClass == "" {
		return nil
	}
	var in *transfermanager.UploadObjectInput
	if as(&in) {
		in.StorageClass = tmtypes.StorageClass(s.storageClass)
		return nil
	}
	var w *gcs.Writer
	if as(&w) {
		w.ObjectAttrs.StorageClass = s.storageClass
	}
	return nil
}

// beforeCopy sets the storage class of a copied object.
func (s *Site) beforeCopy(as func(any) bool) error {
	if s.storageClass == "" {
		return nil
	}
	var in *s3.CopyObjectInput
	if as(&in) {
		in.StorageClass = s3types.StorageClass(s.storageClass)
		return nil
	}
	var c *gcs.Copier
	if as(&c) {
		c.ObjectAttrs.StorageClass = s.storageClass
	}
	return nil
}

// syncFile makes a file site's object durable before the put returns
// (fileblob only renames), so that a manifest written after its data can
// never survive a power loss that the data did not.
func (s *Site) syncFile(key string) error {
	path := filepath.Join(s.fileDir, filepath.FromSlash(key))
	for _, p := range []string{path, filepath.Dir(path)} {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
	}
	return nil
}

type countingReader struct {
	r     io.Reader
	n     int64
	touch func() // progress of the attempt
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.touch()
	}
	return n, err
}

// errRetryUnconditional asks for another attempt after the backend refused
// a conditional write (the next one uses the fallback).
var errRetryUnconditional = errors.New("backend does not support conditional writes; retrying with check-then-write")

// ObjectInfo describes a stored object. ETag is the store's entity tag
// (or the hex MD5 where the store gives no tag; "" where it gives neither).
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	ETag    string
}

// Validator is the object's version as a listing saw it.
func (o ObjectInfo) Validator() Validator {
	return Validator{Size: o.Size, ETag: o.ETag, ModTime: o.ModTime}
}

// infoOf is the ObjectInfo of a listing entry, with the store's ETag.
func infoOf(o *blob.ListObject) ObjectInfo {
	info := ObjectInfo{Key: o.Key, Size: o.Size, ModTime: o.ModTime.UTC(), ETag: listETag(o)}
	if info.ETag == "" && len(o.MD5) > 0 {
		info.ETag = hex.EncodeToString(o.MD5)
	}
	return info
}

// listETag is the entity tag of a listing entry (S3, GCS, Azure).
func listETag(o *blob.ListObject) string {
	var s3o s3types.Object
	if o.As(&s3o) && s3o.ETag != nil {
		return strings.Trim(*s3o.ETag, `"`)
	}
	var g gcs.ObjectAttrs
	if o.As(&g) {
		return g.Etag
	}
	var az container.BlobItem
	if o.As(&az) && az.Properties != nil && az.Properties.ETag != nil {
		return strings.Trim(string(*az.Properties.ETag), `"`)
	}
	return ""
}

// Stat returns an object's size and time; ErrNotFound if missing.
func (s *Site) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	var info ObjectInfo
	err := s.do(ctx, "stat", key, true, func(ctx context.Context) error {
		a, err := s.bucket.Attributes(ctx, key)
		if err != nil {
			return err
		}
		info = ObjectInfo{Key: key, Size: a.Size, ModTime: a.ModTime}
		return nil
	})
	return info, err
}

// Exists reports whether an object exists.
func (s *Site) Exists(ctx context.Context, key string) (bool, error) {
	_, err := s.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Get opens an object for reading. Transient failures while reading are
// retried by reopening the object at the current offset, so a long
// download survives a dropped connection.
func (s *Site) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return s.GetRange(ctx, key, 0, -1)
}

// GetRange reads length bytes from offset (length -1: to the end).
func (s *Site) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	rr := &resumingReader{s: s, ctx: ctx, key: key, off: offset, left: length}
	if err := rr.open(); err != nil {
		return nil, err
	}
	return rr, nil
}

// GetBytes reads a whole (small) object.
func (s *Site) GetBytes(ctx context.Context, key string) ([]byte, error) {
	var data []byte
	err := s.do(ctx, "get", key, true, func(ctx context.Context) error {
		var err error
		data, err = s.bucket.ReadAll(ctx, key)
		return err
	})
	return data, err
}

type resumingReader struct {
	s    *Site
	ctx  context.Context
	key  string
	off  int64
	left int64 // -1: to the end
	r    *blob.Reader
	g    *guard // the open reader's: no bytes for the attempt timeout cancel it
	fail int
}

func (rr *resumingReader) open() error {
	return rr.s.do(rr.ctx, "get", rr.key, true, func(context.Context) error {
		if rr.g != nil {
			rr.g.stop()
		}
		rr.g = newGuard(rr.ctx, rr.s.opts.AttemptTimeout)
		r, err := rr.s.bucket.NewRangeReader(rr.g.ctx, rr.key, rr.off, rr.left, nil)
		if err != nil {
			return rr.g.stalled(err)
		}
		rr.r = r
		return nil
	})
}

func (rr *resumingReader) Read(p []byte) (int, error) {
	if rr.left == 0 {
		return 0, io.EOF
	}
	if rr.left > 0 && int64(len(p)) > rr.left {
		p = p[:rr.left]
	}
	for {
		n, err := rr.r.Read(p)
		if n > 0 {
			rr.g.touch()
		}
		if err != nil && err != io.EOF {
			err = rr.g.stalled(err)
		}
		rr.off += int64(n)
		if rr.left > 0 {
			rr.left -= int64(n)
		}
		if err == nil || err == io.EOF || n > 0 {
			if err != nil && err != io.EOF {
				// Hand back the bytes; the error will recur on the next Read.
				err = nil
			}
			if err == io.EOF && rr.left > 0 {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		rr.s.stats.ReadErrors.Add(1)
		rr.fail++
		if !transient(rr.ctx, err) || rr.fail >= rr.s.opts.Retry.Attempts {
			return 0, &OpError{Site: rr.s.Name, Op: "read", Key: rr.key, Err: err, Attempts: rr.fail}
		}
		rr.s.log.Warn("storage read failed, resuming", "site", rr.s.Name, "key", rr.key, "offset", rr.off, "error", err)
		_ = rr.r.Close()
		select {
		case <-rr.ctx.Done():
			return 0, &OpError{Site: rr.s.Name, Op: "read", Key: rr.key, Err: rr.ctx.Err()}
		case <-time.After(rr.s.opts.Retry.backoff(rr.fail - 1)):
		}
		if err := rr.open(); err != nil {
			return 0, err
		}
	}
}

func (rr *resumingReader) Close() error {
	if rr.g != nil {
		rr.g.stop()
	}
	if rr.r != nil {
		return rr.r.Close()
	}
	return nil
}

// errStalled: an attempt made no progress within the attempt timeout.
var errStalled = errors.New("no progress within the storage attempt timeout")

// guard cancels an attempt's context when it makes no progress (touch)
// for d; stalled tells a failure it caused.
type guard struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	d      time.Duration
}

type touchKey struct{}

func newGuard(ctx context.Context, d time.Duration) *guard {
	g := &guard{d: d}
	g.ctx, g.cancel = context.WithCancelCause(ctx)
	g.timer = time.AfterFunc(d, func() { g.cancel(fmt.Errorf("%w (%v)", errStalled, d)) })
	g.ctx = context.WithValue(g.ctx, touchKey{}, g.touch)
	return g
}

func (g *guard) touch() { g.timer.Reset(g.d) }

func (g *guard) stop() {
	g.timer.Stop()
	g.cancel(nil)
}

// stalled replaces err by the stall when the guard cancelled the attempt.
func (g *guard) stalled(err error) error {
	if cause := context.Cause(g.ctx); err != nil && errors.Is(cause, errStalled) {
		return fmt.Errorf("%w: %v", cause, err)
	}
	return err
}

// touchOf is the progress function of the attempt that ctx belongs to.
func touchOf(ctx context.Context) func() {
	if f, ok := ctx.Value(touchKey{}).(func()); ok {
		return f
	}
	return func() {}
}

// List calls fn for every object under prefix, in key order, a page at a
// time (each page retried), with no limit on the count.
func (s *Site) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	return s.listPages(ctx, &blob.ListOptions{Prefix: prefix}, func(o *blob.ListObject) error {
		if o.IsDir {
			return nil
		}
		return fn(infoOf(o))
	})
}

// errListVanished marks a file that a file site's listing found and then
// could not stat (an upload's temporary file renamed away meanwhile): the
// page is listed again.
var errListVanished = errors.New("a file vanished while the directory was listed")

// listPages calls fn for every entry of a listing, a page at a time (each
// page retried), leaving out fileblob's temporary upload files.
func (s *Site) listPages(ctx context.Context, lo *blob.ListOptions, fn func(*blob.ListObject) error) error {
	token := blob.FirstPageToken
	for {
		var page []*blob.ListObject
		var next []byte
		err := s.do(ctx, "list", lo.Prefix+"*", true, func(ctx context.Context) error {
			var err error
			page, next, err = s.bucket.ListPage(ctx, token, 1000, lo)
			if err != nil && s.isFile && gcerrors.Code(err) == gcerrors.NotFound {
				return fmt.Errorf("%w: %w", errListVanished, err)
			}
			return err
		})
		if err != nil {
			return err
		}
		s.stats.Listed.Add(int64(len(page)))
		for _, o := range page {
			if s.isFile && fileTempRe.MatchString(o.Key) {
				continue
			}
			if err := fn(o); err != nil {
				return err
			}
		}
		if len(next) == 0 {
			return nil
		}
		token = next
	}
}

// fileTempRe matches fileblob's temporary upload files.
var fileTempRe = regexp.MustCompile(`\.[0-9a-f]+\.tmp$`)

// Delete removes an object; a missing object is not an error.
func (s *Site) Delete(ctx context.Context, key string) error {
	err := s.do(ctx, "delete", key, false, func(ctx context.Context) error {
		err := s.bucket.Delete(ctx, key)
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil
		}
		return err
	})
	return err
}

// DeletePrefix removes every object under prefix and returns how many.
func (s *Site) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, &OpError{Site: s.Name, Op: "delete prefix", Err: errors.New("refusing to delete the whole site")}
	}
	var keys []string
	if err := s.List(ctx, prefix, func(o ObjectInfo) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		return 0, err
	}
	for i, k := range keys {
		if err := s.Delete(ctx, k); err != nil {
			return i, err
		}
	}
	if s.isFile {
		s.removeFileTemps(prefix)
	}
	if id := StreamOfKey(prefix); id != "" && prefix == StreamPrefix(id) {
		s.forgetStream(id)
	}
	return len(keys), nil
}

// removeFileTemps removes the temporary files that uploads killed with
// their process left under prefix on a file site (listings never show
// them, so nothing else would).
func (s *Site) removeFileTemps(prefix string) {
	root := filepath.Join(s.fileDir, filepath.FromSlash(prefix))
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && fileTempRe.MatchString(d.Name()) {
			if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
				s.log.Warn("could not remove an upload's temporary file", "path", p, "error", rerr)
			}
		}
		return nil
	})
}

// Copy copies an object within the site, server-side where the backend
// can (S3, GCS, Azure); file and mem copy locally.
func (s *Site) Copy(ctx context.Context, dst, src string) error {
	return s.do(ctx, "copy to "+dst+" from", src, false, func(ctx context.Context) error {
		return s.bucket.Copy(ctx, dst, src, &blob.CopyOptions{BeforeCopy: s.beforeCopy})
	})
}

// Check proves at startup that the site can write, read, list and delete a
// small object, and says clearly what is wrong when it cannot.
func (s *Site) Check(ctx context.Context) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	key := ".myhoard-check/" + hex.EncodeToString(b[:])
	want := []byte("myhoard site check " + key)
	fail := func(step string, err error) error {
		hint := ""
		var oe *OpError
		if errors.As(err, &oe) {
			switch classify(oe.Err) {
			case kindNotFound:
				hint = ": the bucket (or container) does not exist"
			case kindDenied:
				hint = ": access denied, check the credentials"
			case kindTransient:
				hint = ": the storage endpoint is unreachable or failing"
			}
		}
		return fmt.Errorf("storage site %s (%s) failed its %s check%s: %w", s.Name, s.URL, step, hint, err)
	}
	if err := s.PutBytes(ctx, key, want, PutOptions{}); err != nil {
		return fail("write", err)
	}
	got, err := s.GetBytes(ctx, key)
	if err != nil {
		return fail("read", err)
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("storage site %s (%s) failed its read check: read back %d bytes that differ from what was written", s.Name, s.URL, len(got))
	}
	if err := s.Delete(ctx, key); err != nil {
		return fail("delete", err)
	}
	if ok, err := s.Exists(ctx, key); err != nil || ok {
		return fmt.Errorf("storage site %s (%s) failed its delete check: object still there (%v)", s.Name, s.URL, err)
	}
	return nil
}

// CheckReadOnly proves a recovery-only site can be listed, without writing
// to it.
func (s *Site) CheckReadOnly(ctx context.Context) error {
	err := s.do(ctx, "list", StreamsPrefix+"*", true, func(ctx context.Context) error {
		_, _, err := s.bucket.ListPage(ctx, blob.FirstPageToken, 1, &blob.ListOptions{Prefix: StreamsPrefix})
		return err
	})
	if err != nil {
		return fmt.Errorf("storage site %s (%s) failed its list check: %w", s.Name, s.URL, err)
	}
	return nil
}

// ListDir calls fn for the entries directly under prefix: objects, and
// sub-"directories" (keys ending in "/", IsDir set), without descending.
func (s *Site) ListDir(ctx context.Context, prefix string, fn func(o ObjectInfo, isDir bool) error) error {
	return s.listPages(ctx, &blob.ListOptions{Prefix: prefix, Delimiter: "/"}, func(o *blob.ListObject) error {
		return fn(infoOf(o), o.IsDir)
	})
}

// GetDecoded reads an encoded object and writes its decoded bytes to w;
// every checksum (and the encryption) is verified on the way.
func (s *Site) GetDecoded(ctx context.Context, key string, keys Keyring, w io.Writer) error {
	return s.GetDecodedWorkers(ctx, key, keys, w, 0)
}

// GetDecodedWorkers is GetDecoded with at most workers zstd frames
// decompressed side by side (NewDecoderWorkers; 0: one per core).
func (s *Site) GetDecodedWorkers(ctx context.Context, key string, keys Keyring, w io.Writer, workers int) error {
	r, err := s.Get(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	d, _, err := NewDecoderWorkers(r, keys, workers)
	if err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	defer d.Close()
	if _, err := io.Copy(w, d); err != nil {
		return fmt.Errorf("decode %s: %w", key, err)
	}
	return nil
}

// CountingWriter counts the bytes written through it.
type CountingWriter struct {
	W io.Writer
	N int64
}

func (c *CountingWriter) Write(p []byte) (int, error) {
	n, err := c.W.Write(p)
	c.N += int64(n)
	return n, err
}

// ConcatReader reads objects of a site one after another as one stream
// (a basebackup's parts), opening each when the previous one is done;
// storage reads resume after transient failures.
type ConcatReader struct {
	ctx   context.Context
	site  *Site
	keys  []string
	count func(int)
	cur   io.ReadCloser
}

// NewConcatReader reads keys of site in order; count, if set, receives
// each read's size.
func NewConcatReader(ctx context.Context, site *Site, keys []string, count func(int)) *ConcatReader {
	return &ConcatReader{ctx: ctx, site: site, keys: keys, count: count}
}

// PartKeys are the keys of a basebackup's parts, in order.
func PartKeys(m *BasebackupManifest) []string {
	keys := make([]string, len(m.Parts))
	for i, p := range m.Parts {
		keys[i] = p.Key
	}
	return keys
}

func (r *ConcatReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.keys) == 0 {
				return 0, io.EOF
			}
			rc, err := r.site.Get(r.ctx, r.keys[0])
			if err != nil {
				return 0, err
			}
			r.cur, r.keys = rc, r.keys[1:]
		}
		n, err := r.cur.Read(p)
		if n > 0 && r.count != nil {
			r.count(n)
		}
		if err == io.EOF {
			r.cur.Close()
			r.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

// Close closes the object being read.
func (r *ConcatReader) Close() error {
	if r.cur != nil {
		return r.cur.Close()
	}
	return nil
}
