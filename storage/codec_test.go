package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var (
	keyOnce      sync.Once
	testKey      *KeyPair
	otherTestKey *KeyPair
)

// keys returns two fixed test key pairs (testdata/test-key-{a,b}.pem;
// made with openssl genrsa 2048, for tests only), so that tests and fuzz
// workers do not spend seconds generating RSA keys.
func keys(t testing.TB) (*KeyPair, *KeyPair) {
	t.Helper()
	keyOnce.Do(func() {
		load := func(name string) *KeyPair {
			pub, err1 := os.ReadFile("testdata/test-key-" + name + ".pub.pem")
			priv, err2 := os.ReadFile("testdata/test-key-" + name + ".pem")
			if err1 != nil || err2 != nil {
				t.Fatalf("test keys: %v %v", err1, err2)
			}
			kp, err := NewKeyPair(string(pub), string(priv))
			if err != nil {
				t.Fatalf("test key %s: %v", name, err)
			}
			return kp
		}
		testKey, otherTestKey = load("a"), load("b")
	})
	return testKey, otherTestKey
}

var allCompressions = []Compression{CompressionNone, CompressionZstd, CompressionSnappy, CompressionLZMA}

// fataler is what both *testing.T and *rapid.T offer.
type fataler interface {
	Helper()
	Fatal(args ...any)
}

func encode(t fataler, data []byte, opts EncodeOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewEncoder(&buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	// write in uneven pieces, as a stream would arrive
	for p := data; len(p) > 0; {
		k := min(len(p), 1+len(p)%70000)
		if _, err := w.Write(p[:k]); err != nil {
			t.Fatal(err)
		}
		p = p[k:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func decode(enc []byte, ring Keyring) ([]byte, Header, error) {
	r, h, err := NewDecoder(bytes.NewReader(enc), ring)
	if err != nil {
		return nil, h, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	return out, h, err
}

// compressible makes data that compresses somewhat, like database pages.
func compressible(n int, seed uint64) []byte {
	rng := mrand.New(mrand.NewPCG(seed, 1))
	words := []string{"customer", "order", "2026-11-25", "NULL", "balance", "\x00\x00\x00\x01", "innodb", "page"}
	var b bytes.Buffer
	for b.Len() < n {
		if rng.IntN(4) == 0 {
			var x [8]byte
			for i := range x {
				x[i] = byte(rng.Uint32())
			}
			b.Write(x[:])
		} else {
			b.WriteString(words[rng.IntN(len(words))])
		}
	}
	return b.Bytes()[:n]
}

func TestCodecRoundTripSizes(t *testing.T) {
	key, _ := keys(t)
	ring := NewKeyring(key)
	sizes := []int{0, 1, 2, 4095, frameChunk - 1, frameChunk, frameChunk + 1, 64 << 10, 64<<10 + 1, 3*frameChunk + 17}
	for _, c := range allCompressions {
		for _, encrypted := range []bool{false, true} {
			for _, n := range sizes {
				opts := EncodeOptions{Compression: c}
				if encrypted {
					opts.Key = key
				}
				data := compressible(n, uint64(n))
				enc := encode(t, data, opts)
				got, h, err := decode(enc, ring)
				if err != nil {
					t.Fatalf("%s encrypted=%v size %d: %v", c, encrypted, n, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%s encrypted=%v size %d: got %d bytes back", c, encrypted, n, len(got))
				}
				if h.Compression != c || h.Encrypted != encrypted || (encrypted && h.KeyID != key.ID) {
					t.Fatalf("header %+v", h)
				}
			}
		}
	}
}

func TestCodecRoundTripProperty(t *testing.T) {
	key, _ := keys(t)
	ring := NewKeyring(key)
	rapid.Check(t, func(t *rapid.T) {
		c := rapid.SampledFrom(allCompressions).Draw(t, "compression")
		encrypted := rapid.Bool().Draw(t, "encrypted")
		data := rapid.SliceOfN(rapid.Byte(), 0, 200000).Draw(t, "data")
		opts := EncodeOptions{Compression: c, Concurrency: rapid.IntRange(1, 3).Draw(t, "conc")}
		if c == CompressionZstd {
			lvl := rapid.IntRange(1, 9).Draw(t, "level")
			opts.Level = &lvl
		}
		if encrypted {
			opts.Key = key
		}
		enc := encode(t, data, opts)
		got, _, err := decode(enc, ring)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip failed: %v (%d of %d bytes)", err, len(got), len(data))
		}
	})
}

func TestCodecDetectsDamage(t *testing.T) {
	key, other := keys(t)
	ring := NewKeyring(key)
	data := compressible(3*frameChunk+1234, 9)
	for _, c := range allCompressions {
		for _, encrypted := range []bool{false, true} {
			opts := EncodeOptions{Compression: c}
			if encrypted {
				opts.Key = key
			}
			enc := encode(t, data, opts)
			name := string(c)
			if encrypted {
				name += "+age"
			}
			rng := mrand.New(mrand.NewPCG(uint64(len(enc)), 5))
			for i := 0; i < 40; i++ {
				bad := bytes.Clone(enc)
				at := rng.IntN(len(bad))
				bad[at] ^= 1 << rng.IntN(8)
				if got, _, err := decode(bad, ring); err == nil {
					t.Fatalf("%s: bit flip at %d of %d not detected (%d bytes out)", name, at, len(enc), len(got))
				} else if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: bit flip gave %v, want ErrCorrupt", name, err)
				}
			}
			for _, cut := range []int{len(enc) - 1, len(enc) - 4, len(enc) - 12, len(enc) / 2, 30, 5} {
				got, _, err := decode(enc[:cut], ring)
				if err == nil || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("%s: truncated to %d of %d: %v (%d bytes out)", name, cut, len(enc), err, len(got))
				}
			}
			if _, _, err := decode(append(bytes.Clone(enc), 0), ring); err == nil || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s: trailing byte: %v", name, err)
			}
			if encrypted {
				_, _, err := decode(enc, NewKeyring(other))
				if !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), key.ID) || !strings.Contains(err.Error(), other.ID) {
					t.Fatalf("%s: wrong key gave %v; want ErrWrongKey naming %s and %s", name, err, key.ID, other.ID)
				}
				pubOnly := *key
				pubOnly.Private, pubOnly.identity = nil, nil
				if _, _, err := decode(enc, NewKeyring(&pubOnly)); !errors.Is(err, ErrWrongKey) {
					t.Fatalf("%s: public key only gave %v", name, err)
				}
			}
		}
	}
}

