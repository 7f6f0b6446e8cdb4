package mcp

import (
	"bytes"
	"strconv"
	"strings"
)

// Framing is how messages are delimited on a stdio stream.
type Framing uint8

// Framings. The MCP stdio transport is newline-delimited JSON; some
// servers and clients use LSP-style Content-Length headers instead.
const (
	FramingUnknown       Framing = iota
	FramingLines                 // one JSON text per line
	FramingContentLength         // "Content-Length: N\r\n\r\n" then N bytes
)

func (f Framing) String() string {
	switch f {
	case FramingLines:
		return "lines"
	case FramingContentLength:
		return "content-length"
	}
	return "unknown"
}

// Decoder defaults.
const (
	DefaultMaxMessage   = 4 << 20
	DefaultGiveUpBytes  = 64 << 10
	DefaultGiveUpFrames = 32

	maxHeaderLine  = 1 << 10
	maxHeaderLines = 16
	// A buffer grown past this is released once its frame is done, so
	// that an idle stream holds little.
	keepBuffer = 64 << 10
)

// DecoderOptions bound a Decoder. The zero value gives the defaults.
type DecoderOptions struct {
	// MaxMessage bounds one frame (line or Content-Length body); a
	// larger one is skipped to its end and counted as Oversize.
	MaxMessage int
	// A stream that has shown no JSON-RPC message after GiveUpBytes
	// bytes or GiveUpFrames frames that were not JSON-RPC is given up:
	// Feed drops everything from then on and Stats says so.
	GiveUpBytes  int
	GiveUpFrames int
}

func (o DecoderOptions) withDefaults() DecoderOptions {
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultMaxMessage
	}
	if o.GiveUpBytes <= 0 {
		o.GiveUpBytes = DefaultGiveUpBytes
	}
	if o.GiveUpFrames <= 0 {
		o.GiveUpFrames = DefaultGiveUpFrames
	}
	return o
}

// Stats count what a decoder saw.
type Stats struct {
	Bytes     uint64 // bytes fed
	Messages  uint64 // JSON-RPC messages decoded (each element of a batch)
	Malformed uint64 // frames that were not JSON-RPC: garbage, binary data, other JSON
	Oversize  uint64 // frames over the size bound, skipped
	GivenUp   bool   // no JSON-RPC within the give-up bounds: not MCP
	Framing   Framing
}

type stdioState uint8

const (
	stStart    stdioState = iota // between frames
	stLine                       // in a JSON line
	stHeader                     // in a Content-Length header block
	stBody                       // in a Content-Length body
	stSkip                       // discarding the rest of an oversize body
	stSkipLine                   // discarding to the end of a line
)

// Decoder decodes one direction of an MCP stdio channel (what the client
// writes to the server's stdin, or what the server writes to its stdout).
// It detects the framing of each frame, so that either framing works and a
// stream may even mix them. The zero Decoder is ready with the default
// bounds. It is not safe for concurrent use.
type Decoder struct {
	opts   DecoderOptions
	inited bool
	state  stdioState
	buf    []byte // the frame or header line in progress
	length int    // Content-Length of the header block in progress (-1: none yet)
	lines  int    // header lines in the block in progress
	skip   int64  // body bytes still to discard
	seen   bool   // a JSON-RPC message was decoded
	waste  int64  // bytes that were not JSON-RPC before the first message
	bad    int    // frames that were not JSON-RPC before the first message
	stats  Stats
}

// NewDecoder returns a decoder with the given bounds.
func NewDecoder(o DecoderOptions) *Decoder {
	return &Decoder{opts: o.withDefaults(), inited: true}
}

// Stats returns the decoder's counters.
func (d *Decoder) Stats() Stats { return d.stats }

// GivenUp reports whether the stream was judged not to be MCP.
func (d *Decoder) GivenUp() bool { return d.stats.GivenUp }

