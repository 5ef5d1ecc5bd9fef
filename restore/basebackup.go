// Package restore owns restoring backups onto a server: the restore
// coordinator and its persisted phases, the basebackup
// restore (streamed from storage, decoded, extracted, prepared and moved
// into the data directory), the binlog chain across streams (fenced by
// promotion records, with gap detection), the bounded prefetch, the
// relay-log apply by the server's own SQL thread, point-in-time recovery
// by time and GTID, and the GTID state of the restored server.
//
// It reads from storage and drives the server and the backup tools; it
// must never write to object storage itself (a backup that failed to
// restore is marked broken by the listing's owner, backup.Catalog, when
// the config says so), and never touch a data directory that was not
// empty when the restore was accepted.
//
// Deviations from the original, on purpose: the binlog stays on while
// binlogs are applied (MariaDB's strict GTID mode then rejects any replay
// instead of silently applying it twice, and MySQL needs no gtid_executed
// row patching: RESET MASTER + gtid_purged gives the same state); the
// restored server runs with relaxed durability and a server_id of its own
// during the apply, and is restarted as configured at the end; a resumed
// restore continues from the GTID state the server reached instead of
// from saved batch bookkeeping; and on two cores the SQL thread applies
// serially (DefaultParallel): with the relaxed durability, parallel
// workers measured slower there.
package restore

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

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
	// Member is called as each member of a chain starts (i of n, from 0).
	Member func(i, n int, m *storage.BasebackupManifest)
	// Preparing is called when --prepare starts; PrepareProgress with its
	// estimated progress in percent (from the redo log LSNs it reports).
	Preparing       func()
	PrepareProgress func(pct float64)
	Log             *slog.Logger
}

// ErrDataDirNotEmpty is wrapped when the target data directory has files.
var ErrDataDirNotEmpty = errors.New("the data directory is not empty")

// ErrToolMissing is wrapped when mbstream/xbstream or mariabackup/xtrabackup
// is not installed.
var ErrToolMissing = errors.New("backup tool not installed")

func tools(f mysql.Flavor) (extract, prepare string) {
	d := mysql.DialectOf(f)
	return d.StreamTool(), d.BackupTool()
}

// PrepareCommand is the tool's --prepare command line.
func PrepareCommand(o BasebackupOptions, dir string) []string {
	_, prepare := tools(o.Flavor)
	if o.Prepare != "" {
		prepare = o.Prepare
	}
	args := append([]string{prepare, "--prepare", "--target-dir=" + dir}, mysql.DialectOf(o.Flavor).PrepareFlags(o.FreeMemoryPercent)...)
	return args
}

// ChainPrepareCommand is the --prepare of member i of an n-member chain:
// incrementals (i > 0) are applied from incDir to the full backup in dir,
// and every member but the last keeps the backup open for the next
// (xtrabackup's --apply-log-only).
func ChainPrepareCommand(o BasebackupOptions, dir, incDir string, i, n int) []string {
	args := PrepareCommand(o, dir)
	if i > 0 {
		args = append(args, "--incremental-dir="+incDir)
	}
	if i < n-1 {
		args = append(args, mysql.DialectOf(o.Flavor).KeepForIncrementals()...)
	}
	return args
}

// MemberError is a chain member that failed to restore: the backups that
// need it cannot be restored either.
type MemberError struct {
	StreamID string
	Err      error
}

func (e *MemberError) Error() string { return e.Err.Error() }
func (e *MemberError) Unwrap() error { return e.Err }

// RestoreBasebackup restores one full backup (RestoreChain of one).
func RestoreBasebackup(ctx context.Context, site *storage.Site, m *storage.BasebackupManifest, o BasebackupOptions) error {
	return RestoreChain(ctx, site, []*storage.BasebackupManifest{m}, o)
}

