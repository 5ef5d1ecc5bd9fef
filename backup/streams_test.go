package backup

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestScheduleSlot(t *testing.T) {
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
		got := Schedule{Hour: tc.hour, Minute: tc.minute, IntervalMinutes: tc.iv}.Slot(ts(tc.now), last)
		if !got.Equal(ts(tc.want)) {
			t.Errorf("%s: %v, want %s", tc.name, got, tc.want)
		}
	}
}

func TestRetentionToDelete(t *testing.T) {
	now := ts("2026-11-25T12:00:00Z")
	day := 24 * time.Hour
	b := func(id string, completedDaysAgo, closedDaysAgo int) BackupInfo {
		c := now.Add(-time.Duration(completedDaysAgo) * day)
		info := BackupInfo{StreamID: id, Site: "s", CompletedAt: &c}
		if closedDaysAgo >= 0 {
			cl := now.Add(-time.Duration(closedDaysAgo) * day)
			info.ClosedAt = &cl
		}
		return info
	}
	future := now.Add(day)
	inc := func(info BackupInfo, required ...string) BackupInfo {
		info.Basebackup = InfoOf(&storage.BasebackupManifest{StreamID: info.StreamID, Incremental: true, RequiredStreams: required})
		return info
	}
	tests := []struct {
		name              string
		backups           []BackupInfo
		min, max, ageDays int
		own               []string
		want              string
	}{
		{"nothing", nil, 1, 3, 7, nil, ""},
		{"too old", []BackupInfo{b("a", 20, 19), b("b", 19, 1), b("c", 1, -1)}, 1, 10, 7, nil, "a"},
		{"young enough", []BackupInfo{b("a", 5, 4), b("b", 4, 1), b("c", 1, -1)}, 1, 10, 7, nil, ""},
		{"over the count", []BackupInfo{b("a", 5, 4), b("b", 4, 1), b("c", 1, -1)}, 1, 2, 30, nil, "a"},
		{"count_min keeps old ones", []BackupInfo{b("a", 20, 19), b("b", 19, -1)}, 2, 10, 7, nil, ""},
		{"never an open one", []BackupInfo{b("a", 20, -1), b("b", 1, -1)}, 1, 10, 7, nil, ""},
		{"never one of our open streams", []BackupInfo{b("a", 20, 19), b("b", 1, -1)}, 1, 10, 7, []string{"a"}, ""},
		{"preserved", func() []BackupInfo {
			l := []BackupInfo{b("a", 20, 19), b("b", 1, -1)}
			l[0].PreserveUntil = &future
			return l
		}(), 1, 10, 7, nil, ""},
		{"recovery site untouched", func() []BackupInfo {
			l := []BackupInfo{b("a", 20, 19), b("b", 1, -1)}
			l[0].RecoverySite = true
			return l
		}(), 1, 10, 7, nil, ""},
		{"broken ones do not force a purge", func() []BackupInfo {
			l := []BackupInfo{b("a", 5, 4), b("b", 4, 3), b("c", 3, -1)}
			l[1].BrokenAt = &now
			return l
		}(), 1, 2, 30, nil, ""},
		// chains: a full backup goes with the incrementals that need it
		{"a full backup outlives its incrementals' need", []BackupInfo{b("a", 20, 19), inc(b("a1", 19, 10), "a"), inc(b("a2", 10, 5), "a", "a1"), b("b", 5, -1)},
			1, 10, 7, nil, ""},
		{"the whole chain is old: the full backup goes first", []BackupInfo{b("a", 30, 29), inc(b("a1", 29, 20), "a"), inc(b("a2", 20, 10), "a", "a1"), b("b", 10, -1)},
			1, 10, 7, nil, "a"},
		{"orphans go", []BackupInfo{inc(b("a1", 29, 20), "a"), inc(b("a2", 20, 10), "a", "a1"), b("b", 10, -1)}, 1, 10, 7, nil, "a1"},
		{"a preserved incremental keeps its chain", func() []BackupInfo {
			l := []BackupInfo{b("a", 30, 29), inc(b("a1", 29, 20), "a"), b("b", 10, -1)}
			l[1].PreserveUntil = &future
			return l
		}(), 1, 10, 7, nil, ""},
		{"an incremental that is not closed keeps its chain", []BackupInfo{b("a", 30, 29), inc(b("a1", 29, -1), "a"), b("b", 10, -1)}, 1, 10, 7, nil, ""},
		{"count_min counts the chain", []BackupInfo{b("a", 30, 29), inc(b("a1", 29, 20), "a"), inc(b("a2", 20, 10), "a", "a1"), b("b", 10, -1)},
			2, 10, 7, nil, ""},
		{"over the count: the chain goes", []BackupInfo{b("a", 5, 4), inc(b("a1", 4, 3), "a"), b("b", 3, 2), inc(b("b1", 2, -1), "b")},
			1, 3, 30, nil, "a"},
		{"incrementals of a broken full backup do not force a purge", func() []BackupInfo {
			l := []BackupInfo{b("a", 5, 4), b("b", 4, 3), inc(b("b1", 3, 2), "b"), b("c", 2, -1)}
			l[1].BrokenAt = &now
			return l
		}(), 1, 2, 30, nil, ""},
	}
	for _, tc := range tests {
		own := map[string]bool{}
		for _, o := range tc.own {
			own[o] = true
		}
		got := Retention{CountMin: tc.min, CountMax: tc.max, AgeDaysMax: tc.ageDays}.ToDelete(tc.backups, own, now)
		if (got == nil) != (tc.want == "") || (got != nil && got.StreamID != tc.want) {
			t.Errorf("%s: got %v, want %q", tc.name, got, tc.want)
		}
	}
}

