// Package parse is the third stage of the pipeline: it turns a
// connection's byte streams into messages. This file parses HTTP/1.x
// incrementally, as the bytes arrive, so that a request is complete — and
// can be judged — during the very call that writes its last byte.
package parse

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"strings"
)

// Limits bound the memory of one connection's parser.
type Limits struct {
	MaxHeader  int // request line and headers; default 64 KiB
	MaxBody    int // body bytes kept (the rest is counted); default 1 MiB
	MaxDecoded int // body bytes kept after gzip/deflate decoding; default 4 MiB
}

func (l *Limits) setDefaults() {
	if l.MaxHeader <= 0 {
		l.MaxHeader = 64 << 10
	}
	if l.MaxBody <= 0 {
		l.MaxBody = 1 << 20
	}
	if l.MaxDecoded <= 0 {
		l.MaxDecoded = 4 << 20
	}
}

// Head is the start line and headers of an HTTP message.
type Head struct {
	// Requests.
	Method string
	Target string // as written: origin-form path and query, or absolute-form
	Host   string
	// Responses.
	Status int
	Reason string

	Proto  string
	Header textproto.MIMEHeader
}

// Body is a message body as far as it was seen.
type Body struct {
	Data      []byte // de-chunked and decoded, at most the limits
	WireSize  int64  // body bytes as framed by Content-Length or chunks (after de-chunking, before decoding)
	Missing   int64  // bytes the sensor did not capture
	Truncated bool   // Data is not the whole body: Missing > 0, a limit was hit, or framing was lost
	Chunked   bool
	Encoding  string // Content-Encoding that was decoded
	DecodeErr error  // decoding failed; Data then holds the raw body
}

// Message is one HTTP request or response.
type Message struct {
	Head
	Body
	Response bool
	Stream   uint32 // HTTP/2 stream id; 0 for HTTP/1.x
	Reset    bool   // HTTP/2: the stream was reset (RST_STREAM) before it ended
	Start    uint64 // monotonic ns of the first byte
	End      uint64 // monotonic ns of the last byte
}

type httpState uint8

const (
	stHead httpState = iota
	stBody
	stChunkSize
	stChunkData
	stChunkCRLF
	stTrailer
	stUntilClose // response without length: body runs until the connection closes
	stJunk       // not HTTP, or framing lost: wait for the next call to start a message
)

// httpParser parses one direction of one connection.
type httpParser struct {
	limits   Limits
	response bool
	state    httpState
	buf      []byte // head or chunk-size line being accumulated
	msg      *Message
	left     int64 // bytes left in the body or in the current chunk
	// noBody, for responses, is called once per final response and tells
	// whether it answers a HEAD request (and so has no body).
	noBody  func() bool
	junk    int64 // bytes passed over
	malform int64 // messages given up
}

var (
	errHeadTooLarge = errors.New("header block too large")
	crlf2           = []byte("\r\n\r\n")
)

