package mysql

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-mysql-org/go-mysql/replication"
)

// binlogMagic starts every binlog and relay log file.
var binlogMagic = []byte{0xfe, 'b', 'i', 'n'}

const (
	eventHeaderSize = 19
	// maxEventSize bounds what a corrupt length field can make us allocate
	// (the servers cap max_allowed_packet, hence events, at 1 GiB).
	maxEventSize = 1 << 30
	// xaPrepareEvent is XA_PREPARE_LOG_EVENT (both flavors), which ends the
	// first half of an XA transaction.
	xaPrepareEvent = 38
)

// ErrTruncated is wrapped by errors for a binlog that ends inside an event or
// inside a transaction: a file that is still being written, or was cut short.
var ErrTruncated = errors.New("binlog is truncated")

// BinlogInfo describes one binlog file.
type BinlogInfo struct {
	// Size is the number of bytes read.
	Size int64
	// EndOffset is the end of the last complete event (equal to Size unless
	// ReadOptions.AllowTruncated stopped early).
	EndOffset int64
	// ServerVersion is from the format description event.
	ServerVersion string
	// InUse is the format description's "in use" flag: the server had not
	// closed the file when this copy was taken (it is still being written,
	// or the server crashed).
	InUse bool
	// ServerIDs are the distinct server ids seen in event headers, sorted.
	ServerIDs []uint32
	// GTIDsBefore is the GTID state before the file: MariaDB's GTID_LIST
	// event, MySQL's PREVIOUS_GTIDS event.
	GTIDsBefore GTIDSet
	// GTIDsAdded holds the GTIDs of the file's transactions.
	GTIDsAdded GTIDSet
	// Transactions counts complete transactions, anonymous ones included.
	Transactions int
	// FirstTimestamp and LastTimestamp are the first and last transaction
	// times; zero when the file has no transactions.
	FirstTimestamp, LastTimestamp time.Time
	// NextFile is the file named by a closing rotate event, if any.
	NextFile string
}

// Transaction is one event group of a binlog.
type Transaction struct {
	// GTID is the transaction's id; its Source is empty for anonymous
	// transactions (MySQL with GTID mode off).
	GTID GTID
	// Start is the offset of the transaction's first event, End the offset
	// just after its last event: RELAY_LOG_POS / MASTER_LOG_POS values that
	// stop right after it.
	Start, End int64
	// Timestamp is when the transaction was written: MySQL's original
	// commit timestamp when present, else the GTID event's header time.
	Timestamp time.Time
	// ServerID is the originating server.
	ServerID uint32
}

// ReadOptions tune binlog reading.
type ReadOptions struct {
	// AllowTruncated stops at the end of the last complete transaction
	// instead of failing when the file ends inside an event or a
	// transaction.
	AllowTruncated bool
	// AllowInUse accepts a file whose format description still carries the
	// server's "in use" flag: the active binlog, or one left by a crash that
	// the caller knows is closed because a newer file exists. Without it
	// such a file is an error (ErrInUse).
	AllowInUse bool
}

// ErrInUse is wrapped by the error for a file the server has not closed.
var ErrInUse = errors.New("binlog is still in use by the server (or was not closed after a crash)")

// ReadBinlogFile reads one binlog file and describes it. onTxn, if not nil,
// is called for each complete transaction in file order; an error from it
// stops reading and is returned.
func ReadBinlogFile(path string, f Flavor, opts ReadOptions, onTxn func(Transaction) error) (*BinlogInfo, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read binlog: %w", err)
	}
	defer file.Close()
	info, err := ScanBinlog(bufio.NewReaderSize(file, 256<<10), f, opts, onTxn)
	if err != nil {
		return info, fmt.Errorf("read binlog %s: %w", path, err)
	}
	return info, nil
}

