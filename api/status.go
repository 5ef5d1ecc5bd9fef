package api

import (
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"github.com/myhoard/myhoard/wire"
)

func (s *Server) getStatus(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	WriteJSON(w, http.StatusOK, wire.Status{Mode: s.node.Mode()})
}

func (s *Server) getRestoreStatus(w http.ResponseWriter, _ *http.Request, _ httprouter.Params) {
	st, err := s.node.RestoreStatus()
	if err != nil {
		writeNodeError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, st)
}

// putStatus is PUT /status: a mode change, a promotion or a restore.
func (s *Server) putStatus(w http.ResponseWriter, req *http.Request, _ httprouter.Params) {
	sr, err := decodeModeChange(req)
	if err != nil {
		WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	mode, err := s.node.RequestMode(req.Context(), sr)
	if err != nil {
		writeNodeError(w, err)
		return
	}
	WriteJSON(w, http.StatusOK, wire.Status{Mode: mode})
}

// decodeModeChange reads PUT /status's body: force must be a boolean,
// target_time an ISO 8601 time or epoch seconds, rebuild_tables is
// refused, and the restore fields come only with mode restore.
func decodeModeChange(req *http.Request) (wire.ModeChange, error) {
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
		return wire.ModeChange{}, err
	}
	if body.Mode == nil {
		return wire.ModeChange{}, fmt.Errorf("mode is required")
	}
	sr := wire.ModeChange{Mode: *body.Mode}
	if body.Force != nil {
		f, ok := body.Force.(bool)
		if !ok {
			return sr, fmt.Errorf("force must be true or false")
		}
		sr.Force = f
	}
	if body.RebuildTables != nil && *body.RebuildTables {
		return sr, fmt.Errorf("rebuild_tables is not supported (it works around MySQL 8.0.30 upgrade bugs that MariaDB does not have)")
	}
	for dst, v := range map[*string]*string{&sr.Site: body.Site, &sr.StreamID: body.StreamID, &sr.TargetGTID: body.TargetGTID} {
		if v != nil {
			*dst = *v
		}
	}
	if body.TargetTimeApproximateOK != nil {
		sr.ApproximateOK = *body.TargetTimeApproximateOK
	}
	t, err := ParseTargetTime(body.TargetTime)
	if err != nil {
		return sr, err
	}
	sr.TargetTime = t
	if sr.Mode != "restore" {
		var extra []string
		for name, set := range map[string]bool{"site": sr.Site != "", "stream_id": sr.StreamID != "", "target_time": sr.TargetTime != nil,
			"target_gtid": sr.TargetGTID != "", "target_time_approximate_ok": sr.ApproximateOK} {
			if set {
				extra = append(extra, name)
			}
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			return sr, fmt.Errorf("%s only apply to mode restore", strings.Join(extra, ", "))
		}
	}
	return sr, nil
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
