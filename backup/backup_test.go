package backup

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/myhoard/myhoard/e2e/harness"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
	"github.com/myhoard/myhoard/storage/storagetest"
)

func TestBuildCommand(t *testing.T) {
	my := BuildCommand(BasebackupOptions{Flavor: mysql.FlavorMySQL, CopyThreads: 4, RegisterRedoLogConsumer: true, EstimateMemory: true},
		"/tmp/b/backup.cnf", "/tmp/b/target", "/tmp/b/lsn")
	want := []string{"xtrabackup", "--defaults-file=/tmp/b/backup.cnf", "--backup", "--stream=xbstream", "--target-dir=/tmp/b/target",
		"--extra-lsndir=/tmp/b/lsn", "--parallel=4", "--no-version-check", "--register-redo-log-consumer", "--estimate-memory=ON"}
	if !slices.Equal(my, want) {
		t.Errorf("MySQL command = %q", my)
	}
	ma := BuildCommand(BasebackupOptions{Flavor: mysql.FlavorMariaDB, Tool: "/usr/bin/mariabackup"}, "/c", "/t", "/l")
	if ma[0] != "/usr/bin/mariabackup" || slices.Contains(ma, "--no-version-check") || !slices.Contains(ma, "--parallel=1") {
		t.Errorf("MariaDB command = %q", ma)
	}
	inc := BuildCommand(BasebackupOptions{Flavor: mysql.FlavorMariaDB, Incremental: &IncrementalBase{LSN: "7912698", RequiredStreams: []string{"a"}}}, "/c", "/t", "/l")
	if !slices.Contains(inc, "--incremental-lsn=7912698") || slices.Contains(ma, "--incremental-lsn=7912698") {
		t.Errorf("incremental command = %q", inc)
	}
	for _, cmd := range [][]string{my, ma} {
		for _, a := range cmd {
			if strings.Contains(a, "password") {
				t.Errorf("credentials on the command line: %q", a)
			}
		}
	}
	cnf := DefaultsFile("[mysqld]\ndatadir=/var/lib/mysql\n", mysql.ConnParams{User: "bk", Password: "s3cret", Socket: "/run/mysqld.sock", Host: "127.0.0.1"}, mysql.FlavorMariaDB)
	if !strings.Contains(cnf, "[client]\nuser=bk\npassword=s3cret\nsocket=/run/mysqld.sock\n") || strings.Contains(cnf, "host=") || strings.Contains(cnf, "ssl") {
		t.Errorf("defaults file with a socket:\n%s", cnf)
	}
	cnf = DefaultsFile("", mysql.ConnParams{User: "bk", Host: "db1", Port: 3307}, mysql.FlavorMariaDB)
	if !strings.Contains(cnf, "host=db1\nport=3307\n") {
		t.Errorf("defaults file over TCP:\n%s", cnf)
	}
}

func TestDefaultsFileTLSAndQuoting(t *testing.T) {
	tests := []struct {
		name   string
		flavor mysql.Flavor
		conn   mysql.ConnParams
		want   string
	}{
		{"MariaDB TLS with a CA", mysql.FlavorMariaDB, mysql.ConnParams{User: "bk", Host: "db1", Port: 3306, RequireTLS: true, CAFile: "/etc/ca.pem"},
			"port=3306\nssl\nssl-ca=/etc/ca.pem\nssl-verify-server-cert\n"},
		{"MariaDB TLS", mysql.FlavorMariaDB, mysql.ConnParams{User: "bk", Host: "db1", Port: 3306, RequireTLS: true}, "port=3306\nssl\n"},
		{"MySQL TLS with a CA", mysql.FlavorMySQL, mysql.ConnParams{User: "bk", Host: "db1", Port: 3306, RequireTLS: true, CAFile: "/etc/ca.pem"},
			"port=3306\nssl-mode=VERIFY_CA\nssl-ca=/etc/ca.pem\n"},
		{"MySQL TLS", mysql.FlavorMySQL, mysql.ConnParams{User: "bk", Host: "db1", Port: 3306, RequireTLS: true}, "port=3306\nssl-mode=REQUIRED\n"},
		{"a password with a comment sign and quotes", mysql.FlavorMariaDB, mysql.ConnParams{User: "bk", Password: `a#b"c\d e`, Socket: "/s"},
			"password=\"a#b\\\"c\\\\d e\"\n"},
	}
	for _, tc := range tests {
		if got := DefaultsFile("", tc.conn, tc.flavor); !strings.Contains(got, tc.want) {
			t.Errorf("%s:\n%s\nwant it to hold %q", tc.name, got, tc.want)
		}
	}
}

