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
	Mode Mode `json:"mode"`
	// Streams are the backup streams this node owns (active mode); their
	// fields are at the top level of the file.
	backup.Streams
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

// RequestError is a request the controller refuses (HTTP 400).
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

// BadRequest marks the error for the API.
func (e *RequestError) BadRequest() bool { return true }

func badRequest(format string, args ...any) error {
	return &RequestError{Msg: fmt.Sprintf(format, args...)}
}

var errNotReady = errors.New("the controller is not ready yet (database or backup sites not reachable)")
