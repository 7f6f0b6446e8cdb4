// This file parses WebSocket (RFC 6455) and its permessage-deflate
// extension (RFC 7692). A connection becomes WebSocket when an HTTP/1.1
// request asking for "Upgrade: websocket" is answered with 101 Switching
// Protocols: from the byte after that response's head, both directions are
// frames. Frames are consumed as their bytes arrive: the client's are
// unmasked, the fragments of a message are joined (control frames may come
// between them), and each complete text or binary message becomes a
// Message, inflated when its first frame had RSV1 (permessage-deflate).
// Memory is bounded by Limits: MaxBody for the payload kept of a message
// (compressed or not), MaxDecoded for what inflating it yields, 125 bytes
// for a control frame and the inflater's history (at most 32 KiB) per
// direction.
//
// Where a frame's length is known, the parser keeps frame sync whatever
// the frame says: bytes lost in a payload are counted as missing, and
// frames a peer would refuse (a reserved opcode, a continuation without a
// message, a control frame too long) are still read, so that what a
// lenient peer would accept is seen. Bytes lost in a frame header lose the
// sync: the message in progress is emitted as truncated, and a frame may
// start again only at the beginning of a later call whose first bytes are
// a plausible frame header (a client writes whole frames or a message per
// write in every implementation seen).

package parse

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/aarsm/aarsm/agent/internal/stream"
)

// WebSocket opcodes (RFC 6455, section 5.2), as Message.Opcode has them.
const (
	WSContinuation = 0x0
	WSText         = 0x1
	WSBinary       = 0x2
	WSClose        = 0x8
	WSPing         = 0x9
	WSPong         = 0xa
)

const (
	wsMaxControl = 125 // payload bytes of a control frame
	wsMaxHeader  = 14  // 2 + 8 extended length + 4 masking key
	wsMaxWindow  = 15  // max_window_bits when none is negotiated
	// wsTail ends the compressed bytes of a message: the 0x00 0x00 0xff
	// 0xff its sender removed (RFC 7692, 7.2.2), then an empty final
	// stored block, so that the inflater reports a clean end.
	wsTail = "\x00\x00\xff\xff\x01\x00\x00\xff\xff"
	// wsDeflate names the extension in Message.Encoding.
	wsDeflate = "permessage-deflate"
)

// wsOffered reports whether a request asks to upgrade to WebSocket.
func wsOffered(m *Message) bool {
	return !m.Response && hasToken(m.Header["Upgrade"], "websocket")
}

// wsAccepted reports whether a 101 response switches to WebSocket. Its
// Upgrade field and Sec-WebSocket-Accept are not required: a colluding
// client and server need not check them, and the bytes that follow are
// frames all the same.
func wsAccepted(m *Message) bool {
	up := m.Header["Upgrade"]
	return m.Status == 101 && (len(up) == 0 || hasToken(up, "websocket"))
}

// hasToken reports whether comma-separated header values list token
// (case-insensitive).
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// wsParams are the permessage-deflate parameters a server agreed to, per
// direction (stream.Dir: 0 the client's frames, 1 the server's).
type wsParams struct {
	deflate   bool
	noContext [2]bool // the sender resets its compressor after each message
	window    [2]int  // history the sender's compressor may refer to, in bytes
}

// parseWSExtensions reads the permessage-deflate offer a server accepted
// in its 101 response (Sec-WebSocket-Extensions; RFC 7692, section 7.1).
func parseWSExtensions(h textproto.MIMEHeader) wsParams {
	p := wsParams{window: [2]int{1 << wsMaxWindow, 1 << wsMaxWindow}}
	for _, v := range h["Sec-Websocket-Extensions"] {
		for ext := range strings.SplitSeq(v, ",") {
			params := strings.Split(ext, ";")
			if !strings.EqualFold(strings.TrimSpace(params[0]), wsDeflate) {
				continue
			}
			p.deflate = true
			for _, param := range params[1:] {
				k, val, _ := strings.Cut(param, "=")
				k = strings.ToLower(strings.TrimSpace(k))
				val = strings.Trim(strings.TrimSpace(val), `"`)
				switch k {
				case "client_no_context_takeover":
					p.noContext[stream.Egress] = true
				case "server_no_context_takeover":
					p.noContext[stream.Ingress] = true
				case "client_max_window_bits":
					p.window[stream.Egress] = wsWindow(val)
				case "server_max_window_bits":
					p.window[stream.Ingress] = wsWindow(val)
				}
			}
			return p // the first permessage-deflate is the one in use
		}
	}
	return p
}

