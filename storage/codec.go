package storage

import (
	"bufio"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"sort"
	"strings"
	"sync"

	"filippo.io/age"
	"filippo.io/age/agessh"
	"github.com/klauspost/compress/s2"
	"github.com/ulikunitz/xz"
	"golang.org/x/crypto/ssh"

	"github.com/myhoard/myhoard/config"
)

// Encoded object format:
//
//	header:  "MYHOARD\x00" | version (1) | compression (1) | encryption (1) |
//	         key id length (1) | key id (ASCII hex) | CRC32C of the above (4)
//	body:    encrypt(frame(compress(data)))
//
// frame() cuts the compressed bytes into chunks of at most frameChunk
// bytes: a 4-byte big-endian word (top bit: final chunk; the rest: length),
// the bytes, and a CRC32C over (chunk index, word, bytes). The final chunk
// holds the total number of framed bytes. So truncation, reordered chunks and
// flipped bits are detected with or without encryption, and the decoder
// never returns short data without an error.
//
// encrypt() is age (filippo.io/age) with its ssh-rsa recipient: a fresh file
// key per object wrapped with RSA-OAEP, the payload sealed with
// ChaCha20-Poly1305 in 64 KiB chunks. Objects of a site without keys are
// not encrypted; the header says so.

var codecMagic = []byte("MYHOARD\x00")

const (
	codecVersion = 1
	frameChunk   = 1 << 20
	finalFlag    = 1 << 31
	// maxWindow bounds the zstd decoder's memory on foreign input.
	maxWindow = 64 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Compression is a compression algorithm.
type Compression string

// The algorithms of the spec, plus none.
const (
	CompressionNone   Compression = "none"
	CompressionZstd   Compression = "zstd"
	CompressionSnappy Compression = "snappy"
	CompressionLZMA   Compression = "lzma"
)

var compressionIDs = map[Compression]byte{CompressionNone: 0, CompressionZstd: 1, CompressionSnappy: 2, CompressionLZMA: 3}

func compressionByID(id byte) (Compression, bool) {
	for c, i := range compressionIDs {
		if i == id {
			return c, true
		}
	}
	return "", false
}

const (
	encryptionNone   = 0
	encryptionAgeRSA = 1
)

// ErrCorrupt is wrapped by every error about bytes that are not a valid
// encoded object (damaged, truncated, or not ours).
var ErrCorrupt = errors.New("corrupt encoded object")

// ErrWrongKey is wrapped by the error for an object encrypted with a key
// that is not available.
var ErrWrongKey = errors.New("object is encrypted with a key that is not configured")

// KeyPair is a site's RSA key pair; ID is its key id (see KeyID).
type KeyPair struct {
	ID      string
	Public  *rsa.PublicKey
	Private *rsa.PrivateKey // nil: can encrypt but not decrypt

	recipient *agessh.RSARecipient
	identity  *agessh.RSAIdentity
}

// KeyID is the fingerprint that names an RSA public key in object headers:
// the first 16 bytes of SHA-256 over its PKIX DER form, in hex.
func KeyID(pub *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "invalid"
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:16])
}

// NewKeyPair reads a site's encryption_keys (PEM). privatePEM may be empty
// for a key that only encrypts.
func NewKeyPair(publicPEM, privatePEM string) (*KeyPair, error) {
	pub, err := config.ParseRSAPublicKey(publicPEM)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	kp := &KeyPair{ID: KeyID(pub), Public: pub}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if kp.recipient, err = agessh.NewRSARecipient(sshPub); err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	if privatePEM != "" {
		priv, err := config.ParseRSAPrivateKey(privatePEM)
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		if !priv.PublicKey.Equal(pub) {
			return nil, errors.New("the public key does not belong to the private key")
		}
		kp.Private = priv
		if kp.identity, err = agessh.NewRSAIdentity(priv); err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
	}
	return kp, nil
}

// Keyring holds the key pairs a decoder may use, by key id.
type Keyring map[string]*KeyPair

// NewKeyring indexes key pairs by id.
func NewKeyring(keys ...*KeyPair) Keyring {
	k := Keyring{}
	for _, kp := range keys {
		if kp != nil {
			k[kp.ID] = kp
		}
	}
	return k
}

