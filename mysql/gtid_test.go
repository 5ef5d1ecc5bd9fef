package mysql

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

const (
	uuidA = "206375d9-ec5a-46b7-bb26-b621812e7471"
	uuidB = "131a1f4d-fb7a-44fe-94b9-5508445aa126"
)

func TestParseMySQLGTIDSet(t *testing.T) {
	tests := []struct {
		name, in, want string
		count          uint64
	}{
		{"empty", "", "", 0},
		{"single", uuidA + ":7", uuidA + ":7", 1},
		{"range", uuidA + ":1-5", uuidA + ":1-5", 5},
		{"merge adjacent", uuidA + ":1-5:6-9:11", uuidA + ":1-9:11", 10},
		{"unsorted and overlapping", uuidA + ":7-9:1-3:2-8", uuidA + ":1-9", 9},
		{"two sources sorted", uuidA + ":1-100," + uuidB + ":1-5858", uuidB + ":1-5858," + uuidA + ":1-100", 5958},
		{"uppercase and newlines", strings.ToUpper(uuidA) + ":1-3,\n" + uuidB + ":4", uuidB + ":4," + uuidA + ":1-3", 4},
		{"uuid without dashes", strings.ReplaceAll(uuidA, "-", "") + ":1", uuidA + ":1", 1},
		{"same uuid twice", uuidA + ":1-3," + uuidA + ":4-6", uuidA + ":1-6", 6},
		{"tagged (8.3+)", uuidA + ":1-5:TagB:1-3:taga:4", uuidA + ":1-5:taga:4:tagb:1-3", 9},
		{"tag first", uuidA + ":x_1:5", uuidA + ":x_1:5", 1},
		{"recorded gtid_executed", "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23,\n4f4a5f0e-8c8b-11ee-a4b1-0242ac120002:1-148",
			"3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23,4f4a5f0e-8c8b-11ee-a4b1-0242ac120002:1-148", 171},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseMySQLGTIDSet(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if s.Count() != tc.count {
				t.Errorf("Count() = %d, want %d", s.Count(), tc.count)
			}
		})
	}
}

func TestParseMySQLGTIDSetErrors(t *testing.T) {
	for _, in := range []string{
		"nonsense",
		uuidA,
		uuidA + ":",
		uuidA + ":0",
		uuidA + ":5-3",
		uuidA + ":1-x",
		uuidA + ":tag",
		uuidA + ":1:tag",
		uuidA + ":1:9tag:3",
		uuidA + ":1:" + strings.Repeat("t", 33) + ":1",
		uuidA + ":9223372036854775808",
		"206375d9-ec5a-46b7-bb26-b621812e747g:1",
		"206375d9xec5a-46b7-bb26-b621812e7471:1",
	} {
		if s, err := ParseMySQLGTIDSet(in); err == nil {
			t.Errorf("ParseMySQLGTIDSet(%q) = %q, want an error", in, s)
		} else if !strings.Contains(err.Error(), "GTID set") {
			t.Errorf("error %q does not say what was parsed", err)
		}
	}
}

func TestParseMariaDBGTIDSet(t *testing.T) {
	tests := []struct {
		name, in, want string
		count          uint64
	}{
		{"empty", "", "", 0},
		{"position", "0-1-431", "0-1-431", 431},
		{"empty position", "0-0-0", "", 0},
		{"several domains sorted numerically", "10-3-5,2-1-7,0-1-9", "0-1-9,2-1-7,10-3-5", 21},
		{"binlog state, two servers in a domain", "0-1-100,0-2-200", "0-2-200", 200},
		{"binlog state, newest server first", "0-2-200,0-1-100", "0-2-200", 200},
		{"interval form", "0-1-413-417", "0-1-413-417", 5},
		{"interval form from 1 is a position", "0-1-1-5", "0-1-5", 5},
		{"spaces", " 0-1-5 ,\n 1-1-2 ", "0-1-5,1-1-2", 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseMariaDBGTIDSet(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
			if s.Count() != tc.count {
				t.Errorf("Count() = %d, want %d", s.Count(), tc.count)
			}
		})
	}
	for _, in := range []string{"0-1", "0-1-2-3-4", "a-1-2", "0--1-2", "0-1-5-3", "0-1-0-3", "4294967296-1-1", "0-1-+5", "0-1-9223372036854775808"} {
		if s, err := ParseMariaDBGTIDSet(in); err == nil {
			t.Errorf("ParseMariaDBGTIDSet(%q) = %q, want an error", in, s)
		}
	}
}