// wsWindow is the history to keep for max_window_bits=v. zlib turns 8
// into 9, and a larger history than the sender's does no harm.
func wsWindow(v string) int {
	bits, err := strconv.Atoi(v)
	if err != nil || bits < 8 || bits > wsMaxWindow {
		bits = wsMaxWindow
	}
	return 1 << max(bits, 9)
}

// wsConn is both directions of a WebSocket connection.
type wsConn struct {
	side [2]wsSide // by stream.Dir: 0 egress (client), 1 ingress (server)
}

// newWSConn starts the frames of a connection after req, a request to
// upgrade to WebSocket; the extensions are those of no answer yet.
func newWSConn(limits Limits, req *Message, emit func(*Message)) *wsConn {
	c := &wsConn{}
	for i := range c.side {
		c.side[i] = wsSide{
			limits:   limits,
			response: i == int(stream.Ingress),
			emit:     emit,
			host:     req.Host,
			target:   req.Target,
			window:   1 << wsMaxWindow,
			synced:   true,
			want:     2,
		}
	}
	return c
}

// accept takes the extension parameters of resp, the 101 response.
func (c *wsConn) accept(resp *Message) {
	p := parseWSExtensions(resp.Header)
	for i := range c.side {
		s := &c.side[i]
		s.deflate, s.noContext, s.window = p.deflate, p.noContext[i], p.window[i]
	}
}

// close emits the messages in progress, as truncated.
func (c *wsConn) close(mono uint64) {
	for i := range c.side {
		s := &c.side[i]
		if s.msg != nil {
			s.cut(mono)
		}
	}
}

// wsSide parses the frames of one direction of a WebSocket connection.
type wsSide struct {
	limits       Limits
	response     bool // server frames: responses
	emit         func(*Message)
	host, target string // of the upgrade request

	deflate   bool // permessage-deflate was agreed
	noContext bool // no context takeover: each message is inflated alone
	window    int  // inflater history kept between messages

	synced  bool  // false: frame sync lost until a call starts with a frame
	err     error // why sync was last lost
	junk    int64 // bytes passed over while out of sync
	malform int64 // sync losses and frames no peer should accept

	// The frame being read.
	hdr       [wsMaxHeader]byte
	nhdr      int
	want      int // header bytes wanted: 2, then the whole header
	hdrMono   uint64
	op        uint8
	fin       bool
	rsv1      bool
	masked    bool
	key       [4]byte
	inPayload bool
	pos       uint64 // payload bytes read so far: the masking key's phase
	left      uint64 // payload bytes not read yet

	// A control frame's payload.
	ctl     [wsMaxControl]byte
	nctl    int
	ctlMiss int64 // payload bytes not kept (lost, or over 125)

	// The data message being read, over its fragments.
	msg        *Message
	compressed bool   // RSV1 on its first frame: permessage-deflate
	raw        []byte // its compressed payload, at most Limits.MaxBody
	rawCut     bool   // raw is not the whole compressed payload

	// The end of this direction's decompressed stream, which the next
	// message may refer to (context takeover). The decompressor itself
	// (some 40 KiB) lives for one message: an idle connection keeps only
	// this.
	dict    []byte
	ctxLost bool // dict is not the whole history: a message was cut
}

// busy reports whether a frame or a fragmented message is partly read.
func (s *wsSide) busy() bool {
	return s.synced && (s.nhdr > 0 || s.inPayload || s.msg != nil)
}

