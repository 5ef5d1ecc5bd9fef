package storage

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ObjectCache keeps local copies of a site's small objects that are
// written once (binlog manifests, basebackup.json, promotion records and
// markers) under a directory, so that each is read from the store once,
// across restarts. It never decides what an object says: an entry is used
// only when the size, ETag (or MD5) and modification time a listing gives
// for the key equal those recorded with the copy, so an object changed
// behind the cache's back is read again.
//
// The cache holds one append-only file per site and stream (every cached
// key lives under a stream); each record carries a CRC, and a file is read
// up to its first bad record, which is cut off (a truncated or damaged
// file loses only what follows). Files are dropped, least recently used
// first, when the cache grows past its bound, and with their stream when
// the stream is deleted. One process holds the directory (an exclusive
// lock); another that opens it gets an error and works without the cache.
type ObjectCache struct {
	dir  string
	max  int64
	log  *slog.Logger
	lock *os.File

	mu    sync.Mutex
	files map[string]*cacheFile // by file name
	total int64
	clock uint64 // use counter, for least-recently-used eviction
}

// Validator is what a listing says of an object's version.
type Validator struct {
	Size    int64
	ETag    string
	ModTime time.Time
}

func (v Validator) equal(o Validator) bool {
	return v.Size == o.Size && v.ETag == o.ETag && v.ModTime.Equal(o.ModTime)
}

type cacheEntry struct {
	v        Validator
	off, len int64 // of the data in the file
}

type cacheFile struct {
	path    string
	loaded  bool
	entries map[string]cacheEntry
	size    int64
	used    uint64
	f       *os.File // opened for reading and appending once loaded
}

const cacheMagic = "MYHOARD-OBJECT-CACHE-1\n"

// cacheRecordMax bounds one record: the cache is for small objects.
const cacheRecordMax = 4 << 20

// ErrCacheBusy is returned by OpenObjectCache when another process holds
// the directory.
var ErrCacheBusy = errors.New("the object cache directory is in use by another process")

// OpenObjectCache opens (creating it) a cache directory bounded to about
// maxBytes.
func OpenObjectCache(dir string, maxBytes int64, log *slog.Logger) (*ObjectCache, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("object cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("object cache: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("object cache %s: %w", dir, ErrCacheBusy)
	}
	c := &ObjectCache{dir: dir, max: maxBytes, log: log, lock: lock, files: map[string]*cacheFile{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("object cache: %w", err)
	}
	var infos []os.FileInfo
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".cache") {
			continue
		}
		if info, err := e.Info(); err == nil {
			infos = append(infos, info)
		}
	}
	// the least recently written files go first
	sort.Slice(infos, func(a, b int) bool { return infos[a].ModTime().Before(infos[b].ModTime()) })
	for _, info := range infos {
		c.clock++
		c.files[info.Name()] = &cacheFile{path: filepath.Join(dir, info.Name()), size: info.Size(), used: c.clock}
		c.total += info.Size()
	}
	c.mu.Lock()
	c.evictLocked("")
	c.mu.Unlock()
	return c, nil
}

// Close closes the cache's files and releases the directory.
func (c *ObjectCache) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.files {
		if f.f != nil {
			f.f.Close()
			f.f = nil
		}
		f.loaded = false
	}
	if c.lock != nil {
		c.lock.Close()
		c.lock = nil
	}
}

// Size is the cache's size on disk.
func (c *ObjectCache) Size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// fileName is the cache file of a site's stream ("" for a key outside
// every stream, which is not cached).
func fileName(site, key string) string {
	stream := StreamOfKey(key)
	if _, err := ParseStreamID(stream); err != nil {
		return ""
	}
	h := sha256.Sum256([]byte(site))
	return hex.EncodeToString(h[:8]) + "-" + stream + ".cache"
}