func TestCodecSwappedChunks(t *testing.T) {
	key, _ := keys(t)
	data := compressible(3*frameChunk, 3)
	// Unencrypted, uncompressed: swap the first two frame chunks.
	enc := encode(t, data, EncodeOptions{Compression: CompressionNone})
	hdr := len(codecMagic) + 4 + 4
	chunk := 4 + frameChunk + 4
	swapped := bytes.Clone(enc)
	copy(swapped[hdr:], enc[hdr+chunk:hdr+2*chunk])
	copy(swapped[hdr+chunk:], enc[hdr:hdr+chunk])
	if _, _, err := decode(swapped, nil); err == nil || !strings.Contains(err.Error(), "out of order") {
		t.Fatalf("swapped frame chunks: %v", err)
	}
	// Encrypted: swap two 64 KiB age payload chunks in the middle.
	enc = encode(t, data, EncodeOptions{Compression: CompressionNone, Key: key})
	const ageChunk = 64<<10 + 16
	mid := len(enc) / 2
	swapped = bytes.Clone(enc)
	copy(swapped[mid:], enc[mid+ageChunk:mid+2*ageChunk])
	copy(swapped[mid+ageChunk:], enc[mid:mid+ageChunk])
	if _, _, err := decode(swapped, NewKeyring(key)); err == nil || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("swapped age chunks: %v", err)
	}
}

