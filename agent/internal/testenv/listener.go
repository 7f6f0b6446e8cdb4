package testenv

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
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

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
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
	l := &tlsLoop{ln: ln, serve: serve, conns: map[net.Conn]struct{}{}}
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
		raw, err := l.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				l.addErr(fmt.Errorf("accept: %w", err))
			}
			return
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			_ = raw.Close()
			return
		}
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
