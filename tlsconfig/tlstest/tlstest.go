// Package tlstest makes certificate authorities and node certificates for
// tests (crypto/x509, no openssl): PEM files in a directory, the way an
// operator's tooling would hand them to myhoard. It is test support only.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority.
type CA struct {
	Name string
	// File is its certificate (PEM), the CA bundle of its nodes.
	File string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

// NewCA makes a CA whose files go to dir.
func NewCA(t testing.TB, dir, name string) *CA {
	t.Helper()
	key, tmpl := newTemplate(t, name)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &CA{Name: name, File: filepath.Join(dir, name+"-ca.pem"), cert: cert, key: key, dir: dir}
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// newTemplate makes a key and a day-long certificate template for cn.
func newTemplate(t testing.TB, cn string) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key, &x509.Certificate{SerialNumber: serial(t), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
}

// Cert is an issued certificate's files.
type Cert struct {
	CertFile, KeyFile string
}

// Issue makes a certificate for node id (its CN and DNS SAN), usable as
// server and client, valid for 127.0.0.1 too. Extra DNS names may follow.
func (ca *CA) Issue(t testing.TB, id string, extra ...string) Cert {
	t.Helper()
	return ca.IssueAs(t, id, id, extra...)
}

// IssueAs makes a certificate for id written under the file name file.
func (ca *CA) IssueAs(t testing.TB, file, id string, extra ...string) Cert {
	t.Helper()
	key, tmpl := newTemplate(t, id)
	tmpl.DNSNames, tmpl.IPAddresses = append([]string{id}, extra...), []net.IP{net.ParseIP("127.0.0.1")}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := Cert{CertFile: filepath.Join(ca.dir, fmt.Sprintf("%s-%s.pem", ca.Name, file)),
		KeyFile: filepath.Join(ca.dir, fmt.Sprintf("%s-%s-key.pem", ca.Name, file))}
	writePEM(t, c.CertFile, "CERTIFICATE", der)
	writePEM(t, c.KeyFile, "EC PRIVATE KEY", keyDER)
	return c
}

// Bundle writes the certificates of several CAs into one file.
func Bundle(t testing.TB, path string, cas ...*CA) string {
	t.Helper()
	var out []byte
	for _, ca := range cas {
		b, err := os.ReadFile(ca.File)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func serial(t testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// WithClusterCerts copies a myhoard config file (JSON) to dir with its
// cluster.tls pointing at a new CA and a certificate for its
// cluster.node_id, and returns the copy's path: the example config is
// valid once its certificate files exist.
func WithClusterCerts(t testing.TB, path, dir string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	cl, _ := cfg["cluster"].(map[string]any)
	if cl == nil {
		t.Fatalf("%s has no cluster block", path)
	}
	id, _ := cl["node_id"].(string)
	ca := NewCA(t, dir, "example")
	c := ca.Issue(t, id)
	cl["tls"] = map[string]any{"ca_file": ca.File, "cert_file": c.CertFile, "key_file": c.KeyFile}
	out := filepath.Join(dir, filepath.Base(path))
	b, _ := json.MarshalIndent(cfg, "", "  ")
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}