// ScanBinlog reads a binlog stream (see ReadBinlogFile). Row events are not
// decoded; every event's CRC32 is checked when the file has checksums.
func ScanBinlog(r io.Reader, f Flavor, opts ReadOptions, onTxn func(Transaction) error) (*BinlogInfo, error) {
	if f != FlavorMySQL && f != FlavorMariaDB {
		return nil, fmt.Errorf("scan binlog: unknown flavor %q", f)
	}
	s := &binlogScanner{
		flavor: f,
		opts:   opts,
		onTxn:  onTxn,
		parser: replication.NewBinlogParser(),
		info: &BinlogInfo{
			GTIDsBefore: NewGTIDSet(f),
			GTIDsAdded:  NewGTIDSet(f),
		},
		servers: map[uint32]bool{},
	}
	s.parser.SetFlavor(string(f))
	err := s.run(r)
	for id := range s.servers {
		s.info.ServerIDs = append(s.info.ServerIDs, id)
	}
	slices.Sort(s.info.ServerIDs)
	return s.info, err
}

type binlogScanner struct {
	flavor  Flavor
	opts    ReadOptions
	onTxn   func(Transaction) error
	parser  *replication.BinlogParser
	info    *BinlogInfo
	servers map[uint32]bool

	checksum bool
	pos      int64
	lastType replication.EventType

	// the open transaction
	open       bool
	txn        Transaction
	standalone bool // MariaDB: group ends with its first statement
	mysqlBegun bool // MySQL: a BEGIN was seen, so the group ends at COMMIT/XID
	mysqlFirst bool // MySQL: no statement seen yet after the GTID event
	lastGood   int64
}

func (s *binlogScanner) run(r io.Reader) error {
	magic := make([]byte, len(binlogMagic))
	n, err := io.ReadFull(r, magic)
	s.info.Size = int64(n)
	if err != nil || !bytes.Equal(magic, binlogMagic) {
		return fmt.Errorf("not a binlog: the file does not start with the binlog magic bytes")
	}
	s.pos = int64(len(binlogMagic))
	s.lastGood = s.pos
	s.info.EndOffset = s.pos
	header := make([]byte, eventHeaderSize)
	var buf []byte
	first := true
	for {
		n, err := io.ReadFull(r, header)
		s.info.Size += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return s.truncated(fmt.Errorf("event header at offset %d: %w", s.pos, ErrTruncated))
		}
		size := int64(binary.LittleEndian.Uint32(header[9:13]))
		typ := header[4]
		if size < eventHeaderSize || size > maxEventSize {
			return fmt.Errorf("corrupt event at offset %d: impossible length %d", s.pos, size)
		}
		buf, n, err = readEvent(r, buf, header, size)
		s.info.Size += int64(n)
		if err != nil {
			return s.truncated(fmt.Errorf("event at offset %d (%d of %d bytes): %w", s.pos, eventHeaderSize+n, size, ErrTruncated))
		}
		if first && typ != byte(replication.FORMAT_DESCRIPTION_EVENT) {
			return fmt.Errorf("not a binlog: first event at offset %d is type %d, not a format description", s.pos, typ)
		}
		first = false
		if err := s.event(buf); err != nil {
			return err
		}
		s.lastType = replication.EventType(typ)
		s.pos += size
		s.info.EndOffset = s.pos
		if !s.open {
			s.lastGood = s.pos
		}
	}
	if s.open {
		return s.truncated(fmt.Errorf("file ends inside transaction %s that started at offset %d: %w", s.txn.GTID, s.txn.Start, ErrTruncated))
	}
	// A file the server closed always ends with a rotate or stop event;
	// without one, a closed file was cut at an event boundary.
	if !s.info.InUse && s.lastType != replication.ROTATE_EVENT && s.lastType != replication.STOP_EVENT {
		return s.truncated(fmt.Errorf("closed file ends at offset %d without a rotate or stop event: %w", s.pos, ErrTruncated))
	}
	return nil
}

// readEvent reads the rest of an event whose header is read. The buffer
// grows only as bytes arrive, so a corrupt length cannot make it allocate
// a gigabyte for a short file.
func readEvent(r io.Reader, buf, header []byte, size int64) ([]byte, int, error) {
	const chunk = 1 << 20
	buf = append(buf[:0], header...)
	read := 0
	for int64(len(buf)) < size {
		want := min(size-int64(len(buf)), chunk)
		start := len(buf)
		buf = slices.Grow(buf, int(want))[:start+int(want)]
		n, err := io.ReadFull(r, buf[start:])
		read += n
		if err != nil {
			return buf[:start+n], read, err
		}
	}
	return buf, read, nil
}

