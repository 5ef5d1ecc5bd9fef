package backup

import (
	"context"
	"database/sql"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/myhoard/myhoard/metrics"
	"github.com/myhoard/myhoard/mysql"
)

// Purge is one purge of local binlogs.
type Purge struct {
	DB      *sql.DB
	Scanner *Scanner
	// BackedUp is the backup safety rule (active mode's Streams.BackedUp,
	// or observe mode's "storage holds its transactions").
	BackedUp func(LocalBinlog) bool
	// Replicas are the servers that must have executed a binlog's
	// transactions first (an empty state blocks purging).
	Replicas map[string]mysql.ReplicationState
	Flavor   mysql.Flavor
	Limits   PurgeLimits
	Log      *slog.Logger
	Metrics  *metrics.Metrics
}

// Run purges, through the server (PURGE BINARY LOGS TO), the oldest local
// binlogs that PurgeCandidates allows. A purge the server refuses is
// logged and tried again at the next interval.
func (p Purge) Run(ctx context.Context, now time.Time) error {
	p.Metrics.Inc("myhoard.binlog.purge_checks", 1, nil)
	victims, err := PurgeCandidates(p.Scanner.Binlogs(), p.BackedUp, p.Replicas, p.Flavor, p.Limits, now)
	if err != nil || len(victims) == 0 {
		return err
	}
	last := victims[len(victims)-1]
	to := filepath.Base(p.Scanner.Path(last.Index + 1)) // TO is exclusive
	pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := mysql.PurgeBinaryLogsTo(pctx, p.DB, to); err != nil {
		p.Log.Warn("binlog purge failed; retrying next interval", "to", to, "error", err)
		return nil
	}
	p.Log.Info("purged local binlogs", "count", len(victims), "through", last.Name)
	var bytes int64
	for _, v := range victims {
		bytes += v.Size
	}
	p.Metrics.Gauge("myhoard.binlog.purged_per_cycle.files", float64(len(victims)), nil)
	p.Metrics.Gauge("myhoard.binlog.purged_per_cycle.bytes", float64(bytes), nil)
	return nil
}
