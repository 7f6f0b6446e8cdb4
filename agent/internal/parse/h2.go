// This file parses HTTP/2 (RFC 9113) incrementally. Each direction of a
// connection is a sequence of frames; every frame is consumed as its bytes
// arrive, without buffering its payload: DATA goes straight into the
// stream's body (within Limits.MaxBody), header block fragments go to one
// HPACK decoder per direction in bounded chunks, and the fixed fields of
// control frames fit in a few bytes. So the memory of a connection does not
// depend on frame sizes, and a SETTINGS or PING flood costs nothing.

package parse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/textproto"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// h2Preface opens every HTTP/2 connection, written by the client.
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const (
	h2HeaderLen       = 9
	h2DefaultMaxFrame = 16384
	h2MaxFrameLimit   = 1<<24 - 1 // the largest length a frame header can carry
	h2InitialTable    = 4096      // HPACK dynamic table size before any SETTINGS
	// h2MaxTable caps the dynamic table a peer may make us keep, whatever
	// its SETTINGS say: 64 KiB covers what browsers announce (Chrome: 65536).
	h2MaxTable = 64 << 10
	// h2MaxStreams bounds the streams tracked at once per direction; more
	// are counted and ignored (their header blocks still feed HPACK).
	h2MaxStreams = 128
	// h2FlushAt is how many header block bytes are collected before they
	// are handed to the HPACK decoder. Handing it every call's few bytes
	// would make it re-parse a partial field on each call: quadratic when
	// a client writes one byte at a time.
	h2FlushAt = 16 << 10
)

// Frame types and flags (RFC 9113 section 6).
const (
	frData         = 0x0
	frHeaders      = 0x1
	frPriority     = 0x2
	frRSTStream    = 0x3
	frSettings     = 0x4
	frPushPromise  = 0x5
	frPing         = 0x6
	frGoAway       = 0x7
	frWindowUpdate = 0x8
	frContinuation = 0x9

	flEndStream  = 0x1
	flEndHeaders = 0x4
	flPadded     = 0x8
	flPriority   = 0x20

	setHeaderTableSize = 0x1
	setMaxFrameSize    = 0x5
)

type h2Phase uint8

const (
	phHeader  h2Phase = iota // reading the 9-byte frame header
	phFixed                  // reading fixed fields: pad length, priority, promised id, error code
	phContent                // data, header block fragment, settings, or bytes skipped
	phPad                    // skipping padding
)

// h2Stream is a stream open in one direction.
type h2Stream struct {
	msg  *Message
	head bool // the message's header block was decoded (later ones are trailers)
}

// h2Side parses the frames of one direction of an HTTP/2 connection.
type h2Side struct {
	limits   Limits
	response bool // server frames: responses
	peer     *h2Side
	emit     func(*Message)
	dead     bool  // frame sync or HPACK state lost: the direction is given up
	err      error // why it was given up
	junk     int64
	malform  int64
	ignored  int64 // streams over h2MaxStreams

	// The frame being read.
	phase   h2Phase
	hdr     [h2HeaderLen]byte
	nhdr    int
	typ     uint8
	flags   uint8
	sid     uint32
	left    int // payload bytes not yet read
	content int // content bytes not yet read
	fix     [9]byte
	nfix    int
	fixWant int
	data    *h2Stream // stream of the DATA frame being read; nil: skipped

	// maxFrame is the largest frame this side may send: the peer's
	// SETTINGS_MAX_FRAME_SIZE.
	maxFrame int

	streams map[uint32]*h2Stream
	lastSid uint32 // highest request stream opened (client side)

	// The header block being read.
	dec       *hpack.Decoder
	frag      []byte // fragment bytes not yet given to dec, < h2FlushAt
	inBlock   bool   // a header block is being read: until END_HEADERS
	blockSid  uint32
	blockEnd  bool      // the HEADERS frame had END_STREAM
	blockMsg  *Message  // receives the fields; nil: decoded for HPACK state only
	blockStrm *h2Stream // stream of the block, nil if ignored
	blockSize int       // header list size so far (RFC 7541 accounting)
	blockOver bool      // the header list went over Limits.MaxHeader
	blockDone bool      // the block's stream already saw its head (trailers)
}

