package testenv

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxRecordedBody bounds a request body the server accepts.
const maxRecordedBody = 64 << 20

// Recorded is one request as the HTTPS server received it.
type Recorded struct {
	// Seq numbers requests of this server from 1 in arrival order.
	Seq int
	// Conn numbers the TLS connections of this server from 1.
	Conn int
	// RemoteAddr is the client's ip:port.
	RemoteAddr string
	// ServerName is the SNI the client sent ("" for IP addresses).
	ServerName string
	// ALPN is the negotiated protocol ("" when the client sent no ALPN).
	ALPN string
	// TLSVersion is the negotiated version (tls.VersionTLS13, ...).
	TLSVersion uint16

	Method string
	// Host is the Host header (or the authority of an absolute target).
	Host string
	// Path is the request target as sent, including the query.
	Path  string
	Proto string
	// Header holds the request headers, canonicalised by net/http; Host is
	// in Host, not here.
	Header http.Header
	// TransferEncoding is e.g. ["chunked"].
	TransferEncoding []string
	// ContentLength is the Content-Length header, -1 when absent.
	ContentLength int64

	// RawHead is the request line and headers exactly as received,
	// including the terminating empty line.
	RawHead []byte
	// RawBody is the body exactly as received on the wire: chunk framing
	// and trailers included, still compressed.
	RawBody []byte
	// Body is the body de-chunked and decoded per Content-Encoding
	// (gzip, x-gzip, deflate; a list is undone right to left).
	Body []byte
	// DecodeError is set when Content-Encoding could not be undone; Body
	// then holds the de-chunked but still encoded bytes.
	DecodeError string

	// Time is when the request was complete.
	Time time.Time
}

// Server is an HTTPS (HTTP/1.1 only) server on 127.0.0.1 that records every
// request and answers 200 with a small JSON body. It closes each connection
// after its first response ("Connection: close"), so that openssl s_client
// and the other clients exit right after the response.
type Server struct {
	loop *tlsLoop
	rec  *recorder[Recorded]
}

// NewServer starts the server; it is closed when the test ends.
func NewServer(t testing.TB, ca *CA) *Server {
	t.Helper()
	s := &Server{rec: newRecorder[Recorded]()}
	s.loop = startTLSLoop(t, ca.ServerTLSConfig(), s.serveConn)
	return s
}

// Addr returns the listening address as "127.0.0.1:port".
func (s *Server) Addr() string { return s.loop.ln.Addr().String() }

// URL returns "https://127.0.0.1:port" (no trailing slash).
func (s *Server) URL() string { return "https://" + s.Addr() }

// Requests returns the requests received so far, in arrival order.
func (s *Server) Requests() []Recorded {
	items, _ := s.rec.snapshot()
	return items
}

// Errors returns connection-level errors seen so far (failed handshakes,
// malformed requests); useful in failure messages.
func (s *Server) Errors() []error { return s.loop.errors() }

// WaitFor waits until a request matching pred (nil matches any) has been
// received and returns the first such request; it fails the test after
// timeout.
func (s *Server) WaitFor(t testing.TB, pred func(Recorded) bool, timeout time.Duration) Recorded {
	t.Helper()
	r, all, ok := s.rec.waitFor(pred, timeout)
	if !ok {
		var b strings.Builder
		for _, x := range all {
			fmt.Fprintf(&b, "\n  #%d %s %s (%d body bytes)", x.Seq, x.Method, x.Path, len(x.Body))
		}
		t.Fatalf("testenv: no matching request within %v; %d received:%s; server errors: %v", timeout, len(all), b.String(), s.Errors())
	}
	return r
}

// WaitDrained waits until the server has handled every byte that reached
// it so far: no connection waits to be accepted, and each open one waits
// in a read for bytes its client has not sent yet. A test that then finds
// no request knows that none was sent, not that the server lagged behind.
// It fails the test after timeout.
func (s *Server) WaitDrained(t testing.TB, timeout time.Duration) {
	t.Helper()
	s.loop.waitDrained(t, timeout)
}

// wireTap keeps every plaintext byte read from the TLS connection.
type wireTap struct {
	r   io.Reader
	buf bytes.Buffer
}

func (w *wireTap) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	w.buf.Write(p[:n])
	return n, err
}

