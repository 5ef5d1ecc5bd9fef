package node

import (
	"errors"
	"fmt"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/mysql"
)

// controllerState is persisted in myhoard_controller_state.json.
type controllerState struct {
	Mode             Mode                              `json:"mode"`
	Streams          []backup.StreamState              `json:"streams"`
	Request          *backupRequest                    `json:"backup_request,omitempty"`
	PausedUntil      *time.Time                        `json:"paused_backups_until,omitempty"`
	LastRotation     time.Time                         `json:"last_binlog_rotation"`
	BinlogsPurgedAt  time.Time                         `json:"binlogs_purged_at"`
	ReplicationState map[string]mysql.ReplicationState `json:"replication_state"`
	Epoch            int64                             `json:"epoch"`
	ServerUUID       string                            `json:"server_uuid,omitempty"`
	// AutoRestored: this node restored itself (cluster.auto_restore);
	// ReplicationStarted: it then replicates from the primary.
	AutoRestored bool `json:"auto_restored,omitempty"`
	// PromoteAfterRestore: a forced promotion arrived during the restore.
	PromoteAfterRestore bool `json:"promote_after_restore,omitempty"`
	ReplicationStarted  bool `json:"replication_started,omitempty"`
}

type backupRequest struct {
	Reason         string    `json:"reason"` // requested | scheduled
	NormalizedTime time.Time `json:"normalized_time"`
}

// RequestError is a request the controller refuses (HTTP 400).
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

// BadRequest marks the error for the API.
func (e *RequestError) BadRequest() bool { return true }

func badRequest(format string, args ...any) error {
	return &RequestError{Msg: fmt.Sprintf(format, args...)}
}

// transitions lists the API-driven mode changes this node allows; later
// issues add restore, observe and promote.
var transitions = map[Mode]map[Mode]bool{
	ModeIdle:    {ModeActive: true, ModeObserve: true},
	ModeObserve: {ModeObserve: true},
	ModePromote: {ModePromote: true},
	ModeActive:  {ModeActive: true},
}

// allModes are the spec's modes, for validating requests.
var allModes = map[Mode]bool{ModeIdle: true, ModeRestore: true, ModeObserve: true, ModePromote: true, ModeActive: true}

func checkTransition(from, to Mode) error {
	if !allModes[to] {
		return badRequest("unknown mode %q (want active, idle, observe, promote or restore)", to)
	}
	if transitions[from][to] {
		return nil
	}
	if from == ModeActive {
		return badRequest("switch from active to %s mode is not allowed: an active node stays active; stop myhoard to end its role", to)
	}
	return badRequest("switch from %s to %s mode is not supported", from, to)
}

// normalizedBackupTime is the backup slot for now (reference 5.1): the
// latest slot not after now, aligned to backup_hour:backup_minute when the
// interval is a whole number of days.
func normalizedBackupTime(now time.Time, hour, minute, intervalMinutes int, last time.Time) time.Time {
	interval := time.Duration(intervalMinutes) * time.Minute
	var t time.Time
	if !last.IsZero() {
		t = last.UTC()
		if intervalMinutes%1440 == 0 {
			t = time.Date(t.Year(), t.Month(), t.Day(), hour, minute, 0, 0, time.UTC)
		}
	} else {
		n := now.UTC()
		t = time.Date(n.Year(), n.Month(), n.Day(), hour, minute, 0, 0, time.UTC)
	}
	for t.After(now) {
		t = t.Add(-24 * time.Hour)
	}
	for !t.Add(interval).After(now) {
		t = t.Add(interval)
	}
	return t
}

var errNotReady = errors.New("the controller is not ready yet (database or backup sites not reachable)")