// h2Conn is both directions of an HTTP/2 connection.
type h2Conn struct {
	side [2]h2Side // by stream.Dir: 0 egress (client), 1 ingress (server)
}

func newH2Conn(limits Limits, emit func(*Message)) *h2Conn {
	c := &h2Conn{}
	for i := range c.side {
		s := &c.side[i]
		s.limits = limits
		s.response = i == 1
		s.peer = &c.side[1-i]
		s.emit = emit
		s.maxFrame = h2DefaultMaxFrame
		s.streams = map[uint32]*h2Stream{}
		s.dec = hpack.NewDecoder(h2InitialTable, s.field)
		s.dec.SetMaxStringLength(limits.MaxHeader)
	}
	return c
}

// busy reports whether the client is in the middle of a request: a frame
// partly written, a header block awaiting CONTINUATION, or a stream whose
// request has not ended.
func (c *h2Conn) busy() bool {
	s := &c.side[0]
	if s.dead {
		return false
	}
	return s.phase != phHeader || s.nhdr > 0 || s.inBlock || len(s.streams) > 0
}

// close emits the streams still open, as truncated.
func (c *h2Conn) close(mono uint64) {
	for i := range c.side {
		c.side[i].endAll(mono)
	}
}

// feed consumes the bytes of one call, followed by lost bytes that were
// not captured.
func (s *h2Side) feed(data []byte, lost int, mono uint64) {
	for len(data) > 0 || lost > 0 {
		if s.dead {
			s.junk += int64(len(data) + lost)
			return
		}
		switch s.phase {
		case phHeader:
			if len(data) == 0 {
				s.die(mono, errors.New("bytes lost at a frame boundary"))
				continue
			}
			n := copy(s.hdr[s.nhdr:], data)
			s.nhdr += n
			data = data[n:]
			if s.nhdr == h2HeaderLen {
				s.nhdr = 0
				s.startFrame(mono)
			}
		case phFixed:
			if len(data) == 0 {
				s.die(mono, fmt.Errorf("bytes lost in the fields of a frame of type %d", s.typ))
				continue
			}
			n := copy(s.fix[s.nfix:s.fixWant], data)
			s.nfix += n
			s.left -= n
			data = data[n:]
			s.advance(mono)
		case phContent:
			if len(data) == 0 {
				// The frame's length is known, so bytes lost inside a
				// body or a skipped payload keep frame sync; lost header
				// block or settings bytes do not.
				if s.typ != frData && !s.skipped() {
					s.die(mono, fmt.Errorf("bytes lost in a frame of type %d", s.typ))
					continue
				}
				n := min(lost, s.content)
				if s.data != nil {
					s.data.msg.WireSize += int64(n)
					s.data.msg.Missing += int64(n)
					s.data.msg.Truncated = true
				}
				lost -= n
				s.content -= n
				s.left -= n
				s.advance(mono)
				continue
			}
			n := min(len(data), s.content)
			s.consume(data[:n], mono)
			data = data[n:]
			s.content -= n
			s.left -= n
			s.advance(mono)
		case phPad:
			var n int
			if len(data) > 0 {
				n = min(len(data), s.left)
				data = data[n:]
			} else {
				n = min(lost, s.left)
				lost -= n
			}
			s.left -= n
			s.advance(mono)
		}
	}
}

// skipped tells whether the current frame's content is passed over.
func (s *h2Side) skipped() bool {
	switch s.typ {
	case frHeaders, frContinuation, frPushPromise, frSettings:
		return false
	}
	return true
}

