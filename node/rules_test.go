package node

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/myhoard/myhoard/backup"
	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/mysql"
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNormalizedBackupTime(t *testing.T) {
	tests := []struct {
		name             string
		now              string
		hour, minute, iv int
		last             string
		want             string
	}{
		{"daily, before today's slot", "2026-11-25T02:00:00Z", 3, 0, 1440, "", "2026-11-24T03:00:00Z"},
		{"daily, after today's slot", "2026-11-25T04:00:00Z", 3, 0, 1440, "", "2026-11-25T03:00:00Z"},
		{"daily, exactly at the slot", "2026-11-25T03:00:00Z", 3, 0, 1440, "", "2026-11-25T03:00:00Z"},
		{"six-hourly from hour 4", "2026-11-25T15:59:00Z", 4, 0, 360, "", "2026-11-25T10:00:00Z"},
		{"six-hourly after a previous slot", "2026-11-25T23:00:00Z", 4, 0, 360, "2026-11-25T10:00:00Z", "2026-11-25T22:00:00Z"},
		{"daily realigns to a new hour", "2026-11-26T06:00:00Z", 5, 30, 1440, "2026-11-25T03:00:00Z", "2026-11-26T05:30:00Z"},
		{"every two days", "2026-11-28T04:00:00Z", 3, 0, 2880, "2026-11-25T03:00:00Z", "2026-11-27T03:00:00Z"},
	}
	for _, tc := range tests {
		var last time.Time
		if tc.last != "" {
			last = ts(tc.last)
		}
		got := normalizedBackupTime(ts(tc.now), tc.hour, tc.minute, tc.iv, last)
		if !got.Equal(ts(tc.want)) {
			t.Errorf("%s: %v, want %s", tc.name, got, tc.want)
		}
	}
}

func TestBackupToPurge(t *testing.T) {
	now := ts("2026-11-25T12:00:00Z")
	day := 24 * time.Hour
	b := func(id string, completedDaysAgo, closedDaysAgo int) backup.BackupInfo {
		c := now.Add(-time.Duration(completedDaysAgo) * day)
		info := backup.BackupInfo{StreamID: id, Site: "s", CompletedAt: &c}
		if closedDaysAgo >= 0 {
			cl := now.Add(-time.Duration(closedDaysAgo) * day)
			info.ClosedAt = &cl
		}
		return info
	}
	future := now.Add(day)
	tests := []struct {
		name              string
		backups           []backup.BackupInfo
		min, max, ageDays int
		own               []string
		want              string
	}{
		{"nothing", nil, 1, 3, 7, nil, ""},
		{"too old", []backup.BackupInfo{b("a", 20, 19), b("b", 19, 1), b("c", 1, -1)}, 1, 10, 7, nil, "a"},
		{"young enough", []backup.BackupInfo{b("a", 5, 4), b("b", 4, 1), b("c", 1, -1)}, 1, 10, 7, nil, ""},
		{"over the count", []backup.BackupInfo{b("a", 5, 4), b("b", 4, 1), b("c", 1, -1)}, 1, 2, 30, nil, "a"},
		{"count_min keeps old ones", []backup.BackupInfo{b("a", 20, 19), b("b", 19, -1)}, 2, 10, 7, nil, ""},
		{"never an open one", []backup.BackupInfo{b("a", 20, -1), b("b", 1, -1)}, 1, 10, 7, nil, ""},
		{"never one of our open streams", []backup.BackupInfo{b("a", 20, 19), b("b", 1, -1)}, 1, 10, 7, []string{"a"}, ""},
		{"preserved", func() []backup.BackupInfo {
			l := []backup.BackupInfo{b("a", 20, 19), b("b", 1, -1)}
			l[0].PreserveUntil = &future
			return l
		}(), 1, 10, 7, nil, ""},
		{"recovery site untouched", func() []backup.BackupInfo {
			l := []backup.BackupInfo{b("a", 20, 19), b("b", 1, -1)}
			l[0].RecoverySite = true
			return l
		}(), 1, 10, 7, nil, ""},
		{"broken ones do not force a purge", func() []backup.BackupInfo {
			l := []backup.BackupInfo{b("a", 5, 4), b("b", 4, 3), b("c", 3, -1)}
			l[1].BrokenAt = &now
			return l
		}(), 1, 2, 30, nil, ""},
	}
	for _, tc := range tests {
		own := map[string]bool{}
		for _, o := range tc.own {
			own[o] = true
		}
		got := backupToPurge(tc.backups, own, tc.min, tc.max, tc.ageDays, now)
		if (got == nil) != (tc.want == "") || (got != nil && got.StreamID != tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, got, tc.want)
		}
	}
}

