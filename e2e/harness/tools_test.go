package harness

import (
	"errors"
	"strings"
	"testing"
)

func TestMissingToolsNamePackages(t *testing.T) {
	none := func(string) (string, error) { return "", errors.New("not found") }
	_, err := findTools(none, []string{t.TempDir()})
	if err == nil {
		t.Fatal("want an error when no tool is installed")
	}
	for _, want := range []string{"mariadbd (Debian package mariadb-server)", "mariabackup (Debian package mariadb-backup)",
		"mariadb (Debian package mariadb-client)", "apt-get install -y mariadb-server mariadb-backup mariadb-client"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
