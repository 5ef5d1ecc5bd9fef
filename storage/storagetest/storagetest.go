// Package storagetest gives tests of other packages the storage test
// fixtures: the fixed RSA key pair in storage/testdata (for tests only).
// It must never be imported by non-test code.
package storagetest

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"

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
