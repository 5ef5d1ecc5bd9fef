// Package backup owns taking backups on the primary: the local binlog
// scanner, the backup streams' lifecycle (one full or incremental backup
// plus every binlog after it), the basebackup operation (xtrabackup /
// mariabackup streamed through the codec into object storage; an
// incremental continues the chain IncrementalBaseOf finds eligible, in
// incremental.go), binlog uploads, the
// listing of a site's backups, retention, the local binlog purge, and the
// fences and takeover of a promotion.
//
// Every decision about the streams is a pure method of Streams (streams.go):
// when a backup is due, which binlog a stream uploads next and under
// which remote index (NextUploads: the upload decision), when a stream
// completes or closes, which local binlogs are safe to purge, which backup
// retention deletes (keeping incremental chains whole). The node controller owns Streams (under its lock,
// persisted with its mode). Archiver (archiver.go) carries out active
// mode's part of a tick for it: it reads the streams from the controller
// and hands every change back through Owner.ChangeStreams. Catalog
// (catalog.go) is a node's view of its sites: the open sites and keys, the
// cached listing, markers, and the deletions retention decides.
//
// It stores through the storage package and reads binlogs through the
// mysql package. It must never decide the node's mode, never write an
// object that adds to or ends a stream without passing the Gate its owner
// gives it, and never delete local binlog files itself (Purge asks the
// server: PURGE BINARY LOGS).
package backup

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/statefile"
)

// LocalBinlog is one complete local binlog the scanner has read.
type LocalBinlog struct {
	Index        int64         `json:"index"`
	Name         string        `json:"name"`
	Path         string        `json:"path"`
	Size         int64         `json:"size"`
	GTIDsBefore  mysql.GTIDSet `json:"gtids_before"`
	GTIDsAdded   mysql.GTIDSet `json:"gtids_added"`
	FirstEventAt *time.Time    `json:"first_event_at,omitempty"`
	LastEventAt  *time.Time    `json:"last_event_at,omitempty"`
	Transactions int           `json:"transactions"`
	ServerIDs    []uint32      `json:"server_ids"`
	ProcessedAt  time.Time     `json:"processed_at"`
}

// scannerState is persisted in binlog_scanner_state.json.
type scannerState struct {
	NextIndex int64         `json:"next_index"`
	Binlogs   []LocalBinlog `json:"binlogs"`
	// Missing is the index of a binlog that is missing while later ones
	// exist (0: none). The scanner stops there until SetNextIndex.
	Missing int64 `json:"missing"`
	// Skipped are the indexes an operator skipped with SetNextIndex;
	// uploads pass over exactly these.
	Skipped []int64 `json:"skipped,omitempty"`
}

// Scanner finds complete local binlogs (a file is complete once a later
// one exists), reads them, and notices purged ones. It is not safe for
// concurrent use; the controller owns it.
//
// It is safe for concurrent use: a scan holds its lock while it reads (at
// most BatchSize files), so PATCH /binlogs never interleaves with one.
type Scanner struct {
	prefix    string
	flavor    mysql.Flavor
	statePath string
	log       *slog.Logger
	// BatchSize bounds how many files one Scan reads.
	BatchSize int

	mu    sync.Mutex
	state scannerState
}