// Feed takes the next bytes of the stream and returns the messages they
// completed, in order. data is not retained.
func (d *Decoder) Feed(data []byte) []Message {
	if !d.inited {
		d.opts, d.inited = d.opts.withDefaults(), true
	}
	d.stats.Bytes += uint64(len(data))
	var out []Message
	for len(data) > 0 && !d.stats.GivenUp {
		switch d.state {
		case stStart:
			switch data[0] {
			case ' ', '\t', '\r', '\n':
				data = data[1:]
			case '{', '[':
				d.state = stLine
			case 'C', 'c':
				d.state, d.length, d.lines = stHeader, -1, 0
			default:
				// No JSON text or header starts so: skip the line
				// without buffering it.
				d.malformed()
				d.state = stSkipLine
			}
		case stLine:
			i := bytes.IndexByte(data, '\n')
			chunk := data
			if i >= 0 {
				chunk = data[:i]
			}
			if len(d.buf)+len(chunk) > d.opts.MaxMessage {
				d.stats.Oversize++
				d.wasted(len(d.buf))
				d.release()
				d.state = stSkipLine
				continue
			}
			d.buf = append(d.buf, chunk...)
			if i < 0 {
				data = nil
				continue
			}
			data = data[i+1:]
			out = d.line(out)
		case stHeader:
			i := bytes.IndexByte(data, '\n')
			chunk := data
			if i >= 0 {
				chunk = data[:i]
			}
			if len(d.buf)+len(chunk) > maxHeaderLine {
				d.malformed()
				d.wasted(len(d.buf))
				d.release()
				d.state = stSkipLine
				continue
			}
			d.buf = append(d.buf, chunk...)
			if i < 0 {
				data = nil
				continue
			}
			data = data[i+1:]
			d.headerLine()
		case stBody:
			n := min(d.length-len(d.buf), len(data))
			d.buf = append(d.buf, data[:n]...)
			data = data[n:]
			if len(d.buf) == d.length {
				out = d.frame(out, FramingContentLength)
			}
		case stSkip:
			n := int(min(d.skip, int64(len(data))))
			d.skip -= int64(n)
			d.wasted(n)
			data = data[n:]
			if d.skip == 0 {
				d.state = stStart
			}
		case stSkipLine:
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				d.wasted(len(data))
				data = nil
				continue
			}
			d.wasted(i + 1)
			data = data[i+1:]
			d.state = stStart
		}
	}
	return out
}

// headerLine handles one complete line of a Content-Length header block
// (in d.buf, without its '\n').
func (d *Decoder) headerLine() {
	line := strings.TrimRight(string(d.buf), "\r")
	d.wasted(len(d.buf) + 1) // header bytes are never part of a message
	d.buf = d.buf[:0]
	if line == "" {
		switch {
		case d.length <= 0:
			d.malformed()
			d.state = stStart
		case d.length > d.opts.MaxMessage:
			d.stats.Oversize++
			d.skip, d.state = int64(d.length), stSkip
		default:
			d.state = stBody
		}
		return
	}
	name, value, ok := strings.Cut(line, ":")
	if !ok || !isToken(name) || d.lines == maxHeaderLines || d.lines == 0 && !hasPrefixFold(name, "content-") {
		d.malformed()
		d.state = stStart
		return
	}
	d.lines++
	if strings.EqualFold(name, "content-length") {
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			d.malformed()
			d.state = stStart
			return
		}
		d.length = int(n)
	}
}

// line decodes the complete line in d.buf. A line that is not JSON-RPC
// but holds a Content-Length header after its start is a Content-Length
// body glued to the next frame's header (bodies end without a newline):
// met when the decoder joins a stream mid-way, it resynchronises there.
func (d *Decoder) line(out []Message) []Message {
	n := len(out)
	out, ok := decodeJSON(d.buf, out)
	if ok {
		return d.frameDone(out, n, true, FramingLines)
	}
	j := indexContentLength(d.buf)
	if j <= 0 {
		return d.frameDone(out, n, false, FramingLines)
	}
	header := string(d.buf[j:])
	d.buf = d.buf[:j]
	out = d.frame(out, FramingContentLength)
	d.buf = append(d.buf, header...)
	d.state, d.length, d.lines = stHeader, -1, 0
	d.headerLine()
	return out
}

// indexContentLength returns where "Content-Length:" (in any case)
// starts in b, or -1.
func indexContentLength(b []byte) int {
	const h = "content-length:"
	for i := 0; i+len(h) <= len(b); i++ {
		if c := b[i]; (c == 'c' || c == 'C') && strings.EqualFold(string(b[i:i+len(h)]), h) {
			return i
		}
	}
	return -1
}

// frame decodes the complete frame in d.buf.
func (d *Decoder) frame(out []Message, f Framing) []Message {
	n := len(out)
	out, ok := decodeJSON(d.buf, out)
	return d.frameDone(out, n, ok, f)
}

// frameDone accounts for the frame in d.buf, decoded into out[n:] when
// ok, and makes ready for the next.
func (d *Decoder) frameDone(out []Message, n int, ok bool, f Framing) []Message {
	if ok {
		d.seen = true
		d.stats.Messages += uint64(len(out) - n)
		d.stats.Framing = f
	} else {
		d.malformed()
		d.wasted(len(d.buf))
	}
	d.buf = d.buf[:0]
	if cap(d.buf) > keepBuffer {
		d.buf = nil
	}
	d.state = stStart
	return out
}

func (d *Decoder) release() {
	d.buf = d.buf[:0]
	if cap(d.buf) > keepBuffer {
		d.buf = nil
	}
}

func (d *Decoder) malformed() {
	d.stats.Malformed++
	if !d.seen {
		d.bad++
		d.checkGiveUp()
	}
}

func (d *Decoder) wasted(n int) {
	if !d.seen {
		d.waste += int64(n)
		d.checkGiveUp()
	}
}

func (d *Decoder) checkGiveUp() {
	if d.waste >= int64(d.opts.GiveUpBytes) || d.bad >= d.opts.GiveUpFrames {
		d.stats.GivenUp = true
		d.buf = nil
	}
}

// isToken reports whether s is an HTTP header name.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
