package statefile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type state struct {
	Mode  string `json:"mode"`
	Index int    `json:"index"`
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.json")
	var s state
	if found, err := Load(path, &s); found || err != nil {
		t.Fatalf("missing file: %v %v", found, err)
	}
	for i := 0; i < 3; i++ {
		if err := Save(path, state{Mode: "active", Index: i}); err != nil {
			t.Fatal(err)
		}
	}
	if found, err := Load(path, &s); !found || err != nil || s.Index != 2 {
		t.Fatalf("load: %+v %v %v", s, found, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left: %v", entries)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", st.Mode())
	}
	if err := os.WriteFile(path, []byte("{broken"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, &s); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt state: %v", err)
	}
	if err := Save(filepath.Join(dir, "nodir", "x.json"), s); err == nil {
		t.Error("save into a missing directory: want an error")
	}
}
