package testenv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connTimeout bounds every connection so that a stuck client cannot hang
// a test.
const connTimeout = 60 * time.Second

// tlsLoop accepts TLS connections on 127.0.0.1:0 and serves each in its own
// goroutine. It is shared by Server and SMTPServer.
type tlsLoop struct {
	ln    net.Listener
	serve func(conn *tls.Conn, connID int) error
	// preTLS, if set, speaks in plaintext on a new connection until it
	// upgrades to TLS (SMTP STARTTLS).
	preTLS func(conn net.Conn) error
	wg     sync.WaitGroup
	// accepts counts the Accept calls begun and returned (drained).
	accepts calls

	mu     sync.Mutex
	conns  map[*countedConn]struct{}
	nextID int
	errs   []error
	closed bool
}

func startTLSLoop(t testing.TB, cfg *tls.Config, serve func(*tls.Conn, int) error, preTLS ...func(net.Conn) error) *tlsLoop {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: listen on loopback: %v", err)
	}
	l := &tlsLoop{ln: ln, serve: serve, conns: map[*countedConn]struct{}{}}
	if len(preTLS) > 0 {
		l.preTLS = preTLS[0]
	}
	l.wg.Add(1)
	go l.acceptLoop(cfg)
	t.Cleanup(l.close)
	return l
}

func (l *tlsLoop) acceptLoop(cfg *tls.Config) {
	defer l.wg.Done()
	for {
		l.accepts.begin()
		tcp, err := l.ln.Accept()
		l.accepts.end()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.addErr(fmt.Errorf("accept: %w", err))
			}
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = tcp.Close()
			return
		}
		raw := &countedConn{Conn: tcp}
		l.nextID++
		id := l.nextID
		l.conns[raw] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go func() {
			defer l.wg.Done()
			defer func() {
				_ = raw.Close()
				l.mu.Lock()
				delete(l.conns, raw)
				l.mu.Unlock()
			}()
			_ = raw.SetDeadline(time.Now().Add(connTimeout))
			if l.preTLS != nil {
				if err := l.preTLS(raw); err != nil {
					l.addErr(fmt.Errorf("conn %d: before TLS: %w", id, err))
					return
				}
			}
			conn := tls.Server(raw, cfg)
			if err := conn.Handshake(); err != nil {
				l.addErr(fmt.Errorf("conn %d: tls handshake: %w", id, err))
				return
			}
			if err := l.serve(conn, id); err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				l.addErr(fmt.Errorf("conn %d: %w", id, err))
			}
		}()
	}
}

// drained reports whether the server has handled every byte that reached
// it: no connection waits to be accepted, and every open one waits in a
// read for bytes its client has not sent. Otherwise it says what is left.
func (l *tlsLoop) drained() (bool, string) {
	a := l.accepts.snapshot()
	if !a.inCall() {
		return false, "accepting a connection"
	}
	l.mu.Lock()
	conns := make([]*countedConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	info, err := tcpInfo(l.ln.(*net.TCPListener))
	if err != nil {
		return false, err.Error()
	}
	if info.Unacked > 0 { // of a listening socket: its accept queue
		return false, fmt.Sprintf("%d connections waiting to be accepted", info.Unacked)
	}
	for _, c := range conns {
		if ok, why := c.drained(); !ok {
			return false, why
		}
	}
	if l.accepts.snapshot() != a {
		return false, "accepted a connection"
	}
	return true, ""
}

// waitDrained waits until drained; see Server.WaitDrained.
func (l *tlsLoop) waitDrained(t testing.TB, timeout time.Duration) {
	t.Helper()
	Eventually(t, timeout, "the server to handle every byte it received", l.drained)
}

// calls counts the calls to a blocking function begun and returned.
type calls struct{ begun, returned atomic.Uint64 }

func (c *calls) begin() { c.begun.Add(1) }
func (c *calls) end()   { c.returned.Add(1) }

type callCount struct{ begun, returned uint64 }

// snapshot reads returned first: a call that returns in between shows as
// one not begun, never as one still in progress.
func (c *calls) snapshot() callCount {
	r := c.returned.Load()
	return callCount{begun: c.begun.Load(), returned: r}
}

// inCall: exactly one call in progress.
func (c callCount) inCall() bool { return c.begun == c.returned+1 }

// countedConn is a server's connection that counts what its reader took
// from the kernel, for drained.
type countedConn struct {
	net.Conn
	reads    calls
	consumed atomic.Uint64 // bytes returned by Read
}

func (c *countedConn) Read(p []byte) (int, error) {
	c.reads.begin()
	n, err := c.Conn.Read(p)
	// Counted as returned before its bytes are counted as consumed: while
	// a Read looks in progress, the bytes it took are not consumed yet.
	c.reads.end()
	c.consumed.Add(uint64(n))
	return n, err
}

// drained reports whether the connection's reader waits in a Read that
// began after every byte the kernel received for it had been returned by
// earlier Reads, and so handled by the server.
func (c *countedConn) drained() (bool, string) {
	r := c.reads.snapshot()
	if !r.inCall() {
		return false, fmt.Sprintf("connection %v: handling what it read", c.RemoteAddr())
	}
	consumed := c.consumed.Load()
	tcp, ok := c.Conn.(*net.TCPConn)
	if !ok {
		return false, fmt.Sprintf("connection %v: not TCP", c.RemoteAddr())
	}
	info, err := tcpInfo(tcp)
	if err != nil {
		return false, err.Error()
	}
	if c.reads.snapshot() != r {
		return false, fmt.Sprintf("connection %v: reading", c.RemoteAddr())
	}
	if info.Bytes_received != consumed {
		return false, fmt.Sprintf("connection %v: %d of %d bytes received read", c.RemoteAddr(), consumed, info.Bytes_received)
	}
	return true, ""
}

// tcpInfo returns the kernel's TCP_INFO of a socket.
func tcpInfo(s syscall.Conn) (*unix.TCPInfo, error) {
	rc, err := s.SyscallConn()
	if err != nil {
		return nil, err
	}
	var info *unix.TCPInfo
	var ierr error
	if err := rc.Control(func(fd uintptr) { info, ierr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		return nil, err
	}
	if ierr != nil {
		return nil, fmt.Errorf("TCP_INFO: %w", ierr)
	}
	return info, nil
}

func (l *tlsLoop) addErr(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.errs = append(l.errs, err)
	}
}

func (l *tlsLoop) errors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

func (l *tlsLoop) close() {
	l.mu.Lock()
	l.closed = true
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	_ = l.ln.Close()
	l.wg.Wait()
}

// recorder is an append-only, waitable list.
type recorder[T any] struct {
	mu      sync.Mutex
	items   []T
	changed chan struct{}
}

func newRecorder[T any]() *recorder[T] {
	return &recorder[T]{changed: make(chan struct{})}
}

// add appends v after setSeq (if not nil) has given it its 1-based
// position, and wakes up waiters.
func (r *recorder[T]) add(v T, setSeq func(*T, int)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if setSeq != nil {
		setSeq(&v, len(r.items)+1)
	}
	r.items = append(r.items, v)
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder[T]) snapshot() ([]T, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]T(nil), r.items...), r.changed
}

// waitFor returns the first item (in arrival order) for which pred is true.
func (r *recorder[T]) waitFor(pred func(T) bool, timeout time.Duration) (T, []T, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		items, changed := r.snapshot()
		for _, it := range items {
			if pred == nil || pred(it) {
				return it, items, true
			}
		}
		select {
		case <-changed:
		case <-deadline.C:
			var zero T
			return zero, items, false
		}
	}
}
