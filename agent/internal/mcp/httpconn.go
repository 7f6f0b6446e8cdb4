package mcp

import (
	"bytes"
	"mime"
	"strconv"
	"strings"
)

// HTTPConn decodes one connection of a streamable-HTTP MCP server as the
// server sees it: the HTTP/1.1 requests it reads (FromClient: POST bodies
// with JSON-RPC) and the responses it writes (FromServer: JSON bodies or
// SSE streams). It holds at most the head in progress (maxHTTPHead) and,
// per direction, the body in progress (MaxMessage) or an SSE event. A
// connection that shows no JSON-RPC in its first request, that does not
// speak HTTP/1.x, or that lost bytes, is given up: Feed drops everything
// from then on. The zero value is not ready: use NewHTTPConn. Not safe for
// concurrent use.
type HTTPConn struct {
	max     int
	req     httpSide
	resp    httpSide
	methods []string // methods of the requests not yet answered, oldest first
	seen    bool     // a JSON-RPC message was decoded on this connection
	givenUp bool
	stats   Stats
}

// Bounds of HTTPConn.
const (
	maxHTTPHead    = 16 << 10
	maxHTTPPending = 32 // requests not yet answered (pipelining)
	maxChunkLine   = 256
)

// NewHTTPConn returns a connection decoder whose bodies and SSE events are
// bounded by maxMessage (DefaultMaxMessage if <= 0).
func NewHTTPConn(maxMessage int) *HTTPConn {
	if maxMessage <= 0 {
		maxMessage = DefaultMaxMessage
	}
	c := &HTTPConn{max: maxMessage}
	c.req.request = true
	return c
}

// Stats returns the connection's counters (Framing is unused; GivenUp
// says whether it was given up).
func (c *HTTPConn) Stats() Stats {
	st := c.stats
	st.GivenUp = c.givenUp
	return st
}

// GivenUp reports whether the connection was found not to carry MCP.
func (c *HTTPConn) GivenUp() bool { return c.givenUp }

// Seen reports whether a JSON-RPC message was decoded on the connection.
func (c *HTTPConn) Seen() bool { return c.seen }

// Buffered returns the bytes the connection holds now.
func (c *HTTPConn) Buffered() int {
	return cap(c.req.head) + cap(c.req.body) + cap(c.resp.head) + cap(c.resp.body) + cap(c.req.sse.data) + cap(c.resp.sse.data) +
		cap(c.req.sse.line) + cap(c.resp.sse.line)
}

// Lost tells the decoder that n bytes of the connection were not seen: it
// can no longer be followed, and is given up.
func (c *HTTPConn) Lost(n int) {
	if n > 0 {
		c.giveUp()
	}
}

func (c *HTTPConn) giveUp() {
	c.givenUp = true
	c.req = httpSide{request: true}
	c.resp = httpSide{}
	c.methods = nil
}

// Feed takes the next bytes the server read (FromClient) or wrote
// (FromServer) and returns the JSON-RPC messages they completed. data is
// not retained.
func (c *HTTPConn) Feed(from Side, data []byte) []Message {
	if c.givenUp {
		return nil
	}
	c.stats.Bytes += uint64(len(data))
	side := &c.resp
	if from == FromClient {
		side = &c.req
	}
	var out []Message
	for len(data) > 0 && !c.givenUp {
		var ok bool
		data, out, ok = c.step(side, data, out)
		if !ok {
			c.giveUp()
		}
	}
	n := len(out)
	c.stats.Messages += uint64(n)
	if n > 0 {
		c.seen = true
	}
	return out
}

// httpState is where one direction of the connection is.
type httpState uint8

const (
	hHead       httpState = iota // the start line and headers
	hBody                        // a body of known length
	hChunkSize                   // a chunk-size line
	hChunkData                   // chunk data
	hChunkCRLF                   // the CRLF after chunk data
	hTrailer                     // trailer lines after the last chunk
	hUntilClose                  // a response body that ends with the connection
)

// bodyKind is what a body carries.
type bodyKind uint8

const (
	bodySkip bodyKind = iota // not MCP: counted, not kept
	bodyJSON                 // JSON-RPC, parsed whole at its end
	bodySSE                  // an event stream, decoded as it comes
)

