package mysql

import (
	"fmt"
	"strings"
)

// Flavor is the kind of server: MySQL 8 (with Percona XtraBackup) or MariaDB
// (with mariabackup).
type Flavor string

// The flavors myhoard supports. FlavorAuto is only a configuration value: it
// asks the daemon to detect the flavor from the server at start.
const (
	FlavorMySQL   Flavor = "mysql"
	FlavorMariaDB Flavor = "mariadb"
	FlavorAuto    Flavor = "auto"
)

// ParseFlavor accepts "mysql", "mariadb" or "auto" (any case).
func ParseFlavor(s string) (Flavor, error) {
	switch f := Flavor(strings.ToLower(strings.TrimSpace(s))); f {
	case FlavorMySQL, FlavorMariaDB, FlavorAuto:
		return f, nil
	}
	return "", fmt.Errorf("unknown flavor %q: want mysql, mariadb or auto", s)
}

// FlavorFromVersion tells the flavor from the result of SELECT VERSION(), for
// example "10.11.19-MariaDB-0+deb12u1-log" or "8.0.36". Versions older than
// MySQL 8.0 or MariaDB 10.6 are refused.
func FlavorFromVersion(version string) (Flavor, error) {
	v := strings.TrimSpace(version)
	major, minor, ok := leadingVersion(v)
	if !ok {
		return "", fmt.Errorf("cannot read server version %q", version)
	}
	if strings.Contains(strings.ToLower(v), "mariadb") {
		// MariaDB 5.5-10.x style versions sometimes carry a "5.5.5-" prefix
		// from the replication protocol; strip it.
		if major == 5 && minor == 5 && strings.HasPrefix(v, "5.5.5-") {
			return FlavorFromVersion(strings.TrimPrefix(v, "5.5.5-"))
		}
		if major < 10 || (major == 10 && minor < 6) {
			return "", fmt.Errorf("MariaDB %d.%d is not supported: myhoard needs MariaDB 10.6 or later", major, minor)
		}
		return FlavorMariaDB, nil
	}
	if major < 8 {
		return "", fmt.Errorf("MySQL %d.%d is not supported: myhoard needs MySQL 8.0 or later", major, minor)
	}
	return FlavorMySQL, nil
}

func leadingVersion(v string) (major, minor int, ok bool) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	var err error
	if major, err = atoiStrict(parts[0]); err != nil {
		return 0, 0, false
	}
	m := parts[1]
	for i, c := range m {
		if c < '0' || c > '9' {
			m = m[:i]
			break
		}
	}
	if minor, err = atoiStrict(m); err != nil {
		return 0, 0, false
	}
	return major, minor, true
}

func atoiStrict(s string) (int, error) {
	if s == "" || len(s) > 9 {
		return 0, fmt.Errorf("not a small number: %q", s)
	}
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not a number: %q", s)
		}
		n = n*10 + int(c-'0')
	}
	return n, nil
}