// feed consumes the data of one write or read call (followed by lost bytes
// that were not captured) and calls emit for every message it completes.
// After junk, a new message may only start at the beginning of a call.
func (p *httpParser) feed(data []byte, lost int, mono uint64, emit func(*Message)) {
	first := true
	for len(data) > 0 || (lost > 0 && p.state != stJunk) {
		switch p.state {
		case stJunk:
			if !first || !looksLikeStart(data, p.response) {
				p.junk += int64(len(data) + lost)
				return
			}
			p.state = stHead
			p.buf = p.buf[:0]
		case stHead:
			if p.msg == nil {
				if len(p.buf) == 0 && !looksLikeStart(data, p.response) {
					p.state = stJunk
					continue
				}
				p.msg = &Message{Response: p.response, Start: mono}
			}
			// Search the terminator across the old and new bytes.
			from := max(len(p.buf)-3, 0)
			p.buf = append(p.buf, data...)
			i := bytes.Index(p.buf[from:], crlf2)
			if i < 0 {
				data = nil
				if len(p.buf) > p.limits.MaxHeader || lost > 0 {
					p.giveUp()
					lost = 0
				}
				continue
			}
			end := from + i + len(crlf2)
			rest := len(p.buf) - end // bytes of data after the head
			head := p.buf[:end]
			data = data[len(data)-rest:]
			if err := p.parseHead(head); err != nil {
				p.giveUp()
				continue
			}
			p.buf = p.buf[:0]
			p.startBody(mono, emit)
		case stBody:
			data, lost = p.takeCounted(data, lost)
			if p.left == 0 {
				p.finish(mono, emit)
			}
		case stChunkSize, stTrailer:
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				p.buf = append(p.buf, data...)
				data = nil
				if len(p.buf) > 4096 || lost > 0 {
					p.giveUp()
					lost = 0
				}
				continue
			}
			line := append(p.buf, data[:i+1]...)
			p.buf = p.buf[:0]
			data = data[i+1:]
			if p.state == stTrailer {
				if len(bytes.TrimSpace(line)) == 0 {
					p.finish(mono, emit)
				}
				continue
			}
			size, err := parseChunkSize(line)
			if err != nil {
				p.giveUp()
				continue
			}
			if size == 0 {
				p.state = stTrailer
				continue
			}
			p.left = size
			p.state = stChunkData
		case stChunkData:
			data, lost = p.takeCounted(data, lost)
			if p.left == 0 {
				p.left = 2
				p.state = stChunkCRLF
			}
		case stChunkCRLF:
			for len(data) > 0 && p.state == stChunkCRLF {
				c := data[0]
				data = data[1:]
				switch {
				case c == '\n':
					p.state = stChunkSize
				case c == '\r' && p.left == 2:
					p.left = 1
				default:
					p.giveUp()
				}
			}
		case stUntilClose:
			p.take(data)
			data = nil
			if lost > 0 {
				p.miss(int64(lost))
				lost = 0
			}
		}
		first = false
		if len(data) == 0 && lost > 0 && p.state != stBody && p.state != stChunkData && p.state != stUntilClose {
			// Uncaptured bytes where framing matters: the rest of this
			// message cannot be followed.
			p.giveUp()
			lost = 0
		}
	}
}

// close ends the stream: a response running until close is complete.
func (p *httpParser) close(mono uint64, emit func(*Message)) {
	if p.state == stUntilClose && p.msg != nil {
		p.finish(mono, emit)
	}
}

// giveUp drops the message in progress and waits for the next call.
func (p *httpParser) giveUp() {
	if p.msg != nil {
		p.malform++
	}
	p.msg = nil
	p.buf = p.buf[:0]
	p.state = stJunk
}

// takeCounted takes up to p.left bytes of data, then up to the rest of
// p.left from the lost bytes, and returns what is left of both.
func (p *httpParser) takeCounted(data []byte, lost int) ([]byte, int) {
	n := min(int64(len(data)), p.left)
	p.take(data[:n])
	data = data[n:]
	p.left -= n
	if p.left > 0 && lost > 0 {
		m := min(int64(lost), p.left)
		p.miss(m)
		p.left -= m
		lost -= int(m)
	}
	return data, lost
}

func (p *httpParser) take(b []byte) { takeBody(p.msg, b, p.limits.MaxBody) }

func (p *httpParser) miss(n int64) {
	p.msg.WireSize += n
	p.msg.Missing += n
	p.msg.Truncated = true
}

func (p *httpParser) startBody(mono uint64, emit func(*Message)) {
	m := p.msg
	te := strings.ToLower(m.Header.Get("Transfer-Encoding"))
	cl := m.Header.Get("Content-Length")
	if p.response {
		if m.Status/100 == 1 {
			p.finish(mono, emit) // interim response: the final one follows
			return
		}
		head := p.noBody != nil && p.noBody()
		if head || m.Status == 204 || m.Status == 304 {
			p.finish(mono, emit)
			return
		}
	}
	switch {
	case strings.Contains(te, "chunked"):
		m.Chunked = true
		p.state = stChunkSize
	case cl != "":
		n, err := strconv.ParseInt(strings.TrimSpace(cl), 10, 64)
		if err != nil || n < 0 {
			p.giveUp()
			return
		}
		if n == 0 {
			p.finish(mono, emit)
			return
		}
		p.left = n
		p.state = stBody
	case p.response:
		p.state = stUntilClose
	default:
		p.finish(mono, emit)
	}
}

