package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/myhoard/myhoard/mysql"
	"github.com/myhoard/myhoard/storage"
)

// BinlogUpload says what to upload and under which name.
type BinlogUpload struct {
	Ref        storage.BinlogRef
	Binlog     LocalBinlog
	Flavor     mysql.Flavor
	ServerUUID string
	Encode     storage.EncodeOptions
	// CopyFrom, when set, names the same binlog already uploaded to
	// another stream of the same site: the object is copied in storage
	// instead of encoded again.
	CopyFrom *storage.BinlogRef
	// Gate must pass right before the manifest makes the binlog visible
	// (the cluster's check that this node is still the primary for
	// Ref.Epoch); its refusal stops the upload.
	Gate Gate
}

// ErrGateClosed wraps the gate's error.
var ErrGateClosed = errors.New("not allowed to upload")

// UploadBinlog puts one binlog into a stream: the encoded data, then its
// manifest, both write-once. It is idempotent after a crash at any point:
// a data object or manifest that is already there is verified (same
// content) instead of written again, so every binlog ends up in storage
// exactly once under its remote index.
func UploadBinlog(ctx context.Context, site *storage.Site, u BinlogUpload, keys storage.Keyring) (*storage.BinlogManifest, error) {
	d, err := uploadData(ctx, site, u, keys)
	if err != nil {
		return nil, err
	}
	return writeManifest(ctx, site, u, d)
}

// UploadBinlogs uploads binlogs in order with the data of up to parallel
// files encoded and sent at once; manifests are written strictly in order,
// and done is called after each one (to advance the caller's cursor). It
// stops at the first failure: what was done before it stays done.
func UploadBinlogs(ctx context.Context, site *storage.Site, us []BinlogUpload, keys storage.Keyring, parallel int, done func(m *storage.BinlogManifest, copied bool) error) error {
	if parallel < 1 {
		parallel = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		d   uploadedData
		err error
	}
	results := make([]chan result, len(us))
	sem := make(chan struct{}, parallel)
	for i := range us {
		results[i] = make(chan result, 1)
	}
	go func() {
		for i, u := range us {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				results[i] <- result{err: ctx.Err()}
				continue
			}
			go func(i int, u BinlogUpload) {
				d, err := uploadData(ctx, site, u, keys)
				results[i] <- result{d, err}
			}(i, u)
		}
	}()
	for i, u := range us {
		r := <-results[i]
		<-sem
		if r.err != nil {
			return r.err
		}
		m, err := writeManifest(ctx, site, u, r.d)
		if err != nil {
			return err
		}
		if err := done(m, r.d.copied); err != nil {
			return err
		}
	}
	return nil
}

type uploadedData struct {
	sum           string
	size, encoded int64
	copied        bool
}

// uploadData writes the binlog's encoded data object (write-once; verified
// when it is already there).
func uploadData(ctx context.Context, site *storage.Site, u BinlogUpload, keys storage.Keyring) (uploadedData, error) {
	ref := u.Ref
	if u.CopyFrom != nil {
		if d, err := copyData(ctx, site, u); err == nil {
			return d, nil
		} else if ctx.Err() != nil {
			return d, err
		}
		// the source is gone or differs: encode and upload instead
	}
	// The data is hashed while it is encoded (one read of the file); a
	// separate hash is needed only to verify an object that is already
	// there.
	var d uploadedData
	_, err := site.Put(ctx, ref.DataKey(), func() (io.ReadCloser, error) {
		return encodeFile(u.Binlog.Path, u.Encode, &d.encoded, &d.sum, &d.size)
	}, storage.PutOptions{IfNotExist: true})
	switch {
	case errors.Is(err, storage.ErrExists):
		// Uploaded before a crash: it must hold the same binlog.
		if d.sum, d.size, err = fileSHA256(u.Binlog.Path); err != nil {
			return d, fmt.Errorf("upload binlog %s: %w", u.Binlog.Name, err)
		}
		if d.encoded, err = verifyRemote(ctx, site, ref.DataKey(), d.sum, keys); err != nil {
			return d, fmt.Errorf("upload binlog %s: %w", u.Binlog.Name, err)
		}
	case err != nil:
		return d, fmt.Errorf("upload binlog %s: %w", u.Binlog.Name, err)
	}
	if d.size != u.Binlog.Size {
		return d, fmt.Errorf("upload binlog %s: the file is %d bytes, it was %d when scanned", u.Binlog.Name, d.size, u.Binlog.Size)
	}
	return d, nil
}

