package mysql

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"
)

// mysqlEvent is one event for buildMySQLBinlog.
type mysqlEvent struct {
	typ      byte
	serverID uint32
	ts       uint32
	body     []byte
	flags    uint16
}

const (
	evQuery         = 2
	evStop          = 3
	evRotate        = 4
	evFDE           = 15
	evXID           = 16
	evWriteRowsV2   = 30
	evGTID          = 33
	evAnonymousGTID = 34
	evPreviousGTIDs = 35
)

// buildMySQLBinlog lays out a MySQL 8 binlog with CRC32 checksums: the
// magic, a format description, then the events with their end positions.
func buildMySQLBinlog(events []mysqlEvent) []byte {
	return buildMySQLBinlogFlags(events, 0)
}

func buildMySQLBinlogFlags(events []mysqlEvent, fdeFlags uint16) []byte {
	fde := make([]byte, 0, 100)
	fde = binary.LittleEndian.AppendUint16(fde, 4)
	ver := make([]byte, 50)
	copy(ver, "8.0.36")
	fde = append(fde, ver...)
	fde = binary.LittleEndian.AppendUint32(fde, 1700000000)
	fde = append(fde, 19)
	postHeader := make([]byte, 41)
	postHeader[19-1] = 8 // TABLE_MAP_EVENT
	fde = append(fde, postHeader...)
	fde = append(fde, 1) // CRC32
	all := append([]mysqlEvent{{typ: evFDE, serverID: 1, ts: 1700000000, body: fde, flags: fdeFlags}}, events...)
	out := bytes.Clone(binlogMagic)
	for _, e := range all {
		size := 19 + len(e.body) + 4
		h := make([]byte, 0, size)
		h = binary.LittleEndian.AppendUint32(h, e.ts)
		h = append(h, e.typ)
		h = binary.LittleEndian.AppendUint32(h, e.serverID)
		h = binary.LittleEndian.AppendUint32(h, uint32(size))
		h = binary.LittleEndian.AppendUint32(h, uint32(len(out)+size))
		h = binary.LittleEndian.AppendUint16(h, e.flags)
		h = append(h, e.body...)
		sum := bytes.Clone(h)
		if e.typ == evFDE { // the server sums the FDE with "in use" cleared
			binary.LittleEndian.PutUint16(sum[17:19], 0)
		}
		h = binary.LittleEndian.AppendUint32(h, crc32.ChecksumIEEE(sum))
		out = append(out, h...)
	}
	return out
}

func uuidBytes(t testing.TB, u string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(u, "-", ""))
	if err != nil || len(b) != 16 {
		t.Fatalf("bad uuid %s", u)
	}
	return b
}

func gtidBody(t testing.TB, uuid string, gno int64, commitMicros uint64) []byte {
	b := []byte{1}
	if uuid == "" {
		b = append(b, make([]byte, 16)...)
	} else {
		b = append(b, uuidBytes(t, uuid)...)
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(gno))
	b = append(b, 2) // logical timestamps
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint64(b, 1)
	ts := make([]byte, 8)
	binary.LittleEndian.PutUint64(ts, commitMicros|1<<55) // original commit ts follows
	b = append(b, ts[:7]...)
	binary.LittleEndian.PutUint64(ts, commitMicros)
	b = append(b, ts[:7]...)
	b = append(b, 100) // transaction length
	b = binary.LittleEndian.AppendUint32(b, 80036)
	return b
}

func queryBody(schema, q string) []byte {
	b := make([]byte, 0, 13+len(schema)+1+len(q))
	b = binary.LittleEndian.AppendUint32(b, 7) // thread id
	b = binary.LittleEndian.AppendUint32(b, 0) // exec time
	b = append(b, byte(len(schema)))
	b = binary.LittleEndian.AppendUint16(b, 0) // error code
	b = binary.LittleEndian.AppendUint16(b, 0) // status vars
	b = append(b, schema...)
	b = append(b, 0)
	return append(b, q...)
}

func previousGTIDsBody(t testing.TB, entries map[string][]Interval) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(entries)))
	for _, u := range []string{uuidB, uuidA} { // sorted order
		ivs, ok := entries[u]
		if !ok {
			continue
		}
		b = append(b, uuidBytes(t, u)...)
		b = binary.LittleEndian.AppendUint64(b, uint64(len(ivs)))
		for _, iv := range ivs {
			b = binary.LittleEndian.AppendUint64(b, iv.Start)
			b = binary.LittleEndian.AppendUint64(b, iv.End+1)
		}
	}
	return b
}

