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
