// Package tlsconfig builds the TLS configurations of myhoard's network
// traffic from PEM files: mutual TLS 1.3 between the nodes of a cluster
// (Raft and the cluster RPC; every peer presents a certificate of the
// cluster's CA) and the server side of the HTTPS API. It reloads the files
// on request, so certificates and the CA bundle rotate without a restart:
// every handshake after a reload uses the new files, and Verify tells
// which live connections the new CA bundle no longer accepts.
//
// A node certificate names the node id it speaks for, as a DNS SAN or as
// its Common Name (NodeIDs). This package never opens connections and
// never decides what a node may do; it only says who a peer is.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync/atomic"
)

// Files are the PEM files of one TLS identity. CAFile is the bundle peers
// are verified against (empty: no peer verification, for a server-only
// identity such as the HTTPS API).
type Files struct {
	CAFile, CertFile, KeyFile string
}

// Store holds the current certificate and CA bundle.
type Store struct {
	files Files
	cur   atomic.Pointer[material]
}

type material struct {
	cert *tls.Certificate
	leaf *x509.Certificate
	pool *x509.CertPool // nil without a CA file
}

// Load reads the files; every problem names the file.
func Load(f Files) (*Store, error) {
	s := &Store{files: f}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload reads the files again. On an error the old certificate and
// bundle stay in force.
func (s *Store) Reload() error {
	m, err := read(s.files)
	if err != nil {
		return err
	}
	s.cur.Store(m)
	return nil
}

func read(f Files) (*material, error) {
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("a certificate and its key are required")
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate %s with key %s: %w", f.CertFile, f.KeyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", f.CertFile, err)
	}
	cert.Leaf = leaf
	m := &material{cert: &cert, leaf: leaf}
	if f.CAFile != "" {
		pem, err := os.ReadFile(f.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA bundle: %w", err)
		}
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA bundle %s: no PEM certificate in it", f.CAFile)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, fmt.Errorf("certificate %s is not signed by the CA bundle %s: %w", f.CertFile, f.CAFile, err)
		}
	}
	return m, nil
}

// Names are the node ids the certificate in force names.
func (s *Store) Names() []string { return NodeIDs(s.cur.Load().leaf) }

// NodeIDs are the names a certificate speaks for: its DNS SANs and its
// Common Name.
func NodeIDs(c *x509.Certificate) []string {
	if c == nil {
		return nil
	}
	out := append([]string(nil), c.DNSNames...)
	if c.Subject.CommonName != "" && !slices.Contains(out, c.Subject.CommonName) {
		out = append(out, c.Subject.CommonName)
	}
	return out
}

// Names reports whether the certificate speaks for node id.
func Names(c *x509.Certificate, id string) bool {
	return id != "" && slices.Contains(NodeIDs(c), id)
}

// Verify checks a peer's certificate chain against the CA bundle in force
// (a connection made before a rotation that the new bundle refuses is
// closed by its owner).
func (s *Store) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) error {
	m := s.cur.Load()
	if m.pool == nil {
		return errors.New("no CA bundle to verify peers against")
	}
	if len(chain) == 0 {
		return errors.New("the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{Roots: m.pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

// MutualServer is the server side of mutual TLS 1.3: the peer must present
// a certificate of the CA bundle in force at the handshake.
func (s *Store) MutualServer() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			m := s.cur.Load()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*m.cert},
				ClientCAs:    m.pool,
				ClientAuth:   tls.RequireAndVerifyClientCert,
			}, nil
		},
	}
}

// MutualClient is the client side of mutual TLS 1.3: it presents the
// certificate in force and accepts any server certificate of the CA
// bundle in force (which node answered is the caller's to check, with
// Names on the connection's peer certificate).
func (s *Store) MutualClient() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
		// The chain is verified below against the bundle in force, not
		// against a host name: nodes are named by their certificates.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return s.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
		},
	}
}

// Server is the server side of one-way TLS 1.2+ (the HTTPS API): the
// certificate in force, no client certificate asked for.
func (s *Store) Server() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
	}
}