func TestPurgeCandidates(t *testing.T) {
	now := ts("2026-11-25T12:00:00Z")
	set := func(s string) mysql.GTIDSet {
		g, err := mysql.ParseMariaDBGTIDSet(s)
		if err != nil {
			panic(err)
		}
		return g
	}
	mk := func(idx int64, added string, ageMin int) LocalBinlog {
		return LocalBinlog{Index: idx, Name: "binlog", Size: 100, GTIDsAdded: set(added), ProcessedAt: now.Add(-time.Duration(ageMin) * time.Minute)}
	}
	binlogs := []LocalBinlog{mk(1, "0-1-1-10", 60), mk(2, "", 60), mk(3, "0-1-11-20", 60), mk(4, "0-1-21-30", 60), mk(5, "0-1-31-40", 1)}
	stream := StreamState{Phase: PhaseBinlog, FirstLocalIndex: 1, LastUploadedLocal: 5}
	rs := func(pos string) map[string]mysql.ReplicationState {
		return map[string]mysql.ReplicationState{"replica": set(pos).ReplicationState()}
	}
	tests := []struct {
		name     string
		streams  []StreamState
		rs       map[string]mysql.ReplicationState
		maxFiles int64
		want     int64 // last index purged (0: none)
	}{
		{"uploaded and old enough", []StreamState{stream}, nil, 0, 4},
		{"no streams: nothing", nil, nil, 0, 0},
		{"the last uploaded file is kept", []StreamState{{Phase: PhaseBinlog, FirstLocalIndex: 1, LastUploadedLocal: 3}}, nil, 0, 2},
		{"a stream still in its basebackup keeps what it may need", []StreamState{stream, {Phase: PhaseBasebackup, InitialNextIndex: 3}}, nil, 0, 2},
		{"replica behind blocks", []StreamState{stream}, rs("0-1-15"), 0, 1},
		{"an empty file waits for a later replicated one", []StreamState{stream}, rs("0-1-20"), 0, 3},
		{"replica caught up", []StreamState{stream}, rs("0-1-40"), 0, 4},
		{"unknown replica position blocks", []StreamState{stream}, map[string]mysql.ReplicationState{"r": {}}, 0, 0},
		{"capped per cycle", []StreamState{stream}, nil, 2, 2},
	}
	for _, tc := range tests {
		s := Streams{List: tc.streams}
		got, err := PurgeCandidates(binlogs, s.BackedUp, tc.rs, mysql.FlavorMariaDB, PurgeLimits{MinAge: 10 * time.Minute, MaxFiles: tc.maxFiles}, now)
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

func TestScheduleBackup(t *testing.T) {
	sch := Schedule{Hour: 3, IntervalMinutes: 60}
	now := ts("2026-11-25T12:05:00Z")
	past := ts("2026-11-25T12:00:00Z")
	stream := func(created, normalized string) StreamState {
		return StreamState{ID: "a", Reason: "scheduled", CreatedAt: ts(created), NormalizedTime: ts(normalized)}
	}
	tests := []struct {
		name    string
		s       Streams
		want    string // the requested slot ("": none)
		keepOld bool
	}{
		{"no stream at all: at once", Streams{}, "2026-11-25T12:00:00Z", false},
		{"a new slot", Streams{List: []StreamState{stream("2026-11-25T11:00:10Z", "2026-11-25T11:00:00Z")}}, "2026-11-25T12:00:00Z", false},
		{"the slot is taken", Streams{List: []StreamState{stream("2026-11-25T12:00:10Z", "2026-11-25T12:00:00Z")}}, "", false},
		{"paused", Streams{List: []StreamState{stream("2026-11-25T11:00:10Z", "2026-11-25T11:00:00Z")}, PausedUntil: &now}, "", false},
		{"within half an interval of the last scheduled one", Streams{List: []StreamState{stream("2026-11-25T11:50:00Z", "2026-11-25T11:00:00Z")}}, "", false},
		{"a request is pending", Streams{Request: &Request{Reason: "requested", NormalizedTime: past}}, "2026-11-25T12:00:00Z", true},
	}
	for _, tc := range tests {
		if tc.s.PausedUntil != nil {
			until := now.Add(time.Hour)
			tc.s.PausedUntil = &until
		}
		tc.s.ScheduleBackup(now, sch)
		switch {
		case tc.want == "" && tc.s.Request != nil:
			t.Errorf("%s: requested %+v", tc.name, tc.s.Request)
		case tc.want != "" && (tc.s.Request == nil || !tc.s.Request.NormalizedTime.Equal(ts(tc.want))):
			t.Errorf("%s: request %+v, want the slot %s", tc.name, tc.s.Request, tc.want)
		case tc.keepOld && tc.s.Request.Reason != "requested":
			t.Errorf("%s: the pending request was replaced", tc.name)
		}
	}
}

func TestStartRequested(t *testing.T) {
	now := ts("2026-11-25T12:00:00Z")
	s := Streams{}
	if st := s.StartRequested(now, "x", "site", 3, 7); st != nil {
		t.Fatalf("started without a request: %+v", st)
	}
	for i, id := range []string{"a", "b", "c"} {
		s.Request = &Request{Reason: "requested", NormalizedTime: now}
		st := s.StartRequested(now, id, "site", 3, 7)
		if i < MaxOpen && (st == nil || st.Phase != PhaseBasebackup || st.Epoch != 3 || st.InitialNextIndex != 7 || st.NextRemoteIndex != 1 || s.Request != nil) {
			t.Errorf("stream %s: %+v, request %+v", id, st, s.Request)
		}
		if i >= MaxOpen && (st != nil || s.Request == nil) {
			t.Errorf("more than %d open streams: %+v", MaxOpen, s.List)
		}
	}
}

func TestBasebackupLifecycle(t *testing.T) {
	now := ts("2026-11-25T12:00:00Z")
	s := Streams{List: []StreamState{{ID: "a", Phase: PhaseBasebackup}, {ID: "b", Phase: PhaseBinlog}}}
	due := s.BasebackupsDue(now, func(string) bool { return false })
	if len(due) != 1 || due[0].ID != "a" {
		t.Fatalf("due: %+v", due)
	}
	if due := s.BasebackupsDue(now, func(id string) bool { return id == "a" }); len(due) != 0 {
		t.Errorf("a running backup is due again: %+v", due)
	}
	waits := []time.Duration{}
	for range 3 {
		waits = append(waits, s.BasebackupFailed("a", errors.New("boom"), now))
	}
	if !reflect.DeepEqual(waits, []time.Duration{15 * time.Second, 22500 * time.Millisecond, 33750 * time.Millisecond}) {
		t.Errorf("backoff %v", waits)
	}
	if due := s.BasebackupsDue(now.Add(30*time.Second), func(string) bool { return false }); len(due) != 0 {
		t.Errorf("due before its next attempt: %+v", due)
	}
	if err := s.BasebackupStored("a", "binlog.000042"); err != nil {
		t.Fatal(err)
	}
	if a := s.Find("a"); a.Phase != PhaseCatchup || a.FirstLocalIndex != 42 || a.LastUploadedLocal != 41 || a.LastError != "" {
		t.Errorf("after the basebackup: %+v", a)
	}
	if err := s.BasebackupStored("a", "binlog"); err == nil {
		t.Error("a binlog name without an index was taken")
	}
}

func TestNextUploads(t *testing.T) {
	local := func(idx ...int64) []LocalBinlog {
		var out []LocalBinlog
		for _, i := range idx {
			out = append(out, LocalBinlog{Index: i, Name: "binlog." + string(rune('0'+i)), Size: 10})
		}
		return out
	}
	none := func(int64) bool { return false }
	tests := []struct {
		name    string
		s       Streams
		local   []LocalBinlog
		skipped func(int64) bool
		max     int
		want    []int64 // local indexes
		remote  []int64
		copy    []bool
		err     bool
	}{
		{"after the cursor, in order", Streams{List: []StreamState{{ID: "a", Phase: PhaseBinlog, LastUploadedLocal: 2, NextRemoteIndex: 5}}},
			local(1, 2, 3, 4), none, 10, []int64{3, 4}, []int64{5, 6}, []bool{false, false}, false},
		{"at most max", Streams{List: []StreamState{{ID: "a", Phase: PhaseBinlog, LastUploadedLocal: 0, NextRemoteIndex: 1}}},
			local(1, 2, 3), none, 2, []int64{1, 2}, []int64{1, 2}, []bool{false, false}, false},
		{"a hole", Streams{List: []StreamState{{ID: "a", Phase: PhaseBinlog, LastUploadedLocal: 2, NextRemoteIndex: 3}}},
			local(5, 6), none, 10, nil, nil, nil, true},
		{"a skipped hole", Streams{List: []StreamState{{ID: "a", Phase: PhaseBinlog, LastUploadedLocal: 2, NextRemoteIndex: 3}}},
			local(5, 6), func(i int64) bool { return i == 3 || i == 4 }, 10, []int64{5, 6}, []int64{3, 4}, []bool{false, false}, false},
		{"not uploading yet", Streams{List: []StreamState{{ID: "a", Phase: PhaseBasebackup}}}, local(1), none, 10, nil, nil, nil, false},
		{"copied from the other open stream", Streams{List: []StreamState{
			{ID: "a", Site: "s", Phase: PhaseCatchup, FirstLocalIndex: 3, LastUploadedLocal: 2, NextRemoteIndex: 1},
			{ID: "old", Site: "s", Phase: PhaseBinlog, FirstLocalIndex: 1, LastUploadedLocal: 3, NextRemoteIndex: 4}}},
			local(3, 4), none, 10, []int64{3, 4}, []int64{1, 2}, []bool{true, false}, false},
	}
	for _, tc := range tests {
		got, err := tc.s.NextUploads("a", tc.local, tc.skipped, 9, tc.max)
		if (err != nil) != tc.err {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		var idx, remote []int64
		var copied []bool
		for _, u := range got {
			idx, remote, copied = append(idx, u.Binlog.Index), append(remote, u.Ref.RemoteIndex), append(copied, u.CopyFrom != nil)
			if u.Ref.StreamID != "a" || u.Ref.ServerID != 9 {
				t.Errorf("%s: ref %+v", tc.name, u.Ref)
			}
		}
		if !reflect.DeepEqual(idx, tc.want) || !reflect.DeepEqual(remote, tc.remote) || !reflect.DeepEqual(copied, tc.copy) {
			t.Errorf("%s: %v at %v copied %v, want %v at %v copied %v", tc.name, idx, remote, copied, tc.want, tc.remote, tc.copy)
		}
	}
	// The copy names the other stream's object.
	s := Streams{List: []StreamState{{ID: "a", Site: "s", Phase: PhaseCatchup, FirstLocalIndex: 3, LastUploadedLocal: 2, NextRemoteIndex: 1},
		{ID: "old", Site: "s", Epoch: 2, Phase: PhaseBinlog, FirstLocalIndex: 1, LastUploadedLocal: 3, NextRemoteIndex: 4}}}
	got, _ := s.NextUploads("a", local(3), none, 9, 10)
	if want := (storage.BinlogRef{StreamID: "old", RemoteIndex: 3, Epoch: 2, ServerID: 9}); len(got) != 1 || *got[0].CopyFrom != want {
		t.Errorf("copy source %+v, want %+v", got, want)
	}
}

func TestCompleteCloseAndRotation(t *testing.T) {
	now := ts("2026-11-25T12:00:00Z")
	s := Streams{List: []StreamState{
		{ID: "old", Phase: PhaseBinlog, CreatedAt: now.Add(-2 * time.Hour), LastUploadedLocal: 9},
		{ID: "new", Phase: PhaseCatchup, CreatedAt: now.Add(-time.Hour), LastUploadedLocal: 8},
	}, LastRotation: now.Add(-time.Minute)}
	if c := s.Completable(10); len(c) != 0 {
		t.Errorf("completable while behind: %+v", c)
	}
	if c := s.Closable(); len(c) != 0 {
		t.Errorf("the only completed stream closable: %+v", c)
	}
	if !s.RotationDue(now, 30*time.Second) || s.RotationDue(now, 2*time.Minute) {
		t.Error("rotation due")
	}
	if s.UploadedThrough(9) || !s.UploadedThrough(8) {
		t.Error("uploaded through")
	}
	minC, maxC, minB, maxB, ok := s.Pending([]LocalBinlog{{Index: 9, Size: 5}, {Index: 10, Size: 7}})
	if !ok || minC != 1 || maxC != 2 || minB != 7 || maxB != 12 {
		t.Errorf("pending %d %d %d %d %v", minC, maxC, minB, maxB, ok)
	}
	s.Uploaded("new", 9, 4, now)
	c := s.Completable(10)
	if len(c) != 1 || c[0].ID != "new" {
		t.Fatalf("completable: %+v", c)
	}
	s.Completed("new", now)
	closing := s.Closable()
	if len(closing) != 1 || closing[0].ID != "old" {
		t.Fatalf("closable: %+v", closing)
	}
	s.Closed("old")
	if len(s.List) != 1 || s.List[0].ID != "new" || s.List[0].NextRemoteIndex != 5 || s.List[0].CompletedAt == nil {
		t.Errorf("after closing: %+v", s.List)
	}
	empty := Streams{}
	if empty.RotationDue(now, time.Second) || empty.UploadedThrough(1) {
		t.Error("no stream: nothing due, nothing uploaded")
	}
}

func TestContinue(t *testing.T) {
	started := ts("2026-11-25T03:10:00Z")
	done := ts("2026-11-25T03:20:00Z")
	b := BackupInfo{StreamID: "s", Site: "x", CompletedAt: &done, Basebackup: InfoOf(&storage.BasebackupManifest{StartedAt: started})}
	st := Continue(b, Schedule{Hour: 3, IntervalMinutes: 1440}, 4, 17, 30)
	want := StreamState{ID: "s", Site: "x", Phase: PhaseBinlog, CreatedAt: started, Reason: "scheduled", Epoch: 4,
		NormalizedTime: ts("2026-11-25T03:00:00Z"), InitialNextIndex: 30, FirstLocalIndex: 30, LastUploadedLocal: 29, NextRemoteIndex: 17, CompletedAt: &done}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("%+v\nwant %+v", st, want)
	}
}

func TestContinueFrom(t *testing.T) {
	gtid := func(s string) mysql.GTIDSet {
		t.Helper()
		set, err := mysql.ParseGTIDSet(mysql.FlavorMariaDB, s)
		if err != nil {
			t.Fatal(err)
		}
		return set
	}
	local := []LocalBinlog{ // unsorted, as the scanner may return them
		{Index: 7, GTIDsAdded: gtid("0-1-21-30")},
		{Index: 5, GTIDsAdded: gtid("0-1-1-10")},
		{Index: 6, GTIDsAdded: gtid("0-1-11-20")},
		{Index: 8, GTIDsAdded: gtid("")}, // no transactions
	}
	for _, tc := range []struct {
		stored string
		want   int64
	}{
		{"", 5},
		{"0-1-1-10", 6},
		{"0-1-1-25", 7}, // a binlog partly in storage is uploaded again
		{"0-1-1-30", 9}, // everything stored: the next binlog
	} {
		if got := ContinueFrom(local, gtid(tc.stored), 9); got != tc.want {
			t.Errorf("stored %q: continue from %d, want %d", tc.stored, got, tc.want)
		}
	}
}
