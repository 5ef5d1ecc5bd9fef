package storage

import (
	"errors"
	"io"
)

// zstdBlockEncoder compresses one block into one zstd frame that declares
// its content size (so pzstdReader decodes it in memory). Frames carry no
// content checksum: the codec's framing CRC32C (and with encryption the
// AEAD) covers every compressed byte, and the decoder does not check it.
// encode may be called from several goroutines; dst's capacity is reused.
type zstdBlockEncoder interface {
	encode(dst, src []byte) ([]byte, error)
}

// pzstdBlock is the size of the independently compressed blocks: large
// enough that the ratio barely changes, small enough to keep every core
// busy with bounded memory (about 2 x workers x block).
const pzstdBlock = 1 << 20

// pzstdWriter compresses a stream on several cores: it cuts the input into
// blocks, compresses each as its own zstd frame in parallel (EncodeAll may
// be called concurrently) and writes the frames in order. Concatenated
// frames are one valid zstd stream, so the ordinary decoder reads it.
type pzstdWriter struct {
	w       io.Writer
	enc     zstdBlockEncoder
	buf     []byte
	pending []chan encoded
	workers int
	free    chan []byte // recycled block buffers
	frames  chan []byte // recycled frame buffers
	err     error
	closed  bool
}

type encoded struct {
	frame []byte
	err   error
}

// newPzstdWriter compresses at zstd level (1..22) on workers goroutines.
func newPzstdWriter(w io.Writer, level, workers int) (*pzstdWriter, error) {
	workers = max(1, workers)
	enc, err := newZstdBlockEncoder(level, workers)
	if err != nil {
		return nil, err
	}
	return &pzstdWriter{w: w, enc: enc, workers: workers, free: make(chan []byte, workers+1), frames: make(chan []byte, workers+1)}, nil
}

func (p *pzstdWriter) Write(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	n := 0
	for len(b) > 0 {
		if p.buf == nil {
			select {
			case v := <-p.free:
				p.buf = v[:0]
			default:
				p.buf = make([]byte, 0, pzstdBlock)
			}
		}
		k := min(len(b), pzstdBlock-len(p.buf))
		p.buf = append(p.buf, b[:k]...)
		b, n = b[k:], n+k
		if len(p.buf) == pzstdBlock {
			if err := p.submit(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// submit compresses the current block in the background; it first writes
// out finished frames so that at most `workers` blocks are in flight.
func (p *pzstdWriter) submit() error {
	for len(p.pending) >= p.workers {
		if err := p.flushOne(); err != nil {
			return err
		}
	}
	in := p.buf
	p.buf = nil
	out := make(chan encoded, 1)
	p.pending = append(p.pending, out)
	var dst []byte
	select {
	case dst = <-p.frames:
	default:
		dst = make([]byte, 0, pzstdFrameCap)
	}
	go func() {
		frame, err := p.enc.encode(dst, in)
		select {
		case p.free <- in:
		default:
		}
		out <- encoded{frame, err}
	}()
	return nil
}

// pzstdFrameCap holds any frame of a block (the C library's bound is the
// block plus 1/256 and a little).
const pzstdFrameCap = pzstdBlock + pzstdBlock/8

func (p *pzstdWriter) flushOne() error {
	r := <-p.pending[0]
	p.pending = p.pending[1:]
	if r.err != nil {
		p.err = r.err
		return r.err
	}
	_, err := p.w.Write(r.frame)
	select {
	case p.frames <- r.frame:
	default:
	}
	if err != nil {
		p.err = err
		return err
	}
	return nil
}

// Close compresses what is left and writes every frame.
func (p *pzstdWriter) Close() error {
	if p.closed {
		return errors.New("pzstd: closed twice")
	}
	p.closed = true
	if p.err != nil {
		return p.err
	}
	if len(p.buf) > 0 {
		if err := p.submit(); err != nil {
			return err
		}
	}
	for len(p.pending) > 0 {
		if err := p.flushOne(); err != nil {
			return err
		}
	}
	return nil
}
