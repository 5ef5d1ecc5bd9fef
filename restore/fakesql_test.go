package restore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"io"
	"sync"
	"testing"
)

// recordedDB is a database/sql connection that answers from recorded
// outputs, for the statements of a flavor no server here can run (MySQL):
// a query in answers returns one row with that value, one in fails returns
// its error, anything else executes with no result. It records every
// statement in order.
type recordedDB struct {
	answers map[string]string
	fails   map[string]error

	mu   sync.Mutex
	seen []string
}

func openRecorded(t *testing.T, r *recordedDB) *sql.DB {
	t.Helper()
	db := sql.OpenDB(recordedConnector{r})
	t.Cleanup(func() { db.Close() })
	return db
}

func (r *recordedDB) statements() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

func (r *recordedDB) run(q string) (string, bool, error) {
	r.mu.Lock()
	r.seen = append(r.seen, q)
	r.mu.Unlock()
	if err, ok := r.fails[q]; ok {
		return "", false, err
	}
	v, ok := r.answers[q]
	return v, ok, nil
}

type recordedConnector struct{ r *recordedDB }

func (c recordedConnector) Connect(context.Context) (driver.Conn, error) { return recordedConn(c), nil }
func (c recordedConnector) Driver() driver.Driver                        { return recordedDriver{} }

type recordedDriver struct{}

func (recordedDriver) Open(string) (driver.Conn, error) {
	return nil, errors.New("recorded: open through its connector")
}

type recordedConn struct{ r *recordedDB }

func (recordedConn) Prepare(string) (driver.Stmt, error) {
	return nil, errors.New("recorded: no prepared statements")
}
func (recordedConn) Close() error              { return nil }
func (recordedConn) Begin() (driver.Tx, error) { return nil, errors.New("recorded: no transactions") }

func (c recordedConn) ExecContext(_ context.Context, q string, _ []driver.NamedValue) (driver.Result, error) {
	if _, _, err := c.r.run(q); err != nil {
		return nil, err
	}
	return driver.RowsAffected(0), nil
}

func (c recordedConn) QueryContext(_ context.Context, q string, _ []driver.NamedValue) (driver.Rows, error) {
	v, ok, err := c.r.run(q)
	if err != nil {
		return nil, err
	}
	rows := &recordedRows{}
	if ok {
		rows.values = []string{v}
	}
	return rows, nil
}

type recordedRows struct{ values []string }

func (*recordedRows) Columns() []string { return []string{"value"} }
func (*recordedRows) Close() error      { return nil }
func (r *recordedRows) Next(dest []driver.Value) error {
	if len(r.values) == 0 {
		return io.EOF
	}
	dest[0], r.values = r.values[0], r.values[1:]
	return nil
}
