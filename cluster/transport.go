package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/myhoard/myhoard/tlsconfig"
)

// streamLayer carries Raft over mutual TLS 1.3: both ends present a
// certificate of the cluster's CA bundle in force at the handshake. A
// peer that does not (a plain TCP client speaking Raft RPC, a certificate
// of another CA) fails the handshake and is dropped before Raft reads a
// byte. Without a store (cluster.insecure) it is plain TCP.
type streamLayer struct {
	ln        net.Listener
	advertise net.Addr
	tls       *tlsconfig.Store // nil: plain TCP
	conns     *connSet
}

func newStreamLayer(bind string, store *tlsconfig.Store) (*streamLayer, error) {
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, err
	}
	addr, err := net.ResolveTCPAddr("tcp", bind)
	if err != nil || addr.IP == nil || addr.IP.IsUnspecified() || addr.Port == 0 {
		addr, _ = ln.Addr().(*net.TCPAddr)
	}
	return &streamLayer{ln: ln, advertise: addr, tls: store, conns: newConnSet()}, nil
}

// Accept hands Raft the next connection; the TLS handshake happens on its
// first read, in Raft's goroutine for the connection, so a slow or hostile
// peer never holds up the others.
func (l *streamLayer) Accept() (net.Conn, error) {
	c, err := l.ln.Accept()
	if err != nil || l.tls == nil {
		return c, err
	}
	tc := tls.Server(c, l.tls.MutualServer())
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return l.conns.track(&handshakeConn{Conn: tc, tc: tc}, tc, x509.ExtKeyUsageClientAuth), nil
}

func (l *streamLayer) Close() error   { return l.ln.Close() }
func (l *streamLayer) Addr() net.Addr { return l.advertise }

// Dial connects to another node's Raft address.
func (l *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if l.tls == nil {
		return d.Dial("tcp", string(address))
	}
	tc, err := tls.DialWithDialer(d, "tcp", string(address), l.tls.MutualClient())
	if err != nil {
		return nil, fmt.Errorf("raft connection to %s: %w", address, err)
	}
	return l.conns.track(tc, tc, x509.ExtKeyUsageServerAuth), nil
}

// handshakeConn clears the handshake deadline once the handshake is done
// (Raft sets its own deadlines on the connections it dials, not on the
// ones it accepts).
type handshakeConn struct {
	net.Conn
	tc   *tls.Conn
	once sync.Once
	err  error
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	c.once.Do(func() {
		c.err = c.tc.Handshake()
		_ = c.tc.SetDeadline(time.Time{})
	})
	if c.err != nil {
		c.tc.Close()
		return 0, c.err
	}
	return c.Conn.Read(p)
}

// connSet tracks live TLS connections, so that after a certificate
// rotation those whose peer the new CA bundle refuses are closed.
type connSet struct {
	mu    sync.Mutex
	conns map[*tls.Conn]x509.ExtKeyUsage
}

func newConnSet() *connSet { return &connSet{conns: map[*tls.Conn]x509.ExtKeyUsage{}} }

// trackedConn leaves the set when it is closed.
type trackedConn struct {
	net.Conn
	tc  *tls.Conn
	set *connSet
}

// track adds tc (whose peer must hold usage) and returns c, which leaves
// the set on Close.
func (s *connSet) track(c net.Conn, tc *tls.Conn, usage x509.ExtKeyUsage) net.Conn {
	s.add(tc, usage)
	return &trackedConn{Conn: c, tc: tc, set: s}
}

func (s *connSet) add(tc *tls.Conn, usage x509.ExtKeyUsage) {
	s.mu.Lock()
	s.conns[tc] = usage
	s.mu.Unlock()
}

func (s *connSet) remove(tc *tls.Conn) {
	s.mu.Lock()
	delete(s.conns, tc)
	s.mu.Unlock()
}

func (c *trackedConn) Close() error {
	c.set.remove(c.tc)
	return c.Conn.Close()
}

// closeRefused closes the connections whose peer certificate the store's
// CA bundle no longer accepts; it returns how many.
func (s *connSet) closeRefused(store *tlsconfig.Store) int {
	s.mu.Lock()
	var refused []*tls.Conn
	for c, usage := range s.conns {
		st := c.ConnectionState()
		if st.HandshakeComplete && store.Verify(st.PeerCertificates, usage) != nil {
			refused = append(refused, c)
		}
	}
	s.mu.Unlock()
	for _, c := range refused {
		s.remove(c)
		c.Close()
	}
	return len(refused)
}