// truncated applies AllowTruncated: keep what was complete, or fail.
func (s *binlogScanner) truncated(err error) error {
	if s.opts.AllowTruncated {
		s.info.EndOffset = s.lastGood
		s.open = false
		return nil
	}
	return err
}

// parse decodes one event with go-mysql, turning any panic of the decoder on
// corrupt bytes into an error.
func (s *binlogScanner) parse(data []byte) (ev *replication.BinlogEvent, err error) {
	defer func() {
		if r := recover(); r != nil {
			ev, err = nil, fmt.Errorf("corrupt event at offset %d: %v", s.pos, r)
		}
	}()
	ev, err = s.parser.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("corrupt event at offset %d: %w", s.pos, err)
	}
	return ev, nil
}

// event takes in one event: its GTID, time and position. It is long
// because it is one case per binlog event type.
func (s *binlogScanner) event(data []byte) error {
	typ := replication.EventType(data[4])
	serverID := binary.LittleEndian.Uint32(data[5:9])
	ts := binary.LittleEndian.Uint32(data[0:4])
	s.servers[serverID] = true

	if typ == replication.FORMAT_DESCRIPTION_EVENT {
		ev, err := s.parse(data)
		if err != nil {
			return err
		}
		fde := ev.Event.(*replication.FormatDescriptionEvent)
		s.info.ServerVersion = fde.ServerVersion
		s.info.InUse = binary.LittleEndian.Uint16(data[17:19])&replication.LOG_EVENT_BINLOG_IN_USE_F != 0
		if err := s.checkFDE(data, fde.ChecksumAlgorithm); err != nil {
			return err
		}
		if s.info.InUse && !s.opts.AllowInUse {
			return fmt.Errorf("format description at offset %d: %w", s.pos, ErrInUse)
		}
		return nil
	}
	if s.checksum {
		if err := checkCRC(data); err != nil {
			return fmt.Errorf("corrupt event (type %d) at offset %d: %w", typ, s.pos, err)
		}
	}
	end := s.pos + int64(len(data))

	switch typ {
	case replication.MARIADB_GTID_EVENT:
		ev, err := s.parse(data)
		if err != nil {
			return err
		}
		g := ev.Event.(*replication.MariadbGTIDEvent)
		if err := s.begin(GTID{
			Source:   fmt.Sprint(g.GTID.DomainID),
			ServerID: g.GTID.ServerID,
			Seq:      g.GTID.SequenceNumber,
		}, time.Unix(int64(ts), 0).UTC(), serverID); err != nil {
			return err
		}
		s.standalone = g.IsStandalone()
	case replication.GTID_EVENT, replication.ANONYMOUS_GTID_EVENT, replication.GTID_TAGGED_LOG_EVENT:
		ev, err := s.parse(data)
		if err != nil {
			return err
		}
		var g *replication.GTIDEvent
		switch e := ev.Event.(type) {
		case *replication.GTIDEvent:
			g = e
		case *replication.GtidTaggedLogEvent:
			g = &e.GTIDEvent
		}
		id := GTID{ServerID: serverID}
		if typ != replication.ANONYMOUS_GTID_EVENT && g.GNO > 0 && len(g.SID) == 16 {
			src := formatUUID(g.SID)
			if g.Tag != "" {
				tag, err := normalizeTag(g.Tag)
				if err != nil {
					return fmt.Errorf("corrupt GTID event at offset %d: %w", s.pos, err)
				}
				src += ":" + tag
			}
			id.Source, id.Seq = src, uint64(g.GNO)
		}
		when := time.Unix(int64(ts), 0).UTC()
		if g.OriginalCommitTimestamp > 0 {
			when = time.UnixMicro(int64(g.OriginalCommitTimestamp)).UTC()
		}
		if err := s.begin(id, when, serverID); err != nil {
			return err
		}
		s.mysqlBegun, s.mysqlFirst = false, true
	case replication.MARIADB_GTID_LIST_EVENT:
		// go-mysql allocates from the count before checking the length.
		body := data[eventHeaderSize:]
		if len(body) < 4 || int64(binary.LittleEndian.Uint32(body)&(1<<28-1))*16 > int64(len(body)-4) {
			return fmt.Errorf("corrupt GTID list event at offset %d: count does not fit its length", s.pos)
		}
		ev, err := s.parse(data)
		if err != nil {
			return err
		}
		parts := make([]string, 0)
		for _, g := range ev.Event.(*replication.MariadbGTIDListEvent).GTIDs {
			parts = append(parts, g.String())
		}
		set, err := ParseMariaDBGTIDSet(strings.Join(parts, ","))
		if err != nil {
			return fmt.Errorf("corrupt GTID list at offset %d: %w", s.pos, err)
		}
		s.info.GTIDsBefore = s.info.GTIDsBefore.Union(set)
	case replication.PREVIOUS_GTIDS_EVENT:
		body := data[eventHeaderSize:]
		if s.checksum {
			body = body[:len(body)-4]
		}
		set, err := decodePreviousGTIDs(body)
		if err != nil {
			return fmt.Errorf("corrupt previous GTIDs event at offset %d: %w", s.pos, err)
		}
		s.info.GTIDsBefore = s.info.GTIDsBefore.Union(set)
	case replication.QUERY_EVENT, replication.MARIADB_QUERY_COMPRESSED_EVENT:
		if !s.open {
			return nil
		}
		// A compressed query is a long statement, never BEGIN or COMMIT, so
		// it is not decompressed (go-mysql would allocate whatever size its
		// header claims).
		q := "<compressed statement>"
		if typ == replication.QUERY_EVENT {
			ev, err := s.parse(data)
			if err != nil {
				return err
			}
			q = strings.ToUpper(strings.TrimSpace(string(ev.Event.(*replication.QueryEvent).Query)))
		}
		switch {
		case s.flavor == FlavorMariaDB && s.standalone:
			return s.commit(end)
		case q == "BEGIN" || strings.HasPrefix(q, "XA START"):
			s.mysqlBegun = true
		case q == "COMMIT" || q == "ROLLBACK" || strings.HasPrefix(q, "XA COMMIT") || strings.HasPrefix(q, "XA ROLLBACK"):
			return s.commit(end)
		case s.flavor == FlavorMySQL && s.mysqlFirst && !s.mysqlBegun:
			return s.commit(end) // a DDL statement is its own transaction
		}
		s.mysqlFirst = false
	case replication.XID_EVENT, xaPrepareEvent, replication.TRANSACTION_PAYLOAD_EVENT:
		if s.open {
			return s.commit(end)
		}
	case replication.ROTATE_EVENT:
		if s.open {
			return fmt.Errorf("rotate event at offset %d inside transaction %s", s.pos, s.txn.GTID)
		}
		ev, err := s.parse(data)
		if err != nil {
			return err
		}
		s.info.NextFile = string(ev.Event.(*replication.RotateEvent).NextLogName)
	default:
		if s.open && s.flavor == FlavorMySQL && typ != replication.INTVAR_EVENT && typ != replication.RAND_EVENT && typ != replication.USER_VAR_EVENT {
			s.mysqlFirst = false
		}
	}
	return nil
}

