package backup

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// BasebackupOptions say how to take a full backup.
type BasebackupOptions struct {
	Flavor mysql.Flavor
	// Tool is the mariabackup or xtrabackup binary (default: found in PATH
	// by flavor).
	Tool string
	// ConfigFile is the server's my.cnf (mysql.config_file_name).
	ConfigFile string
	// Conn are the credentials, written to a temporary defaults file.
	Conn        mysql.ConnParams
	DataDir     string
	TempDir     string
	CopyThreads int
	// SplitSize is the size of each stored part (0: one part).
	SplitSize int64
	Encode    storage.EncodeOptions
	// RegisterRedoLogConsumer and EstimateMemory are xtrabackup flags.
	RegisterRedoLogConsumer, EstimateMemory bool
	ServerID                                uint32
	ServerUUID                              string
	// OptimizeTables is optimize_tables_before_backup: OPTIMIZE TABLE on
	// the tables with INSTANT row versions first (MySQL 8.0.29 and later).
	OptimizeTables bool
	// Incremental, when set, makes the backup incremental: only the pages
	// changed after its LSN are copied.
	Incremental *IncrementalBase
	NodeID      string
	Epoch       int64
	// Failpoint, if set, is called with "basebackup-streaming" once the
	// first bytes are on their way to storage (tests kill the daemon there).
	Failpoint func(name string)
	// Progress, if set, receives the estimated progress in percent.
	Progress func(pct float64)
	// Uploaded, if set, receives the encoded bytes stored so far and the
	// upload rate in bytes per second, about once a second.
	Uploaded func(bytes int64, rate float64)
	Log      *slog.Logger
}

// ToolName is the backup program of a flavor.
func ToolName(f mysql.Flavor) string { return mysql.DialectOf(f).BackupTool() }

// BuildCommand returns the backup command line. Credentials are in the
// defaults file, never on the command line.
func BuildCommand(o BasebackupOptions, defaultsFile, targetDir, lsnDir string) []string {
	tool := o.Tool
	if tool == "" {
		tool = ToolName(o.Flavor)
	}
	args := []string{tool, "--defaults-file=" + defaultsFile, "--backup", "--stream=xbstream",
		"--target-dir=" + targetDir, "--extra-lsndir=" + lsnDir, "--parallel=" + strconv.Itoa(max(1, o.CopyThreads))}
	if o.Incremental != nil {
		args = append(args, "--incremental-lsn="+o.Incremental.LSN)
	}
	return append(args, mysql.DialectOf(o.Flavor).BackupFlags(o.RegisterRedoLogConsumer, o.EstimateMemory)...)
}

