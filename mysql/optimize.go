package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// optimize_tables_before_backup: MySQL 8.0.29 added INSTANT ADD/DROP
// COLUMN with row versions, which XtraBackup before 8.0.32 refuses to
// back up. OPTIMIZE TABLE rebuilds such a table without row versions.

// OptimizeApplies reports whether optimize_tables_before_backup acts on a
// server of this version (SELECT VERSION()): MySQL 8.0.29 or later.
func OptimizeApplies(version string) bool {
	v := strings.TrimSpace(version)
	if strings.Contains(strings.ToLower(v), "mariadb") {
		return false
	}
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 3 {
		return false
	}
	major, err1 := atoiStrict(parts[0])
	minor, err2 := atoiStrict(parts[1])
	patch, err3 := atoiStrict(parts[2][:digits(parts[2])])
	if err1 != nil || err2 != nil || err3 != nil {
		return false
	}
	return major > 8 || (major == 8 && (minor > 0 || patch >= 29))
}

func digits(s string) int {
	for i, c := range s {
		if c < '0' || c > '9' {
			return i
		}
	}
	return len(s)
}

// RowVersionTablesQuery lists the tables with INSTANT row versions by
// their InnoDB names ("db/table", filename-encoded).
const RowVersionTablesQuery = "SELECT NAME FROM INFORMATION_SCHEMA.INNODB_TABLES WHERE TOTAL_ROW_VERSIONS > 0"

var hexCode = regexp.MustCompile(`@([0-9a-fA-F]{4})`)

// DecodeTableName turns an InnoDB table name ("db/table", with MySQL's
// filename encoding: "@XXXX" is the code point XXXX) into a quoted
// `db`.`table`. ok is false for names it must not or cannot quote: a
// backtick or backslash in them (as the original skips), or an encoding
// other than @XXXX (the "@<digit><letter>" forms of accented letters).
func DecodeTableName(name string) (quoted string, ok bool) {
	db, table, found := strings.Cut(name, "/")
	if !found || db == "" || table == "" {
		return "", false
	}
	var out []string
	for _, part := range []string{db, table} {
		dec := hexCode.ReplaceAllStringFunc(part, func(m string) string {
			n, _ := strconv.ParseUint(m[1:], 16, 32)
			return string(rune(n))
		})
		if strings.ContainsAny(dec, "`\\") || strings.Contains(hexCode.ReplaceAllString(part, ""), "@") {
			return "", false
		}
		out = append(out, "`"+dec+"`")
	}
	return out[0] + "." + out[1], true
}

// OptimizeRowVersionTables runs OPTIMIZE TABLE on every table with
// INSTANT row versions, each within two minutes, on a MySQL server of
// version 8.0.29 or later (elsewhere it does nothing). A table it cannot
// name safely is logged and left alone.
func OptimizeRowVersionTables(ctx context.Context, db *sql.DB, version string, log *slog.Logger) error {
	if !OptimizeApplies(version) {
		return nil
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("optimize tables: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET SESSION sql_require_primary_key = 0"); err != nil {
		return fmt.Errorf("optimize tables: %w", err)
	}
	rows, err := conn.QueryContext(ctx, RowVersionTablesQuery)
	if err != nil {
		return fmt.Errorf("optimize tables: list tables with row versions: %w", err)
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return fmt.Errorf("optimize tables: %w", err)
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("optimize tables: %w", err)
	}
	for _, n := range names {
		quoted, ok := DecodeTableName(n)
		if !ok {
			log.Warn("optimize_tables_before_backup: cannot name this table safely; left alone", "table", n)
			continue
		}
		tctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		_, err := conn.ExecContext(tctx, "OPTIMIZE TABLE "+quoted)
		if err == nil {
			_, err = conn.ExecContext(tctx, "COMMIT")
		}
		cancel()
		if err != nil {
			return fmt.Errorf("optimize tables: OPTIMIZE TABLE %s: %w", quoted, err)
		}
		log.Info("optimized a table with INSTANT row versions before the backup", "table", quoted)
	}
	return nil
}
