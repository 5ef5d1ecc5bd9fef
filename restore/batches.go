package restore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// StoredBinlog is one binlog of the chain to apply, as listed in storage.
type StoredBinlog struct {
	Ref      storage.BinlogRef
	Manifest storage.BinlogManifest
}

// FromStorageOptions say how to apply stored binlogs in bounded batches.
type FromStorageOptions struct {
	Site *storage.Site
	Keys storage.Keyring
	DB   *sql.DB
	// RelayPrefix and RelayIndex are the server's relay log settings;
	// downloads go to the relay log directory.
	RelayPrefix, RelayIndex string
	// StartFile, StartPos and GTID are the basebackup's consistency point.
	StartFile string
	StartPos  int64
	GTID      string
	// MaxBytes is restore_max_binlog_bytes: a batch holds binlogs up to
	// this many bytes (at least one).
	MaxBytes int64
	Parallel int
	// Progress reports binlogs applied and still pending.
	Progress func(applied, pending int)
	// StopGTID or StopTime make it a point-in-time restore: stop right
	// after the transaction that completes StopGTID, or after the last
	// one that committed before StopTime. Binlogs past the target are
	// never downloaded.
	StopGTID *mysql.GTIDSet
	StopTime *time.Time
	// BackupGTID is the basebackup's GTID set (for StopGTID).
	BackupGTID mysql.GTIDSet
	Flavor     mysql.Flavor
}

// needed trims the chain to the binlogs a point-in-time target needs.
func needed(binlogs []StoredBinlog, o FromStorageOptions) ([]StoredBinlog, error) {
	switch {
	case o.StopGTID != nil:
		if o.StopGTID.IsSubsetOf(o.BackupGTID) {
			return nil, fmt.Errorf("target %s is already in the backup: %w", o.StopGTID, ErrTargetNotFound)
		}
		for i, b := range binlogs {
			if o.StopGTID.IsSubsetOf(b.Manifest.GTIDsBefore.Union(b.Manifest.GTIDsAdded)) {
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

// ApplyFromStorage downloads and applies binlogs batch by batch, so that
// the relay log directory never holds much more than MaxBytes (a batch,
// plus at most the last relay log of the previous batch until the server
// removes it). Each batch is applied up to the GTID state its last binlog
// ends with.
func ApplyFromStorage(ctx context.Context, binlogs []StoredBinlog, o FromStorageOptions) error {
	binlogs, err := needed(binlogs, o)
	if err != nil {
		return err
	}
	dir := filepath.Dir(o.RelayPrefix)
	for i := 0; i < len(binlogs); {
		j, size := i, int64(0)
		for j < len(binlogs) && (j == i || size+binlogs[j].Manifest.Size <= o.MaxBytes) {
			size += binlogs[j].Manifest.Size
			j++
		}
		var files []string
		for k := i; k < j; k++ {
			path := filepath.Join(dir, fmt.Sprintf(".download.%d", k))
			f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
			if err != nil {
				return fmt.Errorf("download binlog: %w", err)
			}
			err = o.Site.GetDecoded(ctx, binlogs[k].Ref.DataKey(), o.Keys, f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(path)
				return fmt.Errorf("download binlog %s: %w", binlogs[k].Manifest.LocalName, err)
			}
			files = append(files, path)
		}
		last := binlogs[j-1].Manifest
		target := last.GTIDsBefore.Union(last.GTIDsAdded).String()
		opts := ApplyOptions{DB: o.DB, RelayPrefix: o.RelayPrefix, RelayIndex: o.RelayIndex, Files: files,
			GTID: o.GTID, Target: target, Parallel: o.Parallel, KeepGTIDState: i > 0}
		if i == 0 {
			opts.StartFile, opts.StartPos = o.StartFile, o.StartPos
		} else {
			opts.StartFile, opts.StartPos = binlogs[i].Manifest.LocalName, 4
		}
		if j == len(binlogs) && (o.StopGTID != nil || o.StopTime != nil) {
			// the last batch holds the target: stop inside it
			state := binlogs[i].Manifest.GTIDsBefore
			var sp StopPoint
			var err error
			if o.StopGTID != nil {
				sp, err = FindStopByGTID(files, o.Flavor, state, *o.StopGTID)
			} else {
				sp, err = FindStopByTime(files, o.Flavor, state, *o.StopTime)
			}
			switch {
			case errors.Is(err, ErrTargetNotFound) && o.StopTime != nil:
				// nothing in this batch is before the target: stop at its start
				for _, f := range files {
					os.Remove(f)
				}
				opts.Files = nil
			case err != nil:
				return err
			default:
				opts.UntilFile, opts.UntilPos, opts.Target, opts.Parallel = sp.File, sp.Pos, sp.Reached.String(), 0
			}
		}
		if err := ApplyBinlogs(ctx, opts); err != nil {
			return err
		}
		i = j
		if o.Progress != nil {
			o.Progress(i, len(binlogs)-i)
		}
	}
	return nil
}
