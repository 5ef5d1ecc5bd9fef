package tlsconfig_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/myhoard/myhoard/tlsconfig"
	"github.com/myhoard/myhoard/tlsconfig/tlstest"
)

func load(t *testing.T, ca string, c tlstest.Cert) *tlsconfig.Store {
	t.Helper()
	s, err := tlsconfig.Load(tlsconfig.Files{CAFile: ca, CertFile: c.CertFile, KeyFile: c.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// handshake connects a client to a server over loopback TCP and returns
// the server's view of the client's certificate (or the first error).
func handshake(server, client *tls.Config) (*x509.Certificate, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	defer ln.Close()
	type result struct {
		peer *x509.Certificate
		err  error
	}
	done := make(chan result, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer conn.Close()
		s := tls.Server(conn, server)
		var r result
		if r.err = s.Handshake(); r.err == nil {
			r.peer = s.ConnectionState().PeerCertificates[0]
			_, r.err = io.ReadFull(s, make([]byte, 1))
		}
		done <- r
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	c := tls.Client(conn, client)
	err = c.Handshake()
	if err == nil {
		_, err = c.Write([]byte{1})
	}
	if err != nil {
		conn.Close() // the server is not left waiting
	}
	r := <-done
	if err == nil {
		err = r.err
	}
	return r.peer, err
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "cluster")
	other := tlstest.NewCA(t, dir, "stranger")
	n1 := load(t, ca.File, ca.Issue(t, "n1"))
	n2 := load(t, ca.File, ca.Issue(t, "n2"))
	rogue := load(t, other.File, other.Issue(t, "n2"))

	peer, err := handshake(n1.MutualServer(), n2.MutualClient())
	if err != nil {
		t.Fatalf("n2 to n1: %v", err)
	}
	if !tlsconfig.Names(peer, "n2") || tlsconfig.Names(peer, "n1") {
		t.Errorf("n1 sees the names %v", tlsconfig.NodeIDs(peer))
	}
	if _, err := handshake(n1.MutualServer(), rogue.MutualClient()); err == nil {
		t.Error("a certificate of another CA was accepted by the server")
	}
	if _, err := handshake(rogue.MutualServer(), n2.MutualClient()); err == nil {
		t.Error("a server of another CA was accepted by the client")
	}
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if _, err := handshake(n1.MutualServer(), noCert); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	old := &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		c, err := tls.LoadX509KeyPair(filepath.Join(dir, "cluster-n2.pem"), filepath.Join(dir, "cluster-n2-key.pem"))
		return &c, err
	}}
	if _, err := handshake(n1.MutualServer(), old); err == nil {
		t.Error("TLS 1.2 was accepted between nodes")
	}
}

func TestRotation(t *testing.T) {
	dir := t.TempDir()
	ca1 := tlstest.NewCA(t, dir, "ca1")
	ca2 := tlstest.NewCA(t, dir, "ca2")
	bundle := filepath.Join(dir, "bundle.pem")
	tlstest.Bundle(t, bundle, ca1)
	c1 := ca1.Issue(t, "n1")
	server := load(t, bundle, c1)
	// The clients already trust both CAs (the first step of a rotation
	// on every node).
	both := tlstest.Bundle(t, filepath.Join(dir, "both.pem"), ca1, ca2)
	oldClient := load(t, both, ca1.Issue(t, "n2"))
	newClient := load(t, both, ca2.Issue(t, "n3"))
	if _, err := handshake(server.MutualServer(), newClient.MutualClient()); err == nil {
		t.Fatal("a CA2 certificate was accepted before the bundle had CA2")
	}
	// Both CAs, then only the new one (the server's own certificate
	// replaced by a CA2 one first).
	tlstest.Bundle(t, bundle, ca1, ca2)
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	cfg := server.MutualServer()
	for _, c := range []*tlsconfig.Store{oldClient, newClient} {
		if _, err := handshake(cfg, c.MutualClient()); err != nil {
			t.Errorf("with both CAs: %v", err)
		}
	}
	c2 := ca2.IssueAs(t, "n1", "n1")
	for _, f := range [][2]string{{c2.CertFile, c1.CertFile}, {c2.KeyFile, c1.KeyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlstest.Bundle(t, bundle, ca2)
	if err := server.Reload(); err != nil {
		t.Fatal(err)
	}
	peer, err := handshake(cfg, newClient.MutualClient())
	if err != nil {
		t.Fatalf("CA2 after the rotation: %v", err)
	}
	if _, err := handshake(cfg, oldClient.MutualClient()); err == nil {
		t.Error("a CA1 certificate still works after CA1 left the bundle")
	}
	if err := server.Verify([]*x509.Certificate{peer}, x509.ExtKeyUsageClientAuth); err != nil {
		t.Errorf("verify a CA2 peer: %v", err)
	}
	// A reload that fails keeps what is in force.
	if err := os.WriteFile(bundle, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := server.Reload(); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("reload of a bad bundle: %v", err)
	}
	if _, err := handshake(cfg, newClient.MutualClient()); err != nil {
		t.Errorf("after a failed reload: %v", err)
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, dir, "a")
	other := tlstest.NewCA(t, dir, "b")
	c := ca.Issue(t, "n1")
	tests := []struct {
		name  string
		files tlsconfig.Files
		want  string
	}{
		{"missing cert", tlsconfig.Files{CertFile: filepath.Join(dir, "nope.pem"), KeyFile: c.KeyFile}, "nope.pem"},
		{"missing CA", tlsconfig.Files{CAFile: filepath.Join(dir, "ca-nope.pem"), CertFile: c.CertFile, KeyFile: c.KeyFile}, "ca-nope.pem"},
		{"other CA", tlsconfig.Files{CAFile: other.File, CertFile: c.CertFile, KeyFile: c.KeyFile}, "is not signed by the CA bundle"},
		{"no key", tlsconfig.Files{CertFile: c.CertFile}, "a certificate and its key are required"},
	}
	for _, tc := range tests {
		_, err := tlsconfig.Load(tc.files)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if errors.Is(err, os.ErrNotExist) && !strings.Contains(err.Error(), dir) {
			t.Errorf("%s: %v does not name the path", tc.name, err)
		}
	}
}
