package mysql

import (
	"context"
	"testing"

	"github.com/myhoard/myhoard/e2e/harness"
)

func TestFlavorFromVersion(t *testing.T) {
	tests := []struct {
		version string
		want    Flavor
		wantErr bool
	}{
		{"10.11.19-MariaDB-0+deb12u1-log", FlavorMariaDB, false},
		{"11.4.2-MariaDB", FlavorMariaDB, false},
		{"5.5.5-10.11.6-MariaDB", FlavorMariaDB, false},
		{"10.5.2-MariaDB", "", true},
		{"8.0.36", FlavorMySQL, false},
		{"8.4.0-commercial", FlavorMySQL, false},
		{"9.1.0", FlavorMySQL, false},
		{"8.0.35-27-Percona", FlavorMySQL, false},
		{"5.7.44-log", "", true},
		{"garbage", "", true},
		{"", "", true},
	}
	for _, tc := range tests {
		got, err := FlavorFromVersion(tc.version)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("FlavorFromVersion(%q) = %q, %v; want %q (error %v)", tc.version, got, err, tc.want, tc.wantErr)
		}
	}
	for _, s := range []string{"MySQL", " mariadb ", "AUTO"} {
		if _, err := ParseFlavor(s); err != nil {
			t.Errorf("ParseFlavor(%q): %v", s, err)
		}
	}
	if _, err := ParseFlavor("oracle"); err == nil {
		t.Error("ParseFlavor(oracle): want an error")
	}
}

func TestDetectFlavorOnMariaDB(t *testing.T) {
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	for _, p := range []ConnParams{
		{Socket: in.Socket, User: "root"},
		{Host: "127.0.0.1", Port: in.Port, User: "root"},
	} {
		db, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		f, version, err := DetectFlavor(context.Background(), db)
		db.Close()
		if err != nil || f != FlavorMariaDB {
			t.Errorf("%s: flavor %q (%s), %v", p.Where(), f, version, err)
		}
	}
	db, _ := Open(ConnParams{Host: "127.0.0.1", Port: in.Port, User: "nobody", Password: "wrong"})
	defer db.Close()
	if _, _, err := DetectFlavor(context.Background(), db); err == nil {
		t.Error("wrong user: want an error")
	}
}
