package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/myhoard/myhoard/wire"
)

// fakeNode answers Mode; the other methods are not called by these tests.
type fakeNode struct {
	Node
	mode string
}

func (f fakeNode) Mode() string { return f.mode }

func (f fakeNode) StreamBinlogs(_ context.Context, streamID string, full bool) (wire.StreamBinlogs, error) {
	if streamID != "s1" {
		return wire.StreamBinlogs{}, wire.BadRequest("no backup %q in the backup list", streamID)
	}
	return wire.StreamBinlogs{Site: fmt.Sprint(full), StreamID: streamID}, nil
}

func TestRoutes(t *testing.T) {
	srv := httptest.NewServer(New(fakeNode{mode: "idle"}, slog.New(slog.NewTextHandler(io.Discard, nil))))
	defer srv.Close()
	tests := []struct {
		method, path string
		status       int
		key, want    string
	}{
		{"GET", "/status", 200, "mode", "idle"},
		{"GET", "/nope", 404, "message", "no such endpoint: GET /nope"},
		{"DELETE", "/status", 405, "message", "method DELETE is not allowed on /status"},
		{"GET", "/backup/s1/binlogs", 200, "site", "false"},
		{"GET", "/backup/s1/binlogs?full=true", 200, "site", "true"},
		{"GET", "/backup/s1/binlogs?full=yes", 400, "message", `full must be true or false, not "yes"`},
		{"GET", "/backup/s2/binlogs", 400, "message", `no backup "s2" in the backup list`},
	}
	for _, tc := range tests {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != tc.status || !strings.Contains(fmt.Sprint(body[tc.key]), tc.want) {
			t.Errorf("%s %s: %d %v (%v), want %d with %s containing %q", tc.method, tc.path, resp.StatusCode, body, err, tc.status, tc.key, tc.want)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", tc.method, tc.path, ct)
		}
	}
}

func TestDecodeBody(t *testing.T) {
	type target struct {
		Mode string `json:"mode"`
	}
	tests := []struct {
		body, wantErr string
	}{
		{`{"mode": "active"}`, ""},
		{`{"mode": `, "not valid JSON"},
		{`[1, 2]`, "must be a JSON object"},
		{`"x"`, "must be a JSON object"},
		{`{"mood": "x"}`, `unknown field "mood"`},
		{`{"mode": 5}`, "bad request body"},
		{`{"mode": "` + strings.Repeat("x", maxBodyBytes) + `"}`, "larger than"},
	}
	for _, tc := range tests {
		r := httptest.NewRequest("PUT", "/status", strings.NewReader(tc.body))
		var dst target
		err := DecodeBody(r, &dst)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("body %.40q: error %v, want %q", tc.body, err, tc.wantErr)
		}
	}
}

func TestDecodeModeChange(t *testing.T) {
	tests := []struct {
		body, wantErr string
		want          wire.ModeChange
	}{
		{`{"mode": "active", "force": true}`, "", wire.ModeChange{Mode: "active", Force: true}},
		{`{"mode": "restore", "site": "a", "stream_id": "s", "target_gtid": "0-1-5"}`, "", wire.ModeChange{Mode: "restore", Site: "a", StreamID: "s", TargetGTID: "0-1-5"}},
		{`{}`, "mode is required", wire.ModeChange{}},
		{`{"mode": "active", "force": "yes"}`, "force must be true or false", wire.ModeChange{}},
		{`{"mode": "restore", "rebuild_tables": true}`, "rebuild_tables is not supported", wire.ModeChange{}},
		{`{"mode": "restore", "target_time": "yesterday"}`, "target_time", wire.ModeChange{}},
		{`{"mode": "observe", "stream_id": "s", "target_gtid": "0-1-5"}`, "stream_id, target_gtid only apply to mode restore", wire.ModeChange{}},
		{`{"mode": "active", "target_time": 1700000000, "target_time_approximate_ok": true}`, "target_time, target_time_approximate_ok only apply to mode restore", wire.ModeChange{}},
	}
	for _, tc := range tests {
		got, err := decodeModeChange(httptest.NewRequest("PUT", "/status", strings.NewReader(tc.body)))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.body, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: error %v, want %q", tc.body, err, tc.wantErr)
		case tc.wantErr == "" && !reflect.DeepEqual(got, tc.want):
			t.Errorf("%s: %+v, want %+v", tc.body, got, tc.want)
		}
	}
}
