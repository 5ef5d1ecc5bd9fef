package restore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// FromStorageOptions say how to apply stored binlogs in bounded batches.
type FromStorageOptions struct {
	Site *storage.Site
	Keys storage.Keyring
	DB   *sql.DB
	// RelayPrefix and RelayIndex are the server's relay log settings;
	// downloads go to the relay log directory.
	RelayPrefix, RelayIndex string
	// MaxBytes is restore_max_binlog_bytes: prefetched plus applying
	// binlogs never take more (a single bigger binlog is still fetched).
	MaxBytes int64
	Parallel int
	// Progress reports binlogs applied and still pending.
	Progress func(applied, pending int)
	// Batch, when set, hears about each batch handed to the SQL thread
	// and how many binlogs wait after it.
	Batch func(files, pending int)
	// StopGTID or StopTime make it a point-in-time restore: stop right
	// after the transaction that completes StopGTID, or after the last
	// one that committed before StopTime (with Approximate: apply the
	// last binlog whole). Binlogs past the target are never downloaded.
	StopGTID    *mysql.GTIDSet
	StopTime    *time.Time
	Approximate bool
	Flavor      mysql.Flavor
	Log         *slog.Logger
}

// needed trims the chain to the binlogs a point-in-time target needs.
func needed(binlogs []storage.StoredBinlog, o FromStorageOptions) ([]storage.StoredBinlog, error) {
	switch {
	case o.StopGTID != nil:
		for i, b := range binlogs {
			if o.StopGTID.IsSubsetOf(b.End()) {
				return binlogs[:i+1], nil
			}
		}
		return nil, fmt.Errorf("target %s: %w", o.StopGTID, ErrTargetNotFound)
	case o.StopTime != nil:
		for i, b := range binlogs {
			if b.Manifest.FirstEventAt != nil && !b.Manifest.FirstEventAt.Before(*o.StopTime) {
				return binlogs[:i], nil // this file starts at or after the target
			}
		}
	}
	return binlogs, nil
}

// pendingAfter drops the binlogs whose transactions are all executed.
func pendingAfter(binlogs []storage.StoredBinlog, executed mysql.GTIDSet) []storage.StoredBinlog {
	for i, b := range binlogs {
		if !b.End().IsSubsetOf(executed) {
			return binlogs[i:]
		}
	}
	return nil
}

// ApplyFromStorage downloads and applies binlogs on a running server whose
// GTID state is already set: binlogs already executed are skipped, the
// rest is prefetched within MaxBytes and applied batch by batch.
func ApplyFromStorage(ctx context.Context, binlogs []storage.StoredBinlog, o FromStorageOptions) error {
	chain, err := needed(binlogs, o)
	if err != nil {
		return err
	}
	executed, err := mysql.DialectOf(o.Flavor).Executed(ctx, o.DB)
	if err != nil {
		return err
	}
	chain = pendingAfter(chain, executed)
	if o.Log != nil {
		o.Log.Info("applying binlogs from storage", "binlogs", len(chain), "budget", o.MaxBytes, "parallel", o.Parallel)
	}
	pf := newPrefetcher(o.Site, o.Keys, filepath.Dir(o.RelayPrefix), o.MaxBytes, chain)
	pctx, cancel := context.WithCancel(ctx)
	defer pf.stop(cancel)
	go pf.run(pctx)
	_, err = applyChain(ctx, chain, o, pf, 0)
	return err
}

