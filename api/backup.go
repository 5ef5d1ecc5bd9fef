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

	"github.com/myhoard/myhoard/wire"
)

// BackupNode is what the backup endpoints need from the node.
type BackupNode interface {
	// Backups is nil until the first listing.
	Backups() []wire.Backup
	RequestBasebackup(ctx context.Context, incremental *bool) error
	RotateBinlog(ctx context.Context, wait time.Duration) error
	SetBinlogIndex(index int64) error
	PauseBackups(until *time.Time) error
	ReplicationState() map[string]map[string][][2]uint64
	SetReplicationState(map[string]map[string][][2]uint64) error
	Preserve(ctx context.Context, streamID string, until *time.Time, wait time.Duration) (applied bool, err error)
	MarkBroken(ctx context.Context, streamID string, broken bool) error
	// StreamBinlogs lists a listed backup's binlogs (full: every key
	// listed again, not only those after the last listing's end).
	StreamBinlogs(ctx context.Context, streamID string, full bool) (wire.StreamBinlogs, error)
	// RequestVerify starts a check of the backups in storage.
	RequestVerify(deep bool) error
	// RequestDrill starts a restore drill; DrillStatus is its progress
	// and the last result, LastDrill that result alone.
	RequestDrill() error
	DrillStatus() wire.DrillStatus
	LastDrill() *wire.DrillResult
}

