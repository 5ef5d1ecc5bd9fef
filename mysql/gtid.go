package mysql

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// MaxGNO is the largest transaction number MySQL accepts (2^63-1); MariaDB
// sequence numbers are held to the same bound so both flavors share one
// interval arithmetic.
const MaxGNO = 1<<63 - 1

// Interval is an inclusive range of transaction numbers: GNOs for MySQL,
// sequence numbers of one replication domain for MariaDB.
type Interval struct {
	Start, End uint64
}

// GTIDSet is a set of transactions, immutable once built: every operation
// returns a new set.
//
// MySQL sets map a source ("uuid", or "uuid:tag" for the tagged GTIDs of 8.3+)
// to intervals of GNOs. MariaDB sets map a replication domain to intervals of
// sequence numbers: with gtid_strict_mode, sequence numbers of one domain are
// ordered across servers, so the position "0-1-431" is the set "domain 0,
// 1..431". The server id of a MariaDB GTID is kept as a label (the server of
// the newest transaction of each domain) so that positions print back the way
// the server wrote them; it takes no part in the algebra or in Equal.
//
// Canonical text: MySQL "uuid:1-5:7:tag:1-3,uuid2:1" (lowercase, sorted);
// MariaDB "d-s-n" for a domain holding 1..n and "d-s-a-b" for any other
// interval a..b (four numbers; an extension of the server's format used in
// manifests), entries sorted by domain.
type GTIDSet struct {
	flavor  Flavor
	sources map[string][]Interval
	servers map[string]uint32 // MariaDB only: domain -> server id label
}

// GTID is one transaction id.
type GTID struct {
	// Source is "uuid" or "uuid:tag" (MySQL) or the decimal domain id
	// (MariaDB).
	Source string
	// ServerID is the originating server (MariaDB; 0 for MySQL).
	ServerID uint32
	// Seq is the GNO (MySQL) or the sequence number (MariaDB).
	Seq uint64
}

// String prints a MySQL GTID as "uuid:n" / "uuid:tag:n" and a MariaDB GTID
// as "d-s-n". Which form is chosen from the shape of Source.
func (g GTID) String() string {
	if isDomainKey(g.Source) {
		return fmt.Sprintf("%s-%d-%d", g.Source, g.ServerID, g.Seq)
	}
	return fmt.Sprintf("%s:%d", g.Source, g.Seq)
}

// NewGTIDSet returns an empty set of the given flavor.
func NewGTIDSet(f Flavor) GTIDSet { return GTIDSet{flavor: f} }

// Flavor is the flavor the set was built for.
func (s GTIDSet) Flavor() Flavor { return s.flavor }

// IsEmpty reports whether the set holds no transaction.
func (s GTIDSet) IsEmpty() bool { return len(s.sources) == 0 }

// Sources lists the set's sources in canonical order.
func (s GTIDSet) Sources() []string {
	keys := make([]string, 0, len(s.sources))
	for k := range s.sources {
		keys = append(keys, k)
	}
	sortSourceKeys(keys)
	return keys
}

// Intervals returns a copy of one source's intervals.
func (s GTIDSet) Intervals(source string) []Interval {
	return slices.Clone(s.sources[source])
}

// Count is the number of transactions in the set (saturating).
func (s GTIDSet) Count() uint64 {
	var n uint64
	for _, ivs := range s.sources {
		for _, iv := range ivs {
			d := iv.End - iv.Start + 1
			if n+d < n {
				return ^uint64(0)
			}
			n += d
		}
	}
	return n
}

// Contains reports whether one transaction is in the set.
func (s GTIDSet) Contains(g GTID) bool {
	for _, iv := range s.sources[g.Source] {
		if g.Seq >= iv.Start && g.Seq <= iv.End {
			return true
		}
	}
	return false
}

// Last returns the newest transaction of a source, if any.
func (s GTIDSet) Last(source string) (GTID, bool) {
	ivs := s.sources[source]
	if len(ivs) == 0 {
		return GTID{}, false
	}
	return GTID{Source: source, ServerID: s.servers[source], Seq: ivs[len(ivs)-1].End}, true
}

// WithGTID returns the set with one more transaction. Adding the transactions
// of a binlog in order is cheap (the last interval is extended).
func (s GTIDSet) WithGTID(g GTID) GTIDSet {
	out := s.clone()
	out.addGTID(g)
	return out
}