// applyChain applies the chain through the prefetcher, from item first on;
// it returns how many binlogs were applied.
//
// It is long because each step of a batch (take, skip what is applied, find
// the stop point, apply, release the space) works on the previous step's
// variables.
func applyChain(ctx context.Context, chain []storage.StoredBinlog, o FromStorageOptions, pf *prefetcher, first int) (int, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	applied := 0
	for i := first; i < len(chain); {
		files, n, err := pf.take(ctx, i, continuousRun(chain, i))
		if err != nil {
			return applied, err
		}
		var size int64
		for _, b := range chain[i : i+n] {
			size += b.Manifest.Size
		}
		executed, err := mysql.DialectOf(o.Flavor).Executed(ctx, o.DB)
		if err != nil {
			return applied, err
		}
		// Never apply across a hole: the batch must begin within what the
		// server has (strict GTID mode only rejects going back, not gaps).
		if before := chain[i].Manifest.GTIDsBefore; !before.IsSubsetOf(executed) {
			for _, f := range files {
				os.Remove(f)
			}
			pf.release(size)
			return applied, fmt.Errorf("binlog %s (%s) starts at %s, but the server has only %s: %w",
				chain[i].Manifest.LocalName, chain[i].Ref.DataKey(), before, executed, storage.ErrGap)
		}
		// Start at the first transaction the server lacks: the backup's
		// consistency point in the first batch, the start of the file
		// later, or inside it when resuming.
		start, skip := int64(0), 0
		for skip < len(files) {
			if start, err = firstMissing(files[skip], o.Flavor, executed); err != nil {
				return applied, err
			}
			if start > 0 {
				break
			}
			skip++ // nothing left to apply in this file
		}
		last := i+n == len(chain)
		batch := chain[i+skip : i+n]
		opts := ApplyOptions{DB: o.DB, RelayPrefix: o.RelayPrefix, RelayIndex: o.RelayIndex, Files: files[skip:],
			Parallel: o.Parallel, Target: mysql.DialectOf(o.Flavor).GTIDTarget(chain[i+n-1].End()), Flavor: o.Flavor}
		if len(batch) > 0 {
			opts.StartFile, opts.StartPos = batch[0].Manifest.LocalName, start
		}
		if last && len(batch) > 0 && (o.StopGTID != nil || (o.StopTime != nil && !o.Approximate)) {
			state := batch[0].Manifest.GTIDsBefore
			var sp StopPoint
			if o.StopGTID != nil {
				sp, err = FindStopByGTID(opts.Files, o.Flavor, state, *o.StopGTID)
			} else {
				sp, err = FindStopByTime(opts.Files, o.Flavor, state, *o.StopTime)
			}
			switch {
			case errors.Is(err, ErrTargetNotFound) && o.StopTime != nil:
				opts.Files = nil // nothing in this batch is before the target
			case err != nil:
				return applied, err
			case sp.Reached.IsSubsetOf(executed):
				opts.Files = nil // already there (a resumed restore)
			default:
				d := mysql.DialectOf(o.Flavor)
				opts.UntilFile, opts.UntilPos, opts.Target, opts.Parallel = sp.File, sp.Pos, d.GTIDTarget(sp.Reached), 0
				if d.StopsByGTID() {
					opts.UntilGTID, opts.UntilPos = sp.GTID.String(), 0
				}
			}
		}
		if len(opts.Files) == 0 {
			for _, f := range files {
				os.Remove(f)
			}
		} else {
			for k, f := range files[:skip] {
				os.Remove(f)
				pf.release(chain[i+k].Manifest.Size)
				size -= chain[i+k].Manifest.Size
			}
			if o.Batch != nil {
				o.Batch(len(opts.Files), len(chain)-i-n)
			}
			// Applied relay logs are deleted by the server: their space goes
			// to the next downloads while the batch is still running.
			opts.Purged = func(k int) {
				pf.release(batch[k].Manifest.Size)
				size -= batch[k].Manifest.Size
			}
			log.Info("applying binlogs", "first", batch[0].Manifest.LocalName, "files", len(opts.Files), "start", start,
				"target", opts.Target, "until_pos", opts.UntilPos)
			t0 := time.Now()
			if err := ApplyBinlogs(ctx, opts); err != nil {
				pf.release(size)
				return applied, err
			}
			log.Info("binlogs applied", "first", batch[0].Manifest.LocalName, "files", len(opts.Files), "took", time.Since(t0))
		}
		pf.release(size)
		i += n
		applied += n
		if o.Progress != nil {
			o.Progress(i, len(chain)-i)
		}
	}
	return applied, nil
}

// continuousRun is how many binlogs from i on continue each other (each
// starts where the previous ended). A binlog that starts earlier (the
// same transactions uploaded again, as after a promotion) must begin a
// batch of its own, so that its start point skips what was applied.
func continuousRun(chain []storage.StoredBinlog, i int) int {
	n := 1
	for k := i + 1; k < len(chain); k++ {
		if !chain[k].Manifest.GTIDsBefore.Equal(chain[k-1].End()) {
			break
		}
		n++
	}
	return n
}