// feed consumes the bytes of one call, followed by lost bytes that were
// not captured.
func (s *wsSide) feed(data []byte, lost int, mono uint64) {
	if !s.synced {
		if !s.frameStart(data) {
			s.junk += int64(len(data) + lost)
			return
		}
		s.synced = true
	}
	for len(data) > 0 || lost > 0 {
		if !s.synced {
			s.junk += int64(len(data) + lost)
			return
		}
		if !s.inPayload {
			if len(data) == 0 {
				s.lose(mono, errors.New("bytes lost in a frame header"))
				continue
			}
			if s.nhdr == 0 {
				s.hdrMono = mono
			}
			n := copy(s.hdr[s.nhdr:s.want], data)
			s.nhdr += n
			data = data[n:]
			if s.nhdr < s.want {
				continue
			}
			if s.want == 2 {
				s.want = wsHeaderLen(s.hdr[1])
				if s.want > 2 {
					continue
				}
			}
			s.startFrame(mono)
			continue
		}
		if len(data) == 0 {
			// The frame's length is known: lost payload bytes keep sync.
			n := min(uint64(lost), s.left)
			s.miss(int64(n))
			lost -= int(n)
			s.left -= n
			s.pos += n
		} else {
			n := int(min(uint64(len(data)), s.left))
			s.take(data[:n])
			data = data[n:]
			s.left -= uint64(n)
			s.pos += uint64(n)
		}
		if s.left == 0 {
			s.endFrame(mono)
		}
	}
}

// wsHeaderLen is the length of a frame header from its second byte.
func wsHeaderLen(b1 byte) int {
	n := 2
	switch b1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if b1&0x80 != 0 {
		n += 4
	}
	return n
}

// frameStart reports whether b may begin a frame, for finding frames
// again after sync was lost: the checks a peer makes (reserved bits and
// opcodes, control frames whole and short, lengths in their shortest
// form) and the direction's masking (RFC 6455, 5.1: clients mask, servers
// do not). A continuation is refused: its message was lost.
func (s *wsSide) frameStart(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	b0, b1 := b[0], b[1]
	if b0&0x30 != 0 || (b0&0x40 != 0 && !s.deflate) || (b1&0x80 != 0) == s.response {
		return false
	}
	switch b0 & 0x0f {
	case WSText, WSBinary:
	case WSClose, WSPing, WSPong:
		if b0&0xc0 != 0x80 || b1&0x7f > wsMaxControl {
			return false
		}
	default:
		return false
	}
	switch b1 & 0x7f {
	case 126:
		return len(b) < 4 || binary.BigEndian.Uint16(b[2:]) >= 126
	case 127:
		if len(b) < 10 {
			return true
		}
		n := binary.BigEndian.Uint64(b[2:])
		return n >= 1<<16 && n>>63 == 0
	}
	return true
}

// startFrame acts on the frame header just read.
func (s *wsSide) startFrame(mono uint64) {
	h := s.hdr[:s.want]
	s.nhdr, s.want = 0, 2
	s.fin = h[0]&0x80 != 0
	s.rsv1 = h[0]&0x40 != 0
	s.op = h[0] & 0x0f
	s.masked = h[1]&0x80 != 0
	n, i := uint64(h[1]&0x7f), 2
	switch n {
	case 126:
		n, i = uint64(binary.BigEndian.Uint16(h[2:])), 4
	case 127:
		n, i = binary.BigEndian.Uint64(h[2:]), 10
		if n>>63 != 0 {
			s.lose(mono, fmt.Errorf("frame length %#x has its top bit set", n))
			return
		}
	}
	if s.masked {
		copy(s.key[:], h[i:i+4])
	}
	if h[0]&0x30 != 0 {
		s.malform++ // RSV2, RSV3: no extension defines them; read all the same
	}
	s.pos, s.left = 0, n
	s.inPayload = true
	if s.op >= 0x8 {
		s.nctl, s.ctlMiss = 0, 0
		if n > wsMaxControl || !s.fin {
			s.malform++
		}
	} else {
		s.dataFrame(mono)
	}
	if n == 0 {
		s.endFrame(mono)
	}
}