func (s *GTIDSet) addGTID(g GTID) {
	if g.Seq == 0 {
		return
	}
	if s.sources == nil {
		s.sources = map[string][]Interval{}
	}
	ivs := s.sources[g.Source]
	if n := len(ivs); n > 0 && ivs[n-1].End+1 == g.Seq {
		ivs[n-1].End = g.Seq
		s.sources[g.Source] = ivs
	} else if n > 0 && ivs[n-1].End < g.Seq {
		s.sources[g.Source] = append(ivs, Interval{g.Seq, g.Seq})
	} else {
		s.sources[g.Source] = unionIntervals(ivs, []Interval{{g.Seq, g.Seq}})
	}
	if s.flavor == FlavorMariaDB && s.sources[g.Source][len(s.sources[g.Source])-1].End == g.Seq {
		if s.servers == nil {
			s.servers = map[string]uint32{}
		}
		s.servers[g.Source] = g.ServerID
	}
}

func (s GTIDSet) clone() GTIDSet {
	out := GTIDSet{flavor: s.flavor}
	if len(s.sources) > 0 {
		out.sources = make(map[string][]Interval, len(s.sources))
		for k, v := range s.sources {
			out.sources[k] = slices.Clone(v)
		}
	}
	if len(s.servers) > 0 {
		out.servers = make(map[string]uint32, len(s.servers))
		for k, v := range s.servers {
			out.servers[k] = v
		}
	}
	return out
}

func (s GTIDSet) resultFlavor(o GTIDSet) Flavor {
	if s.flavor != "" {
		return s.flavor
	}
	return o.flavor
}

// Union returns every transaction that is in s or in o.
func (s GTIDSet) Union(o GTIDSet) GTIDSet {
	out := s.clone()
	out.flavor = s.resultFlavor(o)
	for k, ivs := range o.sources {
		if out.sources == nil {
			out.sources = map[string][]Interval{}
		}
		mine := out.sources[k]
		out.sources[k] = unionIntervals(mine, ivs)
		if sid, ok := o.servers[k]; ok && (len(mine) == 0 || ivs[len(ivs)-1].End >= mine[len(mine)-1].End) {
			if out.servers == nil {
				out.servers = map[string]uint32{}
			}
			out.servers[k] = sid
		}
	}
	return out
}

// Subtract returns the transactions of s that are not in o.
func (s GTIDSet) Subtract(o GTIDSet) GTIDSet {
	out := GTIDSet{flavor: s.resultFlavor(o)}
	for k, ivs := range s.sources {
		rest := subtractIntervals(ivs, o.sources[k])
		if len(rest) == 0 {
			continue
		}
		if out.sources == nil {
			out.sources = map[string][]Interval{}
		}
		out.sources[k] = rest
		if sid, ok := s.servers[k]; ok {
			if out.servers == nil {
				out.servers = map[string]uint32{}
			}
			out.servers[k] = sid
		}
	}
	return out
}

// Intersect returns the transactions that are in both s and o.
func (s GTIDSet) Intersect(o GTIDSet) GTIDSet {
	return s.Subtract(s.Subtract(o))
}

// IsSubsetOf reports whether every transaction of s is in o.
func (s GTIDSet) IsSubsetOf(o GTIDSet) bool {
	for k, ivs := range s.sources {
		if len(subtractIntervals(ivs, o.sources[k])) > 0 {
			return false
		}
	}
	return true
}

// Equal reports whether both sets hold the same transactions (MariaDB server
// id labels are ignored).
func (s GTIDSet) Equal(o GTIDSet) bool {
	if len(s.sources) != len(o.sources) {
		return false
	}
	for k, ivs := range s.sources {
		if !slices.Equal(ivs, o.sources[k]) {
			return false
		}
	}
	return true
}

