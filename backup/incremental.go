package backup

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/wire"
)

// IncrementalBase is what an incremental backup continues: the LSN it
// copies the pages changed after (its parent's to_lsn) and the chain it
// needs to restore, oldest first (the full backup first, the parent last).
type IncrementalBase struct {
	LSN             string
	RequiredStreams []string
}

// Parent is the backup the incremental continues.
func (b *IncrementalBase) Parent() string { return b.RequiredStreams[len(b.RequiredStreams)-1] }

// IncrementalBaseOf decides whether the next backup on site can be
// incremental, as the original does: the newest completed backup of the
// site was made by the same tool version (toolVersion, the installed one),
// and the chain from it back to its full backup is all there: every
// member completed, not broken, with all its parts and its checkpoints.
// The error (a wire.RequestError) says why not: the caller takes a full
// backup, or answers an explicit request with it.
func IncrementalBaseOf(backups []BackupInfo, site, toolVersion string) (*IncrementalBase, error) {
	byID := map[string]*BackupInfo{}
	var latest *BackupInfo
	for i := range backups {
		b := &backups[i]
		if b.Site != site {
			continue
		}
		byID[b.StreamID] = b
		if b.CompletedAt != nil && b.Basebackup != nil && (latest == nil || b.StreamID > latest.StreamID) {
			latest = b
		}
	}
	if latest == nil {
		return nil, wire.BadRequest("site %s has no completed backup to continue", site)
	}
	m := latest.Basebackup
	if m.ToolVersion == "" || m.ToolVersion != toolVersion {
		return nil, wire.BadRequest("the newest backup %s was taken by %s %q, this server has %q: an incremental needs the same version",
			latest.StreamID, m.Tool, m.ToolVersion, toolVersion)
	}
	chain := append(append([]string(nil), m.RequiredStreams...), latest.StreamID)
	if !m.Incremental {
		chain = []string{latest.StreamID}
	}
	for i, id := range chain {
		b := byID[id]
		switch {
		case b == nil || b.Basebackup == nil:
			return nil, wire.BadRequest("backup %s of the chain of %s is missing", id, latest.StreamID)
		case b.BrokenAt != nil:
			return nil, wire.BadRequest("backup %s of the chain of %s is broken", id, latest.StreamID)
		case b.CompletedAt == nil:
			return nil, wire.BadRequest("backup %s of the chain of %s is not completed", id, latest.StreamID)
		case !b.Resumable:
			return nil, wire.BadRequest("backup %s of the chain of %s lacks some of its parts", id, latest.StreamID)
		case b.Basebackup.CheckpointsFileContent == "":
			return nil, wire.BadRequest("backup %s of the chain of %s has no checkpoints (taken by an older myhoard)", id, latest.StreamID)
		case b.Basebackup.Incremental != (i > 0):
			return nil, wire.BadRequest("backup %s of the chain of %s is not what the chain says (incremental: %v)", id, latest.StreamID, b.Basebackup.Incremental)
		}
	}
	lsn := m.Checkpoint("to_lsn")
	if lsn == "" {
		return nil, wire.BadRequest("the newest backup %s has no to_lsn in its checkpoints", latest.StreamID)
	}
	return &IncrementalBase{LSN: lsn, RequiredStreams: chain}, nil
}

// IncrementalDue says whether a scheduled backup at now is incremental:
// incremental backups are enabled and today (UTC) is not a full-backup day.
func (sch Schedule) IncrementalDue(now time.Time) bool {
	return sch.Incremental && !sch.FullDays[now.UTC().Weekday()]
}

// ToolVersions runs each backup tool's --version once and remembers it.
type ToolVersions struct {
	mu   sync.Mutex
	seen map[string]string
}

// Of is the version of the flavor's backup tool (tool: its path or name;
// "" for the flavor's default) as xtrabackup_info's tool_version writes
// it.
func (v *ToolVersions) Of(ctx context.Context, f mysql.Flavor, tool string) (string, error) {
	d := mysql.DialectOf(f)
	if tool == "" {
		tool = d.BackupTool()
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if ver, ok := v.seen[tool]; ok {
		return ver, nil
	}
	out, err := exec.CommandContext(ctx, tool, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w: %w (package %s)", tool, ErrToolMissing, err, d.ToolPackage())
	}
	ver := d.ToolVersion(string(out))
	if ver == "" {
		return "", fmt.Errorf("%s --version printed no version: %s", tool, strings.TrimSpace(string(out)))
	}
	if v.seen == nil {
		v.seen = map[string]string{}
	}
	v.seen[tool] = ver
	return ver, nil
}
