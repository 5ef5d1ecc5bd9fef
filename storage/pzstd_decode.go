package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// pzstdMaxFrame is the largest declared frame content size that is decoded
// in memory on a worker; pzstdWriter's frames hold pzstdBlock bytes.
const pzstdMaxFrame = 4 * pzstdBlock

// zstd frame format constants (RFC 8878).
const (
	zstdFrameMagic    = 0xFD2FB528
	zstdSkipMagic     = 0x184D2A50 // low 4 bits: any
	zstdMaxBlock      = 128 << 10
	zstdBlockReserved = 3
	zstdBlockRLE      = 1
)

// zstdFrameDecoder decodes one whole frame that declares size bytes of
// content (at most pzstdMaxFrame) into dst's memory; decode may be called
// from several goroutines.
type zstdFrameDecoder interface {
	decode(dst, frame []byte, size int) ([]byte, error)
	close()
}

// pzstdReader decodes a zstd stream of independent frames (what
// pzstdWriter writes) on several cores: a splitter goroutine cuts the
// compressed stream into frames by reading only frame and block headers,
// every frame that declares a content size of at most pzstdMaxFrame is
// decoded with DecodeAll on a goroutine of its own, and the decoded frames
// are handed out in order, whole (WriteTo writes each with one call). A
// frame without a declared size or a bigger one (the single frame of the
// streaming encoder, or a foreign stream) switches the rest of the stream
// to the ordinary streaming decoder, so any valid zstd stream decodes.
// Memory stays bounded: at most depth frames are in flight.
type pzstdReader struct {
	dec    zstdFrameDecoder
	frames chan *pzFrame
	inBufs chan []byte
	out    chan []byte
	done   chan struct{}
	ended  chan struct{}
	once   sync.Once
	wg     sync.WaitGroup // decoding goroutines

	cur    *pzFrame
	off    int
	stream *zstd.Decoder // after a switch to streaming
	err    error
}

type pzFrame struct {
	ready chan struct{}
	out   []byte
	err   error
	// rest, when set, is the remainder of the compressed stream (from the
	// start of a frame that is not decoded in memory).
	rest io.Reader
	eof  bool
}

func newPzstdReader(src io.Reader, workers int) (*pzstdReader, error) {
	workers = max(1, workers)
	dec, err := newZstdFrameDecoder(workers)
	if err != nil {
		return nil, err
	}
	depth := workers + 2
	p := &pzstdReader{dec: dec, frames: make(chan *pzFrame, depth), inBufs: make(chan []byte, depth+2),
		out: make(chan []byte, depth+2), done: make(chan struct{}), ended: make(chan struct{})}
	go p.split(src)
	return p, nil
}

// split reads frames from src and starts their decoding, in order.
func (p *pzstdReader) split(src io.Reader) {
	defer close(p.ended)
	for {
		var buf []byte
		select {
		case buf = <-p.inBufs:
		default:
		}
		buf, kind, size, err := readZstdFrame(src, buf[:0])
		f := &pzFrame{ready: make(chan struct{})}
		switch {
		case err == io.EOF:
			f.eof = true
		case err != nil:
			f.err = err
		case kind == frameSkippable:
			p.recycle(p.inBufs, buf)
			continue
		case kind == frameStream:
			f.rest = io.MultiReader(bytes.NewReader(buf), src)
		}
		if err != nil || kind == frameStream {
			close(f.ready)
			p.send(f)
			return
		}
		if !p.send(f) {
			return
		}
		var dst []byte
		select {
		case dst = <-p.out:
		default:
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer close(f.ready)
			defer func() {
				if r := recover(); r != nil { // the decompressor panicking on foreign bytes
					f.out, f.err = nil, fmt.Errorf("%w: decompress: %v", ErrCorrupt, r)
				}
			}()
			f.out, f.err = p.dec.decode(dst, buf, size)
			if f.err != nil {
				f.err = fmt.Errorf("%w: zstd: %v", ErrCorrupt, f.err)
			}
			p.recycle(p.inBufs, buf)
		}()
	}
}

