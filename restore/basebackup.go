// Package restore owns restoring backups onto a server: the basebackup
// (streamed from storage, decoded, extracted, prepared and moved into the
// data directory) and, in later steps, the binlog apply and point-in-time
// recovery of DESIGN.md section 6.
//
// It reads from storage and drives the backup tools; it must never write
// to object storage, and never touch a data directory that is not empty.
// So far it implements the basebackup restore; the restore coordinator,
// binlog prefetch and relay-log apply are still to come (issue 5).
package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// BasebackupOptions say how to restore a basebackup.
type BasebackupOptions struct {
	Flavor mysql.Flavor
	// Extract and Prepare are the stream extractor (mbstream / xbstream)
	// and the backup tool (mariabackup / xtrabackup); default: by flavor
	// from PATH.
	Extract, Prepare string
	// DataDir must be empty or missing; it receives the restored files.
	DataDir string
	// TempDir holds the extracted files until they are prepared (default:
	// next to DataDir, so that the final move is a rename).
	TempDir string
	Keys    storage.Keyring
	// FreeMemoryPercent is restore_free_memory_percentage (xtrabackup's
	// --use-free-memory-pct); nil: the tool's default.
	FreeMemoryPercent *int
	// Progress receives the encoded bytes downloaded so far and the total.
	Progress func(downloaded, total int64)
	Log      *slog.Logger
}

// ErrDataDirNotEmpty is wrapped when the target data directory has files.
var ErrDataDirNotEmpty = errors.New("the data directory is not empty")

func tools(f mysql.Flavor) (extract, prepare string) {
	if f == mysql.FlavorMariaDB {
		return "mbstream", "mariabackup"
	}
	return "xbstream", "xtrabackup"
}

// PrepareCommand is the tool's --prepare command line.
func PrepareCommand(o BasebackupOptions, dir string) []string {
	_, prepare := tools(o.Flavor)
	if o.Prepare != "" {
		prepare = o.Prepare
	}
	args := []string{prepare, "--prepare", "--target-dir=" + dir}
	if o.Flavor == mysql.FlavorMySQL {
		args = append(args, "--no-version-check")
		if o.FreeMemoryPercent != nil {
			args = append(args, "--use-free-memory-pct="+strconv.Itoa(*o.FreeMemoryPercent))
		}
	}
	return args
}

// RestoreBasebackup restores a basebackup into an empty data directory:
// the parts are streamed from storage in order, decoded (every checksum
// and the encryption are verified on the way) and extracted with no local
// copy of the stream, then prepared, and only then moved into DataDir. On
// any failure DataDir is left as it was.
func RestoreBasebackup(ctx context.Context, site *storage.Site, m *storage.BasebackupManifest, o BasebackupOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkEmpty(o.DataDir); err != nil {
		return err
	}
	extract, prepare := tools(o.Flavor)
	if o.Extract != "" {
		extract = o.Extract
	}
	if o.Prepare != "" {
		prepare = o.Prepare
	}
	for _, t := range []*string{&extract, &prepare} {
		p, err := exec.LookPath(*t)
		if err != nil {
			return fmt.Errorf("restore basebackup: %s is not installed: %w", *t, err)
		}
		*t = p
	}
	o.Prepare = prepare
	base := o.TempDir
	if base == "" {
		base = filepath.Dir(filepath.Clean(o.DataDir))
	}
	if err := os.MkdirAll(base, 0o750); err != nil {
		return fmt.Errorf("restore basebackup: %w", err)
	}
	tmp, err := os.MkdirTemp(base, ".myhoard-restore-")
	if err != nil {
		return fmt.Errorf("restore basebackup: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	// Download -> decode -> extract.
	var total int64
	for _, p := range m.Parts {
		total += p.EncodedSize
	}
	var downloaded atomic.Int64
	src := &partsReader{ctx: ctx, site: site, parts: m.Parts, count: func(n int) {
		d := downloaded.Add(int64(n))
		if o.Progress != nil {
			o.Progress(d, total)
		}
	}}
	defer src.Close()
	dec, _, err := storage.NewDecoder(src, o.Keys)
	if err != nil {
		return fmt.Errorf("restore basebackup %s: %w", m.StreamID, err)
	}
	defer dec.Close()
	cmd := exec.CommandContext(ctx, extract, "-x", "-C", tmp)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("restore basebackup: start %s: %w", extract, err)
	}
	_, copyErr := io.Copy(stdin, dec)
	stdin.Close()
	waitErr := cmd.Wait()
	if copyErr != nil {
		return fmt.Errorf("restore basebackup %s: download: %w", m.StreamID, copyErr)
	}
	if waitErr != nil {
		return fmt.Errorf("restore basebackup %s: %s -x failed: %v: %s", m.StreamID, filepath.Base(extract), waitErr, tail(stderr.String()))
	}
	log.Info("basebackup extracted", "stream", m.StreamID, "bytes", downloaded.Load())

	argv := PrepareCommand(o, tmp)
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("restore basebackup %s: %s --prepare failed: %v: %s", m.StreamID, filepath.Base(prepare), err, tail(string(out)))
	}
	log.Info("basebackup prepared", "stream", m.StreamID)
	if err := moveContents(tmp, o.DataDir); err != nil {
		return fmt.Errorf("restore basebackup %s: move into %s: %w", m.StreamID, o.DataDir, err)
	}
	return nil
}

func checkEmpty(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore basebackup: data directory: %w", err)
	}
	for _, e := range entries {
		if e.Name() != "lost+found" {
			return fmt.Errorf("restore basebackup: %s: %w (found %s)", dir, ErrDataDirNotEmpty, e.Name())
		}
	}
	return nil
}

// moveContents renames everything in src into dst (created if needed),
// copying when they are on different filesystems.
func moveContents(src, dst string) error {
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return err
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range entries {
		from, to := filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())
		err := os.Rename(from, to)
		if errors.Is(err, syscall.EXDEV) {
			err = copyTree(from, to)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func copyTree(from, to string) error {
	return filepath.Walk(from, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		target := filepath.Join(to, rel)
		if info.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		if err := out.Sync(); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}

func tail(s string) string {
	if len(s) > 2000 {
		return "..." + s[len(s)-2000:]
	}
	return s
}

// partsReader reads a basebackup's parts in order as one stream, opening
// each part when the previous one is done (storage reads resume after
// transient failures).
type partsReader struct {
	ctx   context.Context
	site  *storage.Site
	parts []storage.BasebackupPart
	cur   io.ReadCloser
	count func(int)
}

func (r *partsReader) Read(p []byte) (int, error) {
	for {
		if r.cur == nil {
			if len(r.parts) == 0 {
				return 0, io.EOF
			}
			rc, err := r.site.Get(r.ctx, r.parts[0].Key)
			if err != nil {
				return 0, err
			}
			r.cur, r.parts = rc, r.parts[1:]
		}
		n, err := r.cur.Read(p)
		if n > 0 {
			r.count(n)
		}
		if err == io.EOF {
			r.cur.Close()
			r.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (r *partsReader) Close() error {
	if r.cur != nil {
		return r.cur.Close()
	}
	return nil
}