// Get returns the cached copy of a site's key when v is the version
// recorded with it.
func (c *ObjectCache) Get(site, key string, v Validator) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fileLocked(site, key, false)
	if f == nil {
		return nil, false
	}
	e, ok := f.entries[key]
	if !ok || !e.v.equal(v) {
		return nil, false
	}
	data := make([]byte, e.len)
	if _, err := f.f.ReadAt(data, e.off); err != nil {
		c.log.Warn("object cache: cannot read an entry; reading the object from storage", "file", f.path, "key", key, "error", err)
		delete(f.entries, key)
		return nil, false
	}
	return data, true
}

// Put records a copy of a site's key at version v. Failures are logged
// and leave the cache without the entry (it is only a cache).
func (c *ObjectCache) Put(site, key string, v Validator, data []byte) {
	if len(data)+len(key)+len(v.ETag)+64 > cacheRecordMax {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.fileLocked(site, key, true)
	if f == nil {
		return
	}
	rec := encodeRecord(key, v, data)
	off, err := f.f.Seek(0, io.SeekEnd)
	if err == nil {
		_, err = f.f.Write(rec)
	}
	if err != nil {
		c.log.Warn("object cache: cannot write an entry; dropping the file", "file", f.path, "error", err)
		c.dropLocked(filepath.Base(f.path))
		return
	}
	f.entries[key] = cacheEntry{v: v, off: off + int64(len(rec)-len(data)), len: int64(len(data))}
	f.size += int64(len(rec))
	c.total += int64(len(rec))
	c.evictLocked(filepath.Base(f.path))
}

// Drop forgets a site's key (a copy that did not decode).
func (c *ObjectCache) Drop(site, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.fileLocked(site, key, false); f != nil {
		delete(f.entries, key)
	}
}

// DropStream removes everything cached of a site's stream (the stream
// was deleted).
func (c *ObjectCache) DropStream(site, streamID string) {
	name := fileName(site, StreamPrefix(streamID))
	if name == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(name)
}

func (c *ObjectCache) dropLocked(name string) {
	f, ok := c.files[name]
	if !ok {
		return
	}
	if f.f != nil {
		f.f.Close()
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log.Warn("object cache: cannot remove a file", "file", f.path, "error", err)
	}
	c.total -= f.size
	delete(c.files, name)
}

// evictLocked removes the least recently used files until the cache is
// within its bound again (to 90% of it, so that eviction is not run on
// every write), never keep.
func (c *ObjectCache) evictLocked(keep string) {
	if c.max <= 0 || c.total <= c.max {
		return
	}
	names := make([]string, 0, len(c.files))
	for n := range c.files {
		names = append(names, n)
	}
	sort.Slice(names, func(a, b int) bool { return c.files[names[a]].used < c.files[names[b]].used })
	for _, n := range names {
		if c.total <= c.max*9/10 {
			return
		}
		if n != keep {
			c.dropLocked(n)
		}
	}
}

// fileLocked is the loaded cache file of a site's key (created when
// create is set; nil when the key is not cacheable or the file cannot be
// used).
func (c *ObjectCache) fileLocked(site, key string, create bool) *cacheFile {
	name := fileName(site, key)
	if name == "" || c.lock == nil {
		return nil
	}
	f, ok := c.files[name]
	if !ok {
		if !create {
			return nil
		}
		f = &cacheFile{path: filepath.Join(c.dir, name)}
		c.files[name] = f
	}
	c.clock++
	f.used = c.clock
	if !f.loaded {
		if err := c.loadLocked(f); err != nil {
			c.log.Warn("object cache: cannot use a file; starting it again", "file", f.path, "error", err)
			c.dropLocked(name)
			if !create {
				return nil
			}
			f = &cacheFile{path: filepath.Join(c.dir, name), used: c.clock}
			c.files[name] = f
			if err := c.loadLocked(f); err != nil {
				c.dropLocked(name)
				return nil
			}
		}
	}
	return f
}

// loadLocked opens a cache file and indexes its records, cutting off a
// damaged tail.
func (c *ObjectCache) loadLocked(f *cacheFile) error {
	fh, err := os.OpenFile(f.path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	entries, good, err := scanRecords(fh)
	if err != nil {
		fh.Close()
		return err
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return err
	}
	if st.Size() != good {
		c.log.Warn("object cache: a file ends in a damaged record; cutting it off", "file", f.path, "kept_bytes", good, "size", st.Size())
		if err := fh.Truncate(good); err != nil {
			fh.Close()
			return err
		}
	}
	if good == 0 {
		if _, err := fh.WriteAt([]byte(cacheMagic), 0); err != nil {
			fh.Close()
			return err
		}
		good = int64(len(cacheMagic))
	}
	c.total += good - f.size
	f.f, f.entries, f.size, f.loaded = fh, entries, good, true
	return nil
}

// encodeRecord is one record: length and CRC-32C of the body, then the
// body: key, size, modification time, ETag, data.
func encodeRecord(key string, v Validator, data []byte) []byte {
	body := make([]byte, 0, 2+len(key)+8+8+2+len(v.ETag)+len(data))
	body = binary.BigEndian.AppendUint16(body, uint16(len(key)))
	body = append(body, key...)
	body = binary.BigEndian.AppendUint64(body, uint64(v.Size))
	body = binary.BigEndian.AppendUint64(body, uint64(v.ModTime.UnixNano()))
	body = binary.BigEndian.AppendUint16(body, uint16(len(v.ETag)))
	body = append(body, v.ETag...)
	body = append(body, data...)
	rec := make([]byte, 8, 8+len(body))
	binary.BigEndian.PutUint32(rec[0:], uint32(len(body)))
	binary.BigEndian.PutUint32(rec[4:], crc32.Checksum(body, crcTable))
	return append(rec, body...)
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// decodeRecord parses a record's body; the data is the rest after the
// header fields (its offset in the body is returned).
func decodeRecord(body []byte) (key string, v Validator, dataOff int, err error) {
	bad := errors.New("bad cache record")
	if len(body) < 2 {
		return "", v, 0, bad
	}
	kl := int(binary.BigEndian.Uint16(body))
	p := 2
	if len(body) < p+kl+18 {
		return "", v, 0, bad
	}
	key = string(body[p : p+kl])
	p += kl
	v.Size = int64(binary.BigEndian.Uint64(body[p:]))
	v.ModTime = time.Unix(0, int64(binary.BigEndian.Uint64(body[p+8:]))).UTC()
	el := int(binary.BigEndian.Uint16(body[p+16:]))
	p += 18
	if len(body) < p+el {
		return "", v, 0, bad
	}
	v.ETag = string(body[p : p+el])
	return key, v, p + el, nil
}

// scanRecords indexes the records of a cache file up to the first one
// that is cut short or fails its CRC; good is where the valid part ends (0:
// not a cache file at all, start it again).
func scanRecords(fh *os.File) (map[string]cacheEntry, int64, error) {
	entries := map[string]cacheEntry{}
	if _, err := fh.Seek(0, io.SeekStart); err != nil {
		return nil, 0, err
	}
	r := bufio.NewReaderSize(fh, 1<<16)
	magic := make([]byte, len(cacheMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != cacheMagic {
		return entries, 0, nil
	}
	off := int64(len(cacheMagic))
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return entries, off, nil
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > cacheRecordMax {
			return entries, off, nil
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return entries, off, nil
		}
		if crc32.Checksum(body, crcTable) != binary.BigEndian.Uint32(hdr[4:]) {
			return entries, off, nil
		}
		key, v, dataOff, err := decodeRecord(body)
		if err != nil {
			return entries, off, nil
		}
		entries[key] = cacheEntry{v: v, off: off + 8 + int64(dataOff), len: int64(len(body) - dataOff)}
		off += 8 + int64(n)
	}
}