func (s *binlogScanner) begin(id GTID, when time.Time, serverID uint32) error {
	if s.open {
		return fmt.Errorf("GTID event at offset %d inside transaction %s that started at offset %d", s.pos, s.txn.GTID, s.txn.Start)
	}
	s.open = true
	s.txn = Transaction{GTID: id, Start: s.pos, Timestamp: when, ServerID: serverID}
	return nil
}

func (s *binlogScanner) commit(end int64) error {
	s.open = false
	s.txn.End = end
	s.info.Transactions++
	if s.info.FirstTimestamp.IsZero() {
		s.info.FirstTimestamp = s.txn.Timestamp
	}
	s.info.LastTimestamp = s.txn.Timestamp
	if s.txn.GTID.Source != "" {
		s.info.GTIDsAdded.addGTID(s.txn.GTID)
	}
	if s.onTxn != nil {
		return s.onTxn(s.txn)
	}
	return nil
}

// checkFDE validates the format description's checksum algorithm and
// checksum. The server computes the FDE checksum with the "in use" flag
// cleared (it clears the flag in place when it closes the file). A damaged
// algorithm byte would silently turn checksums off for the whole file, so
// an algorithm other than CRC32 is accepted only when the stored checksum
// does not match the event as it would be with CRC32.
func (s *binlogScanner) checkFDE(data []byte, alg byte) error {
	if len(data) < eventHeaderSize+5 {
		return fmt.Errorf("corrupt format description at offset %d: too short", s.pos)
	}
	c := bytes.Clone(data)
	binary.LittleEndian.PutUint16(c[17:19], binary.LittleEndian.Uint16(c[17:19])&^replication.LOG_EVENT_BINLOG_IN_USE_F)
	switch alg {
	case replication.BINLOG_CHECKSUM_ALG_CRC32:
		if err := checkCRC(c); err != nil {
			return fmt.Errorf("corrupt format description at offset %d: %w", s.pos, err)
		}
		s.checksum = true
	case replication.BINLOG_CHECKSUM_ALG_OFF:
		c[len(c)-5] = replication.BINLOG_CHECKSUM_ALG_CRC32
		if checkCRC(c) == nil {
			return fmt.Errorf("corrupt format description at offset %d: checksum algorithm byte is damaged", s.pos)
		}
		s.checksum = false
	default:
		return fmt.Errorf("corrupt format description at offset %d: unknown checksum algorithm %d", s.pos, alg)
	}
	return nil
}