// NewScanner loads the scanner's state (statePath) for the binlogs named
// <prefix>.<index>.
func NewScanner(prefix string, flavor mysql.Flavor, statePath string, log *slog.Logger) (*Scanner, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Scanner{prefix: prefix, flavor: flavor, statePath: statePath, log: log, BatchSize: 50}
	if _, err := statefile.Load(statePath, &s.state); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the file of a binlog index.
func (s *Scanner) Path(index int64) string {
	return fmt.Sprintf("%s.%06d", s.prefix, index)
}

// indexes lists the binlog indexes on disk, sorted.
func (s *Scanner) indexes() ([]int64, error) {
	dir, base := filepath.Split(s.prefix)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list binlogs in %s: %w", dir, err)
	}
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(base) + `\.([0-9]+)$`)
	var out []int64
	for _, e := range entries {
		if m := re.FindStringSubmatch(e.Name()); m != nil {
			if n, err := strconv.ParseInt(m[1], 10, 64); err == nil {
				out = append(out, n)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// ScanAll scans until a scan finds no new binlog (one Scan reads at most
// BatchSize of them).
func (s *Scanner) ScanAll(ctx context.Context) error {
	for {
		added, _, err := s.Scan(ctx)
		if err != nil || len(added) == 0 {
			return err
		}
	}
}

// Scan reads new complete binlogs and drops purged ones from its list. It
// returns what was added and removed.
func (s *Scanner) Scan(ctx context.Context) (added, removed []LocalBinlog, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Purged files leave from the head.
	for len(s.state.Binlogs) > 0 {
		if _, err := os.Stat(s.state.Binlogs[0].Path); err == nil {
			break
		}
		removed = append(removed, s.state.Binlogs[0])
		s.state.Binlogs = s.state.Binlogs[1:]
	}
	if s.state.NextIndex == 0 {
		idx, err := s.indexes()
		if err != nil {
			return nil, removed, err
		}
		if len(idx) == 0 {
			return nil, removed, s.save(len(removed) > 0)
		}
		s.state.NextIndex = idx[0]
	}
	for i := 0; i < s.BatchSize && ctx.Err() == nil; i++ {
		path := s.Path(s.state.NextIndex)
		if _, err := os.Stat(path); err != nil {
			idx, lerr := s.indexes()
			if lerr != nil {
				return added, removed, lerr
			}
			if len(idx) > 0 && idx[len(idx)-1] > s.state.NextIndex {
				if s.state.Missing != s.state.NextIndex {
					s.log.Error("binlog is missing while later ones exist: the backup has a hole; skip it with PATCH /binlogs if the loss is accepted",
						"missing", path, "latest", s.Path(idx[len(idx)-1]))
				}
				s.state.Missing = s.state.NextIndex
			}
			break
		}
		if _, err := os.Stat(s.Path(s.state.NextIndex + 1)); err != nil {
			// Complete only if the server has moved on to any later file
			// (the next one may itself be missing).
			idx, lerr := s.indexes()
			if lerr != nil {
				return added, removed, lerr
			}
			if len(idx) == 0 || idx[len(idx)-1] <= s.state.NextIndex {
				break // the server still writes this one
			}
		}
		b, err := s.read(s.state.NextIndex, path)
		if err != nil {
			s.save(len(added)+len(removed) > 0)
			return added, removed, err
		}
		s.state.Missing = 0
		s.state.Binlogs = append(s.state.Binlogs, b)
		added = append(added, b)
		s.state.NextIndex++
	}
	return added, removed, s.save(len(added)+len(removed) > 0)
}

func (s *Scanner) read(index int64, path string) (LocalBinlog, error) {
	// AllowInUse: a file left by a crash keeps its in-use flag, but it is
	// closed, since a newer file exists.
	info, err := mysql.ReadBinlogFile(path, s.flavor, mysql.ReadOptions{AllowInUse: true}, nil)
	if err != nil {
		return LocalBinlog{}, fmt.Errorf("scan binlog: %w", err)
	}
	b := LocalBinlog{
		Index: index, Name: filepath.Base(path), Path: path, Size: info.Size,
		GTIDsBefore: info.GTIDsBefore, GTIDsAdded: info.GTIDsAdded, Transactions: info.Transactions,
		ServerIDs: info.ServerIDs, ProcessedAt: time.Now().UTC(),
	}
	if !info.FirstTimestamp.IsZero() {
		first, last := info.FirstTimestamp, info.LastTimestamp
		b.FirstEventAt, b.LastEventAt = &first, &last
	}
	return b, nil
}

func (s *Scanner) save(changed bool) error {
	if !changed {
		if _, err := os.Stat(s.statePath); err == nil {
			return nil
		}
	}
	return statefile.Save(s.statePath, &s.state)
}

// Binlogs are the complete local binlogs known, oldest first.
func (s *Scanner) Binlogs() []LocalBinlog {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]LocalBinlog(nil), s.state.Binlogs...)
}

// NextIndex is the index of the next binlog to read.
func (s *Scanner) NextIndex() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.NextIndex
}

// Missing is the index of a missing binlog (0: none).
func (s *Scanner) Missing() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.Missing
}

// SetNextIndex skips a hole in the binlog sequence (PATCH /binlogs): n must
// be greater than the current next index and the file must exist.
func (s *Scanner) SetNextIndex(n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n <= s.state.NextIndex {
		return fmt.Errorf("binlog_index %d cannot be decreased: the scanner is at %d", n, s.state.NextIndex)
	}
	if _, err := os.Stat(s.Path(n)); err != nil {
		return fmt.Errorf("binlog_index %d: %s does not exist", n, s.Path(n))
	}
	for i := s.state.NextIndex; i < n; i++ {
		s.state.Skipped = append(s.state.Skipped, i)
	}
	s.state.NextIndex, s.state.Missing = n, 0
	return statefile.Save(s.statePath, &s.state)
}

// Skipped reports whether an index was skipped with SetNextIndex.
func (s *Scanner) Skipped(index int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range s.state.Skipped {
		if i == index {
			return true
		}
	}
	return false
}
