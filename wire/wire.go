// Package wire holds the JSON shapes of myhoard's HTTP API, one
// definition each: package api serves them, the packages that compute
// them fill them (backup's listing, the restore coordinator's status, the
// node's cluster view), and package client reads them (the CLI, the
// end-to-end tests), and the error every layer returns for a request that
// is the caller's fault (RequestError: 400). It holds shapes only, never
// logic, and imports nothing of myhoard but storage's manifest type.
package wire

import (
	"fmt"
	"time"

	"github.com/myhoard/myhoard/storage"
)

// Status is GET /status and the answer of PUT /status.
type Status struct {
	Mode string `json:"mode"`
}

// ModeRequest is the body of PUT /status.
type ModeRequest struct {
	Mode  string `json:"mode"`
	Force bool   `json:"force,omitempty"`
	// Restore only: the backup, and at most one target.
	Site                    string `json:"site,omitempty"`
	StreamID                string `json:"stream_id,omitempty"`
	TargetTime              string `json:"target_time,omitempty"`
	TargetTimeApproximateOK bool   `json:"target_time_approximate_ok,omitempty"`
	TargetGTID              string `json:"target_gtid,omitempty"`
}

// ModeChange is PUT /status as the API decoded and checked it (target_time
// parsed): what the node acts on.
type ModeChange struct {
	Mode  string
	Force bool
	// Restore only: the backup, and at most one of the targets.
	Site, StreamID string
	TargetTime     *time.Time
	ApproximateOK  bool
	TargetGTID     string
}

// Backup is one backup of GET /backup.
type Backup struct {
	Site       string          `json:"site"`
	StreamID   string          `json:"stream_id"`
	Basebackup *BasebackupInfo `json:"basebackup_info"`
	BrokenAt   *time.Time      `json:"broken_at"`
	// BrokenReason says why a backup lists as broken without a broken
	// marker: its basebackup.json or a marker cannot be read (corrupt, or
	// written by a newer myhoard).
	BrokenReason  string     `json:"broken_reason,omitempty"`
	ClosedAt      *time.Time `json:"closed_at"`
	CompletedAt   *time.Time `json:"completed_at"`
	PreserveUntil *time.Time `json:"preserve_until"`
	RecoverySite  bool       `json:"recovery_site"`
	Resumable     bool       `json:"resumable"`
	// RestorableFrom and RestorableUntil bound the point-in-time window:
	// from the end of the full backup to the close (null while binlogs are
	// still added).
	RestorableFrom  *time.Time `json:"restorable_from"`
	RestorableUntil *time.Time `json:"restorable_until"`
	// VerifiedAt is when the daemon's last check of the repository (myhoard
	// verify) covered this backup; VerifyFindings what it found wrong with
	// it, one line each.
	VerifiedAt     *time.Time `json:"verified_at,omitempty"`
	VerifyFindings []string   `json:"verify_findings,omitempty"`
}

// VerifyRequest is the body of POST /verify.
type VerifyRequest struct {
	Deep bool `json:"deep"`
}

// BasebackupInfo is a backup's basebackup_info: its basebackup.json and,
// derived from it, the fields that clients of the original read there.
type BasebackupInfo struct {
	*storage.BasebackupManifest
	// StartTS and EndTS are StartedAt and EndedAt in epoch seconds.
	StartTS float64 `json:"start_ts"`
	EndTS   float64 `json:"end_ts"`
	// CompressedSize is the stored size of all parts; StartSize and
	// EndSize the data directory's.
	CompressedSize int64 `json:"compressed_size"`
	StartSize      int64 `json:"start_size"`
	EndSize        int64 `json:"end_size"`
	// GTID is the consistency point's GTID state in the flavour's text
	// form (MariaDB: the GTID position).
	GTID           string `json:"gtid"`
	NumberOfSplits int    `json:"number_of_splits"`
}

// StreamBinlogs is GET /backup/<stream id>/binlogs: the binlogs a
// restore of the stream may use, in order (fenced, gapless), as their
// manifests say.
type StreamBinlogs struct {
	Site     string                   `json:"site"`
	StreamID string                   `json:"stream_id"`
	Binlogs  []storage.BinlogManifest `json:"binlogs"`
}

// BackupList is GET /backup (Backups is null before the first listing).
type BackupList struct {
	Backups []Backup `json:"backups"`
	// LastDrill is the last restore drill's result (none yet: absent).
	LastDrill *DrillResult `json:"last_drill,omitempty"`
}

// DrillResult is what a restore drill found: the newest backup restored
// into a scratch server up to the newest uploaded transaction.
type DrillResult struct {
	At       time.Time `json:"at"`
	OK       bool      `json:"ok"`
	Error    string    `json:"error,omitempty"`
	Site     string    `json:"site,omitempty"`
	StreamID string    `json:"stream_id,omitempty"`
	// TargetGTID is the newest uploaded transaction the drill restored to.
	TargetGTID string `json:"target_gtid,omitempty"`
	// RestoreSeconds is the measured restore time; Bytes what it
	// downloaded (the basebackup chain and the binlogs).
	RestoreSeconds float64 `json:"restore_seconds"`
	Bytes          int64   `json:"bytes"`
	TablesChecked  int     `json:"tables_checked"`
}