// dataFrame starts or continues a message with the frame just begun.
// Reserved non-control opcodes (3-7) are read as messages of their own:
// a lenient peer may take them.
func (s *wsSide) dataFrame(mono uint64) {
	if s.op == WSContinuation {
		if s.msg == nil {
			// No message to continue: its payload is kept as one.
			s.malform++
			s.startMessage(false)
		}
		return
	}
	if s.msg != nil {
		// A new message before the last one ended.
		s.malform++
		s.cut(mono)
	}
	s.startMessage(s.rsv1)
}

func (s *wsSide) startMessage(compressed bool) {
	s.msg = &Message{
		Head:      Head{Host: s.host, Target: s.target},
		Response:  s.response,
		WebSocket: true,
		Opcode:    s.op,
		Start:     s.hdrMono,
	}
	s.compressed = compressed
	s.raw, s.rawCut = s.raw[:0], false
}

// take reads payload bytes of the current frame.
func (s *wsSide) take(b []byte) {
	if s.op >= 0x8 {
		n := copy(s.ctl[s.nctl:], b)
		unmaskIf(s.masked, s.ctl[s.nctl:s.nctl+n], s.key, s.pos)
		s.nctl += n
		s.ctlMiss += int64(len(b) - n)
		return
	}
	m := s.msg
	m.WireSize += int64(len(b))
	dst := &m.Data
	if s.compressed {
		dst = &s.raw
	}
	n := min(len(b), max(s.limits.MaxBody-len(*dst), 0))
	if n < len(b) {
		m.Truncated = true
		s.rawCut = s.rawCut || s.compressed
	}
	start := len(*dst)
	*dst = append(*dst, b[:n]...)
	unmaskIf(s.masked, (*dst)[start:], s.key, s.pos)
}

// miss counts payload bytes that were not captured.
func (s *wsSide) miss(n int64) {
	if s.op >= 0x8 {
		s.ctlMiss += n
		return
	}
	m := s.msg
	m.WireSize += n
	m.Missing += n
	m.Truncated = true
	s.rawCut = s.rawCut || s.compressed
}

// endFrame acts on a frame whose payload has been read.
func (s *wsSide) endFrame(mono uint64) {
	s.inPayload = false
	if s.op >= 0x8 {
		s.control(mono)
		return
	}
	if s.fin {
		s.finish(mono)
	}
}

// control emits a control frame that carries something: a close frame
// always, a ping or pong (or a reserved control opcode) with a payload,
// which may hold 125 bytes of anything.
func (s *wsSide) control(mono uint64) {
	p := s.ctl[:s.nctl]
	if s.op != WSClose && len(p) == 0 && s.ctlMiss == 0 {
		return
	}
	m := &Message{
		Head:      Head{Host: s.host, Target: s.target},
		Body:      Body{WireSize: int64(s.pos), Missing: s.ctlMiss, Truncated: s.ctlMiss > 0},
		Response:  s.response,
		WebSocket: true,
		Opcode:    s.op,
		Start:     s.hdrMono,
		End:       mono,
	}
	if s.op == WSClose && len(p) >= 2 {
		m.CloseCode = binary.BigEndian.Uint16(p)
		p = p[2:]
	}
	m.Data = bytes.Clone(p)
	s.emit(m)
}

// cut emits the message in progress as truncated: it will not end.
func (s *wsSide) cut(mono uint64) {
	s.msg.Truncated = true
	s.rawCut = s.rawCut || s.compressed
	s.finish(mono)
}

// finish emits the message in progress.
func (s *wsSide) finish(mono uint64) {
	m := s.msg
	s.msg = nil
	m.End = mono
	if s.compressed {
		s.inflate(m)
	}
	if cap(s.raw) > 64<<10 {
		s.raw = nil // do not keep a large buffer on an idle connection
	}
	s.emit(m)
}