func writeNodeError(w http.ResponseWriter, err error) {
	var br *wire.RequestError
	if errors.As(err, &br) {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	WriteError(w, http.StatusInternalServerError, err.Error())
}

func (s *Server) routeBackups() {
	r := s.router
	r.GET("/backup", s.getBackups)
	r.POST("/backup", s.postBackup)
	r.PUT("/backup", s.postBackup)
	r.GET("/replication_state", s.getReplicationState)
	r.PUT("/replication_state", s.putReplicationState)
	r.PATCH("/binlogs", s.patchBinlogs)
	r.PATCH("/backup/:stream_id", s.patchBackup)
	r.PUT("/backup/:stream_id/preserve", s.putPreserve)
	r.GET("/backup/:stream_id/binlogs", s.getStreamBinlogs)
	r.POST("/verify", s.postVerify)
	r.POST("/drill", s.postDrill)
	r.GET("/drill", s.getDrill)
}

// postDrill is POST /drill: a restore drill now.
func (s *Server) postDrill(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
	var body struct{}
	if err := DecodeBody(req, &body); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.node.RequestDrill(); err != nil {
		writeNodeError(w, err)
		return
	}
	success(w, true)
}

// getDrill is GET /drill: the running drill's progress and the last result.
func (s *Server) getDrill(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	WriteJSON(w, http.StatusOK, s.node.DrillStatus())
}

// postVerify is POST /verify: a check of the backups in storage now
// (cheap, or with "deep" every object decoded); GET /backup shows the
// result once it is done.
func (s *Server) postVerify(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
	var body wire.VerifyRequest
	if err := DecodeBody(req, &body); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := s.node.RequestVerify(body.Deep); err != nil {
		writeNodeError(w, err)
		return
	}
	success(w, true)
}

func success(w http.ResponseWriter, ok bool) { WriteJSON(w, http.StatusOK, wire.Success{Success: ok}) }

// getBackups is GET /backup[?order=asc|desc].
func (s *Server) getBackups(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
	list := s.node.Backups()
	switch order := req.URL.Query().Get("order"); {
	case list == nil || order == "":
	case order == "asc":
		sort.Slice(list, func(i, j int) bool { return list[i].StreamID < list[j].StreamID })
	default:
		sort.Slice(list, func(i, j int) bool { return list[i].StreamID > list[j].StreamID })
	}
	WriteJSON(w, http.StatusOK, wire.BackupList{Backups: list, LastDrill: s.node.LastDrill()})
}

// postBackup is POST /backup: a full backup, or a binlog rotation that
// may wait for the upload.
func (s *Server) postBackup(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
	var body struct {
		BackupType    *string  `json:"backup_type"`
		WaitForUpload *float64 `json:"wait_for_upload"`
		Incremental   *bool    `json:"incremental"`
	}
	if err := DecodeBody(req, &body); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	var err error
	switch {
	case body.BackupType == nil:
		WriteError(w, http.StatusBadRequest, `backup_type is required ("basebackup" or "binlog")`)
		return
	case *body.BackupType != "basebackup" && body.Incremental != nil:
		WriteError(w, http.StatusBadRequest, "incremental is only valid with backup_type basebackup")
		return
	case *body.BackupType == "basebackup" && body.WaitForUpload != nil:
		WriteError(w, http.StatusBadRequest, "wait_for_upload is only valid with backup_type binlog")
		return
	case *body.BackupType == "basebackup":
		err = s.node.RequestBasebackup(req.Context(), body.Incremental)
	case *body.BackupType == "binlog":
		wait, werr := seconds("wait_for_upload", body.WaitForUpload)
		if werr != nil {
			WriteError(w, http.StatusBadRequest, werr.Error())
			return
		}
		extendWrite(w, wait)
		err = s.node.RotateBinlog(req.Context(), wait)
	default:
		WriteError(w, http.StatusBadRequest, fmt.Sprintf(`backup_type %q is not "basebackup" or "binlog"`, *body.BackupType))
		return
	}
	if err != nil {
		writeNodeError(w, err)
		return
	}
	success(w, true)
}

func (s *Server) getReplicationState(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	WriteJSON(w, http.StatusOK, s.node.ReplicationState())
}

func (s *Server) putReplicationState(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
	var body map[string]map[string][][2]uint64
	if err := DecodeBody(req, &body); err != nil {
		WriteError(w, http.StatusBadRequest, "replication state must be {server: {uuid: [[start, end], ...]}}: "+err.Error())
		return
	}
	if err := s.node.SetReplicationState(body); err != nil {
		writeNodeError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, body)
}

// patchBinlogs is PATCH /binlogs: skip a hole in the local binlogs.
func (s *Server) patchBinlogs(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
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
	if err := s.node.SetBinlogIndex(*body.BinlogIndex); err != nil {
		writeNodeError(w, err)
		return
	}
	success(w, true)
}

// getStreamBinlogs is GET /backup/<stream id>/binlogs[?full=true].
func (s *Server) getStreamBinlogs(w http.ResponseWriter, req *http.Request, p httprouter.Params) {
	full := false
	switch v := req.URL.Query().Get("full"); v {
	case "", "false", "0":
	case "true", "1":
		full = true
	default:
		WriteError(w, http.StatusBadRequest, fmt.Sprintf("full must be true or false, not %q", v))
		return
	}
	list, err := s.node.StreamBinlogs(req.Context(), p.ByName("stream_id"), full)
	if err != nil {
		writeNodeError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, list)
}

// patchBackup is PATCH /backup/<stream id> (broken) and PATCH
// /backup/settings (paused_until).
func (s *Server) patchBackup(w http.ResponseWriter, req *http.Request, p httprouter.Params) {
	if p.ByName("stream_id") == "settings" {
		s.patchSettings(w, req)
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
	if err := s.node.MarkBroken(req.Context(), p.ByName("stream_id"), *body.Broken); err != nil {
		writeNodeError(w, err)
		return
	}
	success(w, true)
}

// putPreserve is PUT /backup/<stream id>/preserve.
func (s *Server) putPreserve(w http.ResponseWriter, req *http.Request, p httprouter.Params) {
	var body struct {
		PreserveUntil              *string  `json:"preserve_until"`
		WaitForAppliedPreservation *float64 `json:"wait_for_applied_preservation"`
	}
	if err := DecodeBody(req, &body); err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	until, err := parseTime("preserve_until", body.PreserveUntil)
	if err == nil && until != nil && !until.After(time.Now()) {
		err = errors.New("preserve_until must be in the future")
	}
	var wait time.Duration
	if err == nil {
		wait, err = seconds("wait_for_applied_preservation", body.WaitForAppliedPreservation)
	}
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	extendWrite(w, wait)
	applied, err := s.node.Preserve(req.Context(), p.ByName("stream_id"), until, wait)
	if err != nil {
		writeNodeError(w, err)
		return
	}
	success(w, applied)
}

func (s *Server) patchSettings(w http.ResponseWriter, req *http.Request) {
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
	if err := s.node.PauseBackups(until); err != nil {
		writeNodeError(w, err)
		return
	}
	success(w, true)
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