// RestoreChain restores a full backup and the incrementals that follow it
// (oldest first; the last is the backup restored) into an empty data
// directory: the full backup's parts are streamed from storage in order,
// decoded (every checksum and the encryption are verified on the way) and
// extracted with no local copy of the stream, then prepared; each
// incremental is then streamed into a directory of its own, applied to
// the full backup and deleted before the next, so that the disk holds the
// full backup and one incremental, never the whole chain. Only then is
// the result moved into DataDir. On any failure DataDir is left as it
// was; the error is a *MemberError naming the member that failed.
func RestoreChain(ctx context.Context, site *storage.Site, chain []*storage.BasebackupManifest, o BasebackupOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(chain) == 0 {
		return errors.New("restore basebackup: no backup to restore")
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
			return fmt.Errorf("restore basebackup: %s is not installed (%v): %w", *t, err, ErrToolMissing)
		}
		*t = p
	}
	o.Prepare, o.Extract = prepare, extract
	base := o.TempDir
	if base == "" {
		base = filepath.Dir(filepath.Clean(o.DataDir))
	}
	if err := os.MkdirAll(base, 0o750); err != nil {
		return fmt.Errorf("restore basebackup: %w", err)
	}
	// What a killed attempt left (a whole extracted backup, perhaps) is
	// removed first: one restore runs at a time, and it starts over.
	for _, pattern := range []string{".myhoard-restore-*", ".myhoard-incremental-*"} {
		stale, _ := filepath.Glob(filepath.Join(base, pattern))
		for _, d := range stale {
			if err := os.RemoveAll(d); err != nil {
				return fmt.Errorf("restore basebackup: remove an earlier attempt's %s: %w", d, err)
			}
		}
	}
	tmp, err := os.MkdirTemp(base, ".myhoard-restore-")
	if err != nil {
		return fmt.Errorf("restore basebackup: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)

	var total int64
	for _, m := range chain {
		for _, p := range m.Parts {
			total += p.EncodedSize
		}
	}
	var downloaded atomic.Int64
	count := func(n int) {
		d := downloaded.Add(int64(n))
		if o.Progress != nil {
			o.Progress(d, total)
		}
	}
	for i, m := range chain {
		if o.Member != nil {
			o.Member(i, len(chain), m)
		}
		if err := restoreMember(ctx, site, m, o, tmp, base, i, len(chain), count, log); err != nil {
			return &MemberError{StreamID: m.StreamID, Err: err}
		}
	}
	last := chain[len(chain)-1]
	if mysql.DialectOf(o.Flavor).BackupHasBinlogs() {
		if err := cleanMySQLBackup(tmp); err != nil {
			return &MemberError{StreamID: last.StreamID, Err: fmt.Errorf("restore basebackup %s: %w", last.StreamID, err)}
		}
	}
	if err := moveContents(tmp, o.DataDir); err != nil {
		_ = clearDir(o.DataDir) // never leave a half-moved data directory
		return fmt.Errorf("restore basebackup %s: move into %s: %w", last.StreamID, o.DataDir, err)
	}
	return nil
}

// restoreMember extracts member i of the chain (the full backup into
// target, an incremental into a directory of its own, removed after) and
// prepares it.
func restoreMember(ctx context.Context, site *storage.Site, m *storage.BasebackupManifest, o BasebackupOptions, target, base string,
	i, n int, count func(int), log *slog.Logger) error {
	if (i == 0) == m.Incremental {
		return fmt.Errorf("restore basebackup %s: member %d of the chain is %s", m.StreamID, i+1, map[bool]string{true: "incremental", false: "a full backup"}[m.Incremental])
	}
	dir := target
	if i > 0 {
		d, err := os.MkdirTemp(base, ".myhoard-incremental-")
		if err != nil {
			return fmt.Errorf("restore basebackup: temporary directory: %w", err)
		}
		defer os.RemoveAll(d)
		dir = d
	}
	if err := extractInto(ctx, site, m, o.Keys, o.Extract, dir, base, count); err != nil {
		return err
	}
	// The stream holds the checkpoints; an older tool's encrypted stream
	// did not, so the manifest's copy is written when they are missing.
	cp := filepath.Join(dir, "xtrabackup_checkpoints")
	if _, err := os.Stat(cp); errors.Is(err, os.ErrNotExist) && m.CheckpointsFileContent != "" {
		if err := os.WriteFile(cp, []byte(m.CheckpointsFileContent), 0o640); err != nil {
			return fmt.Errorf("restore basebackup %s: %w", m.StreamID, err)
		}
	}
	log.Info("basebackup extracted", "stream", m.StreamID, "member", i+1, "of", n)
	if o.Preparing != nil {
		o.Preparing()
	}
	if out, err := runPrepare(ctx, ChainPrepareCommand(o, target, dir, i, n), dir, o.PrepareProgress); err != nil {
		return toolError(fmt.Sprintf("restore basebackup %s: %s --prepare in %s failed: %v", m.StreamID, filepath.Base(o.Prepare), target, err), out, base)
	}
	log.Info("basebackup prepared", "stream", m.StreamID, "member", i+1, "of", n)
	return nil
}

// extractInto streams a backup's parts from storage through the decoder
// into the extractor, which unpacks them into dir.
func extractInto(ctx context.Context, site *storage.Site, m *storage.BasebackupManifest, keys storage.Keyring, extract, dir, base string, count func(int)) error {
	src := storage.NewConcatReader(ctx, site, storage.PartKeys(m), count)
	defer src.Close()
	dec, _, err := storage.NewDecoder(src, keys)
	if err != nil {
		return fmt.Errorf("restore basebackup %s: %w", m.StreamID, err)
	}
	defer dec.Close()
	cmd := exec.CommandContext(ctx, extract, "-x", "-C", dir)
	pr, stdin, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("restore basebackup: pipe to %s: %w", extract, err)
	}
	// A larger pipe means fewer wake-ups of both sides per megabyte (the
	// decoder writes a decoded megabyte at a time).
	if rc, err := stdin.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
	}
	cmd.Stdin = pr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		pr.Close()
		stdin.Close()
		return fmt.Errorf("restore basebackup: start %s: %w", extract, err)
	}
	pr.Close()
	_, copyErr := io.Copy(stdin, dec)
	stdin.Close()
	waitErr := cmd.Wait()
	if waitErr != nil || (copyErr != nil && errors.Is(copyErr, syscall.EPIPE)) {
		// the extractor's own error explains a broken pipe
		return toolError(fmt.Sprintf("restore basebackup %s: %s -x into %s failed: %v", m.StreamID, filepath.Base(extract), dir, waitErr), stderr.String(), base)
	}
	if copyErr != nil {
		return fmt.Errorf("restore basebackup %s: download: %w", m.StreamID, copyErr)
	}
	return nil
}

