package testenv

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// maxTapped bounds the plaintext a MailAPI keeps of what its clients sent.
const maxTapped = 64 << 20

// APIRequest is one request a MailAPI accepted: its body arrived whole.
type APIRequest struct {
	Proto  string // "HTTP/1.1", "HTTP/2.0"
	Method string
	Host   string
	Path   string
	Header http.Header
	Body   []byte
}

// MailAPI is a fake mail provider API that behaves as the big ones do:
// HTTPS on 127.0.0.1 offering h2 and http/1.1 by ALPN (h2 preferred),
// keep-alive, and a request accepted (recorded, answered 200) only once
// its whole body has arrived. It also keeps every decrypted byte its
// clients sent, so that a test can tell how much of a blocked message
// reached it, complete or not.
type MailAPI struct {
	ln net.Listener
	// h1 serves the connections that chose http/1.1, h2 those that chose
	// h2: net/http's own HTTP/2 server, handed the tapped plaintext
	// connection (not the *tls.Conn, hence its "unencrypted" HTTP/2).
	h1, h2 *http.Server

	mu    sync.Mutex
	reqs  []APIRequest
	tap   bytes.Buffer
	conns sync.WaitGroup
	open  map[net.Conn]bool
}

// NewMailAPI starts the server; it is closed when the test ends.
func NewMailAPI(t testing.TB, ca *CA) *MailAPI {
	t.Helper()
	cfg := ca.ServerTLSConfig()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("testenv: listen on loopback: %v", err)
	}
	m := &MailAPI{ln: ln, open: map[net.Conn]bool{}}
	var h1, h2 http.Protocols
	h1.SetHTTP1(true)
	h2.SetUnencryptedHTTP2(true)
	m.h1 = &http.Server{Handler: http.HandlerFunc(m.serve), ReadHeaderTimeout: 10 * time.Second, Protocols: &h1}
	m.h2 = &http.Server{Handler: http.HandlerFunc(m.serve), ReadHeaderTimeout: 10 * time.Second, Protocols: &h2}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			m.track(c, true)
			m.conns.Add(1)
			go func() {
				defer m.conns.Done()
				defer m.track(c, false)
				m.serveConn(c.(*tls.Conn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close() // cleanup: ends the accept loop
		<-done
		m.mu.Lock()
		for c := range m.open {
			_ = c.Close() // cleanup: ends its serveConn
		}
		m.mu.Unlock()
		m.conns.Wait()
	})
	return m
}

func (m *MailAPI) track(c net.Conn, open bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if open {
		m.open[c] = true
	} else {
		delete(m.open, c)
		_ = c.Close() // served: its server may have closed it already
	}
}

// URL is https://127.0.0.1:PORT.
func (m *MailAPI) URL() string { return "https://" + m.ln.Addr().String() }

// Addr is 127.0.0.1:PORT.
func (m *MailAPI) Addr() string { return m.ln.Addr().String() }

// Requests returns the requests accepted so far.
func (m *MailAPI) Requests() []APIRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]APIRequest(nil), m.reqs...)
}

// Received returns every decrypted byte the clients sent so far, requests
// accepted or not (at most 64 MiB).
func (m *MailAPI) Received() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.tap.Bytes())
}

func (m *MailAPI) serveConn(c *tls.Conn) {
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if err := c.Handshake(); err != nil {
		return
	}
	tapped := &tappedConn{Conn: c, m: m}
	if c.ConnectionState().NegotiatedProtocol == "h2" {
		// HTTP/2 on this one connection, from the client preface on; the
		// minute above stays its deadline.
		_ = m.h2.Serve(&oneConnListener{c: keptDeadline{tapped}, done: make(chan struct{})})
		return
	}
	// HTTP/1.1 with keep-alive, one connection at a time.
	_ = m.h1.Serve(&oneConnListener{c: tapped, done: make(chan struct{})})
}

func (m *MailAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody+1))
	if err != nil || len(body) > maxRecordedBody {
		// Incomplete: the client went away (or was stopped) mid-body.
		return
	}
	m.mu.Lock()
	m.reqs = append(m.reqs, APIRequest{Proto: r.Proto, Method: r.Method, Host: r.Host, Path: r.RequestURI, Header: r.Header, Body: body})
	m.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ErrorCode":0,"Message":"OK"}`+"\n")
}

// tappedConn keeps what the client sent.
type tappedConn struct {
	net.Conn
	m *MailAPI
}

func (c *tappedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.m.mu.Lock()
		if c.m.tap.Len()+n <= maxTapped {
			c.m.tap.Write(p[:n])
		}
		c.m.mu.Unlock()
	}
	return n, err
}

// keptDeadline keeps the deadline serveConn set on an h2 connection, as
// x/net's http2.Server.ServeConn did: net/http would replace it with
// ReadHeaderTimeout while it waits for the client preface, then clear it
// when it hands the connection to its HTTP/2 server, which sets none of
// its own here (no ReadTimeout, WriteTimeout, IdleTimeout or
// WriteByteTimeout).
type keptDeadline struct{ net.Conn }

func (keptDeadline) SetDeadline(time.Time) error      { return nil }
func (keptDeadline) SetReadDeadline(time.Time) error  { return nil }
func (keptDeadline) SetWriteDeadline(time.Time) error { return nil }

// oneConnListener hands http.Server one connection, then waits until it
// is closed.
type oneConnListener struct {
	c    net.Conn
	once sync.Once
	done chan struct{}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = &closeNotifier{Conn: l.c, done: l.done} })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, errors.New("testenv: connection served")
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

type closeNotifier struct {
	net.Conn
	once sync.Once
	done chan struct{}
}

func (c *closeNotifier) Close() error {
	c.once.Do(func() { close(c.done) })
	return c.Conn.Close()
}
