//go:build !cgo

package storage

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

const zstdImplementation = "klauspost/compress (pure Go)"

// goBlockEncoder compresses blocks with the pure-Go encoder, for builds
// without cgo. Its EncodeAll may be called concurrently.
type goBlockEncoder struct{ enc *zstd.Encoder }

func newZstdBlockEncoder(level, workers int) (zstdBlockEncoder, error) {
	if level < 1 || level > 22 {
		return nil, fmt.Errorf("zstd level %d is outside 1..22", level)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(level)), zstd.WithEncoderConcurrency(workers), zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, err
	}
	return goBlockEncoder{enc}, nil
}

func (e goBlockEncoder) encode(dst, src []byte) ([]byte, error) {
	return e.enc.EncodeAll(src, dst[:0]), nil
}

// goFrameDecoder decodes frames with the pure-Go decoder.
type goFrameDecoder struct{ dec *zstd.Decoder }

func newZstdFrameDecoder(workers int) (zstdFrameDecoder, error) {
	// The frames' XXH64 content checksums (of objects written before
	// frames dropped them) are not verified: the framing's CRC32C (and
	// with encryption the AEAD) already covers every compressed byte.
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(workers), zstd.WithDecoderMaxMemory(pzstdMaxFrame),
		zstd.WithDecoderMaxWindow(maxWindow), zstd.IgnoreChecksum(true))
	if err != nil {
		return nil, err
	}
	return goFrameDecoder{dec}, nil
}

func (d goFrameDecoder) decode(dst, frame []byte, _ int) ([]byte, error) {
	return d.dec.DecodeAll(frame, dst[:0])
}

func (d goFrameDecoder) close() { d.dec.Close() }