func (k Keyring) ids() string {
	var ids []string
	for id, kp := range k {
		if kp.Private != nil {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// EncodeOptions say how to encode.
type EncodeOptions struct {
	Compression Compression
	// Level is the algorithm's level (zstd 1..22, lzma 0..9); nil: the
	// default (zstd: fastest).
	Level *int
	// Key encrypts when not nil.
	Key *KeyPair
	// Concurrency is how many goroutines compression may use (0: the
	// number of CPUs).
	Concurrency int
}

// Header is what an encoded object's header says.
type Header struct {
	Version     int
	Compression Compression
	Encrypted   bool
	KeyID       string
}

// NewEncoder returns a writer that encodes what is written to it onto w.
// Close finishes the object (it does not close w); an object whose Close
// did not succeed is incomplete and must be discarded.
func NewEncoder(w io.Writer, opts EncodeOptions) (io.WriteCloser, error) {
	cid, ok := compressionIDs[opts.Compression]
	if !ok {
		return nil, fmt.Errorf("encode: unknown compression %q", opts.Compression)
	}
	conc := opts.Concurrency
	if conc <= 0 {
		conc = runtime.GOMAXPROCS(0)
	}
	hdr := append([]byte(nil), codecMagic...)
	hdr = append(hdr, codecVersion, cid)
	if opts.Key != nil {
		hdr = append(hdr, encryptionAgeRSA, byte(len(opts.Key.ID)))
		hdr = append(hdr, opts.Key.ID...)
	} else {
		hdr = append(hdr, encryptionNone, 0)
	}
	hdr = binary.BigEndian.AppendUint32(hdr, crc32.Checksum(hdr, castagnoli))
	if _, err := w.Write(hdr); err != nil {
		return nil, fmt.Errorf("encode: write header: %w", err)
	}
	e := &encoder{}
	var inner io.Writer = w
	if opts.Key != nil {
		aw, err := age.Encrypt(w, opts.Key.recipient)
		if err != nil {
			return nil, fmt.Errorf("encode: encrypt: %w", err)
		}
		e.age = aw
		inner = aw
	}
	e.framer = newFramer(inner)
	switch opts.Compression {
	case CompressionNone:
		e.comp = nopCloser{e.framer}
	case CompressionZstd:
		// Independent frames of pzstdBlock bytes on every core (see
		// pzstdWriter), level 1 unless configured.
		level := 1
		if opts.Level != nil {
			level = *opts.Level
		}
		pw, err := newPzstdWriter(e.framer, level, conc)
		if err != nil {
			return nil, fmt.Errorf("encode: zstd: %w", err)
		}
		e.comp = pw
	case CompressionSnappy:
		e.comp = s2.NewWriter(e.framer, s2.WriterSnappyCompat(), s2.WriterConcurrency(conc))
	case CompressionLZMA:
		cfg := xz.WriterConfig{}
		if opts.Level != nil {
			cfg.DictCap = 1 << (18 + *opts.Level) // 256 KiB .. 128 MiB
		}
		xw, err := cfg.NewWriter(e.framer)
		if err != nil {
			return nil, fmt.Errorf("encode: lzma: %w", err)
		}
		e.comp = xw
	}
	return e, nil
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

type encoder struct {
	comp   io.WriteCloser
	framer *framer
	age    io.WriteCloser
	closed bool
}

func (e *encoder) Write(p []byte) (int, error) {
	if e.closed {
		return 0, errors.New("encode: write after close")
	}
	return e.comp.Write(p)
}

func (e *encoder) Close() error {
	if e.closed {
		return nil
	}
	e.closed = true
	if err := e.comp.Close(); err != nil {
		return fmt.Errorf("encode: finish compression: %w", err)
	}
	if err := e.framer.finish(); err != nil {
		return fmt.Errorf("encode: finish framing: %w", err)
	}
	if e.age != nil {
		if err := e.age.Close(); err != nil {
			return fmt.Errorf("encode: finish encryption: %w", err)
		}
	}
	return nil
}

// framer cuts a byte stream into checksummed chunks (see the format above).
type framer struct {
	w     io.Writer
	buf   []byte
	index uint64
	total uint64
}

func newFramer(w io.Writer) *framer {
	return &framer{w: w, buf: make([]byte, 4, 4+frameChunk+4)}
}

func (f *framer) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 4+frameChunk-len(f.buf))
		f.buf = append(f.buf, p[:k]...)
		p, n = p[k:], n+k
		if len(f.buf) == 4+frameChunk {
			if err := f.flush(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (f *framer) flush(final bool) error {
	payload := len(f.buf) - 4
	word := uint32(payload)
	if final {
		word |= finalFlag
	}
	binary.BigEndian.PutUint32(f.buf[:4], word)
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], f.index)
	sum := crc32.Update(crc32.Checksum(idx[:], castagnoli), castagnoli, f.buf)
	f.buf = binary.BigEndian.AppendUint32(f.buf, sum)
	if _, err := f.w.Write(f.buf); err != nil {
		return err
	}
	f.index++
	f.total += uint64(payload)
	f.buf = f.buf[:4]
	return nil
}

func (f *framer) finish() error {
	if len(f.buf) > 4 {
		if err := f.flush(false); err != nil {
			return err
		}
	}
	f.buf = binary.BigEndian.AppendUint64(f.buf[:4], f.total)
	total := f.total
	if err := f.flush(true); err != nil {
		return err
	}
	f.total = total
	return nil
}

// ReadHeader reads and checks an encoded object's header.
func ReadHeader(r io.Reader) (Header, error) {
	fixed := make([]byte, len(codecMagic)+4)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return Header{}, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	if string(fixed[:len(codecMagic)]) != string(codecMagic) {
		return Header{}, fmt.Errorf("%w: not a myhoard object (bad magic bytes)", ErrCorrupt)
	}
	rest := fixed[len(codecMagic):]
	if rest[0] != codecVersion {
		return Header{}, fmt.Errorf("%w: format version %d is not supported (this myhoard reads version %d)", ErrCorrupt, rest[0], codecVersion)
	}
	tail := make([]byte, int(rest[3])+4)
	if _, err := io.ReadFull(r, tail); err != nil {
		return Header{}, fmt.Errorf("%w: header: %v", ErrCorrupt, err)
	}
	all := append(fixed, tail[:len(tail)-4]...)
	if crc32.Checksum(all, castagnoli) != binary.BigEndian.Uint32(tail[len(tail)-4:]) {
		return Header{}, fmt.Errorf("%w: header checksum mismatch", ErrCorrupt)
	}
	comp, ok := compressionByID(rest[1])
	if !ok {
		return Header{}, fmt.Errorf("%w: unknown compression id %d", ErrCorrupt, rest[1])
	}
	h := Header{Version: int(rest[0]), Compression: comp, KeyID: string(tail[:len(tail)-4])}
	switch rest[2] {
	case encryptionNone:
		if h.KeyID != "" {
			return Header{}, fmt.Errorf("%w: key id on an unencrypted object", ErrCorrupt)
		}
	case encryptionAgeRSA:
		h.Encrypted = true
	default:
		return Header{}, fmt.Errorf("%w: unknown encryption id %d", ErrCorrupt, rest[2])
	}
	return h, nil
}

// NewDecoder reads an encoded object's header from r and returns a reader
// of the original bytes. Keys are looked up in keys by the header's key id.
// Every Read error on damaged input wraps ErrCorrupt; the reader returns
// io.EOF only after the object's end was verified.
func NewDecoder(r io.Reader, keys Keyring) (io.ReadCloser, Header, error) {
	return NewDecoderWorkers(r, keys, 0)
}

// NewDecoderWorkers is NewDecoder with at most workers goroutines
// decompressing zstd frames side by side (0: one per core). One is enough
// where the reader is slower than a core (a binlog applied by the SQL
// thread), and leaves the other cores to it.
func NewDecoderWorkers(r io.Reader, keys Keyring, workers int) (io.ReadCloser, Header, error) {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	src := &trackedReader{r: r}
	br := bufio.NewReaderSize(src, 64<<10)
	h, err := ReadHeader(br)
	if err != nil {
		if src.err != nil {
			return nil, h, fmt.Errorf("read encoded object: %w", src.err)
		}
		return nil, h, err
	}
	var inner io.Reader = br
	if h.Encrypted {
		kp := keys[h.KeyID]
		if kp == nil || kp.identity == nil {
			return nil, h, fmt.Errorf("%w: the object needs key %s; keys with a private part here: %s", ErrWrongKey, h.KeyID, keys.ids())
		}
		ar, err := age.Decrypt(br, kp.identity)
		if err != nil {
			if src.err != nil {
				return nil, h, fmt.Errorf("read encoded object: %w", src.err)
			}
			return nil, h, fmt.Errorf("%w: decrypt with key %s: %v", ErrCorrupt, h.KeyID, err)
		}
		inner = ar
	}
	d := &decoder{src: src, unframe: &unframer{r: inner}}
	// Decryption, unframing and checksums run in a goroutine ahead of the
	// decompressor, so the two overlap on separate cores.
	d.ahead = newReadAhead(d.unframe)
	switch h.Compression {
	case CompressionNone:
		d.out = d.ahead
	case CompressionZstd:
		// independent frames side by side (see pzstdReader)
		zr, err := newPzstdReader(d.ahead, workers)
		if err != nil {
			d.ahead.close()
			return nil, h, fmt.Errorf("decode: zstd: %w", err)
		}
		d.out, d.close = zr, zr.Close
	case CompressionSnappy:
		d.out = s2.NewReader(d.ahead, s2.ReaderMaxBlockSize(4<<20))
	case CompressionLZMA:
		xr, err := xz.ReaderConfig{DictCap: maxWindow}.NewReader(d.ahead)
		if err != nil {
			d.ahead.close()
			return nil, h, d.classify(fmt.Errorf("lzma: %w", err))
		}
		d.out = xr
	}
	return d, h, nil
}

// trackedReader remembers the source's own I/O errors, so that they are
// reported as such (and can be retried) rather than as corruption.
type trackedReader struct {
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF && t.err == nil {
		t.err = err
	}
	return n, err
}

type decoder struct {
	src     *trackedReader
	unframe *unframer
	ahead   *readAhead
	out     io.Reader
	close   func()
	done    bool
	err     error
}

func (d *decoder) Read(p []byte) (n int, err error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done {
		return 0, io.EOF
	}
	defer func() {
		if r := recover(); r != nil { // a decompressor panicking on foreign bytes
			n, err = 0, fmt.Errorf("%w: decompress: %v", ErrCorrupt, r)
			d.err = err
		}
	}()
	n, err = d.out.Read(p)
	if err == io.EOF {
		// The decompressor is done; the framing must end right here.
		if ferr := d.ahead.finish(); ferr != nil {
			d.err = d.classify(ferr)
			return n, d.err
		}
		d.done = true
		return n, io.EOF
	}
	if err != nil {
		d.err = d.classify(err)
		err = d.err
	}
	return n, err
}

// classify reports a source I/O error as itself and anything else as
// corruption.
func (d *decoder) classify(err error) error {
	if d.src.err != nil {
		return fmt.Errorf("read encoded object: %w", d.src.err)
	}
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// WriteTo writes the decoded bytes to w in the decompressor's own blocks
// (a decoded zstd frame in one Write), so that io.Copy needs no buffer.
// Errors of w are returned as they are.
func (d *decoder) WriteTo(w io.Writer) (n int64, err error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.done {
		return 0, nil
	}
	wt, ok := d.out.(io.WriterTo)
	if !ok {
		return io.CopyBuffer(w, onlyReader{d}, make([]byte, 256<<10))
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: decompress: %v", ErrCorrupt, r)
			d.err = err
		}
	}()
	ew := &errWriter{w: w}
	n, err = wt.WriteTo(ew)
	if err != nil {
		if ew.err != nil {
			return n, err
		}
		d.err = d.classify(err)
		return n, d.err
	}
	if ferr := d.ahead.finish(); ferr != nil {
		d.err = d.classify(ferr)
		return n, d.err
	}
	d.done = true
	return n, nil
}

// onlyReader hides a WriterTo from io.Copy.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// errWriter remembers whether an error came from the destination.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

func (d *decoder) Close() error {
	// The read-ahead first: a decompressor waiting for input then sees
	// the end instead of reading the rest of the object.
	d.ahead.close()
	if d.close != nil {
		d.close()
	}
	return nil
}

// readAhead unframes (and so decrypts and checks) in its own goroutine, a
// few chunks ahead of the decompressor, with a fixed set of reused chunk
// buffers (constant memory).
type readAhead struct {
	full  chan aheadBlock
	free  chan []byte
	done  chan struct{}
	ended chan struct{}
	once  sync.Once
	src   *unframer
	cur   aheadBlock
	off   int
}

type aheadBlock struct {
	buf     []byte
	payload []byte
	err     error
	full    bool // taken from the channel (its buffer goes back to free)
}

const aheadDepth = 3

func newReadAhead(src *unframer) *readAhead {
	ra := &readAhead{full: make(chan aheadBlock, aheadDepth), free: make(chan []byte, aheadDepth+1),
		done: make(chan struct{}), ended: make(chan struct{}), src: src}
	for i := 0; i < aheadDepth+1; i++ {
		ra.free <- nil // allocated by unframer.next at the size needed
	}
	go ra.run()
	return ra
}

func (ra *readAhead) run() {
	defer close(ra.ended)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.done:
			return
		}
		buf, payload, err := ra.src.next(buf)
		select {
		case ra.full <- aheadBlock{buf: buf, payload: payload, err: err}:
		case <-ra.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// advance moves to the next block with bytes, or to the one that ends the
// stream.
func (ra *readAhead) advance() {
	if ra.cur.full {
		ra.free <- ra.cur.buf
	}
	select {
	case ra.cur = <-ra.full:
		ra.cur.full = true
	case <-ra.done:
		ra.cur = aheadBlock{err: errors.New("decoder closed")}
	}
	ra.off = 0
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for ra.off >= len(ra.cur.payload) {
		if ra.cur.err != nil {
			return 0, ra.cur.err
		}
		ra.advance()
	}
	n := copy(p, ra.cur.payload[ra.off:])
	ra.off += n
	return n, nil
}

// finish checks, once the decompressor is done, that nothing but the end
// marker follows what it consumed.
func (ra *readAhead) finish() error {
	for {
		if ra.off < len(ra.cur.payload) {
			return fmt.Errorf("%w: data after the end of the compressed stream", ErrCorrupt)
		}
		if ra.cur.err != nil {
			if ra.cur.err == io.EOF {
				return nil
			}
			return ra.cur.err
		}
		ra.advance()
	}
}

func (ra *readAhead) close() {
	ra.once.Do(func() { close(ra.done) })
	<-ra.ended
}

// unframer checks and strips the framing, one chunk at a time.
type unframer struct {
	r     io.Reader
	index uint64
	total uint64
	ended bool
}

// next reads one chunk into buf (grown as needed, so small objects use
// small buffers) and returns the buffer and the chunk's payload; io.EOF
// once the end marker has been verified.
func (u *unframer) next(buf []byte) ([]byte, []byte, error) {
	if u.ended {
		return buf, nil, io.EOF
	}
	var word [4]byte
	if _, err := io.ReadFull(u.r, word[:]); err != nil {
		return buf, nil, u.readErr("chunk header", err)
	}
	w := binary.BigEndian.Uint32(word[:])
	final := w&finalFlag != 0
	size := int(w &^ finalFlag)
	if size > frameChunk || (final && size != 8) {
		return buf, nil, fmt.Errorf("%w: chunk %d has impossible length %d", ErrCorrupt, u.index, size)
	}
	if cap(buf) < size+4 {
		buf = make([]byte, size+4, max(size+4, min(2*cap(buf), frameChunk+4)))
	}
	chunk := buf[:size+4]
	if _, err := io.ReadFull(u.r, chunk); err != nil {
		return buf, nil, u.readErr(fmt.Sprintf("chunk %d", u.index), err)
	}
	var idx [8]byte
	binary.BigEndian.PutUint64(idx[:], u.index)
	sum := crc32.Update(crc32.Update(crc32.Checksum(idx[:], castagnoli), castagnoli, word[:]), castagnoli, chunk[:size])
	if sum != binary.BigEndian.Uint32(chunk[size:]) {
		return buf, nil, fmt.Errorf("%w: chunk %d checksum mismatch (damaged or out of order)", ErrCorrupt, u.index)
	}
	u.index++
	if final {
		if got := binary.BigEndian.Uint64(chunk[:8]); got != u.total {
			return buf, nil, fmt.Errorf("%w: end marker says %d bytes, read %d", ErrCorrupt, got, u.total)
		}
		u.ended = true
		var extra [1]byte
		if n, _ := io.ReadFull(u.r, extra[:]); n > 0 {
			return buf, nil, fmt.Errorf("%w: data after the end of the object", ErrCorrupt)
		}
		return buf, nil, io.EOF
	}
	u.total += uint64(size)
	return buf, chunk[:size], nil
}

func (u *unframer) readErr(what string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: truncated at %s (the object ends before its end marker)", ErrCorrupt, what)
	}
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, what, err)
}
