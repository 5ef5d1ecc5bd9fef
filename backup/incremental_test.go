package backup

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/wire"
)

// TestScheduleIncremental: with an injected clock, scheduled backups are
// full on the configured weekdays (UTC) and incremental otherwise.
func TestScheduleIncremental(t *testing.T) {
	days := map[time.Weekday]bool{time.Sunday: true, time.Wednesday: true}
	tests := []struct {
		name    string
		now     string // 2026-12-06 is a Sunday
		enabled bool
		want    bool
	}{
		{"sunday: full", "2026-12-06T03:00:00Z", true, false},
		{"monday: incremental", "2026-12-07T03:00:00Z", true, true},
		{"tuesday: incremental", "2026-12-08T03:00:00Z", true, true},
		{"wednesday: full", "2026-12-09T03:00:00Z", true, false},
		{"saturday: incremental", "2026-12-12T03:00:00Z", true, true},
		{"late sunday in UTC-5 is monday in UTC: incremental", "2026-12-06T22:00:00-05:00", true, true},
		{"disabled: always full", "2026-12-07T03:00:00Z", false, false},
	}
	for _, tc := range tests {
		sch := Schedule{Hour: 3, IntervalMinutes: 1440, Incremental: tc.enabled, FullDays: days}
		now, err := time.Parse(time.RFC3339, tc.now)
		if err != nil {
			t.Fatal(err)
		}
		var s Streams
		s.ScheduleBackup(now, sch)
		if s.Request == nil || s.Request.Incremental != tc.want {
			t.Errorf("%s: request %+v, want incremental %v", tc.name, s.Request, tc.want)
			continue
		}
		st := s.StartRequested(now, "x", "s", 1, 1)
		if st == nil || st.Incremental != tc.want {
			t.Errorf("%s: stream %+v does not carry incremental %v", tc.name, st, tc.want)
		}
	}
}

// TestIncrementalBaseOf: the eligibility rules, each refusal with its
// reason.
func TestIncrementalBaseOf(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	const ver = "10.11.19-MariaDB"
	cp := "backup_type = full-backuped\nfrom_lsn = 0\nto_lsn = 100\nlast_lsn = 120\n"
	full := func(id string) BackupInfo {
		return BackupInfo{Site: "s", StreamID: id, CompletedAt: &at, Resumable: true,
			Basebackup: InfoOf(&storage.BasebackupManifest{StreamID: id, Tool: "mariabackup", ToolVersion: ver, CheckpointsFileContent: cp})}
	}
	inc := func(id, lsn string, req ...string) BackupInfo {
		b := full(id)
		b.Basebackup.Incremental, b.Basebackup.RequiredStreams = true, req
		b.Basebackup.CheckpointsFileContent = "backup_type = incremental\nto_lsn = " + lsn + "\n"
		return b
	}
	with := func(b BackupInfo, f func(*BackupInfo)) BackupInfo { f(&b); return b }
	tests := []struct {
		name     string
		backups  []BackupInfo
		wantLSN  string
		wantReq  []string
		wantFail string
	}{
		{"after a full backup", []BackupInfo{full("a")}, "100", []string{"a"}, ""},
		{"after an incremental", []BackupInfo{full("a"), inc("b", "200", "a")}, "200", []string{"a", "b"}, ""},
		{"the newest one counts", []BackupInfo{full("a"), inc("b", "200", "a"), full("c")}, "100", []string{"c"}, ""},
		{"an uncompleted newer one is passed over", []BackupInfo{full("a"), with(full("b"), func(b *BackupInfo) { b.CompletedAt = nil })}, "100", []string{"a"}, ""},
		{"other sites do not count", []BackupInfo{full("a"), with(full("b"), func(b *BackupInfo) { b.Site = "other" })}, "100", []string{"a"}, ""},
		{"nothing", nil, "", nil, "has no completed backup"},
		{"another tool version", []BackupInfo{with(full("a"), func(b *BackupInfo) { b.Basebackup.ToolVersion = "10.11.18-MariaDB" })}, "", nil, "same version"},
		{"broken parent", []BackupInfo{with(full("a"), func(b *BackupInfo) { b.BrokenAt = &at })}, "", nil, "a of the chain of a is broken"},
		{"broken full backup under the chain", []BackupInfo{with(full("a"), func(b *BackupInfo) { b.BrokenAt = &at }), inc("b", "200", "a")}, "", nil, "a of the chain of b is broken"},
		{"a member is gone", []BackupInfo{inc("b", "200", "a")}, "", nil, "a of the chain of b is missing"},
		{"a member lacks parts", []BackupInfo{with(full("a"), func(b *BackupInfo) { b.Resumable = false }), inc("b", "200", "a")}, "", nil, "lacks some of its parts"},
		{"no checkpoints (an older myhoard)", []BackupInfo{with(full("a"), func(b *BackupInfo) { b.Basebackup.CheckpointsFileContent = "" })}, "", nil, "has no checkpoints"},
		{"no to_lsn", []BackupInfo{with(full("a"), func(b *BackupInfo) { b.Basebackup.CheckpointsFileContent = "x = 1" })}, "", nil, "no to_lsn"},
	}
	for _, tc := range tests {
		base, err := IncrementalBaseOf(tc.backups, "s", ver)
		if tc.wantFail != "" {
			var re *wire.RequestError
			if err == nil || !strings.Contains(err.Error(), tc.wantFail) || !errors.As(err, &re) {
				t.Errorf("%s: %v, want a request error with %q", tc.name, err, tc.wantFail)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if base.LSN != tc.wantLSN || strings.Join(base.RequiredStreams, ",") != strings.Join(tc.wantReq, ",") || base.Parent() != tc.wantReq[len(tc.wantReq)-1] {
			t.Errorf("%s: %+v, want lsn %s required %v", tc.name, base, tc.wantLSN, tc.wantReq)
		}
	}
}

// TestToolVersionsRemembers: the installed tool's version, read once; a
// missing tool says which.
func TestToolVersions(t *testing.T) {
	var v ToolVersions
	if _, err := v.Of(context.Background(), mysql.FlavorMariaDB, "/nonexistent/mariabackup"); !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "mariadb-backup") {
		t.Errorf("missing tool: %v", err)
	}
	got, err := v.Of(context.Background(), mysql.FlavorMariaDB, "")
	if err != nil {
		t.Fatalf("mariabackup --version (package mariadb-backup must be installed): %v", err)
	}
	if !strings.HasSuffix(got, "-MariaDB") {
		t.Errorf("version %q", got)
	}
}