type response struct {
	OK      bool   `json:"ok"`
	Seq     int    `json:"seq"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	BodyLen int    `json:"body_len"`
}

func (s *Server) serveConn(conn *tls.Conn, connID int) error {
	state := conn.ConnectionState()
	tap := &wireTap{r: conn}
	br := bufio.NewReader(tap)
	consumed := func() int { return tap.buf.Len() - br.Buffered() }

	start := consumed()
	req, err := http.ReadRequest(br)
	if err != nil {
		if start == tap.buf.Len() && errors.Is(err, io.EOF) {
			return nil // client closed without sending anything
		}
		return fmt.Errorf("read request: %w", err)
	}
	headEnd := consumed()
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		if _, err := io.WriteString(conn, "HTTP/1.1 100 Continue\r\n\r\n"); err != nil {
			return fmt.Errorf("write 100 continue: %w", err)
		}
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, maxRecordedBody+1))
	if err != nil {
		return fmt.Errorf("read request body: %w", err)
	}
	if len(body) > maxRecordedBody {
		return fmt.Errorf("request body larger than %d bytes", maxRecordedBody)
	}
	end := consumed()
	wire := tap.buf.Bytes()

	rec := Recorded{
		Conn:             connID,
		RemoteAddr:       conn.RemoteAddr().String(),
		ServerName:       state.ServerName,
		ALPN:             state.NegotiatedProtocol,
		TLSVersion:       state.Version,
		Method:           req.Method,
		Host:             req.Host,
		Path:             req.RequestURI,
		Proto:            req.Proto,
		Header:           req.Header,
		TransferEncoding: req.TransferEncoding,
		ContentLength:    req.ContentLength,
		RawHead:          bytes.Clone(wire[start:headEnd]),
		RawBody:          bytes.Clone(wire[headEnd:end]),
		Body:             body,
		Time:             time.Now(),
	}
	if len(req.TransferEncoding) > 0 {
		rec.ContentLength = -1
	} else if req.Header.Get("Content-Length") == "" {
		rec.ContentLength = -1
	}
	if ce := req.Header.Get("Content-Encoding"); ce != "" && len(body) > 0 {
		decoded, err := decodeContent(ce, body)
		if err != nil {
			rec.DecodeError = err.Error()
		} else {
			rec.Body = decoded
		}
	}

	s.rec.add(rec, func(r *Recorded, seq int) { r.Seq = seq; rec.Seq = seq })

	payload, err := json.Marshal(response{OK: true, Seq: rec.Seq, Method: rec.Method, Path: rec.Path, BodyLen: len(rec.Body)})
	if err != nil {
		return fmt.Errorf("marshal response: %w", err)
	}
	payload = append(payload, '\n')
	var out bytes.Buffer
	out.WriteString("HTTP/1.1 200 OK\r\n")
	out.WriteString("Content-Type: application/json\r\n")
	out.WriteString("Content-Length: " + strconv.Itoa(len(payload)) + "\r\n")
	out.WriteString("Connection: close\r\n\r\n")
	if req.Method != http.MethodHead {
		out.Write(payload)
	}
	if _, err := conn.Write(out.Bytes()); err != nil {
		return fmt.Errorf("write response: %w", err)
	}
	if err := conn.CloseWrite(); err != nil {
		return fmt.Errorf("send close_notify: %w", err)
	}
	// Give the client a moment to read the response and close first, so the
	// server does not reset a connection with unread client data.
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, _ = io.Copy(io.Discard, conn)
	return nil
}

// decodeContent undoes a Content-Encoding list such as "gzip" or
// "deflate, gzip" (applied left to right, so undone right to left).
func decodeContent(contentEncoding string, b []byte) ([]byte, error) {
	codings := strings.Split(contentEncoding, ",")
	for i := len(codings) - 1; i >= 0; i-- {
		var err error
		switch c := strings.ToLower(strings.TrimSpace(codings[i])); c {
		case "", "identity":
		case "gzip", "x-gzip":
			b, err = readAllFrom(gzip.NewReader(bytes.NewReader(b)))
		case "deflate":
			// HTTP "deflate" is zlib-wrapped; some clients send raw deflate.
			var zb []byte
			zb, err = readAllFrom(zlib.NewReader(bytes.NewReader(b)))
			if err != nil {
				zb, err = io.ReadAll(flate.NewReader(bytes.NewReader(b)))
			}
			b = zb
		default:
			return nil, fmt.Errorf("unsupported content-encoding %q", c)
		}
		if err != nil {
			return nil, fmt.Errorf("decode content-encoding %q: %w", contentEncoding, err)
		}
	}
	return b, nil
}

func readAllFrom[R io.ReadCloser](r R, err error) ([]byte, error) {
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(io.LimitReader(r, maxRecordedBody))
}