func taggedPreviousGTIDsBody(t testing.TB) []byte {
	// two sources: uuidA untagged 1-3, uuidB tagged "blue" 5-6
	b := []byte{1, 2, 0, 0, 0, 0, 0, 1}
	b = append(b, uuidBytes(t, uuidA)...)
	b = append(b, 0) // no tag
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = binary.LittleEndian.AppendUint64(b, 4)
	b = append(b, uuidBytes(t, uuidB)...)
	b = append(b, byte(len("blue")<<1))
	b = append(b, "blue"...)
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = binary.LittleEndian.AppendUint64(b, 5)
	b = binary.LittleEndian.AppendUint64(b, 7)
	return b
}

func mysqlHistory(t testing.TB) []mysqlEvent {
	const base = 1700000100
	micros := func(s int64) uint64 { return uint64(time.Unix(base+s, 0).UnixMicro()) + 250000 }
	rows := bytes.Repeat([]byte{0xab}, 40) // opaque: row events are never decoded
	return []mysqlEvent{
		{typ: evPreviousGTIDs, serverID: 1, ts: base, body: previousGTIDsBody(t, map[string][]Interval{uuidA: {{1, 100}}, uuidB: {{1, 7}, {9, 9}}})},
		// a DML transaction
		{typ: evGTID, serverID: 1, ts: base + 1, body: gtidBody(t, uuidA, 101, micros(1))},
		{typ: evQuery, serverID: 1, ts: base + 1, body: queryBody("shop", "BEGIN")},
		{typ: evWriteRowsV2, serverID: 1, ts: base + 1, body: rows},
		{typ: evXID, serverID: 1, ts: base + 1, body: binary.LittleEndian.AppendUint64(nil, 55)},
		// a DDL statement is its own transaction
		{typ: evGTID, serverID: 1, ts: base + 2, body: gtidBody(t, uuidA, 102, micros(2))},
		{typ: evQuery, serverID: 1, ts: base + 2, body: queryBody("shop", "CREATE TABLE x (id INT PRIMARY KEY)")},
		// an anonymous transaction (GTID mode was off for it)
		{typ: evAnonymousGTID, serverID: 2, ts: base + 3, body: gtidBody(t, "", 0, micros(3))},
		{typ: evQuery, serverID: 2, ts: base + 3, body: queryBody("shop", "BEGIN")},
		{typ: evWriteRowsV2, serverID: 2, ts: base + 3, body: rows},
		{typ: evXID, serverID: 2, ts: base + 3, body: binary.LittleEndian.AppendUint64(nil, 56)},
		// a non-transactional engine commits with a COMMIT query
		{typ: evGTID, serverID: 3, ts: base + 4, body: gtidBody(t, uuidB, 10, micros(4))},
		{typ: evQuery, serverID: 3, ts: base + 4, body: queryBody("shop", "BEGIN")},
		{typ: evWriteRowsV2, serverID: 3, ts: base + 4, body: rows},
		{typ: evQuery, serverID: 3, ts: base + 4, body: queryBody("shop", "COMMIT")},
		{typ: evRotate, serverID: 1, ts: base + 5, body: append(binary.LittleEndian.AppendUint64(nil, 4), "binlog.000008"...)},
	}
}