// String is the canonical text form (see GTIDSet).
func (s GTIDSet) String() string {
	keys := s.Sources()
	var b strings.Builder
	if s.flavor == FlavorMariaDB || (s.flavor == "" && len(keys) > 0 && isDomainKey(keys[0])) {
		for i, k := range keys {
			sid := s.servers[k]
			for j, iv := range s.sources[k] {
				if i > 0 || j > 0 {
					b.WriteByte(',')
				}
				if iv.Start == 1 {
					fmt.Fprintf(&b, "%s-%d-%d", k, sid, iv.End)
				} else {
					fmt.Fprintf(&b, "%s-%d-%d-%d", k, sid, iv.Start, iv.End)
				}
			}
		}
		return b.String()
	}
	prevUUID := ""
	for _, k := range keys {
		uuid, tag, _ := strings.Cut(k, ":")
		if uuid != prevUUID {
			if prevUUID != "" {
				b.WriteByte(',')
			}
			b.WriteString(uuid)
			prevUUID = uuid
		}
		if tag != "" {
			b.WriteByte(':')
			b.WriteString(tag)
		}
		for _, iv := range s.sources[k] {
			if iv.Start == iv.End {
				fmt.Fprintf(&b, ":%d", iv.Start)
			} else {
				fmt.Fprintf(&b, ":%d-%d", iv.Start, iv.End)
			}
		}
	}
	return b.String()
}

// MarshalJSON writes the canonical text form with its flavor, so manifests
// can be read back without outside knowledge.
func (s GTIDSet) MarshalJSON() ([]byte, error) {
	return json.Marshal(gtidSetJSON{Flavor: s.flavor, Set: s.String()})
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *GTIDSet) UnmarshalJSON(b []byte) error {
	var j gtidSetJSON
	if string(b) == "null" {
		*s = GTIDSet{}
		return nil
	}
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("GTID set: %w", err)
	}
	if strings.TrimSpace(j.Set) == "" {
		*s = GTIDSet{flavor: j.Flavor} // an empty set needs no flavor
		return nil
	}
	set, err := ParseGTIDSet(j.Flavor, j.Set)
	if err != nil {
		return err
	}
	*s = set
	return nil
}

type gtidSetJSON struct {
	Flavor Flavor `json:"flavor"`
	Set    string `json:"set"`
}

// ParseGTIDSet parses a set in the flavor's text form. Whitespace and
// newlines around entries are ignored (MySQL prints ",\n" between sources).
func ParseGTIDSet(f Flavor, text string) (GTIDSet, error) {
	switch f {
	case FlavorMySQL:
		return ParseMySQLGTIDSet(text)
	case FlavorMariaDB:
		return ParseMariaDBGTIDSet(text)
	}
	return GTIDSet{}, fmt.Errorf("parse GTID set %q: unknown flavor %q", text, f)
}

// ParseMySQLGTIDSet parses "uuid:1-5:7,uuid2:tag:1-3" (MySQL 8, including
// the tagged GTIDs of 8.3+).
func ParseMySQLGTIDSet(text string) (GTIDSet, error) {
	s := GTIDSet{flavor: FlavorMySQL}
	for _, entry := range strings.Split(text, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		parts := strings.Split(entry, ":")
		uuid, err := normalizeUUID(strings.TrimSpace(parts[0]))
		if err != nil {
			return GTIDSet{}, fmt.Errorf("parse MySQL GTID set %q: %w", text, err)
		}
		if len(parts) < 2 {
			return GTIDSet{}, fmt.Errorf("parse MySQL GTID set %q: %s has no transaction numbers", text, uuid)
		}
		key := uuid
		needInterval := false
		for _, p := range parts[1:] {
			p = strings.TrimSpace(p)
			if p != "" && (p[0] < '0' || p[0] > '9') {
				if needInterval {
					return GTIDSet{}, fmt.Errorf("parse MySQL GTID set %q: tag %s has no transaction numbers", text, key)
				}
				tag, err := normalizeTag(p)
				if err != nil {
					return GTIDSet{}, fmt.Errorf("parse MySQL GTID set %q: %w", text, err)
				}
				key = uuid + ":" + tag
				needInterval = true
				continue
			}
			iv, err := parseInterval(p)
			if err != nil {
				return GTIDSet{}, fmt.Errorf("parse MySQL GTID set %q: %s: %w", text, key, err)
			}
			s.addInterval(key, iv)
			needInterval = false
		}
		if needInterval {
			return GTIDSet{}, fmt.Errorf("parse MySQL GTID set %q: tag %s has no transaction numbers", text, key)
		}
	}
	return s, nil
}