// DrillStatus is GET /drill: a drill's live progress and the last result.
type DrillStatus struct {
	Running  bool           `json:"running"`
	Progress *RestoreStatus `json:"progress,omitempty"`
	Last     *DrillResult   `json:"last,omitempty"`
}

// BackupRequest is the body of POST /backup.
type BackupRequest struct {
	BackupType    string   `json:"backup_type"` // basebackup | binlog
	WaitForUpload *float64 `json:"wait_for_upload,omitempty"`
	// Incremental (basebackup only): true asks for an incremental backup
	// (400 with the reason when none can be taken), false or absent for
	// a full one.
	Incremental *bool `json:"incremental,omitempty"`
}

// Success is the answer of the requests that only succeed or fail.
type Success struct {
	Success bool `json:"success"`
}

// Error is every error's body.
type Error struct {
	Message string `json:"message"`
}

// RestoreStatus is GET /status/restore.
type RestoreStatus struct {
	Phase                     string   `json:"phase"`
	BasebackupBytesDownloaded int64    `json:"basebackup_compressed_bytes_downloaded"`
	BasebackupBytesTotal      int64    `json:"basebackup_compressed_bytes_total"`
	BasebackupPrepareProgress *float64 `json:"basebackup_prepare_progress,omitempty"`
	BinlogsBeingRestored      int      `json:"binlogs_being_restored"`
	BinlogsPending            int      `json:"binlogs_pending"`
	BinlogsRestored           int      `json:"binlogs_restored"`
	BinlogBytesPrefetched     int64    `json:"binlog_bytes_downloaded"`
	CurrentBackupName         string   `json:"current_backup_name"`
	// The member of the backup's chain being restored (full backup first,
	// then each incremental): its stream, whether it is incremental, its
	// place (from 1) and the chain's length.
	RestoringStream          string    `json:"restoring_stream,omitempty"`
	CurrentBackupIncremental bool      `json:"current_backup_incremental"`
	RestoreChainIndex        int       `json:"restore_chain_index"`
	RestoreChainTotal        int       `json:"restore_chain_total"`
	RequestedBackupName      string    `json:"requested_backup_name"`
	BasebackupErrors         int       `json:"basebackup_errors"`
	LastError                string    `json:"last_error,omitempty"`
	StartedAt                time.Time `json:"started_at"`
	ForceComplete            bool      `json:"force_complete,omitempty"`
}

// ClusterStatus is GET /cluster: the cluster view as the answering node
// sees it.
type ClusterStatus struct {
	NodeID    string `json:"node_id"`
	ClusterID string `json:"cluster_id,omitempty"`
	// Bootstrap says what a node without Raft state waits for.
	Bootstrap  string            `json:"bootstrap,omitempty"`
	Leader     string            `json:"leader"`
	Primary    string            `json:"primary"`
	Epoch      int64             `json:"epoch"`
	Members    []ClusterMember   `json:"members"`
	Promotions []Promotion       `json:"promotions"`
	External   map[string]string `json:"replication_state,omitempty"`
}

// Member is the row of id (ok false: none).
func (s ClusterStatus) Member(id string) (ClusterMember, bool) {
	for _, m := range s.Members {
		if m.ID == id {
			return m, true
		}
	}
	return ClusterMember{}, false
}

// ClusterMember is one row of GET /cluster.
type ClusterMember struct {
	ID       string `json:"node_id"`
	APIAddr  string `json:"api_address"`
	RaftAddr string `json:"raft_address"`
	ServerID uint32 `json:"server_id,omitempty"`
	Mode     string `json:"mode"`
	Voter    bool   `json:"voter"`
	InRaft   bool   `json:"in_raft"`
	// Gossip is what the answering node's gossip knows of the member:
	// alive, failed, left or unknown; Alive is Gossip == alive.
	Gossip     string    `json:"gossip"`
	Alive      bool      `json:"alive"`
	LastSeen   time.Time `json:"last_seen"`
	GTIDs      string    `json:"gtid_executed"`
	Behind     *uint64   `json:"transactions_behind_primary"`
	IsPrimary  bool      `json:"primary"`
	IsLeader   bool      `json:"leader"`
	ServerUUID string    `json:"server_uuid,omitempty"`
}

// Promotion is where an epoch began.
type Promotion struct {
	Epoch      int64     `json:"epoch"`
	NodeID     string    `json:"node_id"`
	StreamID   string    `json:"stream_id,omitempty"`
	StartIndex int64     `json:"start_index,omitempty"`
	GTIDs      string    `json:"gtids,omitempty"`
	At         time.Time `json:"at"`
}

// RequestError is a request that cannot be carried out as asked; the API
// answers it with 400 and {"message": Msg}.
type RequestError struct{ Msg string }

func (e *RequestError) Error() string { return e.Msg }

// BadRequest is a RequestError with a formatted message.
func BadRequest(format string, args ...any) error {
	return &RequestError{Msg: fmt.Sprintf(format, args...)}
}