// inflate replaces m's data with its compressed payload inflated, within
// Limits.MaxDecoded, and keeps the history the next message may refer to.
func (s *wsSide) inflate(m *Message) {
	raw, cut := s.raw, s.rawCut
	var r io.Reader = bytes.NewReader(raw)
	if !cut {
		r = io.MultiReader(r, strings.NewReader(wsTail))
	}
	out, more, err := readBounded(flate.NewReaderDict(r, s.dict), s.limits.MaxDecoded)
	if cut && errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil // the input was cut short, so its end is missing
	}
	switch {
	case err != nil && len(out) == 0:
		// Nothing decoded: the raw payload is kept, as for HTTP bodies.
		m.DecodeErr = s.inflateErr(err)
		m.Data = raw
		s.raw = nil // the message has it now
	case err != nil:
		m.DecodeErr = s.inflateErr(err)
		m.Data, m.Truncated, m.Encoding = out, true, wsDeflate
	default:
		m.Data, m.Truncated, m.Encoding = out, m.Truncated || more, wsDeflate
	}
	switch {
	case s.noContext:
		s.dict, s.ctxLost = s.dict[:0], false
	case err != nil || cut || more:
		// What follows may refer to output that was not produced: it is
		// inflated without it, so that it fails rather than reads wrong.
		s.dict, s.ctxLost = s.dict[:0], true
	default:
		s.keepHistory(out)
	}
}

func (s *wsSide) inflateErr(err error) error {
	if s.ctxLost {
		return fmt.Errorf("inflate websocket message (earlier messages not read whole): %w", err)
	}
	return fmt.Errorf("inflate websocket message: %w", err)
}

// keepHistory appends out to the inflater history, keeping its last
// window bytes.
func (s *wsSide) keepHistory(out []byte) {
	w := s.window
	if len(out) >= w {
		s.dict = append(s.dict[:0], out[len(out)-w:]...)
		return
	}
	if keep := w - len(out); len(s.dict) > keep {
		s.dict = append(s.dict[:0], s.dict[len(s.dict)-keep:]...)
	}
	s.dict = append(s.dict, out...)
}

// pending is the client's message in progress, as a partial copy: for a
// compressed one, Data is what its compressed bytes so far inflate to.
func (s *wsSide) pending() *Message {
	if !s.synced || s.msg == nil {
		return nil
	}
	m := partial(s.msg)
	if s.compressed {
		out, _, _ := readBounded(flate.NewReaderDict(bytes.NewReader(s.raw), s.dict), s.limits.MaxDecoded)
		m.Data, m.Encoding = out, wsDeflate
	}
	return m
}

// lose gives frame sync up: the message in progress is emitted as
// truncated, and so is the inflater's history.
func (s *wsSide) lose(mono uint64, err error) {
	s.synced = false
	s.err = err
	s.malform++
	s.nhdr, s.want, s.inPayload = 0, 2, false
	if s.msg != nil {
		s.cut(mono)
	}
	s.dict, s.ctxLost = s.dict[:0], true
}

// readBounded reads r to its end, keeping at most limit bytes; more
// reports that r had more. The buffer grows by doubling up to the limit,
// never past it: a decompression bomb costs at most about twice the limit
// in allocations, and stops there.
func readBounded(r io.Reader, limit int) (out []byte, more bool, err error) {
	buf := make([]byte, 0, min(limit, 4<<10))
	for {
		if len(buf) == cap(buf) {
			if len(buf) >= limit {
				var one [1]byte
				n, err := io.ReadFull(r, one[:])
				if n > 0 {
					return buf, true, nil
				}
				if errors.Is(err, io.EOF) {
					err = nil
				}
				return buf, false, err
			}
			nb := make([]byte, len(buf), min(2*cap(buf), limit))
			copy(nb, buf)
			buf = nb
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, false, nil
		}
		if err != nil {
			return buf, false, err
		}
	}
}