func TestBinlogsToPurge(t *testing.T) {
	now := ts("2026-11-25T12:00:00Z")
	set := func(s string) mysql.GTIDSet {
		g, err := mysql.ParseMariaDBGTIDSet(s)
		if err != nil {
			panic(err)
		}
		return g
	}
	mk := func(idx int64, added string, ageMin int) backup.LocalBinlog {
		return backup.LocalBinlog{Index: idx, Name: "binlog", Size: 100, GTIDsAdded: set(added), ProcessedAt: now.Add(-time.Duration(ageMin) * time.Minute)}
	}
	binlogs := []backup.LocalBinlog{mk(1, "0-1-1-10", 60), mk(2, "", 60), mk(3, "0-1-11-20", 60), mk(4, "0-1-21-30", 60), mk(5, "0-1-31-40", 1)}
	stream := backup.StreamState{Phase: backup.PhaseBinlog, FirstLocalIndex: 1, LastUploadedLocal: 5}
	rs := func(pos string) map[string]mysql.ReplicationState {
		return map[string]mysql.ReplicationState{"replica": set(pos).ReplicationState()}
	}
	tests := []struct {
		name     string
		streams  []backup.StreamState
		rs       map[string]mysql.ReplicationState
		maxFiles int64
		want     int64 // last index purged (0: none)
	}{
		{"uploaded and old enough", []backup.StreamState{stream}, nil, 0, 4},
		{"no streams: nothing", nil, nil, 0, 0},
		{"the last uploaded file is kept", []backup.StreamState{{Phase: backup.PhaseBinlog, FirstLocalIndex: 1, LastUploadedLocal: 3}}, nil, 0, 2},
		{"a stream still in its basebackup keeps what it may need", []backup.StreamState{stream, {Phase: backup.PhaseBasebackup, InitialNextIndex: 3}}, nil, 0, 2},
		{"replica behind blocks", []backup.StreamState{stream}, rs("0-1-15"), 0, 1},
		{"an empty file waits for a later replicated one", []backup.StreamState{stream}, rs("0-1-20"), 0, 3},
		{"replica caught up", []backup.StreamState{stream}, rs("0-1-40"), 0, 4},
		{"unknown replica position blocks", []backup.StreamState{stream}, map[string]mysql.ReplicationState{"r": {}}, 0, 0},
		{"capped per cycle", []backup.StreamState{stream}, nil, 2, 2},
	}
	for _, tc := range tests {
		got, err := binlogsToPurge(binlogs, tc.streams, tc.rs, mysql.FlavorMariaDB, 10*time.Minute, tc.maxFiles, 0, now)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		last := int64(0)
		if len(got) > 0 {
			last = got[len(got)-1].Index
		}
		if last != tc.want {
			t.Errorf("%s: purges through %d, want %d", tc.name, last, tc.want)
		}
	}
}

func TestScheduleRespectsPauseAndHalfInterval(t *testing.T) {
	cfg := testConfigNoDB(t)
	cfg.BackupSettings.BackupIntervalMinutes = 60
	c := &Controller{cfg: cfg}
	now := ts("2026-11-25T12:05:00Z")
	c.state.Streams = []backup.StreamState{{ID: "a", Reason: "scheduled", CreatedAt: ts("2026-11-25T11:00:10Z"), NormalizedTime: ts("2026-11-25T11:00:00Z")}}
	c.scheduleLocked(now)
	if c.state.Request == nil || !c.state.Request.NormalizedTime.Equal(ts("2026-11-25T12:00:00Z")) {
		t.Fatalf("new slot: request %+v", c.state.Request)
	}
	c.state.Request = nil
	until := now.Add(time.Hour)
	c.state.PausedUntil = &until
	c.scheduleLocked(now)
	if c.state.Request != nil {
		t.Fatal("a paused schedule requested a backup")
	}
	c.state.PausedUntil = nil
	c.state.Streams[0].CreatedAt = ts("2026-11-25T11:50:00Z") // created less than half an interval ago
	c.scheduleLocked(now)
	if c.state.Request != nil {
		t.Fatal("requested within half an interval of the last scheduled backup")
	}
}

func testConfigNoDB(t *testing.T) *config.Config {
	t.Helper()
	b, _ := json.Marshal(map[string]any{
		"state_directory": t.TempDir(), "start_command": []string{"mariadbd"},
		"backup_sites": map[string]any{"s": map[string]any{"object_storage": map[string]any{"url": "mem://"}}},
	})
	cfg, err := config.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