// startFrame checks the frame header just read and sets up its payload.
func (s *h2Side) startFrame(mono uint64) {
	h := s.hdr[:]
	length := int(h[0])<<16 | int(h[1])<<8 | int(h[2])
	s.typ, s.flags = h[3], h[4]
	s.sid = binary.BigEndian.Uint32(h[5:]) & 0x7fffffff
	if length > s.maxFrame {
		s.die(mono, fmt.Errorf("frame of %d bytes over the maximum %d", length, s.maxFrame))
		return
	}
	if s.inBlock && (s.typ != frContinuation || s.sid != s.blockSid) {
		s.die(mono, fmt.Errorf("frame of type %d inside the header block of stream %d", s.typ, s.blockSid))
		return
	}
	fixed := 0
	switch s.typ {
	case frData:
		if s.flags&flPadded != 0 {
			fixed = 1
		}
	case frHeaders:
		if s.flags&flPadded != 0 {
			fixed++
		}
		if s.flags&flPriority != 0 {
			fixed += 5
		}
	case frPushPromise:
		fixed = 4
		if s.flags&flPadded != 0 {
			fixed++
		}
	case frRSTStream:
		if length != 4 {
			s.die(mono, fmt.Errorf("RST_STREAM of %d bytes", length))
			return
		}
		fixed = 4
	case frGoAway:
		fixed = 8
	case frSettings:
		if length%6 != 0 {
			s.die(mono, fmt.Errorf("SETTINGS of %d bytes", length))
			return
		}
	case frContinuation:
		if !s.inBlock {
			s.die(mono, fmt.Errorf("CONTINUATION on stream %d outside a header block", s.sid))
			return
		}
	}
	if fixed > length {
		s.die(mono, fmt.Errorf("frame of type %d too short: %d bytes", s.typ, length))
		return
	}
	s.left = length
	s.fixWant, s.nfix = fixed, 0
	s.content = 0
	s.phase = phFixed
	s.advance(mono)
}

// advance moves past the phases of the current frame that are done, and
// ends the frame when its payload is read.
func (s *h2Side) advance(mono uint64) {
	if s.phase == phFixed {
		if s.nfix < s.fixWant {
			return
		}
		if !s.fixedDone(mono) {
			return
		}
		s.phase = phContent
	}
	if s.phase == phContent {
		if s.content > 0 {
			return
		}
		s.phase = phPad
	}
	if s.left > 0 {
		return
	}
	s.phase = phHeader
	s.endFrame(mono)
}

// fixedDone acts on the fixed fields of the frame; false if the side died.
func (s *h2Side) fixedDone(mono uint64) bool {
	pad := 0
	if s.flags&flPadded != 0 && (s.typ == frData || s.typ == frHeaders || s.typ == frPushPromise) {
		pad = int(s.fix[0])
		if pad > s.left {
			s.die(mono, fmt.Errorf("padding of %d bytes in a frame with %d left", pad, s.left))
			return false
		}
	}
	s.content = s.left - pad
	s.nfix = 0
	switch s.typ {
	case frData:
		if s.sid == 0 {
			s.die(mono, errors.New("DATA on stream 0"))
			return false
		}
		s.data = s.streams[s.sid]
	case frHeaders:
		if s.sid == 0 {
			s.die(mono, errors.New("HEADERS on stream 0"))
			return false
		}
		s.beginBlock(mono, false)
	case frPushPromise:
		s.beginBlock(mono, true)
	case frRSTStream:
		if s.sid == 0 {
			s.die(mono, errors.New("RST_STREAM on stream 0"))
			return false
		}
		// A reset ends the stream both ways; the request is emitted first.
		req, resp := s, s.peer
		if s.response {
			req, resp = resp, req
		}
		req.reset(s.sid, mono)
		resp.reset(s.sid, mono)
	}
	return true
}

