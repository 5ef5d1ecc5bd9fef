package backup

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/myhoard/myhoard/mysql"
)

// Takeover is the promoted server's part of a promotion, once the open
// streams are fenced (FenceStreams) and the promotion is recorded: it
// applies what the server received from the old primary, catches up from
// storage what it lacks below the fence, stops replicating, and says
// where the continued stream picks up. Each step can be run again after
// a crash.
type Takeover struct {
	DB       *sql.DB
	Flavor   mysql.Flavor
	Scanner  *Scanner
	Schedule Schedule
	Log      *slog.Logger
	// CatchUp applies, from storage, the fenced stream's binlogs below the
	// record's start index that the server lacks (executed is what it
	// has); the node passes restore.CatchUp.
	CatchUp func(ctx context.Context, f *Fence, executed mysql.GTIDSet) error
	// Failpoint is called at named steps (tests kill the daemon there).
	Failpoint func(name string)
}

// Run carries out the takeover and returns the stream to continue (nil
// when there is no fenced stream: active mode then starts a new one).
func (t Takeover) Run(ctx context.Context, f *Fence) (*StreamState, error) {
	d := mysql.DialectOf(t.Flavor)
	// What the server received from the old primary but has not applied
	// yet is applied before anything else (the relay logs are dropped
	// when replication is reset below).
	t.failpoint("promote-drain")
	if err := mysql.DrainRelayLog(ctx, t.DB, d); err != nil {
		return nil, fmt.Errorf("promote: %w", err)
	}
	if f == nil {
		return nil, nil
	}
	executed, err := d.Executed(ctx, t.DB)
	if err != nil {
		return nil, fmt.Errorf("promote: %w", err)
	}
	if missing := f.Record.GTIDs.Subtract(executed); !missing.IsEmpty() {
		t.Log.Info("promote: applying the binlogs the old primary uploaded that this server lacks", "missing", missing.String(),
			"below_index", f.Record.StartIndex)
		if err := t.CatchUp(ctx, f, executed); err != nil {
			return nil, fmt.Errorf("promote: catch up: %w", err)
		}
	}
	// stop replicating from the old primary (or from the catch-up's relay
	// logs)
	if err := mysql.ExecAll(ctx, t.DB, d.ResetReplica()); err != nil {
		return nil, fmt.Errorf("promote: %w", err)
	}
	// Continue the stream from the first local binlog with transactions
	// that storage lacks (everything before it is there already).
	if _, err := mysql.FlushBinaryLogs(ctx, t.DB); err != nil {
		return nil, fmt.Errorf("promote: %w", err)
	}
	if err := t.Scanner.ScanAll(ctx); err != nil {
		return nil, fmt.Errorf("promote: %w", err)
	}
	first := ContinueFrom(t.Scanner.Binlogs(), f.Record.GTIDs, t.Scanner.NextIndex())
	st := Continue(f.Open, t.Schedule, f.Record.Epoch, f.Record.StartIndex, first)
	t.Log.Info("promote: continuing the backup stream", "stream", f.Open.StreamID, "epoch", f.Record.Epoch,
		"start_index", f.Record.StartIndex, "first_local", filepath.Base(t.Scanner.Path(first)))
	return &st, nil
}

func (t Takeover) failpoint(name string) {
	if t.Failpoint != nil {
		t.Failpoint(name)
	}
}