// ParseMariaDBGTIDSet parses a MariaDB GTID position or binlog state such as
// "0-1-431,1-2-50" (each entry: domain 1..seq) and the four-number interval
// entries "d-s-a-b" that String writes for sets that do not start at 1.
// "d-s-0" entries (MariaDB's empty position) add nothing.
func ParseMariaDBGTIDSet(text string) (GTIDSet, error) {
	s := GTIDSet{flavor: FlavorMariaDB}
	for _, entry := range strings.Split(text, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		nums := strings.Split(entry, "-")
		if len(nums) != 3 && len(nums) != 4 {
			return GTIDSet{}, fmt.Errorf("parse MariaDB GTID set %q: entry %q is not domain-server-seq", text, entry)
		}
		var vals [4]uint64
		for i, n := range nums {
			limit := uint64(MaxGNO)
			if i < 2 {
				limit = 1<<32 - 1
			}
			v, err := parseUint(n, limit)
			if err != nil {
				return GTIDSet{}, fmt.Errorf("parse MariaDB GTID set %q: entry %q: %w", text, entry, err)
			}
			vals[i] = v
		}
		iv := Interval{1, vals[2]}
		if len(nums) == 4 {
			iv = Interval{vals[2], vals[3]}
			if iv.Start == 0 || iv.Start > iv.End {
				return GTIDSet{}, fmt.Errorf("parse MariaDB GTID set %q: entry %q: bad interval %d-%d", text, entry, iv.Start, iv.End)
			}
		}
		if iv.End == 0 {
			continue
		}
		key := strconv.FormatUint(vals[0], 10)
		prev := s.sources[key]
		s.addInterval(key, iv)
		if len(prev) == 0 || iv.End >= prev[len(prev)-1].End {
			if s.servers == nil {
				s.servers = map[string]uint32{}
			}
			s.servers[key] = uint32(vals[1])
		}
	}
	return s, nil
}

func (s *GTIDSet) addInterval(key string, iv Interval) {
	if s.sources == nil {
		s.sources = map[string][]Interval{}
	}
	s.sources[key] = unionIntervals(s.sources[key], []Interval{iv})
}

// ReplicationState is the spec's per-server form of a GTID set:
// {"<uuid>": [[start, end], ...]}. MariaDB sets use "<domain>-<server>"
// keys (a bare "<domain>" is accepted when reading).
type ReplicationState map[string][][2]uint64

// ReplicationState converts the set to the spec's form.
func (s GTIDSet) ReplicationState() ReplicationState {
	out := ReplicationState{}
	for k, ivs := range s.sources {
		key := k
		if s.flavor == FlavorMariaDB {
			key = fmt.Sprintf("%s-%d", k, s.servers[k])
		}
		ranges := make([][2]uint64, len(ivs))
		for i, iv := range ivs {
			ranges[i] = [2]uint64{iv.Start, iv.End}
		}
		out[key] = ranges
	}
	return out
}

// GTIDSetFromReplicationState converts the spec's form back to a set,
// validating every key and range.
func GTIDSetFromReplicationState(f Flavor, rs ReplicationState) (GTIDSet, error) {
	s := GTIDSet{flavor: f}
	keys := make([]string, 0, len(rs))
	for k := range rs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		var key string
		var sid uint32
		var hasSID bool
		switch f {
		case FlavorMySQL:
			uuid, tag, hasTag := strings.Cut(k, ":")
			u, err := normalizeUUID(uuid)
			if err != nil {
				return GTIDSet{}, fmt.Errorf("replication state key %q: %w", k, err)
			}
			key = u
			if hasTag {
				t, err := normalizeTag(tag)
				if err != nil {
					return GTIDSet{}, fmt.Errorf("replication state key %q: %w", k, err)
				}
				key = u + ":" + t
			}
		case FlavorMariaDB:
			d, srv, has := strings.Cut(k, "-")
			dv, err := parseUint(d, 1<<32-1)
			if err != nil {
				return GTIDSet{}, fmt.Errorf("replication state key %q: domain: %w", k, err)
			}
			if has {
				sv, err := parseUint(srv, 1<<32-1)
				if err != nil {
					return GTIDSet{}, fmt.Errorf("replication state key %q: server id: %w", k, err)
				}
				sid, hasSID = uint32(sv), true
			}
			key = strconv.FormatUint(dv, 10)
		default:
			return GTIDSet{}, fmt.Errorf("replication state: unknown flavor %q", f)
		}
		for _, r := range rs[k] {
			if r[0] == 0 || r[0] > r[1] || r[1] > MaxGNO {
				return GTIDSet{}, fmt.Errorf("replication state key %q: bad range [%d, %d]", k, r[0], r[1])
			}
			prev := s.sources[key]
			s.addInterval(key, Interval{r[0], r[1]})
			if hasSID && (len(prev) == 0 || r[1] >= prev[len(prev)-1].End) {
				if s.servers == nil {
					s.servers = map[string]uint32{}
				}
				s.servers[key] = sid
			}
		}
	}
	return s, nil
}

