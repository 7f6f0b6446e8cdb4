package testenv

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// SoakHeader carries a request's id to a SoakAPI.
const SoakHeader = "X-Soak-Id"

// SoakAPI is a mail API for long runs, shaped as MailAPI (HTTPS on
// 127.0.0.1, h2 and http/1.1 by ALPN, keep-alive, a request accepted only
// once its whole body arrived) but keeping no request: only which ids
// (SoakHeader, 0 <= id < n) arrived whole, in a bitmap, and how often a
// marker (the violating recipients' domain) appeared in the plaintext its
// clients sent, whether or not a request completed. Its memory is n/8
// bytes and a few per open connection, whatever the number of requests.
type SoakAPI struct {
	ln     net.Listener
	h1, h2 *http.Server
	marker []byte

	mu      sync.Mutex
	arrived []uint64 // bitmap of ids
	open    map[net.Conn]bool

	requests, duplicates, unknown, markers, conns atomic.Uint64
	wg                                            sync.WaitGroup
}

// SoakStats are a SoakAPI's counters.
type SoakStats struct {
	Requests   uint64 // accepted whole, with a valid id
	Duplicates uint64 // an id accepted a second time
	Unknown    uint64 // accepted whole without a valid id
	Markers    uint64 // times the marker appeared in what clients sent
	Conns      uint64 // connections accepted
}

// NewSoakAPI starts the server for ids below n; it is closed when the
// test ends.
func NewSoakAPI(t testing.TB, ca *CA, n int, marker string) *SoakAPI {
	t.Helper()
	cfg := ca.ServerTLSConfig()
	cfg.NextProtos = []string{"h2", "http/1.1"}
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("testenv: listen on loopback: %v", err)
	}
	s := &SoakAPI{ln: ln, marker: []byte(marker), arrived: make([]uint64, (n+63)/64), open: map[net.Conn]bool{}}
	var h1, h2 http.Protocols
	h1.SetHTTP1(true)
	h2.SetUnencryptedHTTP2(true)
	s.h1 = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: time.Minute, Protocols: &h1}
	s.h2 = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: time.Minute, Protocols: &h2}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			s.track(c, true)
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer s.track(c, false)
				s.serveConn(c.(*tls.Conn))
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close() // cleanup: ends the accept loop
		<-done
		s.mu.Lock()
		for c := range s.open {
			_ = c.Close() // cleanup: ends its serveConn
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return s
}

// Addr is 127.0.0.1:PORT.
func (s *SoakAPI) Addr() string { return s.ln.Addr().String() }

// URL is https://127.0.0.1:PORT.
func (s *SoakAPI) URL() string { return "https://" + s.Addr() }

// Arrived reports whether request id arrived whole.
func (s *SoakAPI) Arrived(id int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return id >= 0 && id/64 < len(s.arrived) && s.arrived[id/64]&(1<<(id%64)) != 0
}

// Stats returns the counters.
func (s *SoakAPI) Stats() SoakStats {
	return SoakStats{Requests: s.requests.Load(), Duplicates: s.duplicates.Load(), Unknown: s.unknown.Load(),
		Markers: s.markers.Load(), Conns: s.conns.Load()}
}

// OpenConns is the number of connections open now.
func (s *SoakAPI) OpenConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

func (s *SoakAPI) track(c net.Conn, open bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if open {
		s.open[c] = true
	} else {
		delete(s.open, c)
		_ = c.Close() // served: its server may have closed it already
	}
}

func (s *SoakAPI) serveConn(c *tls.Conn) {
	_ = c.SetDeadline(time.Now().Add(10 * time.Minute))
	if err := c.Handshake(); err != nil {
		return
	}
	scanned := &markerConn{Conn: c, s: s}
	if c.ConnectionState().NegotiatedProtocol == "h2" {
		_ = s.h2.Serve(&oneConnListener{c: keptDeadline{scanned}, done: make(chan struct{})})
		return
	}
	_ = s.h1.Serve(&oneConnListener{c: scanned, done: make(chan struct{})})
}

func (s *SoakAPI) serve(w http.ResponseWriter, r *http.Request) {
	if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, maxRecordedBody+1)); err != nil {
		return // incomplete: the client went away mid-body
	}
	id, err := strconv.Atoi(r.Header.Get(SoakHeader))
	s.mu.Lock()
	switch {
	case err != nil || id < 0 || id/64 >= len(s.arrived):
		s.unknown.Add(1)
	case s.arrived[id/64]&(1<<(id%64)) != 0:
		s.duplicates.Add(1)
	default:
		s.arrived[id/64] |= 1 << (id % 64)
		s.requests.Add(1)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ErrorCode":0,"Message":"OK"}`+"\n")
}

// markerConn counts the marker in what the client sends, across reads.
type markerConn struct {
	net.Conn
	s    *SoakAPI
	tail []byte // the last len(marker)-1 bytes read
}

func (c *markerConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && len(c.s.marker) > 0 {
		c.tail = append(c.tail, p[:n]...)
		c.s.markers.Add(uint64(bytes.Count(c.tail, c.s.marker)))
		keep := min(len(c.s.marker)-1, len(c.tail))
		c.tail = append(c.tail[:0], c.tail[len(c.tail)-keep:]...)
	}
	return n, err
}
