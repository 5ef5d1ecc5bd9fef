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
	bb := &storage.BasebackupManifest{}
	backups := []wire.Backup{
		{Site: "a", StreamID: "1", CompletedAt: &now, Basebackup: bb},
		{Site: "a", StreamID: "2", CompletedAt: &now, Basebackup: bb, BrokenAt: &now},
		{Site: "a", StreamID: "3", CompletedAt: &now, Basebackup: bb},
		{Site: "a", StreamID: "4", Basebackup: bb}, // running
		{Site: "b", StreamID: "5", CompletedAt: &now, Basebackup: bb},
		{Site: "b", StreamID: "6", CompletedAt: &now}, // no basebackup.json
	}
	for _, tc := range []struct {
		site, before, want string
	}{
		{"", "", "5"},
		{"a", "", "3"},
		{"a", "3", "1"},
		{"a", "1", ""},
		{"b", "", "5"},
		{"c", "", ""},
	} {
		got := NewestRestorable(backups, tc.site, tc.before)
		if (got == nil) != (tc.want == "") || (got != nil && got.StreamID != tc.want) {
			t.Errorf("NewestRestorable(site %q, before %q) = %v, want %q", tc.site, tc.before, got, tc.want)
		}
	}
}

func TestCheckTarget(t *testing.T) {
	at := time.Now()
	for _, tc := range []struct {
		name    string
		target  Target
		wantErr string
	}{
		{"latest", Target{}, ""},
		{"time", Target{Time: &at, ApproximateOK: true}, ""},
		{"gtid", Target{GTID: "0-1-5"}, ""},
		{"both", Target{Time: &at, GTID: "0-1-5"}, "not both"},
		{"approximate without time", Target{ApproximateOK: true}, "needs target_time"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckTarget(tc.target)
			checkBadRequest(t, err, tc.wantErr)
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