// firstMissing is the offset of the first transaction of file that the
// server has not executed (0: none).
func firstMissing(file string, flavor mysql.Flavor, executed mysql.GTIDSet) (int64, error) {
	var start int64
	_, err := mysql.ReadBinlogFile(file, flavor, mysql.ReadOptions{AllowInUse: true}, func(tx mysql.Transaction) error {
		if !executed.Contains(tx.GTID) {
			start = tx.Start
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, fmt.Errorf("find the first transaction to apply in %s: %w", file, err)
	}
	return start, nil
}

// prefetcher downloads the chain's binlogs in order into the relay log
// directory ahead of the apply, keeping prefetched plus applying bytes
// within the budget (one binlog is always allowed).
type prefetcher struct {
	site   *storage.Site
	keys   storage.Keyring
	dir    string
	budget int64
	items  []storage.StoredBinlog

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	files   map[int]string
	inUse   int64
	err     error
	done    chan struct{}
	// Bytes is the decoded bytes downloaded so far.
	bytes int64
}

const prefetchPrefix = ".myhoard-prefetch-"

func newPrefetcher(site *storage.Site, keys storage.Keyring, dir string, budget int64, items []storage.StoredBinlog) *prefetcher {
	return &prefetcher{site: site, keys: keys, dir: dir, budget: budget, items: items,
		changed: make(chan struct{}), files: map[int]string{}, done: make(chan struct{})}
}

// RemovePrefetched deletes prefetched files left in dir by an earlier run.
func RemovePrefetched(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefetchPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func (p *prefetcher) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// run downloads until every item is fetched, ctx ends or a download fails.
func (p *prefetcher) run(ctx context.Context) {
	defer close(p.done)
	for i, b := range p.items {
		for {
			p.mu.Lock()
			ok := p.inUse == 0 || p.inUse+b.Manifest.Size <= p.budget
			if ok {
				p.inUse += b.Manifest.Size
			}
			ch := p.changed
			p.mu.Unlock()
			if ok {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-ch:
			}
		}
		path := filepath.Join(p.dir, fmt.Sprintf("%s%06d", prefetchPrefix, i))
		err := p.download(ctx, b, path)
		p.mu.Lock()
		if err != nil {
			p.err = err
			p.notifyLocked()
			p.mu.Unlock()
			return
		}
		p.files[i] = path
		p.bytes += b.Manifest.Size
		p.notifyLocked()
		p.mu.Unlock()
	}
}

func (p *prefetcher) download(ctx context.Context, b storage.StoredBinlog, path string) error {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var f *os.File
		f, err = os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			return fmt.Errorf("prefetch binlog %s into %s: %w", b.Manifest.LocalName, p.dir, err)
		}
		h := sha256.New()
		cw := &storage.CountingWriter{W: io.MultiWriter(f, h)}
		// one decompressing goroutine: the SQL thread reads far slower
		// than a core decodes, and it needs a core of its own
		err = p.site.GetDecodedWorkers(ctx, b.Ref.DataKey(), p.keys, cw, 1)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = checkContent(b, cw.N, hex.EncodeToString(h.Sum(nil)))
		}
		if err == nil {
			return nil
		}
		os.Remove(path)
		if ctx.Err() != nil || errors.Is(err, storage.ErrCorrupt) || errors.Is(err, storage.ErrWrongKey) || isDiskFull(err) {
			break
		}
	}
	return fmt.Errorf("prefetch binlog %s (%s) into %s: %w", b.Manifest.LocalName, b.Ref.DataKey(), p.dir, err)
}

// checkContent compares a downloaded binlog with its manifest: the data
// object must be the very file the manifest describes (an intact object
// of another binlog under this key is as wrong as a damaged one).
func checkContent(b storage.StoredBinlog, size int64, sum string) error {
	if b.Manifest.Size != 0 && size != b.Manifest.Size {
		return fmt.Errorf("%s holds %d bytes, its manifest says %d: %w", b.Ref.DataKey(), size, b.Manifest.Size, storage.ErrCorrupt)
	}
	if b.Manifest.SHA256 != "" && sum != b.Manifest.SHA256 {
		return fmt.Errorf("%s has SHA-256 %s, its manifest says %s: %w", b.Ref.DataKey(), sum, b.Manifest.SHA256, storage.ErrCorrupt)
	}
	return nil
}

// take waits until item from is downloaded and returns the run of
// downloaded items that starts there (at most limit).
func (p *prefetcher) take(ctx context.Context, from, limit int) ([]string, int, error) {
	for {
		p.mu.Lock()
		if f, ok := p.files[from]; ok {
			files := []string{f}
			delete(p.files, from)
			for j := from + 1; j < from+limit; j++ {
				g, ok := p.files[j]
				if !ok {
					break
				}
				files = append(files, g)
				delete(p.files, j)
			}
			p.mu.Unlock()
			return files, len(files), nil
		}
		err, ch := p.err, p.changed
		p.mu.Unlock()
		if err != nil {
			return nil, 0, err
		}
		select {
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-ch:
		}
	}
}

// release returns applied bytes to the budget.
func (p *prefetcher) release(n int64) {
	p.mu.Lock()
	p.inUse -= n
	p.notifyLocked()
	p.mu.Unlock()
}

// downloaded is how many decoded bytes were fetched so far.
func (p *prefetcher) downloaded() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bytes
}

// stop cancels the downloads, waits for them and removes what is left.
func (p *prefetcher) stop(cancel context.CancelFunc) {
	cancel()
	<-p.done
	p.mu.Lock()
	for i, f := range p.files {
		os.Remove(f)
		delete(p.files, i)
	}
	p.mu.Unlock()
}
