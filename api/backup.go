package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/myhoard/myhoard/storage"
)

// Backup is one entry of GET /backup (the spec's fields plus the
// restorable window).
type Backup struct {
	BasebackupInfo *storage.BasebackupManifest `json:"basebackup_info"`
	BrokenAt       *time.Time                  `json:"broken_at"`
	// BrokenReason: why a backup lists as broken without a broken marker
	// (its basebackup.json or a marker cannot be read).
	BrokenReason  string     `json:"broken_reason,omitempty"`
	ClosedAt      *time.Time `json:"closed_at"`
	CompletedAt   *time.Time `json:"completed_at"`
	PreserveUntil *time.Time `json:"preserve_until"`
	RecoverySite  bool       `json:"recovery_site"`
	Resumable     bool       `json:"resumable"`
	Site          string     `json:"site"`
	StreamID      string     `json:"stream_id"`
	// RestorableFrom/Until bound the point-in-time window: from the end of
	// the full backup to the close (null while binlogs are still added).
	RestorableFrom  *time.Time `json:"restorable_from"`
	RestorableUntil *time.Time `json:"restorable_until"`
}

// BackupNode is what the backup endpoints need from the node.
type BackupNode interface {
	// RequestMode handles PUT /status.
	RequestMode(ctx context.Context, r StatusRequest) (string, error)
	// RestoreStatus is GET /status/restore (a bad request when the mode
	// is not restore).
	RestoreStatus() (any, error)
	// Backups is nil until the first listing.
	Backups() []Backup
	RequestBasebackup() error
	RotateBinlog(ctx context.Context, wait time.Duration) error
	SetBinlogIndex(index int64) error
	PauseBackups(until *time.Time) error
	ReplicationState() map[string]map[string][][2]uint64
	SetReplicationState(map[string]map[string][][2]uint64) error
	Preserve(ctx context.Context, streamID string, until *time.Time, wait time.Duration) (applied bool, err error)
	MarkBroken(ctx context.Context, streamID string, broken bool) error
}

// StatusRequest is the body of PUT /status.
type StatusRequest struct {
	Mode  string
	Force bool
	// Restore only: the backup, and at most one of the targets.
	Site, StreamID string
	TargetTime     *time.Time
	ApproximateOK  bool
	TargetGTID     string
}

// ParseTargetTime reads target_time: null, an ISO 8601 timestamp (the
// spec; without a zone it is UTC) or seconds since the epoch (the
// original's code).
func ParseTargetTime(v any) (*time.Time, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case float64:
		if t < 0 || t > 1e11 {
			return nil, fmt.Errorf("target_time %v is not a plausible epoch timestamp", t)
		}
		sec, frac := math.Modf(t)
		ts := time.Unix(int64(sec), int64(frac*1e9)).UTC()
		return &ts, nil
	case string:
		for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999"} {
			if ts, err := time.Parse(layout, t); err == nil {
				ts = ts.UTC()
				return &ts, nil
			}
		}
		return nil, fmt.Errorf("target_time %q is not an ISO 8601 timestamp such as 2026-11-25T10:00:00Z", t)
	}
	return nil, fmt.Errorf("target_time must be an ISO 8601 timestamp, seconds since the epoch or null, not %T", v)
}

// badRequester is implemented by node errors that are the caller's fault.
type badRequester interface{ BadRequest() bool }