func TestMariaDBAlgebraAcrossFailover(t *testing.T) {
	// Domain 0: 1..100 written by server 1, then 101..200 by server 2 after a
	// failover. A replica at 0-2-200 has executed a file that added 0-1-50..60.
	replica := mustParse(t, FlavorMariaDB, "0-2-200")
	file := NewGTIDSet(FlavorMariaDB)
	for n := uint64(50); n <= 60; n++ {
		file = file.WithGTID(GTID{Source: "0", ServerID: 1, Seq: n})
	}
	if file.String() != "0-1-50-60" {
		t.Fatalf("file set = %q", file)
	}
	if !file.IsSubsetOf(replica) {
		t.Errorf("%s should be a subset of %s", file, replica)
	}
	behind := mustParse(t, FlavorMariaDB, "0-2-200").Subtract(mustParse(t, FlavorMariaDB, "0-1-150"))
	if behind.Count() != 50 || behind.String() != "0-2-151-200" {
		t.Errorf("behind = %q (%d)", behind, behind.Count())
	}
	last, ok := replica.Last("0")
	if !ok || last.String() != "0-2-200" {
		t.Errorf("Last = %v %v", last, ok)
	}
}

func TestReplicationStateRoundTrip(t *testing.T) {
	my := mustParse(t, FlavorMySQL, uuidA+":1-100,"+uuidB+":1-5858:6000:tg:3")
	rs := my.ReplicationState()
	want := ReplicationState{uuidA: {{1, 100}}, uuidB: {{1, 5858}, {6000, 6000}}, uuidB + ":tg": {{3, 3}}}
	if fmt.Sprint(rs) != fmt.Sprint(want) {
		t.Errorf("ReplicationState = %v, want %v", rs, want)
	}
	back, err := GTIDSetFromReplicationState(FlavorMySQL, rs)
	if err != nil || !back.Equal(my) || back.String() != my.String() {
		t.Errorf("round trip = %q, %v; want %q", back, err, my)
	}

	ma := mustParse(t, FlavorMariaDB, "0-2-200,1-7-5")
	back, err = GTIDSetFromReplicationState(FlavorMariaDB, ma.ReplicationState())
	if err != nil || back.String() != "0-2-200,1-7-5" {
		t.Errorf("MariaDB round trip = %q, %v", back, err)
	}
	bare, err := GTIDSetFromReplicationState(FlavorMariaDB, ReplicationState{"0": {{1, 9}}})
	if err != nil || bare.String() != "0-0-9" {
		t.Errorf("bare domain key = %q, %v", bare, err)
	}

	for _, bad := range []struct {
		f  Flavor
		rs ReplicationState
	}{
		{FlavorMySQL, ReplicationState{"not-a-uuid": {{1, 2}}}},
		{FlavorMySQL, ReplicationState{uuidA: {{0, 2}}}},
		{FlavorMySQL, ReplicationState{uuidA: {{5, 2}}}},
		{FlavorMySQL, ReplicationState{uuidA + ":1bad": {{1, 2}}}},
		{FlavorMariaDB, ReplicationState{"x": {{1, 2}}}},
		{FlavorMariaDB, ReplicationState{"0-y": {{1, 2}}}},
		{"oracle", ReplicationState{"0": {{1, 2}}}},
	} {
		if _, err := GTIDSetFromReplicationState(bad.f, bad.rs); err == nil {
			t.Errorf("GTIDSetFromReplicationState(%s, %v): want an error", bad.f, bad.rs)
		}
	}
}

func TestGTIDSetJSON(t *testing.T) {
	for _, s := range []GTIDSet{
		mustParse(t, FlavorMySQL, uuidA+":1-5:9"),
		mustParse(t, FlavorMariaDB, "0-1-5,3-2-7-9"),
		NewGTIDSet(FlavorMariaDB),
		{}, // the zero value
	} {
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var back GTIDSet
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		if back.String() != s.String() || back.Flavor() != s.Flavor() {
			t.Errorf("JSON round trip of %s gave %q", b, back)
		}
	}
	var s GTIDSet
	if err := json.Unmarshal([]byte(`{"flavor":"mysql","set":"junk"}`), &s); err == nil {
		t.Error("want an error for a bad set in JSON")
	}
}