// consume takes content bytes of the current frame.
func (s *h2Side) consume(b []byte, mono uint64) {
	switch s.typ {
	case frData:
		if s.data != nil {
			takeBody(s.data.msg, b, s.limits.MaxBody)
		}
	case frHeaders, frContinuation, frPushPromise:
		// In pieces: a peer allowed big frames could otherwise make one
		// call's fragment the size of the buffer.
		for len(b) > 0 && !s.dead {
			n := min(len(b), h2FlushAt-len(s.frag))
			s.frag = append(s.frag, b[:n]...)
			b = b[n:]
			if len(s.frag) >= h2FlushAt {
				s.flush(mono)
			}
		}
	case frSettings:
		for len(b) > 0 && !s.dead {
			n := copy(s.fix[s.nfix:6], b)
			s.nfix += n
			b = b[n:]
			if s.nfix == 6 {
				s.nfix = 0
				if s.flags&flEndStream == 0 { // the ACK flag has the same bit
					s.setting(binary.BigEndian.Uint16(s.fix[:2]), binary.BigEndian.Uint32(s.fix[2:6]))
				}
			}
		}
	}
}

// setting applies a SETTINGS parameter this side announced: it bounds
// what the peer sends.
func (s *h2Side) setting(id uint16, v uint32) {
	switch id {
	case setHeaderTableSize:
		// The peer's encoder may use up to this much, so the decoder of
		// the peer's direction must accept it; beyond h2MaxTable, a table
		// size update from the encoder fails that decoder.
		s.peer.dec.SetAllowedMaxDynamicTableSize(min(v, h2MaxTable))
	case setMaxFrameSize:
		if v >= h2DefaultMaxFrame && v <= h2MaxFrameLimit {
			s.peer.maxFrame = int(v)
		}
	}
}

// endFrame acts on a frame whose payload has been read.
func (s *h2Side) endFrame(mono uint64) {
	switch s.typ {
	case frData:
		st := s.data
		s.data = nil
		if st != nil && s.flags&flEndStream != 0 {
			s.finish(s.sid, mono)
		}
	case frHeaders, frContinuation, frPushPromise:
		if s.flags&flEndHeaders != 0 {
			s.endBlock(mono)
		} else {
			s.inBlock = true
		}
	}
}

// beginBlock starts decoding the header block of a HEADERS or PUSH_PROMISE
// frame. Blocks of ignored streams are decoded too: HPACK state is shared
// by the whole direction.
func (s *h2Side) beginBlock(mono uint64, push bool) {
	s.inBlock = true
	s.blockSid = s.sid
	s.blockEnd = !push && s.flags&flEndStream != 0
	s.blockMsg, s.blockStrm = nil, nil
	s.blockSize, s.blockOver, s.blockDone = 0, false, false
	s.frag = s.frag[:0]
	if !push {
		s.blockStrm = s.openStream(mono)
		if s.blockStrm != nil {
			s.blockDone = s.blockStrm.head
			if !s.blockDone {
				s.blockMsg = s.blockStrm.msg
			}
		}
	}
	// Without a message to fill, decoding only keeps the table up to date.
	s.dec.SetEmitEnabled(s.blockMsg != nil)
}

// openStream returns the stream of the HEADERS frame being read, opening
// it if it is new; nil if it is ignored.
func (s *h2Side) openStream(mono uint64) *h2Stream {
	if st := s.streams[s.sid]; st != nil {
		return st
	}
	// Client streams are odd; even ones are server pushes, ignored.
	if s.sid%2 == 0 {
		return nil
	}
	if !s.response {
		// A client opens streams in increasing order: a lower id is a
		// stream that already ended.
		if s.sid <= s.lastSid {
			return nil
		}
		s.lastSid = s.sid
	}
	if len(s.streams) >= h2MaxStreams {
		s.ignored++
		return nil
	}
	st := &h2Stream{msg: s.newMessage(s.sid, mono)}
	s.streams[s.sid] = st
	return st
}

func (s *h2Side) newMessage(sid uint32, mono uint64) *Message {
	return &Message{
		Head:     Head{Proto: "HTTP/2.0", Header: textproto.MIMEHeader{}},
		Response: s.response,
		Start:    mono,
		Stream:   sid,
	}
}

