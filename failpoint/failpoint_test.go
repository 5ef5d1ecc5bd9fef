package failpoint

import (
	"testing"
)

func TestFromEnv(t *testing.T) {
	for _, tc := range []struct {
		env  string
		want []string
	}{
		{"", nil},
		{"promote-drain", []string{"promote-drain"}},
		{" a , b,,c ", []string{"a", "b", "c"}},
	} {
		t.Setenv(EnvKillAt, tc.env)
		s := FromEnv()
		if len(s) != len(tc.want) {
			t.Errorf("%q: %v, want %v", tc.env, s, tc.want)
		}
		for _, w := range tc.want {
			if !s[w] {
				t.Errorf("%q: %v lacks %q", tc.env, s, w)
			}
		}
	}
	// A point not in the set does nothing (the process survives).
	Set{"a": true}.Hit("b", nil)
}