func (p *pzstdReader) send(f *pzFrame) bool {
	select {
	case p.frames <- f:
		return true
	case <-p.done:
		return false
	}
}

func (p *pzstdReader) recycle(ch chan []byte, b []byte) {
	if b == nil {
		return
	}
	select {
	case ch <- b:
	default:
	}
}

// next moves to the next decoded frame, or to the streaming decoder
// (io.EOF at the end of the stream).
func (p *pzstdReader) next() error {
	if p.err != nil {
		return p.err
	}
	if p.stream != nil {
		return nil // the caller reads p.stream
	}
	if p.cur != nil {
		p.recycle(p.out, p.cur.out)
		p.cur = nil
	}
	f := <-p.frames
	<-f.ready
	switch {
	case f.err != nil:
		p.err = f.err
		return f.err
	case f.eof:
		p.err = io.EOF
		return io.EOF
	case f.rest != nil:
		s, err := zstd.NewReader(f.rest, zstd.WithDecoderConcurrency(2), zstd.WithDecoderMaxWindow(maxWindow), zstd.WithDecoderLowmem(true))
		if err != nil {
			p.err = fmt.Errorf("zstd: %w", err)
			return p.err
		}
		p.stream = s
		return nil
	}
	p.cur, p.off = f, 0
	return nil
}

func (p *pzstdReader) Read(b []byte) (int, error) {
	for {
		if p.stream != nil {
			n, err := p.stream.Read(b)
			if err != nil && err != io.EOF {
				err = fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
			}
			return n, err
		}
		if p.cur != nil && p.off < len(p.cur.out) {
			n := copy(b, p.cur.out[p.off:])
			p.off += n
			return n, nil
		}
		if err := p.next(); err != nil {
			return 0, err
		}
	}
}

// WriteTo writes every decoded frame to w with a single Write. It
// returns nil at the end of the stream; write errors are returned as they
// are, decode errors wrap ErrCorrupt.
func (p *pzstdReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if p.stream != nil {
			ew := &errWriter{w: w}
			n, err := p.stream.WriteTo(ew)
			if err != nil && ew.err == nil {
				err = fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
			}
			return total + n, err
		}
		if p.cur != nil && p.off < len(p.cur.out) {
			n, err := w.Write(p.cur.out[p.off:])
			p.off += n
			total += int64(n)
			if err != nil {
				return total, err
			}
			continue
		}
		if err := p.next(); err != nil {
			if err == io.EOF {
				return total, nil
			}
			return total, err
		}
	}
}

// Close stops the splitter and waits for every decoding goroutine.
func (p *pzstdReader) Close() {
	p.once.Do(func() {
		close(p.done)
		<-p.ended
		p.wg.Wait()
		p.dec.close()
		if p.stream != nil {
			p.stream.Close()
		}
	})
}

type zstdFrameKind int

const (
	frameInMemory zstdFrameKind = iota
	frameSkippable
	frameStream
)

