package mysql

import "testing"

// TestOptimizeApplies: recorded SELECT VERSION() outputs.
func TestOptimizeApplies(t *testing.T) {
	for _, tc := range []struct {
		version string
		want    bool
	}{
		{"8.0.28", false},
		{"8.0.29", true},
		{"8.0.36-28", true},
		{"8.0.35-27-log", true},
		{"8.4.0", true},
		{"9.1.0-commercial", true},
		{"5.7.44-log", false},
		{"10.11.19-MariaDB-0+deb12u1-log", false},
		{"11.4.2-MariaDB", false},
		{"garbage", false},
	} {
		if got := OptimizeApplies(tc.version); got != tc.want {
			t.Errorf("OptimizeApplies(%q) = %v, want %v", tc.version, got, tc.want)
		}
	}
}

// TestDecodeTableName: InnoDB names as INFORMATION_SCHEMA.INNODB_TABLES
// shows them.
func TestDecodeTableName(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		ok         bool
	}{
		{"test/t1", "`test`.`t1`", true},
		{"my@002ddb/orders@0020old", "`my-db`.`orders old`", true},
		{"db/t@00e4", "`db`.`tä`", true},
		{"db/bad@0060name", "", false}, // a backtick
		{"db/bad@005cname", "", false}, // a backslash
		{"db/@0a@0bx", "", false},      // an encoding other than @XXXX
		{"noslash", "", false},
		{"/t", "", false},
	} {
		got, ok := DecodeTableName(tc.name)
		if got != tc.want || ok != tc.ok {
			t.Errorf("DecodeTableName(%q) = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzDecodeTableName(f *testing.F) {
	for _, s := range []string{"test/t1", "my@002ddb/x", "db/@0a", "a/b/c", "@@@@/@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		q, ok := DecodeTableName(name)
		if ok && (len(q) < 7 || q[0] != '`') {
			t.Errorf("DecodeTableName(%q) = %q", name, q)
		}
	})
}
