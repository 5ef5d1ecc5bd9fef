package cluster

import (
	"testing"

	"github.com/myhoard/myhoard/mysql"
)

func TestViewReplicationStates(t *testing.T) {
	v := View{
		Members:  map[string]Member{"n1": {}, "n2": {}, "n3": {}},
		GTIDs:    map[string]string{"n1": "0-1-10", "n2": "0-1-7"}, // n3 has not published yet
		External: map[string]string{"ext": "0-1-5", "bad": "not a gtid"},
	}
	got := v.ReplicationStates(mysql.FlavorMariaDB, "n1")
	for _, tc := range []struct {
		name     string
		present  bool
		wantText string
	}{
		{"n1", false, ""},     // itself
		{"n2", true, "0-1-7"}, // a member
		{"n3", true, ""},      // unknown position: an empty state, which blocks purging
		{"ext", true, "0-1-5"},
		{"bad", false, ""}, // unparsable reports are dropped
	} {
		rs, ok := got[tc.name]
		if ok != tc.present {
			t.Errorf("%s present %v, want %v", tc.name, ok, tc.present)
			continue
		}
		if !ok {
			continue
		}
		set, err := mysql.GTIDSetFromReplicationState(mysql.FlavorMariaDB, rs)
		if err != nil || set.String() != tc.wantText {
			t.Errorf("%s: %q (%v), want %q", tc.name, set.String(), err, tc.wantText)
		}
	}
}
