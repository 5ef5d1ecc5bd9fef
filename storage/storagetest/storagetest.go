// Package storagetest gives tests of other packages the storage test
// fixtures: the fixed RSA key pair in storage/testdata (for tests only).
// It must never be imported by non-test code.
package storagetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/myhoard/myhoard/config"
	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// KeyPEM returns the test key pair's public and private PEM.
func KeyPEM(tb testing.TB) (pub, priv string) {
	tb.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		tb.Fatal("storagetest: cannot locate the test data")
	}
	dir := filepath.Join(filepath.Dir(file), "..", "testdata")
	p, err := os.ReadFile(filepath.Join(dir, "test-key-a.pub.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	k, err := os.ReadFile(filepath.Join(dir, "test-key-a.pem"))
	if err != nil {
		tb.Fatal(err)
	}
	return string(p), string(k)
}

// Key returns the test key pair.
func Key(tb testing.TB) *storage.KeyPair {
	tb.Helper()
	pub, priv := KeyPEM(tb)
	kp, err := storage.NewKeyPair(pub, priv)
	if err != nil {
		tb.Fatal(err)
	}
	return kp
}

// Binlogs describe generated binlog objects of one stream: manifests that
// agree with each other (indexes dense from FirstIndex, each binlog's GTIDs
// starting where the previous ended), and optionally a data object each.
type Binlogs struct {
	StreamID   string
	Flavor     mysql.Flavor
	Epoch      int64
	ServerID   uint32
	FirstIndex int64
	Count      int
	// Before is the GTID state before the first binlog; Added what
	// binlog i (0-based) adds (nil: nothing, an idle server's rotations).
	Before mysql.GTIDSet
	Added  func(i int) mysql.GTIDSet
	// Start is the first binlog's first event; they are a minute apart.
	Start time.Time
	// Data is every binlog's data object (nil: none written).
	Data []byte
}

// WriteBinlogs writes the binlogs, concurrency at a time, and returns the
// GTID state after the last.
func WriteBinlogs(ctx context.Context, site *storage.Site, b Binlogs, concurrency int) (mysql.GTIDSet, error) {
	ms := make([]storage.BinlogManifest, b.Count)
	state := b.Before
	for i := range ms {
		added := mysql.NewGTIDSet(b.Flavor)
		if b.Added != nil {
			added = b.Added(i)
		}
		first := b.Start.Add(time.Duration(i) * time.Minute).UTC()
		last := first.Add(59 * time.Second)
		ms[i] = storage.BinlogManifest{Version: storage.ManifestVersion, StreamID: b.StreamID, RemoteIndex: b.FirstIndex + int64(i),
			Epoch: b.Epoch, ServerID: b.ServerID, LocalName: fmt.Sprintf("binlog.%06d", b.FirstIndex+int64(i)), Flavor: b.Flavor,
			GTIDsBefore: state, GTIDsAdded: added, FirstEventAt: &first, LastEventAt: &last, Transactions: int(added.Count()),
			Size: int64(len(b.Data)), EncodedSize: int64(len(b.Data)), SHA256: strings.Repeat("0", 64),
			Codec: storage.Codec{Compression: storage.CompressionNone}, UploadedAt: last.Add(time.Second)}
		state = state.Union(added)
	}
	sem := make(chan struct{}, max(concurrency, 1))
	errs := make(chan error, len(ms))
	var wg sync.WaitGroup
	for i := range ms {
		wg.Add(1)
		sem <- struct{}{}
		go func(m *storage.BinlogManifest) {
			defer wg.Done()
			defer func() { <-sem }()
			ref := m.Ref()
			if b.Data != nil {
				if err := site.PutBytes(ctx, ref.DataKey(), b.Data, storage.PutOptions{}); err != nil {
					errs <- err
					return
				}
			}
			data, err := storage.MarshalManifest(m)
			if err == nil {
				err = site.PutBytes(ctx, ref.ManifestKey(), data, storage.PutOptions{})
			}
			if err != nil {
				errs <- err
			}
		}(&ms[i])
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return state, err
	}
	return state, nil
}

// WriteBackup writes a generated full backup of a stream (one small part,
// basebackup.json, the completed marker, and closed unless open).
func WriteBackup(ctx context.Context, site *storage.Site, streamID string, flavor mysql.Flavor, gtids mysql.GTIDSet, at time.Time, open bool) error {
	part := []byte("generated basebackup part")
	pk := storage.BasebackupPartKey(streamID, 0)
	if err := site.PutBytes(ctx, pk, part, storage.PutOptions{}); err != nil {
		return err
	}
	m := storage.BasebackupManifest{Version: storage.ManifestVersion, StreamID: streamID, Flavor: flavor, ServerID: 1, Tool: "mariabackup",
		BinlogName: "binlog.000001", BinlogPosition: 4, GTIDExecuted: gtids, StartedAt: at.UTC(), EndedAt: at.Add(time.Minute).UTC(),
		Size: int64(len(part)), EncodedSize: int64(len(part)), SHA256: strings.Repeat("0", 64),
		Codec: storage.Codec{Compression: storage.CompressionNone}, Parts: []storage.BasebackupPart{{Key: pk, EncodedSize: int64(len(part))}}, Epoch: 1}
	data, err := storage.MarshalManifest(&m)
	if err != nil {
		return err
	}
	if err := site.PutBytes(ctx, storage.BasebackupManifestKey(streamID), data, storage.PutOptions{}); err != nil {
		return err
	}
	if err := storage.WriteMarker(ctx, site, streamID, storage.MarkerCompleted, storage.MarkerRecord{At: at.Add(2 * time.Minute)}); err != nil {
		return err
	}
	if open {
		return nil
	}
	return storage.WriteMarker(ctx, site, streamID, storage.MarkerClosed, storage.MarkerRecord{At: at.Add(24 * time.Hour)})
}

// ObjectStorage parses an object_storage config block (as a site of a
// minimal config file), for tests that open sites the way the daemon does.
func ObjectStorage(tb testing.TB, block map[string]any) *config.ObjectStorage {
	tb.Helper()
	b, err := json.Marshal(map[string]any{"state_directory": "/tmp/x", "start_command": []string{"x"},
		"backup_sites": map[string]any{"s": map[string]any{"object_storage": block}}})
	if err != nil {
		tb.Fatal(err)
	}
	c, err := config.Parse(b)
	if err != nil {
		tb.Fatal(err)
	}
	return c.BackupSites["s"].ObjectStorage
}