// flush hands the collected fragment bytes to the decoder.
func (s *h2Side) flush(mono uint64) {
	if len(s.frag) == 0 {
		return
	}
	_, err := s.dec.Write(s.frag)
	s.frag = s.frag[:0]
	if err != nil {
		s.die(mono, fmt.Errorf("decode header block of stream %d: %w", s.blockSid, err))
	}
}

// endBlock completes the header block being read.
func (s *h2Side) endBlock(mono uint64) {
	s.flush(mono)
	if s.dead {
		return
	}
	if err := s.dec.Close(); err != nil {
		s.die(mono, fmt.Errorf("decode header block of stream %d: %w", s.blockSid, err))
		return
	}
	s.inBlock = false
	if s.frag != nil && cap(s.frag) > 4096 {
		s.frag = nil // do not keep a large buffer on an idle connection
	}
	st := s.blockStrm
	s.blockMsg, s.blockStrm = nil, nil
	// The stream may have been reset while its block was being read.
	if st == nil || s.streams[s.blockSid] != st {
		return
	}
	m := st.msg
	if !s.blockDone {
		st.head = true
		if m.Host == "" {
			m.Host = m.Header.Get("Host")
		}
		if s.response && m.Status/100 == 1 && !s.blockEnd {
			// An interim response: the final one follows on the stream.
			m.End = mono
			s.emit(m)
			st.msg, st.head = s.newMessage(s.blockSid, mono), false
			return
		}
	}
	if s.blockEnd {
		s.finish(s.blockSid, mono)
	}
}

// field receives a decoded header field of the block being read.
func (s *h2Side) field(f hpack.HeaderField) {
	m := s.blockMsg
	if m == nil {
		return
	}
	s.blockSize += len(f.Name) + len(f.Value) + 32
	if s.blockSize > s.limits.MaxHeader {
		// Decoding goes on, to keep the dynamic table right, but the
		// fields are no longer kept.
		s.blockOver = true
		m.Truncated = true
		s.dec.SetEmitEnabled(false)
		return
	}
	if strings.HasPrefix(f.Name, ":") {
		switch f.Name {
		case ":method":
			m.Method = f.Value
		case ":path":
			m.Target = f.Value
		case ":authority":
			m.Host = f.Value
		case ":status":
			if code, err := strconv.Atoi(f.Value); err == nil && code >= 100 && code <= 999 {
				m.Status = code
			}
		}
		return
	}
	m.Header.Add(textproto.CanonicalMIMEHeaderKey(f.Name), f.Value)
}

// finish ends stream sid and emits its message.
func (s *h2Side) finish(sid uint32, mono uint64) {
	st := s.streams[sid]
	if st == nil {
		return
	}
	delete(s.streams, sid)
	m := st.msg
	m.End = mono
	decodeBody(m, s.limits.MaxDecoded)
	s.emit(m)
}

// reset ends stream sid, if open here, as reset by either side.
func (s *h2Side) reset(sid uint32, mono uint64) {
	if st := s.streams[sid]; st != nil {
		st.msg.Reset = true
		st.msg.Truncated = true
		s.finish(sid, mono)
	}
}

// endAll emits the open streams as truncated, in stream order.
func (s *h2Side) endAll(mono uint64) {
	ids := make([]uint32, 0, len(s.streams))
	for id := range s.streams {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s.streams[id].msg.Truncated = true
		s.finish(id, mono)
	}
}

// die gives the direction up: what its open streams saw is emitted, as
// truncated, and its further bytes are junk.
func (s *h2Side) die(mono uint64, err error) {
	s.dead = true
	s.err = err
	s.malform++
	s.inBlock = false
	s.blockMsg, s.blockStrm, s.data = nil, nil, nil
	s.frag = nil
	s.endAll(mono)
	s.streams = nil
}

// takeBody appends body bytes to m within limit.
func takeBody(m *Message, b []byte, limit int) {
	if len(b) == 0 {
		return
	}
	m.WireSize += int64(len(b))
	room := limit - len(m.Data)
	if room < len(b) {
		m.Truncated = true
		b = b[:max(room, 0)]
	}
	m.Data = append(m.Data, b...)
}