// cleanMySQLBackup removes what must not reach a restored MySQL data
// directory (as the original's move-back does): the binlog that xtrabackup 8.0.5+
// includes with its index (the restored server starts a binlog of its
// own), and auto.cnf, so that the server gets a new server_uuid.
func cleanMySQLBackup(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".index") {
			continue
		}
		index := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(index)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(data), "\n") {
			name := filepath.Base(strings.TrimSpace(line))
			if name == "." || name == "" || name == "/" {
				continue
			}
			if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		if err := os.Remove(index); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(dir, "auto.cnf")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// toolError reports a failed tool with the end of its output, as a full
// disk (naming the directory) when that is what it says.
func toolError(what, output, dir string) error {
	if strings.Contains(output, "No space left on device") || strings.Contains(output, "errno 28") || strings.Contains(output, "Errcode: 28") {
		return fmt.Errorf("%s: the disk of %s is full: %w: %s", what, dir, ErrDiskFull, tail(output))
	}
	return fmt.Errorf("%s: %s", what, tail(output))
}

var lsnPattern = regexp.MustCompile(`(?:LSN[= ]|log sequence number )(\d+)`)

// runPrepare runs --prepare and estimates its progress from the redo log
// LSNs it prints, against the backup's last LSN (xtrabackup_checkpoints).
func runPrepare(ctx context.Context, argv []string, dir string, progress func(float64)) (string, error) {
	var lastLSN uint64
	if cp, err := os.ReadFile(filepath.Join(dir, "xtrabackup_checkpoints")); err == nil {
		for _, line := range strings.Split(string(cp), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == "last_lsn" {
				lastLSN, _ = strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return "", err
	}
	var out bytes.Buffer
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var first uint64
		for sc.Scan() {
			line := sc.Text()
			if out.Len() < 1<<20 {
				out.WriteString(line + "\n")
			}
			if progress == nil || lastLSN == 0 {
				continue
			}
			if m := lsnPattern.FindStringSubmatch(line); m != nil {
				lsn, _ := strconv.ParseUint(m[1], 10, 64)
				if first == 0 || lsn < first {
					first = lsn
				}
				if lastLSN > first && lsn >= first {
					progress(min(99, 100*float64(lsn-first)/float64(lastLSN-first)))
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	err := cmd.Wait()
	pw.Close()
	<-scanned
	if err == nil && progress != nil {
		progress(100)
	}
	return out.String(), err
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
