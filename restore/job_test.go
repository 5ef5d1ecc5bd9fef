package restore

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

func TestNewestRestorable(t *testing.T) {
	now := time.Now()
	bb := &wire.BasebackupInfo{BasebackupManifest: &storage.BasebackupManifest{}}
	inc := func(required ...string) *wire.BasebackupInfo {
		return &wire.BasebackupInfo{BasebackupManifest: &storage.BasebackupManifest{Incremental: true, RequiredStreams: required}}
	}
	backups := []wire.Backup{
		{Site: "a", StreamID: "1", CompletedAt: &now, Basebackup: bb},
		{Site: "a", StreamID: "2", CompletedAt: &now, Basebackup: bb, BrokenAt: &now},
		{Site: "a", StreamID: "3", CompletedAt: &now, Basebackup: bb},
		{Site: "a", StreamID: "4", Basebackup: bb}, // running
		{Site: "b", StreamID: "5", CompletedAt: &now, Basebackup: bb},
		{Site: "b", StreamID: "6", CompletedAt: &now}, // no basebackup.json
		// chains on site c: 7 <- 8 <- 9 with 8 broken; 10 <- 11 whole
		// but 10 only on site a; 12 needs a backup that is gone
		{Site: "c", StreamID: "7", CompletedAt: &now, Basebackup: bb},
		{Site: "c", StreamID: "8", CompletedAt: &now, Basebackup: inc("7"), BrokenAt: &now},
		{Site: "c", StreamID: "9", CompletedAt: &now, Basebackup: inc("7", "8")},
		{Site: "a", StreamID: "91", CompletedAt: &now, Basebackup: bb},
		{Site: "c", StreamID: "92", CompletedAt: &now, Basebackup: inc("91")},
		{Site: "d", StreamID: "1", CompletedAt: &now, Basebackup: bb},
		{Site: "d", StreamID: "2", CompletedAt: &now, Basebackup: inc("1")},
		{Site: "d", StreamID: "3", CompletedAt: &now, Basebackup: inc("1", "2")},
	}
	for _, tc := range []struct {
		site, before, want string
	}{
		{"", "", "91"},
		{"a", "", "91"},
		{"a", "3", "1"},
		{"a", "1", ""},
		{"b", "", "5"},
		{"c", "", "7"}, // 92's full backup is on another site, 9 needs the broken 8
		{"d", "", "3"},
		{"d", "3", "2"}, // a shorter chain
		{"d", "2", "1"},
		{"x", "", ""},
	} {
		got := NewestRestorable(backups, tc.site, tc.before)
		if (got == nil) != (tc.want == "") || (got != nil && got.StreamID != tc.want) {
			t.Errorf("NewestRestorable(site %q, before %q) = %v, want %q", tc.site, tc.before, got, tc.want)
		}
	}
}

func TestCheckFields(t *testing.T) {
	at := time.Now()
	sites := []string{"b", "a"}
	for _, tc := range []struct {
		name    string
		req     wire.ModeChange
		wantErr string
	}{
		{"latest", wire.ModeChange{Site: "a", StreamID: "s"}, ""},
		{"time", wire.ModeChange{Site: "a", StreamID: "s", TargetTime: &at, ApproximateOK: true}, ""},
		{"gtid", wire.ModeChange{Site: "b", StreamID: "s", TargetGTID: "0-1-5"}, ""},
		{"no stream", wire.ModeChange{Site: "a"}, "needs site and stream_id"},
		{"no site", wire.ModeChange{StreamID: "s"}, "needs site and stream_id"},
		{"unknown site", wire.ModeChange{Site: "c", StreamID: "s"}, `unknown site "c" (configured: a, b)`},
		{"both", wire.ModeChange{Site: "a", StreamID: "s", TargetTime: &at, TargetGTID: "0-1-5"}, "not both"},
		{"approximate without time", wire.ModeChange{Site: "a", StreamID: "s", ApproximateOK: true}, "needs target_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, err := CheckFields(tc.req, sites)
			checkBadRequest(t, err, tc.wantErr)
			if err == nil && (target.Time != tc.req.TargetTime || target.GTID != tc.req.TargetGTID || target.ApproximateOK != tc.req.ApproximateOK) {
				t.Errorf("target %+v from %+v", target, tc.req)
			}
		})
	}
}

func TestCheckDataDirEmpty(t *testing.T) {
	root := t.TempDir()
	full := filepath.Join(root, "full")
	for _, d := range []string{"lost+found", "mysql", "ibdata1", "a", "b"} {
		if err := os.MkdirAll(filepath.Join(full, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	onlyLost := filepath.Join(root, "lost")
	if err := os.MkdirAll(filepath.Join(onlyLost, "lost+found"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, dir, wantErr string
	}{
		{"missing", filepath.Join(root, "none"), ""},
		{"only lost+found", onlyLost, ""},
		{"full", full, "is not empty (a, b, ibdata1, ...)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkBadRequest(t, CheckDataDirEmpty(tc.dir), tc.wantErr)
		})
	}
}

func checkBadRequest(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	var bad *wire.RequestError
	if !errors.As(err, &bad) || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want a bad request containing %q", err, want)
	}
}