func writeNodeError(w http.ResponseWriter, err error) {
	var br badRequester
	if errors.As(err, &br) && br.BadRequest() {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	WriteError(w, http.StatusInternalServerError, err.Error())
}

func (s *Server) routeBackups(n BackupNode) {
	r := s.router
	r.GET("/backup", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		list := n.Backups()
		if list == nil {
			WriteJSON(w, http.StatusOK, map[string]any{"backups": nil})
			return
		}
		switch order := req.URL.Query().Get("order"); order {
		case "":
		case "asc":
			sort.Slice(list, func(i, j int) bool { return list[i].StreamID < list[j].StreamID })
		default:
			sort.Slice(list, func(i, j int) bool { return list[i].StreamID > list[j].StreamID })
		}
		WriteJSON(w, http.StatusOK, map[string]any{"backups": list})
	})
	backupReq := func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		var body struct {
			BackupType    *string  `json:"backup_type"`
			WaitForUpload *float64 `json:"wait_for_upload"`
			Incremental   *bool    `json:"incremental"`
		}
		if err := DecodeBody(req, &body); err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if body.BackupType == nil {
			WriteError(w, http.StatusBadRequest, `backup_type is required ("basebackup" or "binlog")`)
			return
		}
		var err error
		switch *body.BackupType {
		case "basebackup":
			if body.WaitForUpload != nil {
				WriteError(w, http.StatusBadRequest, "wait_for_upload is only valid with backup_type binlog")
				return
			}
			err = n.RequestBasebackup()
		case "binlog":
			wait, werr := seconds("wait_for_upload", body.WaitForUpload)
			if werr != nil {
				WriteError(w, http.StatusBadRequest, werr.Error())
				return
			}
			extendWrite(w, wait)
			err = n.RotateBinlog(req.Context(), wait)
		default:
			WriteError(w, http.StatusBadRequest, fmt.Sprintf(`backup_type %q is not "basebackup" or "binlog"`, *body.BackupType))
			return
		}
		if err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"success": true})
	}
	r.POST("/backup", backupReq)
	r.PUT("/backup", backupReq)

	r.GET("/status/restore", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		st, err := n.RestoreStatus()
		if err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, st)
	})
	r.PUT("/status", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		var body struct {
			Mode                    *string `json:"mode"`
			Force                   any     `json:"force"`
			Site                    *string `json:"site"`
			StreamID                *string `json:"stream_id"`
			TargetTime              any     `json:"target_time"`
			TargetTimeApproximateOK *bool   `json:"target_time_approximate_ok"`
			TargetGTID              *string `json:"target_gtid"`
			RebuildTables           *bool   `json:"rebuild_tables"`
		}
		if err := DecodeBody(req, &body); err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if body.Mode == nil {
			WriteError(w, http.StatusBadRequest, "mode is required")
			return
		}
		sr := StatusRequest{Mode: *body.Mode}
		if body.Force != nil {
			f, ok := body.Force.(bool)
			if !ok {
				WriteError(w, http.StatusBadRequest, "force must be true or false")
				return
			}
			sr.Force = f
		}
		if body.Site != nil {
			sr.Site = *body.Site
		}
		if body.StreamID != nil {
			sr.StreamID = *body.StreamID
		}
		if body.TargetGTID != nil {
			sr.TargetGTID = *body.TargetGTID
		}
		if body.TargetTimeApproximateOK != nil {
			sr.ApproximateOK = *body.TargetTimeApproximateOK
		}
		if body.RebuildTables != nil && *body.RebuildTables {
			WriteError(w, http.StatusBadRequest, "rebuild_tables is not supported (it works around MySQL 8.0.30 upgrade bugs that MariaDB does not have)")
			return
		}
		t, err := ParseTargetTime(body.TargetTime)
		if err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		sr.TargetTime = t
		mode, err := n.RequestMode(req.Context(), sr)
		if err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"mode": mode})
	})

	r.GET("/replication_state", func(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
		WriteJSON(w, http.StatusOK, n.ReplicationState())
	})
	r.PUT("/replication_state", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		var body map[string]map[string][][2]uint64
		if err := DecodeBody(req, &body); err != nil {
			WriteError(w, http.StatusBadRequest, "replication state must be {server: {uuid: [[start, end], ...]}}: "+err.Error())
			return
		}
		if err := n.SetReplicationState(body); err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, body)
	})

	r.PATCH("/binlogs", func(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
		var body struct {
			BinlogIndex *int64 `json:"binlog_index"`
		}
		if err := DecodeBody(req, &body); err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if body.BinlogIndex == nil || *body.BinlogIndex < 1 {
			WriteError(w, http.StatusBadRequest, "binlog_index must be an integer >= 1")
			return
		}
		if err := n.SetBinlogIndex(*body.BinlogIndex); err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"success": true})
	})

	r.PATCH("/backup/:stream_id", func(w http.ResponseWriter, req *http.Request, p httprouter.Params) {
		if p.ByName("stream_id") == "settings" {
			s.patchSettings(n, w, req)
			return
		}
		var body struct {
			Broken *bool `json:"broken"`
		}
		if err := DecodeBody(req, &body); err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if body.Broken == nil {
			WriteError(w, http.StatusBadRequest, "broken (true or false) is required")
			return
		}
		if err := n.MarkBroken(req.Context(), p.ByName("stream_id"), *body.Broken); err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"success": true})
	})

	r.PUT("/backup/:stream_id/preserve", func(w http.ResponseWriter, req *http.Request, p httprouter.Params) {
		var body struct {
			PreserveUntil              *string  `json:"preserve_until"`
			WaitForAppliedPreservation *float64 `json:"wait_for_applied_preservation"`
		}
		if err := DecodeBody(req, &body); err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		until, err := parseTime("preserve_until", body.PreserveUntil)
		if err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		if until != nil && !until.After(time.Now()) {
			WriteError(w, http.StatusBadRequest, "preserve_until must be in the future")
			return
		}
		wait, err := seconds("wait_for_applied_preservation", body.WaitForAppliedPreservation)
		if err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		extendWrite(w, wait)
		applied, err := n.Preserve(req.Context(), p.ByName("stream_id"), until, wait)
		if err != nil {
			writeNodeError(w, err)
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{"success": applied})
	})
}

func (s *Server) patchSettings(n BackupNode, w http.ResponseWriter, req *http.Request) {
	var body map[string]any
	if err := DecodeBody(req, &body); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, ok := body["paused_until"]
	if !ok || len(body) != 1 {
		WriteError(w, http.StatusBadRequest, "the body must be {\"paused_until\": <ISO 8601 time or null>}")
		return
	}
	var until *time.Time
	if v != nil {
		str, ok := v.(string)
		if !ok {
			WriteError(w, http.StatusBadRequest, "paused_until must be an ISO 8601 time or null")
			return
		}
		t, err := parseTime("paused_until", &str)
		if err != nil {
			WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		until = t
	}
	if err := n.PauseBackups(until); err != nil {
		writeNodeError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{"success": true})
}

// seconds checks an optional non-negative number of seconds.
func seconds(field string, v *float64) (time.Duration, error) {
	if v == nil {
		return 0, nil
	}
	if *v < 0 || math.IsNaN(*v) || *v > 86400 {
		return 0, fmt.Errorf("%s must be a number of seconds between 0 and 86400", field)
	}
	return time.Duration(*v * float64(time.Second)), nil
}

// parseTime reads an ISO 8601 time; a time without a zone is UTC.
func parseTime(field string, s *string) (*time.Time, error) {
	if s == nil {
		return nil, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, strings.TrimSpace(*s)); err == nil {
			t = t.UTC()
			return &t, nil
		}
	}
	return nil, fmt.Errorf("%s %q is not an ISO 8601 time (like 2026-11-25T10:00:00Z)", field, *s)
}
