package storage

import (
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/mysql"
)

func TestStreamIDsSortByTime(t *testing.T) {
	base := time.Date(2026, 11, 25, 10, 30, 0, 0, time.UTC)
	var ids []string
	for i := 0; i < 50; i++ {
		ids = append(ids, NewStreamID(base.Add(time.Duration(i*37)*time.Millisecond+time.Duration(i)*time.Hour*13)))
	}
	shuffled := slices.Clone(ids)
	sort.Sort(sort.Reverse(sort.StringSlice(shuffled)))
	sort.Strings(shuffled)
	if !slices.Equal(ids, shuffled) {
		t.Fatal("stream ids do not sort by creation time")
	}
	got, err := ParseStreamID(ids[3])
	if err != nil || !got.Equal(base.Add(3*37*time.Millisecond+39*time.Hour)) {
		t.Errorf("ParseStreamID = %v, %v", got, err)
	}
	for _, bad := range []string{"", "x", "20261125T103000Z_9f2c01ab", "20261125T103000.123Z_9F2C01AB", "20261125T103000.123Z_9f2c01ab/x"} {
		if _, err := ParseStreamID(bad); err == nil {
			t.Errorf("ParseStreamID(%q): want an error", bad)
		}
	}
}

func TestKeys(t *testing.T) {
	sid := "20261125T103000.123Z_9f2c01ab"
	ref := BinlogRef{StreamID: sid, RemoteIndex: 42, Epoch: 3, ServerID: 101}
	tests := []struct{ got, want string }{
		{BasebackupManifestKey(sid), "streams/" + sid + "/basebackup.json"},
		{BasebackupPartKey(sid, 7), "streams/" + sid + "/basebackup/00007"},
		{ref.DataKey(), "streams/" + sid + "/binlogs/0000000042_e3_s101"},
		{ref.ManifestKey(), "streams/" + sid + "/binlogs/0000000042_e3_s101.json"},
		{PromotionKey(sid, 4), "streams/" + sid + "/promotions/e4.json"},
		{MarkerKey(sid, MarkerClosed), "streams/" + sid + "/closed.json"},
		{StreamOfKey(ref.DataKey()), sid},
		{StreamOfKey("other/x"), ""},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	for _, key := range []string{ref.DataKey(), ref.ManifestKey()} {
		back, manifest, err := ParseBinlogKey(key)
		if err != nil || back != ref || manifest != strings.HasSuffix(key, ".json") {
			t.Errorf("ParseBinlogKey(%q) = %+v %v %v", key, back, manifest, err)
		}
	}
	for _, bad := range []string{"streams/x/binlogs/0000000042_e3_s101", "streams/" + sid + "/binlogs/42_e3_s101",
		"streams/" + sid + "/binlogs/0000000000_e3_s101", "streams/" + sid + "/binlogs/0000000042_e3_s99999999999"} {
		if _, _, err := ParseBinlogKey(bad); err == nil {
			t.Errorf("ParseBinlogKey(%q): want an error", bad)
		}
	}
	if s, e, err := ParsePromotionKey(PromotionKey(sid, 9)); err != nil || s != sid || e != 9 {
		t.Errorf("ParsePromotionKey = %q %d %v", s, e, err)
	}
}

func TestManifestRoundTripAndVersions(t *testing.T) {
	before, _ := mysql.ParseMariaDBGTIDSet("0-1-100")
	added, _ := mysql.ParseMariaDBGTIDSet("0-1-101-150")
	now := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	m := &BinlogManifest{Version: ManifestVersion, StreamID: "20261125T103000.123Z_9f2c01ab", RemoteIndex: 5, Epoch: 1, ServerID: 101,
		LocalName: "binlog.000007", Flavor: mysql.FlavorMariaDB, GTIDsBefore: before, GTIDsAdded: added, FirstEventAt: &now,
		Size: 1000, EncodedSize: 400, SHA256: "ab", Codec: Codec{Compression: CompressionZstd}, UploadedAt: now}
	b, err := MarshalManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	var back BinlogManifest
	if err := UnmarshalManifest("k", b, &back); err != nil {
		t.Fatal(err)
	}
	if !back.GTIDsAdded.Equal(added) || back.GTIDsAdded.String() != "0-1-101-150" || back.Ref() != m.Ref() || !back.FirstEventAt.Equal(now) {
		t.Errorf("round trip: %+v", back)
	}
	tests := []struct {
		name, body string
		corrupt    bool
		want       string
	}{
		{"future version", `{"version": 2}`, false, "version 2 is not supported"},
		{"no version", `{"stream_id": "x"}`, true, "no version"},
		{"not JSON", `{"version": 1,`, true, "not JSON"},
		{"incomplete", `{"version": 1, "stream_id": "x"}`, true, "incomplete"},
		{"bad GTID set", `{"version": 1, "stream_id": "x", "remote_index": 1, "sha256": "a", "gtids_added": {"flavor": "mysql", "set": "junk"}}`, true, "GTID set"},
	}
	for _, tc := range tests {
		var m BinlogManifest
		err := UnmarshalManifest("streams/x/binlogs/1.json", []byte(tc.body), &m)
		if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, ErrCorrupt) != tc.corrupt || !strings.Contains(err.Error(), "streams/x/binlogs/1.json") {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := MarshalManifest(&PromotionRecord{Version: 7}); err == nil {
		t.Error("marshal of a wrong version: want an error")
	}
}