// copyData copies another stream's object of the same binlog, after
// checking from its manifest that it is that binlog.
func copyData(ctx context.Context, site *storage.Site, u BinlogUpload) (uploadedData, error) {
	src := *u.CopyFrom
	data, err := site.GetBytes(ctx, src.ManifestKey())
	if err != nil {
		return uploadedData{}, err
	}
	var m storage.BinlogManifest
	if err := storage.UnmarshalManifest(src.ManifestKey(), data, &m); err != nil {
		return uploadedData{}, err
	}
	if m.LocalName != u.Binlog.Name || m.Size != u.Binlog.Size {
		return uploadedData{}, fmt.Errorf("%s describes %s, not %s", src.ManifestKey(), m.LocalName, u.Binlog.Name)
	}
	if err := site.Copy(ctx, u.Ref.DataKey(), src.DataKey()); err != nil {
		return uploadedData{}, err
	}
	return uploadedData{sum: m.SHA256, size: m.Size, encoded: m.EncodedSize, copied: true}, nil
}

// writeManifest makes an uploaded binlog visible (write-once; an existing
// manifest must describe the same file).
func writeManifest(ctx context.Context, site *storage.Site, u BinlogUpload, d uploadedData) (*storage.BinlogManifest, error) {
	ref := u.Ref
	m := &storage.BinlogManifest{
		Version: storage.ManifestVersion, StreamID: ref.StreamID, RemoteIndex: ref.RemoteIndex, Epoch: ref.Epoch,
		ServerID: ref.ServerID, ServerUUID: u.ServerUUID, LocalName: u.Binlog.Name, Flavor: u.Flavor,
		GTIDsBefore: u.Binlog.GTIDsBefore, GTIDsAdded: u.Binlog.GTIDsAdded,
		FirstEventAt: u.Binlog.FirstEventAt, LastEventAt: u.Binlog.LastEventAt, Transactions: u.Binlog.Transactions,
		Size: d.size, EncodedSize: d.encoded, SHA256: d.sum,
		Codec:      storage.Codec{Compression: u.Encode.Compression, KeyID: keyID(u.Encode.Key)},
		UploadedAt: time.Now().UTC(),
	}
	body, err := storage.MarshalManifest(m)
	if err != nil {
		return nil, err
	}
	if err := u.Gate.Pass(ctx); err != nil {
		return nil, fmt.Errorf("upload binlog %s: %w", u.Binlog.Name, err)
	}
	err = site.PutBytes(ctx, ref.ManifestKey(), body, storage.PutOptions{IfNotExist: true, ContentType: "application/json"})
	if errors.Is(err, storage.ErrExists) {
		var have storage.BinlogManifest
		data, gerr := site.GetBytes(ctx, ref.ManifestKey())
		if gerr == nil {
			gerr = storage.UnmarshalManifest(ref.ManifestKey(), data, &have)
		}
		if gerr != nil {
			return nil, fmt.Errorf("upload binlog %s: verify existing manifest: %w", u.Binlog.Name, gerr)
		}
		if have.SHA256 != d.sum || have.LocalName != u.Binlog.Name {
			return nil, fmt.Errorf("upload binlog %s: %s already describes another binlog (%s)", u.Binlog.Name, ref.ManifestKey(), have.LocalName)
		}
		return &have, nil
	}
	if err != nil {
		return nil, fmt.Errorf("upload binlog %s: manifest: %w", u.Binlog.Name, err)
	}
	return m, nil
}

func keyID(k *storage.KeyPair) string {
	if k == nil {
		return ""
	}
	return k.ID
}

func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// encodeFile streams the encoded form of a file; once the stream ends,
// encoded, sum and size hold the encoded length, the file's SHA-256 and its
// length.
func encodeFile(path string, opts storage.EncodeOptions, encoded *int64, sum *string, size *int64) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() {
		defer f.Close()
		cw := &storage.CountingWriter{W: pw}
		h := sha256.New()
		enc, err := storage.NewEncoder(cw, opts)
		var n int64
		if err == nil {
			n, err = io.Copy(io.MultiWriter(enc, h), f)
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		*encoded, *sum, *size = cw.N, hex.EncodeToString(h.Sum(nil)), n
		pw.CloseWithError(err)
	}()
	return pr, nil
}

// verifyRemote decodes an object and checks its SHA-256; it returns the
// object's encoded size.
func verifyRemote(ctx context.Context, site *storage.Site, key, want string, keys storage.Keyring) (int64, error) {
	info, err := site.Stat(ctx, key)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	if err := site.GetDecoded(ctx, key, keys, h); err != nil {
		return 0, fmt.Errorf("verify: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return 0, fmt.Errorf("%s already exists with other content (sha256 %s, local %s)", key, got, want)
	}
	return info.Size, nil
}
