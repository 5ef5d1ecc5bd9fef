package node

import (
	"errors"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/wire"
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
	// LastVerify is the last check of the backups in storage.
	LastVerify *verifyResult `json:"last_verify,omitempty"`
	// LastDrill is the last restore drill's result.
	LastDrill *wire.DrillResult `json:"last_drill,omitempty"`
	// LastDrillPassed is when a drill last passed.
	LastDrillPassed *time.Time `json:"last_drill_passed,omitempty"`
}

// badRequest is a request the controller refuses (HTTP 400).
var badRequest = wire.BadRequest

var errNotReady = errors.New("the controller is not ready yet (database or backup sites not reachable)")
