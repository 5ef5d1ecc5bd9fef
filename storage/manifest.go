package storage

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/myhoard/myhoard/mysql"
)

// ManifestVersion is the version of the JSON manifests this myhoard writes
// and the newest it reads.
const ManifestVersion = 1

// Codec describes how an object was encoded (the header says the same; the
// manifest keeps it for listings).
type Codec struct {
	Compression Compression `json:"compression"`
	KeyID       string      `json:"key_id,omitempty"`
}

// BinlogManifest describes one uploaded binlog. Objects exist for readers
// only once their manifest exists.
type BinlogManifest struct {
	Version     int    `json:"version"`
	StreamID    string `json:"stream_id"`
	RemoteIndex int64  `json:"remote_index"`
	Epoch       int64  `json:"epoch"`
	ServerID    uint32 `json:"server_id"`
	ServerUUID  string `json:"server_uuid,omitempty"`
	// LocalName is the binlog's file name on the server that uploaded it.
	LocalName    string        `json:"local_name"`
	Flavor       mysql.Flavor  `json:"flavor"`
	GTIDsBefore  mysql.GTIDSet `json:"gtids_before"`
	GTIDsAdded   mysql.GTIDSet `json:"gtids_added"`
	FirstEventAt *time.Time    `json:"first_event_at,omitempty"`
	LastEventAt  *time.Time    `json:"last_event_at,omitempty"`
	Transactions int           `json:"transactions"`
	// Size is the binlog's size; EncodedSize the data object's.
	Size        int64     `json:"size"`
	EncodedSize int64     `json:"encoded_size"`
	SHA256      string    `json:"sha256"`
	Codec       Codec     `json:"codec"`
	UploadedAt  time.Time `json:"uploaded_at"`
}

// Ref is the binlog's key reference.
func (m *BinlogManifest) Ref() BinlogRef {
	return BinlogRef{StreamID: m.StreamID, RemoteIndex: m.RemoteIndex, Epoch: m.Epoch, ServerID: m.ServerID}
}

// BasebackupPart is one part object of a basebackup.
type BasebackupPart struct {
	Key         string `json:"key"`
	EncodedSize int64  `json:"encoded_size"`
}

// BasebackupManifest is a stream's basebackup.json, written last.
type BasebackupManifest struct {
	Version    int          `json:"version"`
	StreamID   string       `json:"stream_id"`
	Flavor     mysql.Flavor `json:"flavor"`
	ServerID   uint32       `json:"server_id"`
	ServerUUID string       `json:"server_uuid,omitempty"`
	// Tool and ToolVersion are the backup program (xtrabackup or
	// mariabackup) and its version, for restore-side compatibility checks.
	Tool        string `json:"tool"`
	ToolVersion string `json:"tool_version,omitempty"`
	// The consistency point.
	BinlogName     string        `json:"binlog_name"`
	BinlogPosition int64         `json:"binlog_position"`
	GTIDExecuted   mysql.GTIDSet `json:"gtid_executed"`
	StartedAt      time.Time     `json:"started_at"`
	EndedAt        time.Time     `json:"ended_at"`
	// Size is the xbstream's size; EncodedSize the sum of the parts.
	Size        int64            `json:"size"`
	EncodedSize int64            `json:"encoded_size"`
	DataDirSize int64            `json:"data_dir_size,omitempty"`
	SHA256      string           `json:"sha256"`
	Codec       Codec            `json:"codec"`
	Parts       []BasebackupPart `json:"parts"`
	Epoch       int64            `json:"epoch"`
	NodeID      string           `json:"node_id,omitempty"`
	// Incremental backups hold the pages changed since the backup their
	// RequiredStreams end with; RequiredStreams is the chain they need,
	// oldest first (the full backup, then the earlier incrementals, not
	// this one).
	Incremental     bool     `json:"incremental,omitempty"`
	RequiredStreams []string `json:"required_streams,omitempty"`
	// CheckpointsFileContent is the tool's xtrabackup_checkpoints: the
	// LSNs an incremental continues from, and the prepare's progress.
	CheckpointsFileContent string `json:"checkpoints_file_content,omitempty"`
}