func TestReadMySQLBinlogBuilt(t *testing.T) {
	data := buildMySQLBinlog(mysqlHistory(t))
	var txns []Transaction
	info, err := ScanBinlog(bytes.NewReader(data), FlavorMySQL, ReadOptions{}, func(tx Transaction) error {
		txns = append(txns, tx)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := info.GTIDsBefore.String(), uuidB+":1-7:9,"+uuidA+":1-100"; got != want {
		t.Errorf("before = %q, want %q", got, want)
	}
	if got, want := info.GTIDsAdded.String(), uuidB+":10,"+uuidA+":101-102"; got != want {
		t.Errorf("added = %q, want %q", got, want)
	}
	if info.Transactions != 4 || len(txns) != 4 {
		t.Fatalf("%d transactions (%d reported), want 4", info.Transactions, len(txns))
	}
	if txns[2].GTID.Source != "" || txns[2].ServerID != 2 {
		t.Errorf("anonymous transaction = %+v", txns[2])
	}
	if got := txns[1].GTID.String(); got != uuidA+":102" {
		t.Errorf("DDL GTID = %s", got)
	}
	if want := time.Unix(1700000101, 250000000).UTC(); !txns[0].Timestamp.Equal(want) || !info.FirstTimestamp.Equal(want) {
		t.Errorf("first timestamp %v / %v, want the original commit time %v", txns[0].Timestamp, info.FirstTimestamp, want)
	}
	if want := time.Unix(1700000104, 250000000).UTC(); !info.LastTimestamp.Equal(want) {
		t.Errorf("last timestamp %v, want %v", info.LastTimestamp, want)
	}
	for i := 1; i < len(txns); i++ {
		if txns[i].Start != txns[i-1].End {
			t.Errorf("transaction %d starts at %d, previous ends at %d", i, txns[i].Start, txns[i-1].End)
		}
	}
	if info.NextFile != "binlog.000008" || info.Size != int64(len(data)) || info.ServerVersion != "8.0.36" {
		t.Errorf("next %q size %d version %q", info.NextFile, info.Size, info.ServerVersion)
	}
	if got := info.ServerIDs; len(got) != 3 || got[0] != 1 || got[2] != 3 {
		t.Errorf("server ids %v, want [1 2 3]", got)
	}
	checkDamage(t, FlavorMySQL, data, info)
}

func TestReadMySQLBinlogCases(t *testing.T) {
	h := mysqlHistory(t)
	tests := []struct {
		name    string
		data    []byte
		opts    ReadOptions
		wantErr error
		check   func(t *testing.T, info *BinlogInfo)
	}{
		{name: "no transactions after a rotation", data: buildMySQLBinlog([]mysqlEvent{h[0], h[len(h)-1]}),
			check: func(t *testing.T, info *BinlogInfo) {
				if info.Transactions != 0 || !info.FirstTimestamp.IsZero() || !info.GTIDsAdded.IsEmpty() {
					t.Errorf("empty file: %+v", info)
				}
			}},
		{name: "stopped server", data: buildMySQLBinlog(append(append([]mysqlEvent{}, h[:5]...), mysqlEvent{typ: evStop, serverID: 1})),
			check: func(t *testing.T, info *BinlogInfo) {
				if info.Transactions != 1 {
					t.Errorf("%d transactions", info.Transactions)
				}
			}},
		{name: "active file refused", data: buildMySQLBinlogFlags(h[:5], 1), wantErr: ErrInUse},
		{name: "active file allowed", data: buildMySQLBinlogFlags(h[:5], 1), opts: ReadOptions{AllowInUse: true},
			check: func(t *testing.T, info *BinlogInfo) {
				if !info.InUse || info.Transactions != 1 {
					t.Errorf("in use %v, %d transactions", info.InUse, info.Transactions)
				}
			}},
		{name: "active file inside a transaction", data: buildMySQLBinlogFlags(h[:4], 1), opts: ReadOptions{AllowInUse: true}, wantErr: ErrTruncated},
		{name: "active file, stop at last transaction", data: buildMySQLBinlogFlags(h[:7], 1), opts: ReadOptions{AllowInUse: true, AllowTruncated: true},
			check: func(t *testing.T, info *BinlogInfo) {
				if info.Transactions != 2 {
					t.Errorf("%d transactions", info.Transactions)
				}
			}},
		{name: "tagged previous GTIDs (8.3+)", data: buildMySQLBinlog([]mysqlEvent{{typ: evPreviousGTIDs, serverID: 1, body: taggedPreviousGTIDsBody(t)}, h[len(h)-1]}),
			check: func(t *testing.T, info *BinlogInfo) {
				if got, want := info.GTIDsBefore.String(), uuidB+":blue:5-6,"+uuidA+":1-3"; got != want {
					t.Errorf("before = %q, want %q", got, want)
				}
			}},
		{name: "previous GTIDs with a bad interval", data: buildMySQLBinlog([]mysqlEvent{{typ: evPreviousGTIDs, serverID: 1,
			body: previousGTIDsBody(t, map[string][]Interval{uuidA: {{0, 5}}})}, h[len(h)-1]}), wantErr: errAny},
		{name: "GTID inside a transaction", data: buildMySQLBinlog([]mysqlEvent{h[1], h[2], h[5], h[6], h[len(h)-1]}), wantErr: errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			info, err := ScanBinlog(bytes.NewReader(tc.data), FlavorMySQL, tc.opts, nil)
			switch {
			case tc.wantErr == errAny && err == nil:
				t.Fatal("want an error")
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			case tc.wantErr == nil && err != nil:
				t.Fatal(err)
			}
			if tc.check != nil && err == nil {
				tc.check(t, info)
			}
		})
	}
}

var errAny = errors.New("any error")
