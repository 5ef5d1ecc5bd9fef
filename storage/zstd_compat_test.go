package storage

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// goldenData is the content of testdata/golden-v1-zstd-*.myhoard.
func goldenData() []byte {
	var b bytes.Buffer
	x := uint32(1)
	for i := 0; b.Len() < 2<<20+12345; i++ {
		x = x*1664525 + 1013904223
		fmt.Fprintf(&b, "row %d value %d\n", i, x%7)
	}
	return b.Bytes()
}

// TestDecodesObjectsOfEarlierReleases reads objects written by the pure-Go
// encoder before the C library took over (commit 0e1d7ec): the single
// streaming frame of one worker, and 1 MiB frames with content checksums,
// with and without encryption. Old backups must keep restoring.
func TestDecodesObjectsOfEarlierReleases(t *testing.T) {
	want := goldenData()
	a, _ := keys(t)
	for _, name := range []string{"stream", "frames", "frames-age"} {
		t.Run(name, func(t *testing.T) {
			obj, err := os.ReadFile("testdata/golden-v1-zstd-" + name + ".myhoard")
			if err != nil {
				t.Fatal(err)
			}
			for _, workers := range []int{1, 3} {
				r, h, err := NewDecoderWorkers(bytes.NewReader(obj), NewKeyring(a), workers)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				r.Close()
				if err != nil {
					t.Fatalf("workers %d: %v", workers, err)
				}
				if h.Compression != CompressionZstd || !bytes.Equal(got, want) {
					t.Fatalf("workers %d: decoded %d bytes (%s), want the %d golden bytes", workers, len(got), h.Compression, len(want))
				}
			}
		})
	}
}

// TestNewFramesAreOneZstdStream: what the encoder writes now is one valid
// zstd stream that an independent streaming decoder reads, every frame
// declares its size (so the parallel decoder takes it), and levels are
// the library's own.
func TestNewFramesAreOneZstdStream(t *testing.T) {
	t.Logf("zstd implementation: %s", zstdImplementation)
	data := goldenData()
	for _, c := range []struct{ level, workers int }{{1, 1}, {1, 4}, {3, 2}, {19, 2}} {
		t.Run(fmt.Sprintf("level%d-workers%d", c.level, c.workers), func(t *testing.T) {
			var out bytes.Buffer
			w, err := newPzstdWriter(&out, c.level, c.workers)
			if err != nil {
				t.Fatal(err)
			}
			for rest := data; len(rest) > 0; { // odd write sizes
				k := min(len(rest), 300001)
				if _, err := w.Write(rest[:k]); err != nil {
					t.Fatal(err)
				}
				rest = rest[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if w.Close() == nil {
				t.Fatal("a second Close succeeded")
			}
			zr, err := zstd.NewReader(bytes.NewReader(out.Bytes()))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(zr)
			zr.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("streaming decoder: %d bytes, %v", len(got), err)
			}
			frames := 0
			for src := bytes.NewReader(out.Bytes()); ; frames++ {
				_, kind, _, err := readZstdFrame(src, nil)
				if err == io.EOF {
					break
				}
				if err != nil || kind != frameInMemory {
					t.Fatalf("frame %d: kind %d, %v", frames, kind, err)
				}
			}
			if want := (len(data) + pzstdBlock - 1) / pzstdBlock; frames != want {
				t.Fatalf("%d frames, want %d", frames, want)
			}
			if got, err := pzDecode(out.Bytes(), 2, true); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("parallel decoder: %d bytes, %v", len(got), err)
			}
		})
	}
	if _, err := newPzstdWriter(io.Discard, 23, 1); err == nil {
		t.Fatal("level 23 accepted")
	}
}