// readZstdFrame appends the next frame of a zstd stream to buf without
// decoding it. frameStream means the frame is not to be decoded in memory
// (no declared content size, a bigger one, or more compressed bytes than
// that size allows); buf then holds the bytes read of it so far. io.EOF:
// the stream ended cleanly before a frame.
//
// It is long because it reads the frame header field after field, as the
// zstd format lays them out.
func readZstdFrame(r io.Reader, buf []byte) ([]byte, zstdFrameKind, int, error) {
	buf, err := readMore(r, buf, 4)
	if err != nil {
		if err == io.EOF && len(buf) == 0 {
			return buf, 0, 0, io.EOF
		}
		return buf, 0, 0, zstdTruncated("frame magic", err)
	}
	magic := binary.LittleEndian.Uint32(buf)
	if magic&^0xF == zstdSkipMagic {
		if buf, err = readMore(r, buf, 4); err != nil {
			return buf, 0, 0, zstdTruncated("skippable frame", err)
		}
		size := int64(binary.LittleEndian.Uint32(buf[4:]))
		if n, err := io.CopyN(io.Discard, r, size); err != nil {
			return buf, 0, 0, zstdTruncated(fmt.Sprintf("skippable frame (%d of %d bytes)", n, size), err)
		}
		return buf, frameSkippable, 0, nil
	}
	if magic != zstdFrameMagic {
		return buf, 0, 0, fmt.Errorf("%w: zstd: bad frame magic %08x", ErrCorrupt, magic)
	}
	if buf, err = readMore(r, buf, 1); err != nil {
		return buf, 0, 0, zstdTruncated("frame header", err)
	}
	fhd := buf[4]
	if fhd&0x08 != 0 {
		return buf, 0, 0, fmt.Errorf("%w: zstd: reserved frame header bit set", ErrCorrupt)
	}
	single := fhd&0x20 != 0
	checksum := fhd&0x04 != 0
	n := [4]int{0, 1, 2, 4}[fhd&3]
	if !single {
		n++ // window descriptor
	}
	fcsSize := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcsSize == 0 && single {
		fcsSize = 1
	}
	n += fcsSize
	if buf, err = readMore(r, buf, n); err != nil {
		return buf, 0, 0, zstdTruncated("frame header", err)
	}
	fcsField := buf[len(buf)-fcsSize:]
	var size uint64
	switch fcsSize {
	case 0:
		return buf, frameStream, 0, nil
	case 1:
		size = uint64(fcsField[0])
	case 2:
		size = uint64(binary.LittleEndian.Uint16(fcsField)) + 256
	case 4:
		size = uint64(binary.LittleEndian.Uint32(fcsField))
	case 8:
		size = binary.LittleEndian.Uint64(fcsField)
	}
	if size > pzstdMaxFrame {
		return buf, frameStream, 0, nil
	}
	// A frame that regenerates size bytes needs about as many compressed
	// bytes at most; more (many empty blocks) is valid but not for memory.
	limit := len(buf) + int(size) + int(size)/8 + 4<<10
	for {
		if buf, err = readMore(r, buf, 3); err != nil {
			return buf, 0, 0, zstdTruncated("block header", err)
		}
		h := buf[len(buf)-3:]
		bh := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
		last, typ, bsize := bh&1 != 0, (bh>>1)&3, int(bh>>3)
		if typ == zstdBlockReserved {
			return buf, 0, 0, fmt.Errorf("%w: zstd: reserved block type", ErrCorrupt)
		}
		if bsize > zstdMaxBlock {
			return buf, 0, 0, fmt.Errorf("%w: zstd: block of %d bytes (at most %d)", ErrCorrupt, bsize, zstdMaxBlock)
		}
		body := bsize
		if typ == zstdBlockRLE {
			body = 1
		}
		if buf, err = readMore(r, buf, body); err != nil {
			return buf, 0, 0, zstdTruncated("block", err)
		}
		if len(buf) > limit {
			return buf, frameStream, 0, nil
		}
		if last {
			break
		}
	}
	if checksum {
		if buf, err = readMore(r, buf, 4); err != nil {
			return buf, 0, 0, zstdTruncated("frame checksum", err)
		}
	}
	return buf, frameInMemory, int(size), nil
}

// readMore appends exactly n bytes from r to buf.
func readMore(r io.Reader, buf []byte, n int) ([]byte, error) {
	l := len(buf)
	if cap(buf)-l < n {
		grown := make([]byte, l, max(2*cap(buf), l+n, 64<<10))
		copy(grown, buf)
		buf = grown
	}
	buf = buf[:l+n]
	k, err := io.ReadFull(r, buf[l:])
	if err == io.EOF && k == 0 {
		return buf[:l], io.EOF
	}
	return buf[:l+k], err
}

func zstdTruncated(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: zstd: stream truncated in %s", ErrCorrupt, what)
	}
	return err
}
