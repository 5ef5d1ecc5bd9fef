package mysql

import (
	"context"
	"database/sql"
	"fmt"
)

// DrainRelayLog stops receiving from the old primary and waits until the
// SQL thread applied everything already received (the original
// required this state before a promotion; here it is reached).
func DrainRelayLog(ctx context.Context, db *sql.DB, d Dialect) error {
	stopIO, status, posCol, wait := d.StopReceiving(), d.ReplicaStatus(), d.ReceivedColumn(), d.WaitForGTIDs()
	rows, err := db.QueryContext(ctx, status)
	if err != nil {
		return fmt.Errorf("%s: %w", status, err)
	}
	cols, _ := rows.Columns()
	var received, sqlRunning, sqlError string
	if rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return err
		}
		for i, c := range cols {
			switch c {
			case posCol:
				received = vals[i].String
			case "Slave_SQL_Running", "Replica_SQL_Running":
				sqlRunning = vals[i].String
			case "Last_SQL_Error":
				sqlError = vals[i].String
			}
		}
	}
	rows.Close()
	if len(cols) == 0 || received == "" {
		return nil // not a replica
	}
	if _, err := db.ExecContext(ctx, stopIO); err != nil {
		return fmt.Errorf("%s: %w", stopIO, err)
	}
	if sqlRunning != "Yes" {
		if sqlError != "" {
			return fmt.Errorf("the SQL thread stopped with %q; fix replication before promoting", sqlError)
		}
		return nil
	}
	var res sql.NullInt64
	if err := db.QueryRowContext(ctx, wait, received, 300).Scan(&res); err != nil {
		return fmt.Errorf("wait for the relay log (%s) to be applied: %w", received, err)
	}
	if !res.Valid || res.Int64 != 0 {
		return fmt.Errorf("the relay log (up to %s) was not applied within 300 s", received)
	}
	return nil
}