// unmaskIf undoes the masking of b, the payload bytes from offset pos.
func unmaskIf(masked bool, b []byte, key [4]byte, pos uint64) {
	if !masked {
		return
	}
	// The key rotated to b's phase, twice: a word at a time.
	var k [8]byte
	for i := range k {
		k[i] = key[(pos+uint64(i))&3]
	}
	kw := binary.LittleEndian.Uint64(k[:])
	i := 0
	for ; i+8 <= len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], binary.LittleEndian.Uint64(b[i:])^kw)
	}
	for ; i < len(b); i++ {
		b[i] ^= k[i&7]
	}
}

// offerWS starts reading the client's bytes as frames after req, a
// request to upgrade to WebSocket. A client must wait for the 101 before it
// writes any (RFC 6455, 4.1), so what it writes meanwhile can only be
// frames that a lenient server takes: read as such, it is judged when
// written. A refusal turns the client's bytes back to HTTP.
func (hc *httpConn) offerWS(req *Message) {
	hc.ws = newWSConn(hc.p.limits, req, hc.emit)
	hc.wsAhead = len(hc.methods) - 1
}

// feedRequests parses client bytes of an HTTP/1.x connection: the request
// parser takes them a head at a time while it reads heads, so that the
// bytes after an upgrade request go to the WebSocket parser.
func (hc *httpConn) feedRequests(data []byte, lost int, mono uint64, emit func(*Message)) {
	for len(data) > 0 || lost > 0 {
		if hc.ws != nil {
			hc.ws.side[stream.Egress].feed(data, lost, mono)
			return
		}
		k := -1
		if hc.req.state == stHead {
			k = headEnd(hc.req.buf, data)
		}
		if k < 0 {
			hc.req.feed(data, lost, mono, emit)
			return
		}
		hc.req.feed(data[:k], 0, mono, emit)
		data = data[k:]
	}
}

// feedUpgrade parses server bytes of an HTTP/1.x connection. While a
// WebSocket upgrade waits for its answer, they go to the response parser
// up to each place where a response head may end, so that once a 101
// switches the connection, the bytes after its head go to the WebSocket
// parser.
func (hc *httpConn) feedUpgrade(data []byte, lost int, mono uint64) {
	for len(data) > 0 || lost > 0 {
		if hc.protocol == ProtoWebSocket {
			hc.ws.side[stream.Ingress].feed(data, lost, mono)
			return
		}
		k := -1
		if hc.ws != nil {
			k = headEnd(hc.resp.buf, data)
		}
		if k < 0 {
			hc.resp.feed(data, lost, mono, hc.emitResponse)
			return
		}
		hc.resp.feed(data[:k], 0, mono, hc.emitResponse)
		data = data[k:]
	}
}

// headEnd returns the length of data up to and including the first CRLF
// CRLF of buf+data that ends in data, or -1.
func headEnd(buf, data []byte) int {
	for k := 3; k >= 1; k-- {
		if len(buf) >= k && len(data) >= 4-k && string(buf[len(buf)-k:]) == string(crlf2[:k]) &&
			string(data[:4-k]) == string(crlf2[k:]) {
			return 4 - k
		}
	}
	if i := bytes.Index(data, crlf2); i >= 0 {
		return i + len(crlf2)
	}
	return -1
}

// emitResponse emits a response and follows the WebSocket upgrade offered:
// a 101 answering it switches the connection; a final response refuses it.
func (hc *httpConn) emitResponse(m *Message) {
	hc.emit(m)
	if hc.ws == nil || hc.protocol == ProtoWebSocket {
		return
	}
	switch {
	case m.Status == 101 && hc.wsAhead == 0 && wsAccepted(m):
		hc.protocol = ProtoWebSocket
		hc.other = false
		hc.ws.accept(m)
	case m.Status >= 200 && hc.wsAhead > 0:
		hc.wsAhead--
	case m.Status >= 200:
		// Refused: the client goes on in HTTP. What it wrote meanwhile was
		// read as frames; a message left in progress ends here.
		s := &hc.ws.side[stream.Egress]
		if s.msg != nil {
			s.cut(m.End)
		}
		hc.p.stats.JunkBytes += uint64(s.junk)
		hc.p.stats.Malformed += uint64(s.malform)
		hc.ws = nil
	}
}