func mustParse(t *testing.T, f Flavor, s string) GTIDSet {
	t.Helper()
	set, err := ParseGTIDSet(f, s)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// model is the obvious representation of a small GTID set: a set of
// (source, number) pairs. The algebra is checked against it.
type model map[[2]uint64]bool

var modelUUIDs = []string{uuidA, uuidB, uuidA + ":tg"}

func genSet(t *rapid.T, f Flavor, label string) (GTIDSet, model) {
	m := model{}
	s := NewGTIDSet(f)
	n := rapid.IntRange(0, 12).Draw(t, label+"_n")
	for i := 0; i < n; i++ {
		src := rapid.IntRange(0, 2).Draw(t, label+"_src")
		a := rapid.Uint64Range(1, 40).Draw(t, label+"_a")
		b := a + rapid.Uint64Range(0, 6).Draw(t, label+"_len")
		for x := a; x <= b; x++ {
			m[[2]uint64{uint64(src), x}] = true
			s = s.WithGTID(GTID{Source: sourceKey(f, src), ServerID: uint32(src + 1), Seq: x})
		}
	}
	return s, m
}

func sourceKey(f Flavor, i int) string {
	if f == FlavorMariaDB {
		return fmt.Sprint(i * 5)
	}
	return modelUUIDs[i]
}

func checkModel(t *rapid.T, f Flavor, what string, s GTIDSet, m model) {
	count := uint64(0)
	for src := 0; src < 3; src++ {
		for x := uint64(1); x <= 50; x++ {
			in := s.Contains(GTID{Source: sourceKey(f, src), Seq: x})
			if in != m[[2]uint64{uint64(src), x}] {
				t.Fatalf("%s %q: Contains(%d,%d) = %v, model says %v", what, s, src, x, in, !in)
			}
			if in {
				count++
			}
		}
	}
	if s.Count() != count {
		t.Fatalf("%s %q: Count() = %d, model says %d", what, s, s.Count(), count)
	}
	back, err := ParseGTIDSet(f, s.String())
	if err != nil || !back.Equal(s) || back.String() != s.String() {
		t.Fatalf("%s %q: text round trip gave %q, %v", what, s, back, err)
	}
	rs, err := GTIDSetFromReplicationState(f, s.ReplicationState())
	if err != nil || !rs.Equal(s) {
		t.Fatalf("%s %q: replication state round trip gave %q, %v", what, s, rs, err)
	}
}

func TestGTIDAlgebraProperties(t *testing.T) {
	for _, f := range []Flavor{FlavorMySQL, FlavorMariaDB} {
		t.Run(string(f), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				a, ma := genSet(t, f, "a")
				b, mb := genSet(t, f, "b")
				checkModel(t, f, "a", a, ma)

				union, diff, inter := model{}, model{}, model{}
				subset := true
				for k := range ma {
					union[k] = true
					if mb[k] {
						inter[k] = true
					} else {
						diff[k] = true
						subset = false
					}
				}
				for k := range mb {
					union[k] = true
				}
				checkModel(t, f, "a∪b", a.Union(b), union)
				checkModel(t, f, "a−b", a.Subtract(b), diff)
				checkModel(t, f, "a∩b", a.Intersect(b), inter)
				if a.IsSubsetOf(b) != subset {
					t.Fatalf("%q ⊆ %q = %v, model says %v", a, b, a.IsSubsetOf(b), subset)
				}
				if !a.Union(b).Equal(b.Union(a)) {
					t.Fatalf("union not commutative for %q, %q", a, b)
				}
				if !a.IsSubsetOf(a.Union(b)) || !a.Subtract(b).IsSubsetOf(a) {
					t.Fatalf("subset laws fail for %q, %q", a, b)
				}
				if a.Equal(b) != (a.IsSubsetOf(b) && b.IsSubsetOf(a)) {
					t.Fatalf("Equal disagrees with mutual subset for %q, %q", a, b)
				}
			})
		})
	}
}

func FuzzParseMySQLGTIDSet(f *testing.F) {
	for _, s := range []string{"", uuidA + ":1-5:7", uuidA + ":1," + uuidB + ":tag:2-3", "x:1", uuidA + ":0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		fuzzRoundTrip(t, FlavorMySQL, in)
	})
}

func FuzzParseMariaDBGTIDSet(f *testing.F) {
	for _, s := range []string{"", "0-1-431", "0-1-5,1-2-3-9", "0-0-0", "1-2", "0-1-2-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		fuzzRoundTrip(t, FlavorMariaDB, in)
	})
}

func fuzzRoundTrip(t *testing.T, f Flavor, in string) {
	s, err := ParseGTIDSet(f, in)
	if err != nil {
		return
	}
	text := s.String()
	back, err := ParseGTIDSet(f, text)
	if err != nil {
		t.Fatalf("canonical form %q of %q does not parse: %v", text, in, err)
	}
	if !back.Equal(s) || back.String() != text {
		t.Fatalf("round trip of %q: %q then %q", in, text, back)
	}
}