func TestParseBinlogPos(t *testing.T) {
	tests := []struct {
		name, in string
		want     ConsistencyPoint
	}{
		{"mariabackup stderr", "[00] 2026-11-25 08:40:01 MySQL binlog position: filename 'binlog.000003', position '208614', GTID of the last change '0-1-93'",
			ConsistencyPoint{"binlog.000003", 208614, "0-1-93"}},
		{"mariabackup xtrabackup_info", "binlog_pos = filename 'binlog.000003', position '208614', GTID of the last change '0-1-93'\n",
			ConsistencyPoint{"binlog.000003", 208614, "0-1-93"}},
		{"xtrabackup 8.0 info with a multi-line GTID", "binlog_pos = filename 'binlog.000012', position '4589', GTID of the last change '3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23,\n4f4a5f0e-8c8b-11ee-a4b1-0242ac120002:1-148'",
			ConsistencyPoint{"binlog.000012", 4589, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-23,4f4a5f0e-8c8b-11ee-a4b1-0242ac120002:1-148"}},
		{"empty server", "binlog_pos = filename 'binlog.000001', position '328'", ConsistencyPoint{"binlog.000001", 328, ""}},
	}
	for _, tc := range tests {
		got, err := ParseBinlogPos(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("%s: %+v %v", tc.name, got, err)
		}
	}
	if _, err := ParseBinlogPos("completed OK!"); err == nil {
		t.Error("want an error without a position")
	}
}

func fileSite(t *testing.T) (*storage.Site, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := storage.OpenDirectory(context.Background(), "s", dir, storage.SiteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestScannerAndUploadsOnMariaDB(t *testing.T) {
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	db := harness.OpenDB(t, in)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	load, err := harness.NewLoadGen(ctx, db, 1)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "scanner.json")
	sc, err := NewScanner(in.BinlogPrefix(), mysql.FlavorMariaDB, state, log)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := load.WriteTransactions(ctx, 5); err != nil {
			t.Fatal(err)
		}
		harness.Exec(t, db, "FLUSH BINARY LOGS")
	}
	added, _, err := sc.Scan(ctx)
	if err != nil || len(added) != 4 {
		t.Fatalf("scan: %d added, %v", len(added), err)
	}
	// The active file is not read; the state survives a restart.
	sc2, err := NewScanner(in.BinlogPrefix(), mysql.FlavorMariaDB, state, log)
	if err != nil || sc2.NextIndex() != added[3].Index+1 || len(sc2.Binlogs()) != 4 {
		t.Fatalf("reloaded scanner: next %d, %d binlogs, %v", sc2.NextIndex(), len(sc2.Binlogs()), err)
	}
	// Consecutive GTID states chain.
	for i := 1; i < len(added); i++ {
		if !added[i].GTIDsBefore.Equal(added[i-1].GTIDsBefore.Union(added[i-1].GTIDsAdded)) {
			t.Errorf("binlog %d does not chain", added[i].Index)
		}
	}

	// Upload with encryption; repeat after simulated crashes.
	site, _ := fileSite(t)
	key := storagetest.Key(t)
	ring := storage.NewKeyring(key)
	sid := storage.NewStreamID(added[0].ProcessedAt)
	enc := storage.EncodeOptions{Compression: storage.CompressionZstd, Key: key}
	for i, b := range added {
		u := BinlogUpload{Ref: storage.BinlogRef{StreamID: sid, RemoteIndex: int64(i + 1), Epoch: 1, ServerID: 101}, Binlog: b, Flavor: mysql.FlavorMariaDB, Encode: enc}
		m, err := UploadBinlog(ctx, site, u, ring)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			// crash after the data, before the manifest
			if err := site.Delete(ctx, u.Ref.ManifestKey()); err != nil {
				t.Fatal(err)
			}
		}
		again, err := UploadBinlog(ctx, site, u, ring)
		if err != nil || again.SHA256 != m.SHA256 || again.EncodedSize != m.EncodedSize {
			t.Fatalf("re-upload of %s: %+v %v", b.Name, again, err)
		}
		var got bytes.Buffer
		if err := site.GetDecoded(ctx, u.Ref.DataKey(), ring, &got); err != nil {
			t.Fatal(err)
		}
		local, _ := os.ReadFile(b.Path)
		if !bytes.Equal(got.Bytes(), local) {
			t.Fatalf("%s differs after the round trip", b.Name)
		}
	}
	count := 0
	_ = site.List(ctx, storage.BinlogsPrefix(sid), func(o storage.ObjectInfo) error { count++; return nil })
	if count != 2*len(added) {
		t.Errorf("%d objects for %d binlogs: not exactly once", count, len(added))
	}
	// Another binlog under a taken index is refused, not overwritten.
	u := BinlogUpload{Ref: storage.BinlogRef{StreamID: sid, RemoteIndex: 1, Epoch: 1, ServerID: 101}, Binlog: added[2], Flavor: mysql.FlavorMariaDB, Encode: enc}
	if _, err := UploadBinlog(ctx, site, u, ring); err == nil || !strings.Contains(err.Error(), "other content") {
		t.Errorf("conflicting upload: %v", err)
	}

	// Purged files leave the list; a hole stops the scanner until skipped.
	harness.Exec(t, db, "PURGE BINARY LOGS TO '"+added[2].Name+"'")
	_, removed, err := sc.Scan(ctx)
	if err != nil || len(removed) != 2 {
		t.Fatalf("after purge: %d removed, %v", len(removed), err)
	}
	harness.Exec(t, db, "FLUSH BINARY LOGS", "FLUSH BINARY LOGS", "FLUSH BINARY LOGS")
	hole := sc.NextIndex() + 1
	if err := os.Rename(sc.Path(hole), sc.Path(hole)+".moved"); err != nil {
		t.Fatal(err)
	}
	added, _, err = sc.Scan(ctx)
	if err != nil || sc.Missing() != hole || len(added) != 1 {
		t.Fatalf("hole: missing %d (want %d), %d added, %v", sc.Missing(), hole, len(added), err)
	}
	if err := sc.SetNextIndex(hole - 1); err == nil {
		t.Error("decreasing the index must be refused")
	}
	if err := sc.SetNextIndex(hole + 1); err != nil {
		t.Fatal(err)
	}
	if !sc.Skipped(hole) || sc.Skipped(hole+1) {
		t.Errorf("skipped: %v %v", sc.Skipped(hole), sc.Skipped(hole+1))
	}
	added, _, err = sc.Scan(ctx)
	if err != nil || sc.Missing() != 0 || len(added) != 1 || added[0].Index != hole+1 {
		t.Fatalf("after skipping: %+v %v", added, err)
	}
}

func TestBasebackupOnMariaDB(t *testing.T) {
	tools, err := harness.FindTools()
	if err != nil {
		t.Fatal(err)
	}
	in := harness.StartInstances(t, 1, harness.Options{})[0]
	db := harness.OpenDB(t, in)
	ctx := context.Background()
	load, err := harness.NewLoadGen(ctx, db, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.WriteTransactions(ctx, 50); err != nil {
		t.Fatal(err)
	}
	site, _ := fileSite(t)
	sid := storage.NewStreamID(timeNow())
	var progress []float64
	opts := BasebackupOptions{
		Flavor: mysql.FlavorMariaDB, ConfigFile: in.ConfigFile, DataDir: in.DataDir, TempDir: t.TempDir(),
		Conn: mysql.ConnParams{User: "root", Socket: in.Socket}, SplitSize: 256 << 10, ServerID: 101,
		Encode:   storage.EncodeOptions{Compression: storage.CompressionZstd},
		Progress: func(p float64) { progress = append(progress, p) },
	}
	m, err := TakeBasebackup(ctx, site, sid, opts, db)
	if err != nil {
		t.Fatal(err)
	}
	pos := harness.QueryString(t, db, "SELECT BINLOG_GTID_POS(?, ?)", m.BinlogName, m.BinlogPosition)
	if m.GTIDExecuted.String() != pos || len(m.Parts) < 2 || m.Size == 0 {
		t.Fatalf("manifest: gtid %q (server says %q at %s:%d), %d parts, %d bytes", m.GTIDExecuted, pos, m.BinlogName, m.BinlogPosition, len(m.Parts), m.Size)
	}
	if len(progress) == 0 || progress[len(progress)-1] < 50 {
		t.Errorf("progress reports: %v", progress)
	}
	// The binlog written during the backup was closed by FLUSH BINARY LOGS.
	if cur := harness.QueryString(t, db, "SELECT @@gtid_binlog_pos"); cur != m.GTIDExecuted.String() {
		t.Logf("writes after the backup point: %s vs %s", cur, m.GTIDExecuted)
	}
	// Download the parts in order, decode, extract with mbstream.
	var enc bytes.Buffer
	for _, p := range m.Parts {
		data, err := site.GetBytes(ctx, p.Key)
		if err != nil {
			t.Fatal(err)
		}
		enc.Write(data)
	}
	d, _, err := storage.NewDecoder(&enc, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	x := exec.Command(tools.Mbstream, "-x", "-C", out)
	x.Stdin = d
	if b, err := x.CombinedOutput(); err != nil {
		t.Fatalf("mbstream: %v\n%s", err, b)
	}
	info, err := os.ReadFile(filepath.Join(out, "xtrabackup_binlog_info"))
	if err != nil || !strings.Contains(string(info), m.BinlogName) || !strings.Contains(string(info), m.GTIDExecuted.String()) {
		t.Fatalf("extracted xtrabackup_binlog_info %q %v", info, err)
	}
	if _, err := os.Stat(filepath.Join(out, "ibdata1")); err != nil {
		t.Fatal("ibdata1 missing from the extracted backup")
	}

	// A missing tool is a clear error; a failing tool leaves no parts.
	o2 := opts
	o2.Tool = "/nonexistent/mariabackup"
	if _, err := TakeBasebackup(ctx, site, storage.NewStreamID(timeNow()), o2, db); !errors.Is(err, ErrToolMissing) || !strings.Contains(err.Error(), "mariadb-backup") {
		t.Errorf("missing tool: %v", err)
	}
	fake := filepath.Join(t.TempDir(), "mariabackup")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nhead -c 3000000 /dev/urandom\necho 'FATAL ERROR: failed to copy datafile' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	o3 := opts
	o3.Tool = fake
	failed := storage.NewStreamID(timeNow())
	_, err = TakeBasebackup(ctx, site, failed, o3, db)
	if err == nil || !strings.Contains(err.Error(), "failed to copy datafile") {
		t.Fatalf("failing tool: %v", err)
	}
	left := 0
	_ = site.List(ctx, storage.StreamPrefix(failed), func(storage.ObjectInfo) error { left++; return nil })
	if left != 0 {
		t.Errorf("%d objects left by a failed basebackup", left)
	}
}

func timeNow() time.Time { return time.Now() }

// TestListingSurvivesBadObjects: among ten backups, a corrupt
// basebackup.json, a newer-version one and a corrupt marker each list as
// broken with the reason; the others list as before.
func TestListingSurvivesBadObjects(t *testing.T) {
	site, _ := fileSite(t)
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var ids []string
	for i := 0; i < 10; i++ {
		ids = append(ids, putFakeBackup(t, site, base.Add(time.Duration(i)*time.Hour), storage.MarkerCompleted, storage.MarkerClosed))
	}
	put := func(key, body string) {
		if err := site.PutBytes(ctx, key, []byte(body), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put(storage.BasebackupManifestKey(ids[2]), `{"version": 1, "stream_id": "`)
	put(storage.BasebackupManifestKey(ids[5]), `{"version": 99, "stream_id": "x"}`)
	put(storage.MarkerKey(ids[7], storage.MarkerClosed), `garbage`)
	list, err := ListBackups(ctx, site, false)
	if err != nil {
		t.Fatalf("one bad object failed the listing: %v", err)
	}
	if len(list) != 10 {
		t.Fatalf("%d backups listed, want 10", len(list))
	}
	want := map[string]string{ids[2]: "not JSON", ids[5]: "version 99 is not supported", ids[7]: "closed.json"}
	for _, b := range list {
		reason, bad := want[b.StreamID]
		switch {
		case bad && (b.BrokenAt == nil || !strings.Contains(b.BrokenReason, reason)):
			t.Errorf("%s: broken %v %q, want the reason %q", b.StreamID, b.BrokenAt, b.BrokenReason, reason)
		case !bad && (b.BrokenAt != nil || b.Basebackup == nil || b.CompletedAt == nil || b.ClosedAt == nil):
			t.Errorf("%s lists as %+v", b.StreamID, b)
		case b.StreamID == ids[2] && (b.CompletedAt == nil || b.ClosedAt == nil):
			t.Errorf("the backup with a corrupt manifest does not age out: %+v", b)
		}
	}
}

// putFakeBackup stores a backup's basebackup.json, one part and the given
// markers (all dated at), as a real backup would leave them; it returns
// the stream id.
func putFakeBackup(t *testing.T, site *storage.Site, at time.Time, markers ...storage.Marker) string {
	t.Helper()
	ctx := context.Background()
	id := storage.NewStreamID(at)
	part := storage.StreamPrefix(id) + "basebackup/00000"
	if err := site.PutBytes(ctx, part, []byte("data"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	m := storage.BasebackupManifest{Version: storage.ManifestVersion, StreamID: id, Flavor: mysql.FlavorMariaDB, BinlogName: "binlog.000001",
		SHA256: "x", Parts: []storage.BasebackupPart{{Key: part, EncodedSize: 4}}}
	body, err := storage.MarshalManifest(&m)
	if err != nil {
		t.Fatal(err)
	}
	if err := site.PutBytes(ctx, storage.BasebackupManifestKey(id), body, storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, mk := range markers {
		if err := storage.WriteMarker(ctx, site, id, mk, storage.MarkerRecord{At: at}); err != nil {
			t.Fatal(err)
		}
	}
	return id
}
