package restore

import (
	"errors"
	"fmt"
	"time"

	"github.com/myhoard/myhoard/mysql"
)

// StopPoint is where the SQL thread must stop: right after the transaction
// that ends at Pos in the batch's file number File.
type StopPoint struct {
	File int
	Pos  int64
	GTID mysql.GTID
	Time time.Time
	// Reached is the GTID state there (for waiting on it).
	Reached mysql.GTIDSet
}

var errStop = errors.New("stop")

// ErrTargetNotFound is wrapped when the binlogs do not reach the target.
var ErrTargetNotFound = errors.New("the binlogs do not reach the target")

// FindStopByGTID finds the first transaction after which the executed set
// (the basebackup's state plus everything applied) contains target.
func FindStopByGTID(files []string, flavor mysql.Flavor, backupGTID, target mysql.GTIDSet) (StopPoint, error) {
	if target.IsSubsetOf(backupGTID) {
		return StopPoint{}, fmt.Errorf("target %s is already in the backup (%s): %w", target, backupGTID, ErrTargetNotFound)
	}
	reached := false
	sp, err := findStop(files, flavor, backupGTID, func(tx mysql.Transaction, state mysql.GTIDSet) (bool, bool) {
		reached = target.IsSubsetOf(state)
		return reached, true
	})
	if err == nil && !reached {
		return StopPoint{}, fmt.Errorf("target %s: %w (they end at %s)", target, ErrTargetNotFound, sp.Reached)
	}
	return sp, err
}

// FindStopByTime finds the last transaction that committed before t.
func FindStopByTime(files []string, flavor mysql.Flavor, backupGTID mysql.GTIDSet, t time.Time) (StopPoint, error) {
	return findStop(files, flavor, backupGTID, func(tx mysql.Transaction, state mysql.GTIDSet) (bool, bool) {
		// take transactions strictly before t; stop at the first one at or after it
		return false, tx.Timestamp.Before(t)
	})
}

// findStop walks the transactions; decide says whether to stop after this
// one (stop) and whether it is taken at all (take).
func findStop(files []string, flavor mysql.Flavor, state mysql.GTIDSet, decide func(mysql.Transaction, mysql.GTIDSet) (stop, take bool)) (StopPoint, error) {
	var best StopPoint
	found := false
	for i, f := range files {
		_, err := mysql.ReadBinlogFile(f, flavor, mysql.ReadOptions{AllowInUse: true}, func(tx mysql.Transaction) error {
			next := state.WithGTID(tx.GTID)
			stop, take := decide(tx, next)
			if !take {
				return errStop
			}
			state = next
			best = StopPoint{File: i, Pos: tx.End, GTID: tx.GTID, Time: tx.Timestamp, Reached: state}
			found = true
			if stop {
				return errStop
			}
			return nil
		})
		if errors.Is(err, errStop) {
			if !found {
				return StopPoint{}, fmt.Errorf("no transaction before the target: %w", ErrTargetNotFound)
			}
			return best, nil
		}
		if err != nil {
			return StopPoint{}, err
		}
	}
	if !found {
		return StopPoint{}, fmt.Errorf("no transaction in %d binlogs: %w", len(files), ErrTargetNotFound)
	}
	return best, nil
}