type httpSide struct {
	request bool
	state   httpState
	head    []byte
	left    int64 // bytes left of a fixed body or chunk
	kind    bodyKind
	body    []byte
	over    bool // the body is over the bound
	sse     SSEDecoder
	line    []byte // chunk-size or trailer line in progress
	mcpish  bool   // the request in progress is MCP-like (GET/DELETE of a session, or a POST)
}

// step consumes a prefix of data; ok false: give the connection up.
func (c *HTTPConn) step(s *httpSide, data []byte, out []Message) ([]byte, []Message, bool) {
	switch s.state {
	case hHead:
		if len(s.head) == 0 {
			// Blank lines between messages are tolerated (RFC 9112 2.2).
			for len(data) > 0 && (data[0] == '\r' || data[0] == '\n') {
				data = data[1:]
			}
			if len(data) == 0 {
				return nil, out, true
			}
		}
		// The end of the head may straddle calls: look from a little
		// before the new bytes.
		from := max(0, len(s.head)-3)
		s.head = append(s.head, data...)
		i := bytes.Index(s.head[from:], []byte("\r\n\r\n"))
		if i < 0 {
			if len(s.head) > maxHTTPHead {
				return nil, out, false
			}
			if !validStart(s.head, s.request) {
				return nil, out, false
			}
			return nil, out, true
		}
		end := from + i + 4
		rest := data[len(data)-(len(s.head)-end):]
		head := s.head[:end]
		if end > maxHTTPHead {
			return nil, out, false
		}
		ok := c.startBody(s, head)
		s.head = s.head[:0]
		if cap(s.head) > keepBuffer {
			s.head = nil
		}
		if !ok {
			return nil, out, false
		}
		if s.state == hHead {
			out, ok = c.endBody(s, out)
		}
		return rest, out, ok
	case hBody:
		n := int(min(s.left, int64(len(data))))
		out = c.bodyBytes(s, data[:n], out)
		s.left -= int64(n)
		data = data[n:]
		if s.left == 0 {
			var ok bool
			out, ok = c.endBody(s, out)
			return data, out, ok
		}
		return data, out, true
	case hUntilClose:
		return nil, c.bodyBytes(s, data, out), true
	case hChunkSize, hTrailer:
		i := bytes.IndexByte(data, '\n')
		chunk := data
		if i >= 0 {
			chunk = data[:i]
		}
		if len(s.line)+len(chunk) > maxChunkLine {
			return nil, out, false
		}
		s.line = append(s.line, chunk...)
		if i < 0 {
			return nil, out, true
		}
		data = data[i+1:]
		line := strings.TrimRight(string(s.line), "\r")
		s.line = s.line[:0]
		if s.state == hTrailer {
			if line == "" {
				var ok bool
				out, ok = c.endBody(s, out)
				return data, out, ok
			}
			return data, out, true
		}
		size, _, _ := strings.Cut(line, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(size), 16, 64)
		if err != nil || n < 0 {
			return nil, out, false
		}
		if n == 0 {
			s.state = hTrailer
		} else {
			s.state, s.left = hChunkData, n
		}
		return data, out, true
	case hChunkData:
		n := int(min(s.left, int64(len(data))))
		out = c.bodyBytes(s, data[:n], out)
		s.left -= int64(n)
		if s.left == 0 {
			s.state = hChunkCRLF
		}
		return data[n:], out, true
	case hChunkCRLF:
		switch data[0] {
		case '\r':
			return data[1:], out, true
		case '\n':
			s.state = hChunkSize
			return data[1:], out, true
		}
		return nil, out, false
	}
	return nil, out, false
}

// validStart reports whether an incomplete head may still be a request
// (or response) line: a token then a space, or "HTTP/".
func validStart(h []byte, request bool) bool {
	if !request {
		n := min(len(h), 5)
		return string(h[:n]) == "HTTP/"[:n]
	}
	for i, b := range h {
		if b == ' ' {
			return i > 0
		}
		if b < 'A' || b > 'Z' {
			return false
		}
	}
	return len(h) < 32
}