func TestCodecForeignBytes(t *testing.T) {
	for _, in := range [][]byte{nil, []byte("hello"), []byte("MYHOARD\x00\x02\x01\x00\x00abcd"), bytes.Repeat([]byte{0}, 100)} {
		if _, _, err := decode(in, nil); err == nil || !errors.Is(err, ErrCorrupt) {
			t.Errorf("%q: %v", in, err)
		}
	}
	if _, _, err := decode([]byte("MYHOARD\x00\x02\x01\x00\x00abcd"), nil); err == nil || !strings.Contains(err.Error(), "version 2 is not supported") {
		t.Errorf("future version: %v", err)
	}
}

// failingReader returns an I/O error after n bytes.
type failingReader struct {
	r io.Reader
	n int
}

var errNetwork = errors.New("connection reset by peer")

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errNetwork
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestCodecSourceErrorsAreNotCorruption(t *testing.T) {
	key, _ := keys(t)
	enc := encode(t, compressible(2*frameChunk, 4), EncodeOptions{Compression: CompressionZstd, Key: key})
	for _, n := range []int{3, 40, len(enc) / 2} {
		r, _, err := NewDecoder(&failingReader{r: bytes.NewReader(enc), n: n}, NewKeyring(key))
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if !errors.Is(err, errNetwork) || errors.Is(err, ErrCorrupt) {
			t.Errorf("source failing after %d bytes: %v; want the source error, not corruption", n, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	key, _ := keys(f)
	for _, c := range allCompressions {
		f.Add(encode(f, compressible(3000, 1), EncodeOptions{Compression: c}))
	}
	f.Add(encode(f, compressible(3000, 1), EncodeOptions{Compression: CompressionZstd, Key: key}))
	ring := NewKeyring(key)
	f.Fuzz(func(t *testing.T, data []byte) {
		wd := time.AfterFunc(3*time.Second, func() {
			fh, _ := os.Create("/tmp/fuzzhang.txt")
			pprof.Lookup("goroutine").WriteTo(fh, 2)
			fh.Write([]byte(fmt.Sprintf("\nINPUT %q\n", data)))
			fh.Close()
		})
		defer wd.Stop()
		out, _, err := decode(data, ring)
		if err == nil {
			// whatever decodes must encode back to the same content
			back, _, err2 := decode(encode(t, out, EncodeOptions{Compression: CompressionNone}), nil)
			if err2 != nil || !bytes.Equal(back, out) {
				t.Fatal("decoded content does not round trip")
			}
		}
	})
}

// TestDecodeRandomMutations feeds thousands of damaged objects (bytes
// changed, cut, inserted) of every codec to the decoder: each must end in
// an error or in content that round-trips, quickly, without a panic.
func TestDecodeRandomMutations(t *testing.T) {
	key, _ := keys(t)
	ring := NewKeyring(key)
	var seeds [][]byte
	for _, c := range allCompressions {
		seeds = append(seeds, encode(t, compressible(3000, 1), EncodeOptions{Compression: c}))
	}
	seeds = append(seeds, encode(t, compressible(3000, 1), EncodeOptions{Compression: CompressionZstd, Key: key}))
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := 0; i < 4000; i++ {
		d := mutate(rng, seeds[rng.IntN(len(seeds))], 4)
		done := make(chan error, 1)
		go func() {
			_, _, err := decode(d, ring)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey) {
				t.Fatalf("mutation %d: error %v is neither corruption nor a wrong key", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("mutation %d: decoding did not finish in 10s", i)
		}
	}
}

// mutate returns a copy of seed with 1 to most random damages: a byte
// changed, the end cut, or a byte inserted.
func mutate(rng *mrand.Rand, seed []byte, most int) []byte {
	d := bytes.Clone(seed)
	for k := 0; k < 1+rng.IntN(most); k++ {
		switch rng.IntN(3) {
		case 0:
			d[rng.IntN(len(d))] = byte(rng.Uint32())
		case 1:
			d = d[:rng.IntN(len(d))+1]
		case 2:
			at := rng.IntN(len(d))
			d = append(d[:at:at], append([]byte{byte(rng.Uint32())}, d[at:]...)...)
		}
	}
	return d
}