func (p *httpParser) finish(mono uint64, emit func(*Message)) {
	m := p.msg
	p.msg = nil
	p.state = stHead
	p.buf = p.buf[:0]
	m.End = mono
	decodeBody(m, p.limits.MaxDecoded)
	emit(m)
}

// parseHead parses the start line and headers (ending in CRLF CRLF).
func (p *httpParser) parseHead(head []byte) error {
	m := p.msg
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	parts := strings.SplitN(string(line), " ", 3)
	if p.response {
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "HTTP/1.") {
			return fmt.Errorf("bad status line %q", line)
		}
		code, err := strconv.Atoi(parts[1])
		if err != nil || code < 100 || code > 999 {
			return fmt.Errorf("bad status code %q", parts[1])
		}
		m.Proto, m.Status = parts[0], code
		if len(parts) == 3 {
			m.Reason = parts[2]
		}
	} else {
		if len(parts) != 3 || !strings.HasPrefix(parts[2], "HTTP/1.") || !isToken(parts[0]) || parts[1] == "" {
			return fmt.Errorf("bad request line %q", line)
		}
		m.Method, m.Target, m.Proto = parts[0], parts[1], parts[2]
	}
	m.Header = textproto.MIMEHeader{}
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(l) == 0 {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			continue // obsolete line folding: ignored
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || !isToken(string(name)) {
			return fmt.Errorf("bad header line %q", l)
		}
		m.Header.Add(textproto.CanonicalMIMEHeaderKey(string(name)), string(bytes.TrimSpace(value)))
	}
	m.Host = m.Header.Get("Host")
	return nil
}

func parseChunkSize(line []byte) (int64, error) {
	line = bytes.TrimSpace(line)
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = bytes.TrimSpace(line[:i])
	}
	if len(line) == 0 || len(line) > 15 {
		return 0, fmt.Errorf("bad chunk size %q", line)
	}
	n, err := strconv.ParseInt(string(line), 16, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad chunk size %q", line)
	}
	return n, nil
}

// decodeBody undoes gzip or deflate Content-Encoding, within max bytes.
func decodeBody(m *Message, limit int) {
	enc := strings.ToLower(strings.TrimSpace(m.Header.Get("Content-Encoding")))
	if enc == "" || enc == "identity" || len(m.Data) == 0 {
		return
	}
	var r io.Reader
	var err error
	switch enc {
	case "gzip", "x-gzip":
		r, err = gzip.NewReader(bytes.NewReader(m.Data))
	case "deflate":
		// RFC 9110 deflate is zlib-wrapped; some clients send raw deflate.
		r, err = zlib.NewReader(bytes.NewReader(m.Data))
		if err != nil {
			r, err = flate.NewReader(bytes.NewReader(m.Data)), nil
		}
	default:
		return
	}
	if err != nil {
		m.DecodeErr = fmt.Errorf("decode %s body: %w", enc, err)
		return
	}
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if len(out) > limit {
		out = out[:limit]
		m.Truncated = true
		err = nil
	}
	if err != nil && !(m.Truncated && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF))) {
		m.DecodeErr = fmt.Errorf("decode %s body: %w", enc, err)
		return
	}
	m.Encoding = enc
	m.Data = out
}

// looksLikeStart reports whether data can begin a request ("METHOD ") or a
// response ("HTTP/1.").
func looksLikeStart(data []byte, response bool) bool {
	if response {
		prefix := []byte("HTTP/1.")
		n := min(len(data), len(prefix))
		return n > 0 && bytes.Equal(data[:n], prefix[:n])
	}
	for i, c := range data {
		if c == ' ' {
			return i > 0
		}
		if c < 'A' || c > 'Z' || i >= 16 {
			return false
		}
	}
	return len(data) > 0
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}