// DefaultsFile is the temporary defaults file: the server's config, then a
// [client] section with the credentials and, with require_ssl, TLS to the
// server (verified against ca_file when given) in the flavor's option
// names. (No host= when a socket is given: mariabackup would otherwise
// connect over TCP as user@127.0.0.1.)
func DefaultsFile(serverConfig string, c mysql.ConnParams, f mysql.Flavor) string {
	var b strings.Builder
	b.WriteString(serverConfig)
	b.WriteString("\n\n[client]\n")
	fmt.Fprintf(&b, "user=%s\n", mysql.OptionValue(c.User))
	if c.Password != "" {
		fmt.Fprintf(&b, "password=%s\n", mysql.OptionValue(c.Password))
	}
	if c.Socket != "" {
		fmt.Fprintf(&b, "socket=%s\n", mysql.OptionValue(c.Socket))
	} else {
		fmt.Fprintf(&b, "host=%s\nport=%d\n", mysql.OptionValue(c.Host), c.Port)
	}
	if c.RequireTLS {
		for _, line := range mysql.DialectOf(f).ClientTLS(c.CAFile) {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// ConsistencyPoint is where a full backup stops: binlog file, position and
// the GTID state there.
type ConsistencyPoint struct {
	File     string
	Position int64
	GTID     string
}

var binlogPosRe = regexp.MustCompile(`filename '([^']+)', position '?([0-9]+)'?(?:, GTID of the last change '([^']*)')?`)

// ParseBinlogPos reads the consistency point from xtrabackup_info's
// binlog_pos line or the tool's "MySQL binlog position:" output.
func ParseBinlogPos(text string) (ConsistencyPoint, error) {
	m := binlogPosRe.FindStringSubmatch(text)
	if m == nil {
		return ConsistencyPoint{}, errors.New("no binlog position in the backup tool's output (is binary logging enabled?)")
	}
	pos, err := strconv.ParseInt(m[2], 10, 64)
	if err != nil {
		return ConsistencyPoint{}, fmt.Errorf("bad binlog position %q", m[2])
	}
	return ConsistencyPoint{File: m[1], Position: pos, GTID: strings.Join(strings.Fields(m[3]), "")}, nil
}

// ErrToolMissing is wrapped when the backup program is not installed.
var ErrToolMissing = errors.New("backup tool not found")

// TakeBasebackup runs the backup tool and streams its output through the
// codec into parts of SplitSize under the stream's basebackup/ prefix,
// with no local copy. On success it rotates the binlog (FLUSH BINARY LOGS)
// and returns the manifest, which the caller writes last. On failure the
// child is killed, temporary files and uploaded parts are removed.
//
// It is long because it is one pipeline (tool, codec, uploader) whose
// processes and pipes must all be torn down on every failure path; split
// up, their lifetimes would be scattered.
func TakeBasebackup(ctx context.Context, site *storage.Site, streamID string, o BasebackupOptions, db *sql.DB) (m *storage.BasebackupManifest, err error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tool := o.Tool
	if tool == "" {
		tool = ToolName(o.Flavor)
	}
	if p, lerr := exec.LookPath(tool); lerr == nil {
		tool = p
	} else {
		return nil, fmt.Errorf("basebackup: %w: %s is not installed (package %s)", ErrToolMissing, tool, mysql.DialectOf(o.Flavor).ToolPackage())
	}
	o.Tool = tool
	serverConfig, err := os.ReadFile(o.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("basebackup: read mysql.config_file_name: %w", err)
	}
	if err := os.MkdirAll(o.TempDir, 0o700); err != nil {
		return nil, fmt.Errorf("basebackup: temporary_directory: %w", err)
	}
	tmp, err := os.MkdirTemp(o.TempDir, "basebackup-")
	if err != nil {
		return nil, fmt.Errorf("basebackup: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	cnf := filepath.Join(tmp, "backup.cnf")
	if err := os.WriteFile(cnf, []byte(DefaultsFile(string(serverConfig), o.Conn, o.Flavor)), 0o600); err != nil {
		return nil, fmt.Errorf("basebackup: %w", err)
	}
	lsnDir := filepath.Join(tmp, "lsn")
	target := filepath.Join(tmp, "target")
	for _, d := range []string{lsnDir, target} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("basebackup: %w", err)
		}
	}
	if o.OptimizeTables && db != nil {
		if err := optimizeTables(ctx, db, log); err != nil {
			return nil, fmt.Errorf("basebackup: %w", err)
		}
	}
	total, sizes := dataDirSizes(o.DataDir)
	// Parts left by an earlier attempt of this stream (killed before its
	// basebackup.json) are not part of this backup.
	if _, err := site.DeletePrefix(ctx, storage.StreamPrefix(streamID)+"basebackup/"); err != nil {
		return nil, fmt.Errorf("basebackup: remove parts of an earlier attempt: %w", err)
	}

	started := time.Now().UTC()
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	argv := BuildCommand(o, cnf, target, lsnDir)
	cmd := exec.CommandContext(cctx, argv[0], argv[1:]...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// A larger pipe means fewer wake-ups of both processes per megabyte.
	if f, ok := stdout.(*os.File); ok {
		_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, 1<<20)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("basebackup: start %s: %w", tool, err)
	}
	if o.Incremental != nil {
		log.Info("incremental basebackup started", "stream", streamID, "tool", tool, "data_dir_bytes", total, "parent", o.Incremental.Parent(), "lsn", o.Incremental.LSN)
	} else {
		log.Info("basebackup started", "stream", streamID, "tool", tool, "data_dir_bytes", total)
	}
	defer func() {
		if err != nil {
			cancel()
			_ = cmd.Wait()
			if _, derr := site.DeletePrefix(context.WithoutCancel(ctx), storage.StreamPrefix(streamID)+"basebackup/"); derr != nil {
				log.Warn("could not remove the parts of a failed basebackup", "stream", streamID, "error", derr)
			}
		}
	}()

	// stderr: progress and the last lines for error messages.
	var tail tailBuffer
	var processed atomic.Int64
	var stderrDone sync.WaitGroup
	stderrDone.Add(1)
	go func() {
		defer stderrDone.Done()
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var current string
		copying := regexp.MustCompile(`(?:Copying|[Ss]treaming) (\S+)`)
		for sc.Scan() {
			line := sc.Text()
			tail.add(line)
			if m := copying.FindStringSubmatch(line); m != nil {
				current = strings.TrimPrefix(m[1], "./")
			} else if strings.Contains(line, "...done") && current != "" {
				processed.Add(sizes[current])
				current = ""
				if o.Progress != nil && total > 0 {
					o.Progress(min(100, float64(processed.Load())*100/float64(total)))
				}
			}
		}
	}()

	// stdout -> encoder -> parts. (No separate hash of the stream: the
	// codec's checksummed frames, age's MAC and zstd's checksum already
	// detect any damage, and the CPU is better spent compressing.)
	parts := &partWriter{ctx: cctx, site: site, streamID: streamID, split: o.SplitSize, report: o.Uploaded, started: time.Now(), failpoint: o.Failpoint}
	enc, err := storage.NewEncoder(parts, o.Encode)
	if err != nil {
		return nil, err
	}
	size, copyErr := io.CopyBuffer(enc, struct{ io.Reader }{stdout}, make([]byte, 1<<20)) // plain Reader: use the 1 MiB buffer
	if copyErr == nil {
		copyErr = enc.Close()
	}
	if copyErr == nil {
		copyErr = parts.Close()
	} else {
		parts.abort(copyErr)
	}
	stderrDone.Wait()
	waitErr := cmd.Wait()
	if waitErr != nil {
		return nil, fmt.Errorf("basebackup: %s failed: %v\n%s", filepath.Base(tool), waitErr, tail.String())
	}
	if copyErr != nil {
		return nil, fmt.Errorf("basebackup: upload: %w", copyErr)
	}
	info, _ := os.ReadFile(filepath.Join(lsnDir, "xtrabackup_info"))
	checkpoints, err := os.ReadFile(filepath.Join(lsnDir, "xtrabackup_checkpoints"))
	if err != nil {
		return nil, fmt.Errorf("basebackup: the tool wrote no checkpoints: %w", err)
	}
	cp, err := ParseBinlogPos(string(info) + "\n" + tail.String())
	if err != nil {
		return nil, fmt.Errorf("basebackup: %w", err)
	}
	toolVersion := ""
	if m := regexp.MustCompile(`(?m)^tool_version = (.*)$`).FindSubmatch(info); m != nil {
		toolVersion = string(m[1])
	}
	gtid, err := mysql.ParseGTIDSet(o.Flavor, cp.GTID)
	if err != nil {
		return nil, fmt.Errorf("basebackup: GTID of the consistency point: %w", err)
	}
	// Close the binlog that was written during the backup, so that it is
	// uploaded now rather than at the next rotation.
	if db != nil {
		fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
		_, ferr := db.ExecContext(fctx, "FLUSH BINARY LOGS")
		fcancel()
		if ferr != nil {
			log.Warn("FLUSH BINARY LOGS after the basebackup failed; the binlog will be uploaded at the next rotation", "error", ferr)
		}
	}
	var encodedSize int64
	for _, p := range parts.parts {
		encodedSize += p.EncodedSize
	}
	m = &storage.BasebackupManifest{
		Version: storage.ManifestVersion, StreamID: streamID, Flavor: o.Flavor, ServerID: o.ServerID, ServerUUID: o.ServerUUID,
		Tool: filepath.Base(tool), ToolVersion: toolVersion, BinlogName: cp.File, BinlogPosition: cp.Position,
		GTIDExecuted: gtid, StartedAt: started, EndedAt: time.Now().UTC(), Size: size, EncodedSize: encodedSize,
		DataDirSize: total,
		Codec:       storage.Codec{Compression: o.Encode.Compression, KeyID: keyID(o.Encode.Key)},
		Parts:       parts.parts, Epoch: o.Epoch, NodeID: o.NodeID,
		CheckpointsFileContent: string(checkpoints),
	}
	if o.Incremental != nil {
		m.Incremental, m.RequiredStreams = true, o.Incremental.RequiredStreams
	}
	log.Info("basebackup uploaded", "stream", streamID, "bytes", size, "encoded_bytes", encodedSize, "parts", len(parts.parts),
		"binlog", cp.File, "position", cp.Position, "gtid", cp.GTID, "duration", time.Since(started))
	return m, nil
}

// optimizeTables carries out optimize_tables_before_backup.
func optimizeTables(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	var version string
	if err := db.QueryRowContext(ctx, "SELECT VERSION()").Scan(&version); err != nil {
		return fmt.Errorf("optimize tables: SELECT VERSION(): %w", err)
	}
	if !mysql.OptimizeApplies(version) {
		log.Info("optimize_tables_before_backup applies to MySQL 8.0.29 and later only; nothing to optimize on this server", "version", version)
		return nil
	}
	return mysql.OptimizeRowVersionTables(ctx, db, version, log)
}

// dataFileRe matches the files whose copying measures progress: table
// and system tablespaces, not redo logs or the temporary tablespace.
var dataFileRe = regexp.MustCompile(`(?i)(\.(ibd|csm|csv|sdi|frm|myd|myi|mad|mai)|^ibdata[0-9]+|^undo[_0-9]+|^ib_buffer_pool)$`)

// dataDirSizes returns the total size of the data directory's data files
// and each one's size by its path relative to the directory.
func dataDirSizes(dir string) (int64, map[string]int64) {
	sizes := map[string]int64{}
	var total int64
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !dataFileRe.MatchString(d.Name()) {
			return nil
		}
		if info, err := d.Info(); err == nil {
			rel, _ := filepath.Rel(dir, p)
			sizes[rel] = info.Size()
			total += info.Size()
		}
		return nil
	})
	return total, sizes
}

// tailBuffer keeps the last lines of a process's stderr.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > 40 {
		t.lines = t.lines[len(t.lines)-40:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

// partWriter cuts the encoded stream into stored parts of at most split
// bytes, each uploaded as it is written (no local copy).
type partWriter struct {
	ctx      context.Context
	site     *storage.Site
	streamID string
	split    int64

	pw      *io.PipeWriter
	written int64
	done    chan error
	parts   []storage.BasebackupPart

	report    func(int64, float64)
	started   time.Time
	total     int64
	reported  time.Time
	failpoint func(string)
}

func (w *partWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if w.pw == nil {
			w.start()
		}
		k := len(p)
		if w.split > 0 {
			k = int(min(int64(k), w.split-w.written))
		}
		m, err := w.pw.Write(p[:k])
		if w.total == 0 && m > 0 && w.failpoint != nil {
			w.failpoint("basebackup-streaming")
		}
		n += m
		w.written += int64(m)
		w.total += int64(m)
		if w.report != nil && time.Since(w.reported) >= time.Second {
			w.reported = time.Now()
			w.report(w.total, float64(w.total)/time.Since(w.started).Seconds())
		}
		w.parts[len(w.parts)-1].EncodedSize = w.written
		if err != nil {
			return n, err
		}
		p = p[k:]
		if w.split > 0 && w.written >= w.split {
			if err := w.finish(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (w *partWriter) start() {
	key := storage.BasebackupPartKey(w.streamID, len(w.parts))
	pr, pw := io.Pipe()
	w.pw, w.written, w.done = pw, 0, make(chan error, 1)
	w.parts = append(w.parts, storage.BasebackupPart{Key: key})
	go func() {
		_, err := w.site.PutStream(w.ctx, key, pr, storage.PutOptions{})
		pr.CloseWithError(err)
		w.done <- err
	}()
}

func (w *partWriter) finish() error {
	w.pw.Close()
	err := <-w.done
	w.pw = nil
	return err
}

// Close finishes the last part (an empty stream still gets one part).
func (w *partWriter) Close() error {
	if w.pw == nil && len(w.parts) == 0 {
		w.start()
	}
	if w.pw == nil {
		return nil
	}
	return w.finish()
}

func (w *partWriter) abort(err error) {
	if w.pw != nil {
		w.pw.CloseWithError(err)
		<-w.done
		w.pw = nil
	}
}