func checkCRC(data []byte) error {
	if len(data) < eventHeaderSize+4 {
		return errors.New("too short for a checksum")
	}
	body := data[:len(data)-4]
	want := binary.LittleEndian.Uint32(data[len(data)-4:])
	if got := crc32.ChecksumIEEE(body); got != want {
		return fmt.Errorf("checksum mismatch (stored %08x, computed %08x)", want, got)
	}
	return nil
}

func formatUUID(b []byte) string {
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// decodePreviousGTIDs decodes MySQL's PREVIOUS_GTIDS body in both the
// classic format (8-byte source count) and the tagged format of 8.3+
// (format byte, 6-byte count, format byte; a tag after each uuid).
func decodePreviousGTIDs(b []byte) (GTIDSet, error) {
	set := NewGTIDSet(FlavorMySQL)
	if len(b) < 8 {
		return set, errors.New("too short")
	}
	tagged := b[7] == 1
	var n uint64
	if tagged {
		var tmp [8]byte
		copy(tmp[:], b[1:7])
		n = binary.LittleEndian.Uint64(tmp[:])
	} else {
		n = binary.LittleEndian.Uint64(b[:8])
	}
	pos := 8
	need := func(k int) error {
		if k < 0 || len(b)-pos < k {
			return fmt.Errorf("needs %d more bytes at %d of %d", k, pos, len(b))
		}
		return nil
	}
	for i := uint64(0); i < n; i++ {
		if err := need(16); err != nil {
			return set, err
		}
		key := formatUUID(b[pos : pos+16])
		pos += 16
		if tagged {
			if err := need(1); err != nil {
				return set, err
			}
			if b[pos]&1 != 0 {
				return set, fmt.Errorf("tag length at %d uses a multi-byte length", pos)
			}
			l := int(b[pos] >> 1)
			pos++
			if l > 0 {
				if err := need(l); err != nil {
					return set, err
				}
				tag, err := normalizeTag(string(b[pos : pos+l]))
				if err != nil {
					return set, err
				}
				key += ":" + tag
				pos += l
			}
		}
		if err := need(8); err != nil {
			return set, err
		}
		count := binary.LittleEndian.Uint64(b[pos:])
		pos += 8
		if count > uint64(len(b)-pos)/16 {
			return set, fmt.Errorf("%d intervals do not fit in %d bytes", count, len(b)-pos)
		}
		for j := uint64(0); j < count; j++ {
			start := binary.LittleEndian.Uint64(b[pos:])
			end := binary.LittleEndian.Uint64(b[pos+8:]) // exclusive
			pos += 16
			if start == 0 || end <= start || end-1 > MaxGNO {
				return set, fmt.Errorf("bad interval [%d, %d) for %s", start, end, key)
			}
			set.addInterval(key, Interval{start, end - 1})
		}
	}
	if pos != len(b) {
		return set, fmt.Errorf("%d bytes left over", len(b)-pos)
	}
	return set, nil
}