// startBody reads a complete head and sets how its body is read.
func (c *HTTPConn) startBody(s *httpSide, head []byte) bool {
	lines := strings.Split(strings.TrimSuffix(string(head), "\r\n\r\n"), "\r\n")
	first := strings.SplitN(lines[0], " ", 3)
	var ctype, te, accept string
	cl := int64(-1)
	session := false
	for _, l := range lines[1:] {
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			return false
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			n, err := strconv.ParseInt(value, 10, 64)
			if err != nil || n < 0 || (cl >= 0 && n != cl) {
				return false
			}
			cl = n
		case "transfer-encoding":
			te = strings.ToLower(value)
		case "content-type":
			ctype = value
		case "accept":
			accept = strings.ToLower(value)
		case "mcp-session-id":
			session = true
		}
	}
	s.kind, s.body, s.over, s.sse = bodySkip, s.body[:0], false, SSEDecoder{MaxMessage: c.max}
	chunked := strings.HasSuffix(te, "chunked")
	if s.request {
		if len(first) != 3 || !strings.HasPrefix(first[2], "HTTP/1.") || first[0] == "" {
			return false
		}
		method := first[0]
		if len(c.methods) >= maxHTTPPending {
			return false
		}
		c.methods = append(c.methods, method)
		s.mcpish = method == "POST" || session || strings.Contains(accept, "text/event-stream")
		if method == "POST" {
			s.kind = bodyJSON
		}
		switch {
		case chunked:
			s.state = hChunkSize
		case cl > 0:
			s.state, s.left = hBody, cl
		default:
			s.state = hHead // no body
		}
		return true
	}
	if len(first) < 2 || !strings.HasPrefix(first[0], "HTTP/1.") {
		return false
	}
	code, err := strconv.Atoi(first[1])
	if err != nil {
		return false
	}
	if code >= 100 && code < 200 {
		s.state = hHead // interim: the final response follows
		return true
	}
	method := ""
	if len(c.methods) > 0 {
		method = c.methods[0]
		c.methods = c.methods[1:]
	}
	if mt, _, err := mime.ParseMediaType(ctype); err == nil {
		switch mt {
		case "application/json":
			s.kind = bodyJSON
		case "text/event-stream":
			s.kind = bodySSE
		}
	}
	switch {
	case method == "HEAD" || code == 204 || code == 304:
		s.state = hHead
	case chunked:
		s.state = hChunkSize
	case cl == 0:
		s.state = hHead
	case cl > 0:
		s.state, s.left = hBody, cl
	default:
		s.state = hUntilClose
	}
	return true
}

// bodyBytes takes bytes of a body.
func (c *HTTPConn) bodyBytes(s *httpSide, b []byte, out []Message) []Message {
	switch s.kind {
	case bodySSE:
		out = append(out, s.sse.Feed(b)...)
	case bodyJSON:
		if s.over {
			return out
		}
		if len(s.body)+len(b) > c.max {
			s.over = true
			s.body = nil
			c.stats.Oversize++
			return out
		}
		s.body = append(s.body, b...)
	}
	return out
}

// endBody ends the message of one direction: its JSON-RPC, if any. A
// request that is not MCP-like, on a connection that has shown no
// JSON-RPC, gives the connection up (ok false).
func (c *HTTPConn) endBody(s *httpSide, out []Message) ([]Message, bool) {
	s.state = hHead
	mcpish := s.mcpish
	s.mcpish = false
	switch s.kind {
	case bodyJSON:
		if !s.over && len(bytes.TrimSpace(s.body)) > 0 {
			if msgs, err := ParseBody(s.body); err == nil {
				out = append(out, msgs...)
			} else {
				c.stats.Malformed++
				if s.request {
					mcpish = false
				}
			}
		}
		if cap(s.body) > keepBuffer {
			s.body = nil
		}
		s.body = s.body[:0]
	case bodySSE:
		st := s.sse.Stats()
		c.stats.Malformed += st.Malformed
		c.stats.Oversize += st.Oversize
	}
	if s.request && !mcpish && !c.seen && len(out) == 0 {
		return out, false
	}
	return out, true
}
