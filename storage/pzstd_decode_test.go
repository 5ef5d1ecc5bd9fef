package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// pzstdFrames is what pzstdWriter writes: independent frames.
func pzstdFrames(t testing.TB, data []byte) []byte {
	t.Helper()
	return compressWith(t, data, func(w io.Writer) (io.WriteCloser, error) { return newPzstdWriter(w, 1, 2) })
}

// streamFrame is what the streaming encoder writes: one frame without a
// declared content size.
func streamFrame(t testing.TB, data []byte) []byte {
	t.Helper()
	return compressWith(t, data, func(w io.Writer) (io.WriteCloser, error) {
		return zstd.NewWriter(w, zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	})
}

func compressWith(t testing.TB, data []byte, open func(io.Writer) (io.WriteCloser, error)) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := open(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func bigFrame(t testing.TB, data []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(true))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(data, nil)
}

func skippable(payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, zstdSkipMagic|7)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(payload)))
	return append(b, payload...)
}

// pzDecode decodes with the parallel reader, through WriteTo or Read.
func pzDecode(src []byte, workers int, writeTo bool) ([]byte, error) {
	p, err := newPzstdReader(bytes.NewReader(src), workers)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	var out bytes.Buffer
	if writeTo {
		_, err = p.WriteTo(&out)
	} else {
		_, err = io.Copy(&out, onlyReader{p})
	}
	return out.Bytes(), err
}

func TestPzstdReaderDecodesEveryStream(t *testing.T) {
	a, b, c := compressible(3*pzstdBlock+17, 1), compressible(5*pzstdBlock, 2), compressible(70000, 3)
	cases := []struct {
		name   string
		stream []byte
		want   []byte
	}{
		{"empty", nil, nil},
		{"one byte", pzstdFrames(t, []byte{7}), []byte{7}},
		{"one block", pzstdFrames(t, a[:pzstdBlock]), a[:pzstdBlock]},
		{"blocks and a tail", pzstdFrames(t, a), a},
		{"streaming encoder", streamFrame(t, b), b},
		{"frame bigger than the in-memory limit", bigFrame(t, b), b},
		{"frames then a streaming frame then frames", append(append(pzstdFrames(t, a), streamFrame(t, c)...), pzstdFrames(t, a)...),
			append(append(bytes.Clone(a), c...), a...)},
		{"skippable frames", append(append(skippable([]byte("meta")), pzstdFrames(t, c)...), skippable(nil)...), c},
	}
	for _, tc := range cases {
		for _, workers := range []int{1, 2, 4} {
			for _, writeTo := range []bool{false, true} {
				got, err := pzDecode(tc.stream, workers, writeTo)
				if err != nil {
					t.Fatalf("%s (workers %d, WriteTo %v): %v", tc.name, workers, writeTo, err)
				}
				if !bytes.Equal(got, tc.want) {
					t.Fatalf("%s (workers %d, WriteTo %v): got %d bytes, want %d", tc.name, workers, writeTo, len(got), len(tc.want))
				}
			}
		}
	}
}

func TestPzstdReaderDamage(t *testing.T) {
	data := compressible(2*pzstdBlock+500, 4)
	good := pzstdFrames(t, data)
	cases := map[string][]byte{
		"cut in the first frame":      good[:100],
		"cut in the second frame":     good[:len(good)-200],
		"cut in a checksum":           good[:len(good)-2],
		"garbage after the end":       append(bytes.Clone(good), 1, 2, 3, 4, 5),
		"bad magic":                   append([]byte{1, 2, 3, 4}, good...),
		"reserved block type":         func() []byte { d := bytes.Clone(good); d[9] |= 6; return d }(),
		"block size beyond the frame": func() []byte { d := bytes.Clone(good); d[10] |= 0xf8; d[11] = 0xff; return d }(),
	}
	// (Flipped bytes inside a compressed block are the framing's CRC32C to
	// find: the frames' own checksums are not verified, see newPzstdReader.)
	for name, d := range cases {
		for _, writeTo := range []bool{false, true} {
			_, err := pzDecode(d, 2, writeTo)
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s (WriteTo %v): error %v, want corruption", name, writeTo, err)
			}
		}
	}
}

// TestPzstdReaderCloseEarly: closing before the end returns at once and
// leaves no goroutine decoding.
func TestPzstdReaderCloseEarly(t *testing.T) {
	stream := pzstdFrames(t, compressible(20*pzstdBlock, 5))
	p, err := newPzstdReader(bytes.NewReader(stream), 2)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(p, buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}

// TestDecoderWriteToStopsAtWriteError: a failing destination stops the
// decode with the destination's own error, not a corruption.
func TestDecoderWriteToStopsAtWriteError(t *testing.T) {
	key, _ := keys(t)
	enc := encode(t, compressible(4*pzstdBlock, 6), EncodeOptions{Compression: CompressionZstd, Key: key})
	r, _, err := NewDecoder(bytes.NewReader(enc), NewKeyring(key))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	boom := errors.New("disk full")
	_, err = io.Copy(&failAfter{n: pzstdBlock + 10, err: boom}, r)
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("got %v, want the write error", err)
	}
}

type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

// FuzzPzstdReader: any input ends in an error or in exactly what the
// streaming decoder makes of it, without a panic or a hang.
func FuzzPzstdReader(f *testing.F) {
	f.Add(pzstdFrames(f, compressible(3000, 1)))
	f.Add(append(pzstdFrames(f, compressible(300, 2)), skippable([]byte("x"))...))
	f.Add(streamFrame(f, compressible(3000, 3)))
	f.Add(bigFrame(f, compressible(5000, 3)))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := pzDecode(data, 2, true)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not a corruption", err)
			}
			return
		}
		ref, rerr := zstd.NewReader(bytes.NewReader(data), zstd.WithDecoderMaxWindow(maxWindow))
		if rerr != nil {
			t.Fatal(rerr)
		}
		defer ref.Close()
		want, rerr := io.ReadAll(ref)
		if rerr == nil && !bytes.Equal(got, want) {
			t.Fatalf("decoded %d bytes, the streaming decoder %d", len(got), len(want))
		}
	})
}

// TestPzstdReaderRandomMutations runs the fuzz property over thousands of
// damaged streams (the fuzz engine stalls on this package's big binary).
func TestPzstdReaderRandomMutations(t *testing.T) {
	seeds := [][]byte{pzstdFrames(t, compressible(3000, 1)), pzstdFrames(t, compressible(pzstdBlock+3000, 2)),
		streamFrame(t, compressible(3000, 3)), append(skippable([]byte("ab")), pzstdFrames(t, []byte("xyz"))...)}
	rng := mrand.New(mrand.NewPCG(3, 4))
	for i := 0; i < 3000; i++ {
		d := mutate(rng, seeds[rng.IntN(len(seeds))], 3)
		done := make(chan error, 1)
		var got []byte
		go func() {
			var err error
			got, err = pzDecode(d, 2, i%2 == 0)
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				if !errors.Is(err, ErrCorrupt) {
					t.Fatalf("mutation %d: error %v is not a corruption", i, err)
				}
				continue
			}
			ref, _ := zstd.NewReader(bytes.NewReader(d), zstd.WithDecoderMaxWindow(maxWindow))
			want, rerr := io.ReadAll(ref)
			ref.Close()
			if rerr == nil && !bytes.Equal(got, want) {
				t.Fatalf("mutation %d: decoded %d bytes, the streaming decoder %d", i, len(got), len(want))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("mutation %d: decoding did not finish in 10s", i)
		}
	}
}