// Checkpoint is a value of xtrabackup_checkpoints ("to_lsn"; "" when
// absent).
func (m *BasebackupManifest) Checkpoint(key string) string {
	for _, line := range strings.Split(m.CheckpointsFileContent, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// PromotionRecord says from which remote index an epoch's primary is the
// only valid writer of a stream.
type PromotionRecord struct {
	Version    int           `json:"version"`
	StreamID   string        `json:"stream_id"`
	Epoch      int64         `json:"epoch"`
	NodeID     string        `json:"node_id"`
	ServerID   uint32        `json:"server_id"`
	StartIndex int64         `json:"start_index"`
	GTIDs      mysql.GTIDSet `json:"gtids"`
	PromotedAt time.Time     `json:"promoted_at"`
}

// MarkerRecord is the body of a stream marker object.
type MarkerRecord struct {
	Version int       `json:"version"`
	At      time.Time `json:"at"`
	NodeID  string    `json:"node_id,omitempty"`
	// PreserveUntil is set on preserved markers.
	PreserveUntil *time.Time `json:"preserve_until,omitempty"`
	Reason        string     `json:"reason,omitempty"`
}

// versioned is implemented by every manifest type.
type versioned interface {
	manifestVersion() int
	check() error
}

func (m *BinlogManifest) manifestVersion() int     { return m.Version }
func (m *BasebackupManifest) manifestVersion() int { return m.Version }
func (m *PromotionRecord) manifestVersion() int    { return m.Version }
func (m *MarkerRecord) manifestVersion() int       { return m.Version }

func (m *BinlogManifest) check() error {
	if m.RemoteIndex < 1 || m.Size < 0 || m.EncodedSize < 0 || m.StreamID == "" || m.SHA256 == "" {
		return fmt.Errorf("binlog manifest for %s index %d is incomplete", m.StreamID, m.RemoteIndex)
	}
	return nil
}

func (m *BasebackupManifest) check() error {
	if m.StreamID == "" || m.BinlogName == "" || len(m.Parts) == 0 {
		return fmt.Errorf("basebackup manifest for %q is incomplete", m.StreamID)
	}
	if m.Incremental && len(m.RequiredStreams) == 0 {
		return fmt.Errorf("incremental basebackup manifest for %q names no required streams", m.StreamID)
	}
	return nil
}

func (m *PromotionRecord) check() error {
	if m.StreamID == "" || m.Epoch < 1 || m.StartIndex < 1 {
		return fmt.Errorf("promotion record for %q epoch %d is incomplete", m.StreamID, m.Epoch)
	}
	return nil
}

func (m *MarkerRecord) check() error { return nil }

// MarshalManifest encodes a manifest (its Version must be set).
func MarshalManifest(v versioned) ([]byte, error) {
	if v.manifestVersion() != ManifestVersion {
		return nil, fmt.Errorf("manifest version %d: this myhoard writes version %d", v.manifestVersion(), ManifestVersion)
	}
	return json.MarshalIndent(v, "", "  ")
}

// UnmarshalManifest decodes and checks a manifest; key names the object in
// errors. Manifests of a newer version are refused rather than misread.
func UnmarshalManifest(key string, data []byte, v versioned) error {
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return fmt.Errorf("manifest %s: %w: not JSON: %v", key, ErrCorrupt, err)
	}
	if probe.Version == nil {
		return fmt.Errorf("manifest %s: %w: no version", key, ErrCorrupt)
	}
	if *probe.Version > ManifestVersion || *probe.Version < 1 {
		return fmt.Errorf("manifest %s: version %d is not supported (this myhoard reads up to %d)", key, *probe.Version, ManifestVersion)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("manifest %s: %w: %v", key, ErrCorrupt, err)
	}
	if err := v.check(); err != nil {
		return fmt.Errorf("manifest %s: %w: %v", key, ErrCorrupt, err)
	}
	return nil
}