func parseInterval(p string) (Interval, error) {
	a, b, isRange := strings.Cut(p, "-")
	start, err := parseUint(strings.TrimSpace(a), MaxGNO)
	if err != nil {
		return Interval{}, err
	}
	end := start
	if isRange {
		if end, err = parseUint(strings.TrimSpace(b), MaxGNO); err != nil {
			return Interval{}, err
		}
	}
	if start == 0 || start > end {
		return Interval{}, fmt.Errorf("bad interval %q: want 1 <= start <= end", p)
	}
	return Interval{start, end}, nil
}

func parseUint(s string, limit uint64) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty number")
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || v > limit || s[0] == '+' {
		return 0, fmt.Errorf("bad number %q (0..%d)", s, limit)
	}
	return v, nil
}

func normalizeUUID(u string) (string, error) {
	u = strings.ToLower(u)
	if len(u) == 32 {
		u = u[:8] + "-" + u[8:12] + "-" + u[12:16] + "-" + u[16:20] + "-" + u[20:]
	}
	if len(u) != 36 {
		return "", fmt.Errorf("bad server uuid %q", u)
	}
	for i, c := range u {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return "", fmt.Errorf("bad server uuid %q", u)
			}
			continue
		}
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("bad server uuid %q", u)
		}
	}
	return u, nil
}

// normalizeTag checks a MySQL 8.3+ GTID tag: 1-32 characters, a letter or
// underscore first, then letters, digits or underscores; case-insensitive.
func normalizeTag(t string) (string, error) {
	t = strings.ToLower(strings.TrimSpace(t))
	if t == "" || len(t) > 32 {
		return "", fmt.Errorf("bad GTID tag %q", t)
	}
	for i, c := range t {
		ok := c == '_' || (c >= 'a' && c <= 'z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return "", fmt.Errorf("bad GTID tag %q", t)
		}
	}
	return t, nil
}

func isDomainKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func sortSourceKeys(keys []string) {
	slices.SortFunc(keys, func(a, b string) int {
		if isDomainKey(a) && isDomainKey(b) {
			if len(a) != len(b) {
				return len(a) - len(b)
			}
		}
		return strings.Compare(a, b)
	})
}

// unionIntervals merges two sorted, merged interval lists.
func unionIntervals(a, b []Interval) []Interval {
	all := make([]Interval, 0, len(a)+len(b))
	all = append(all, a...)
	all = append(all, b...)
	slices.SortFunc(all, func(x, y Interval) int {
		switch {
		case x.Start < y.Start:
			return -1
		case x.Start > y.Start:
			return 1
		}
		return 0
	})
	out := all[:0:0]
	for _, iv := range all {
		if n := len(out); n > 0 && iv.Start <= out[n-1].End+1 {
			if iv.End > out[n-1].End {
				out[n-1].End = iv.End
			}
			continue
		}
		out = append(out, iv)
	}
	return out
}

// subtractIntervals returns a minus b (both sorted and merged).
func subtractIntervals(a, b []Interval) []Interval {
	var out []Interval
	j := 0
	for _, iv := range a {
		cur := iv
		for j < len(b) && b[j].End < cur.Start {
			j++
		}
		k := j
		done := false
		for k < len(b) && b[k].Start <= cur.End {
			if b[k].Start > cur.Start {
				out = append(out, Interval{cur.Start, b[k].Start - 1})
			}
			if b[k].End >= cur.End {
				done = true
				break
			}
			cur.Start = b[k].End + 1
			k++
		}
		if !done {
			out = append(out, cur)
		}
	}
	return out
}

// MariaDBPosition is the set as a MariaDB GTID position (gtid_slave_pos,
// MASTER_GTID_WAIT): the last sequence number of each domain, with the
// server id that wrote it. Holes inside a domain cannot be expressed there.
func (s GTIDSet) MariaDBPosition() string {
	var parts []string
	for _, k := range s.Sources() {
		ivs := s.sources[k]
		parts = append(parts, fmt.Sprintf("%s-%d-%d", k, s.servers[k], ivs[len(ivs)-1].End))
	}
	return strings.Join(parts, ",")
}
