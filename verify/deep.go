package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/myhoard/myhoard/storage"
)

// deepJob is one object (a binlog) or one object sequence (a basebackup's
// parts) to download and decode.
type deepJob struct {
	stream     string
	binlog     *storage.StoredBinlog
	basebackup *storage.BasebackupManifest
}

// deep decodes every job, Workers at a time, each as a stream (memory is
// bounded by the decoders' buffers, not by the objects' sizes).
func (c *checker) deep(ctx context.Context) error {
	workers := c.o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	jobs := make(chan deepJob)
	var mu sync.Mutex
	var failed error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				n, key, problem, err := c.decode(ctx, j)
				mu.Lock()
				c.r.DecodedBytes += n
				switch {
				case err != nil && failed == nil:
					failed = err
				case problem != "":
					c.find(j.stream, key, "%s", problem)
				}
				mu.Unlock()
			}
		}()
	}
	for _, j := range c.jobs {
		select {
		case jobs <- j:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
	if failed == nil {
		failed = ctx.Err()
	}
	return failed
}

// decode reads one job through the codec: it returns the decoded bytes,
// the key and the problem found (""), or an error when storage failed.
func (c *checker) decode(ctx context.Context, j deepJob) (int64, string, string, error) {
	if j.binlog != nil {
		m := j.binlog.Manifest
		key := j.binlog.Ref.DataKey()
		rc, err := c.site.Get(ctx, key)
		if errors.Is(err, storage.ErrNotFound) {
			return 0, key, "", nil // already a finding of the cheap check
		}
		if err != nil {
			return 0, key, "", err
		}
		defer rc.Close()
		h := sha256.New()
		n, problem, err := c.read(rc, h, 1)
		switch {
		case err != nil || problem != "":
			return n, key, problem, err
		case n != m.Size:
			return n, key, fmt.Sprintf("decodes to %d bytes, the manifest says %d", n, m.Size), nil
		case m.SHA256 != "" && hex.EncodeToString(h.Sum(nil)) != m.SHA256:
			return n, key, fmt.Sprintf("decodes to SHA-256 %s, the manifest says %s", hex.EncodeToString(h.Sum(nil)), m.SHA256), nil
		}
		return n, key, "", nil
	}
	m := j.basebackup
	key := storage.BasebackupManifestKey(m.StreamID)
	pr := storage.NewConcatReader(ctx, c.site, storage.PartKeys(m), nil)
	defer pr.Close()
	// a basebackup is the big object: every core decodes its frames
	n, problem, err := c.read(pr, io.Discard, 0)
	if errors.Is(err, storage.ErrNotFound) {
		return n, key, "", nil // a missing part is a finding of the cheap check
	}
	if err == nil && problem == "" && n != m.Size {
		problem = fmt.Sprintf("the basebackup decodes to %d bytes, the manifest says %d", n, m.Size)
	}
	return n, key, problem, err
}

// read decodes r into w with workers decoder goroutines (0: one per
// core): a decoding error is a problem of the object, a storage error an
// error.
func (c *checker) read(r io.Reader, w io.Writer, workers int) (int64, string, error) {
	dec, _, err := storage.NewDecoderWorkers(r, c.o.Keys, workers)
	if err != nil {
		if storageFailed(err) || errors.Is(err, storage.ErrNotFound) {
			return 0, "", err
		}
		return 0, fmt.Sprintf("cannot be decoded: %v", err), nil
	}
	defer dec.Close()
	n, err := io.Copy(w, dec)
	if err != nil {
		if storageFailed(err) || errors.Is(err, storage.ErrNotFound) {
			return n, "", err
		}
		return n, fmt.Sprintf("damaged after %d decoded bytes: %v", n, err), nil
	}
	return n, "", nil
}
