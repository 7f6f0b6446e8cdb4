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

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"
)

// Limits bound the memory of one connection's parser.
// The body defaults are above what the mail APIs accept in one request
// (Postmark 10 MB, SendGrid 30 MB with base64 inflating attachments by a
// third): a body cut at a limit cannot be judged whole, which a policy
// treats as a violation (unreadable_mail_requests). Only bodies in
// progress hold memory.
type Limits struct {
	MaxHeader  int // request line and headers; default 64 KiB
	MaxBody    int // body bytes kept (the rest is counted); default 32 MiB
	MaxDecoded int // body bytes kept after each decoding stage (gzip, deflate, br, zstd); default 32 MiB
}

func (l *Limits) setDefaults() {
	if l.MaxHeader <= 0 {
		l.MaxHeader = 64 << 10
	}
	if l.MaxBody <= 0 {
		l.MaxBody = 32 << 20
	}
	if l.MaxDecoded <= 0 {
		l.MaxDecoded = 32 << 20
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
	Header textproto.MIMEHeader // with the trailer fields that may be merged (see addTrailer)
	// Trailer holds every field of a chunked body's trailer section.
	Trailer textproto.MIMEHeader
}

// Body is a message body as far as it was seen.
type Body struct {
	Data      []byte // de-chunked and decoded, at most the limits
	WireSize  int64  // body bytes as framed by Content-Length or chunks (after de-chunking, before decoding)
	Missing   int64  // bytes the sensor did not capture
	Truncated bool   // Data is not the whole body: Missing > 0, a limit was hit, or framing was lost
	Chunked   bool
	Encoding  string // codings that were decoded, as applied ("gzip, br"); transfer-codings other than chunked come last
	DecodeErr error  // decoding failed; Data then holds what was decoded before the failure (Truncated set), or the raw body when nothing was
}

// Message is one HTTP request or response.
type Message struct {
	Head
	Body
	Response bool
	Stream   uint32 // HTTP/2 stream id; 0 for HTTP/1.x
	Reset    bool   // HTTP/2: the stream was reset (RST_STREAM) before it ended
	// Partial: the body has not ended yet (Parser.Pending); Data is what
	// arrived so far, not decoded.
	Partial bool
	// WebSocket: a message of a connection upgraded to WebSocket (ws.go):
	// a text or binary message, its fragments joined, unmasked and, with
	// permessage-deflate, inflated (Encoding "permessage-deflate";
	// WireSize counts the payload as framed), or a control frame that
	// carries something. Host and Target are the upgrade request's; the
	// client's are requests, the server's responses (Response).
	WebSocket bool
	Opcode    uint8  // WebSocket: WSText, WSBinary, WSClose, WSPing, WSPong, or a reserved one
	CloseCode uint16 // WebSocket close frame: its status code (0: none); Data is its reason
	Start     uint64 // monotonic ns of the first byte
	End       uint64 // monotonic ns of the last byte
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
	crlf2 = []byte("\r\n\r\n")
)

// feed consumes the data of one write or read call (followed by lost bytes
// that were not captured) and calls emit for every message it completes.
// After junk, a new message may only start at the beginning of a call.
func (p *httpParser) feed(data []byte, lost int, mono uint64, emit func(*Message)) {
	first := true
	for len(data) > 0 || (lost > 0 && p.state != stJunk) {
		switch p.state {
		case stJunk:
			if !first || !looksLikeStart(skipEmptyLines(data, p.response), p.response) {
				p.junk += int64(len(data) + lost)
				return
			}
			p.state = stHead
			p.buf = p.buf[:0]
		case stHead:
			if p.msg == nil && len(p.buf) == 0 {
				// Servers ignore empty lines before a request line
				// (RFC 9112, 2.2): so must the parser.
				if d := skipEmptyLines(data, p.response); len(d) < len(data) {
					data = d
					if len(data) == 0 && lost == 0 {
						continue // the request line may come next
					}
				}
			}
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
				// Chunk extensions and trailer fields may be long (Node
				// accepts 16 KiB of extensions): a line is bounded like a
				// header block, not tighter, so that one is not dropped
				// while the server takes it.
				if len(p.buf) > p.limits.MaxHeader || lost > 0 {
					p.giveUp()
					lost = 0
				}
				continue
			}
			line := append(p.buf, data[:i+1]...) //nolint:gocritic // reuses p.buf's array: line is read (and copied by addTrailer) before p.buf grows again
			p.buf = p.buf[:0]
			data = data[i+1:]
			if p.state == stTrailer {
				if len(bytes.TrimSpace(line)) == 0 {
					p.finish(mono, emit)
				} else {
					addTrailer(p.msg, line)
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

// maxTrailerFields bounds the trailer fields kept per message; each line
// is already bounded by the chunk-line limit.
const maxTrailerFields = 64

// addTrailer keeps one trailer field line in m.Trailer and, unless it is a
// field that RFC 9110 (section 6.5.1) forbids in trailers because it
// frames, routes or decodes the message, in m.Header too: consumers that
// look at the header then see fields that a server merges from the
// trailer, while a trailer cannot change how the body is decoded. A
// malformed line is skipped: a server that ignores it still takes the
// message.
func addTrailer(m *Message, line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) == 0 || line[0] == ' ' || line[0] == '\t' || len(m.Trailer) >= maxTrailerFields {
		return
	}
	name, value, ok := bytes.Cut(line, []byte(":"))
	if !ok || !isToken(string(name)) {
		return
	}
	k := textproto.CanonicalMIMEHeaderKey(string(name))
	v := string(bytes.TrimSpace(value))
	if m.Trailer == nil {
		m.Trailer = textproto.MIMEHeader{}
	}
	m.Trailer.Add(k, v)
	switch k {
	case "Content-Length", "Transfer-Encoding", "Content-Encoding", "Content-Type",
		"Content-Range", "Trailer", "Host", "Te":
		return
	}
	if m.Header == nil {
		m.Header = textproto.MIMEHeader{}
	}
	m.Header.Add(k, v)
}

func parseChunkSize(line []byte) (int64, error) {
	line = bytes.TrimSpace(line)
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = bytes.TrimSpace(line[:i])
	}
	// Leading zeros do not change the size, and servers accept any number
	// of them; only significant digits count towards the overflow bound.
	if len(line) > 1 {
		line = bytes.TrimLeft(line, "0")
		if len(line) == 0 {
			line = []byte("0")
		}
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

// decodeBody undoes the codings applied to the body: the transfer-codings
// other than chunked, then the Content-Encoding. Each is a list in the order
// the sender applied the codings ("gzip, br" is gzip first), so it is undone
// from the last entry; repeated header lines count as one list, as a server
// joins them. Every stage keeps at most limit bytes, so a bomb stops there
// with Truncated set. When a stage fails after producing output (a corrupt
// tail, or garbage after the stream that a lenient server ignores), what was
// decoded is kept and the body marked truncated; when nothing could be
// decoded, Data stays the raw body.
func decodeBody(m *Message, limit int) {
	codings := bodyCodings(m.Header["Transfer-Encoding"], true)
	codings = append(bodyCodings(m.Header["Content-Encoding"], false), codings...)
	if len(codings) == 0 || len(m.Data) == 0 {
		return
	}
	name := strings.Join(codings, ", ")
	data := m.Data
	truncated := m.Truncated
	for i := len(codings) - 1; i >= 0; i-- {
		out, cut, err := decodeCoding(codings[i], data, limit)
		if truncated && (errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
			err = nil // the input was cut short, so its end is missing
		}
		truncated = truncated || cut
		if err != nil {
			m.DecodeErr = fmt.Errorf("decode %s body: %w", name, err)
			if len(out) == 0 {
				return
			}
			// A decoder that stops early still returns real plaintext; a
			// following stage sees a truncated stream.
			truncated = true
		}
		data = out
	}
	m.Encoding = name
	m.Data = data
	m.Truncated = truncated
}

// bodyCodings returns the codings of Content-Encoding or Transfer-Encoding
// header values, lower-cased, without identity (and without chunked, which
// the framing undoes).
func bodyCodings(values []string, transfer bool) []string {
	var out []string
	for _, v := range values {
		for c := range strings.SplitSeq(v, ",") {
			c, _, _ = strings.Cut(c, ";") // transfer-coding parameters
			c = strings.ToLower(strings.TrimSpace(c))
			if c == "" || c == "identity" || (transfer && c == "chunked") {
				continue
			}
			out = append(out, c)
		}
	}
	return out
}

// maxZstdWindow is the largest zstd window accepted. RFC 9659 caps the
// window of the zstd content coding at 8 MiB so that a receiver never needs
// more; the decoder allocates the declared window up front, so a larger
// one is refused rather than allocated.
const maxZstdWindow = 8 << 20

// decodeCoding undoes one coding of data, keeping at most limit bytes of
// output; cut reports that more output was available. A stream ending early
// is not an error when its input was already cut short: the caller knows.
func decodeCoding(coding string, data []byte, limit int) (out []byte, cut bool, err error) {
	var r io.Reader
	switch coding {
	case "gzip", "x-gzip":
		gr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return nil, false, fmt.Errorf("gzip: %w", err)
		}
		r = gr
	case "deflate":
		// RFC 9110 deflate is zlib-wrapped; some clients send raw deflate.
		zr, err := zlib.NewReader(bytes.NewReader(data))
		if err != nil {
			zr = flate.NewReader(bytes.NewReader(data))
		}
		r = zr
	case "br":
		// Large windows are an opt-in extension the HTTP coding does not
		// use; the standard window is at most 16 MiB.
		r = brotli.NewReader(bytes.NewReader(data))
	case "zstd":
		zr, err := zstd.NewReader(bytes.NewReader(data),
			zstd.WithDecoderConcurrency(1), // no background goroutines per body
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow))
		if err != nil {
			return nil, false, fmt.Errorf("zstd: %w", err)
		}
		defer zr.Close()
		r = zr
	default:
		return nil, false, fmt.Errorf("unsupported coding %q", coding)
	}
	out, err = io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if len(out) > limit {
		return out[:limit], true, nil
	}
	if err != nil {
		return out, false, fmt.Errorf("%s: %w", coding, err)
	}
	return out, false, nil
}

// looksLikeStart reports whether data can begin a request ("METHOD ") or a
// response ("HTTP/1.").
// skipEmptyLines drops the CR and LF bytes a request may be preceded by.
func skipEmptyLines(data []byte, response bool) []byte {
	if response {
		return data
	}
	return bytes.TrimLeft(data, "\r\n")
}

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
