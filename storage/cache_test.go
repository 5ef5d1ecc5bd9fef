package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestObjectCache(t *testing.T) {
	stream := "20261101T000000.000Z_00000001"
	key := func(i int) string { return fmt.Sprintf("streams/%s/binlogs/%010d_e1_s1.json", stream, i) }
	v := Validator{Size: 3, ETag: "abc", ModTime: time.Unix(1700000000, 123).UTC()}
	dir := t.TempDir()
	c, err := OpenObjectCache(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenObjectCache(dir, 1<<20, nil); !errors.Is(err, ErrCacheBusy) {
		t.Fatalf("a second process opened the cache: %v", err)
	}
	c.Put("site", key(1), v, []byte("one"))
	c.Put("site", "not/in/a/stream.json", v, []byte("one"))
	for _, tc := range []struct {
		name string
		site string
		key  string
		v    Validator
		hit  bool
	}{
		{"same version", "site", key(1), v, true},
		{"other site", "other", key(1), v, false},
		{"other size", "site", key(1), Validator{Size: 4, ETag: v.ETag, ModTime: v.ModTime}, false},
		{"other etag", "site", key(1), Validator{Size: 3, ETag: "abd", ModTime: v.ModTime}, false},
		{"other time", "site", key(1), Validator{Size: 3, ETag: v.ETag, ModTime: v.ModTime.Add(time.Nanosecond)}, false},
		{"other key", "site", key(2), v, false},
		{"outside streams", "site", "not/in/a/stream.json", v, false},
	} {
		data, ok := c.Get(tc.site, tc.key, tc.v)
		if ok != tc.hit || (ok && string(data) != "one") {
			t.Errorf("%s: %q %v", tc.name, data, ok)
		}
	}
	// a newer version replaces the older, across a restart
	v2 := v
	v2.Size = 5
	c.Put("site", key(1), v2, []byte("uno!!"))
	c.Drop("site", key(3))
	c.Close()
	c, err = OpenObjectCache(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if data, ok := c.Get("site", key(1), v2); !ok || string(data) != "uno!!" {
		t.Fatalf("after a restart: %q %v", data, ok)
	}
	if _, ok := c.Get("site", key(1), v); ok {
		t.Fatal("the replaced version is still served")
	}
	c.Drop("site", key(1))
	if _, ok := c.Get("site", key(1), v2); ok {
		t.Fatal("a dropped entry is still served")
	}
	c.Close()

	// a file that is not a cache file is started again
	files, _ := filepath.Glob(filepath.Join(dir, "*.cache"))
	if len(files) != 1 {
		t.Fatalf("cache files: %v", files)
	}
	if err := os.WriteFile(files[0], []byte("something else entirely"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = OpenObjectCache(dir, 1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Get("site", key(1), v2); ok {
		t.Fatal("a foreign file served an entry")
	}
	c.Put("site", key(1), v, []byte("one"))
	if data, ok := c.Get("site", key(1), v); !ok || string(data) != "one" {
		t.Fatalf("after starting a foreign file again: %q %v", data, ok)
	}
	c.Close()
}

// TestObjectCacheBound: the cache stays within its bound by dropping the
// least recently used streams.
func TestObjectCacheBound(t *testing.T) {
	dir := t.TempDir()
	c, err := OpenObjectCache(dir, 64<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("m"), 1000)
	v := Validator{Size: 1000, ETag: "e", ModTime: time.Unix(1, 0)}
	key := func(s, i int) string {
		return fmt.Sprintf("streams/20261101T000000.000Z_%08x/binlogs/%010d_e1_s1.json", s, i)
	}
	for s := 0; s < 10; s++ {
		for i := 0; i < 20; i++ {
			c.Put("site", key(s, i), v, data)
			// stream 0 stays in use
			if _, ok := c.Get("site", key(0, 0), v); !ok {
				t.Fatalf("stream 0 was evicted at stream %d", s)
			}
		}
		if c.Size() > 64<<10 {
			t.Fatalf("the cache holds %d bytes", c.Size())
		}
	}
	if _, ok := c.Get("site", key(9, 19), v); !ok {
		t.Fatal("the newest entry is gone")
	}
	if _, ok := c.Get("site", key(1, 0), v); ok {
		t.Fatal("a least recently used stream was kept")
	}
	var size int64
	files, _ := filepath.Glob(filepath.Join(dir, "*.cache"))
	for _, f := range files {
		st, _ := os.Stat(f)
		size += st.Size()
	}
	if size != c.Size() {
		t.Fatalf("%d bytes on disk, %d counted", size, c.Size())
	}
}

// FuzzObjectCacheFile: whatever a cache file holds, opening and using the
// cache neither panics nor serves an entry under another version.
func FuzzObjectCacheFile(f *testing.F) {
	v := Validator{Size: 3, ETag: "abc", ModTime: time.Unix(5, 0).UTC()}
	key := "streams/20261101T000000.000Z_00000001/basebackup.json"
	good := append([]byte(cacheMagic), encodeRecord(key, v, []byte("one"))...)
	f.Add(good)
	f.Add(good[:len(good)-2])
	f.Add([]byte(cacheMagic))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, content []byte) {
		dir := t.TempDir()
		name := fileName("site", key)
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := OpenObjectCache(dir, 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if data, ok := c.Get("site", key, v); ok && int64(len(data)) > 1<<22 {
			t.Fatalf("served %d bytes", len(data))
		}
		if _, ok := c.Get("site", key, Validator{Size: 9}); ok {
			t.Fatal("served another version")
		}
		c.Put("site", key, v, []byte("two"))
		if data, ok := c.Get("site", key, v); !ok || string(data) != "two" {
			t.Fatalf("after a put: %q %v", data, ok)
		}
	})
}
