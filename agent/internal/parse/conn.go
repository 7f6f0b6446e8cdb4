package parse

import (
	"bytes"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Stats count what the parsers of closed connections passed over.
type Stats struct {
	Messages  uint64
	JunkBytes uint64 // bytes that were not HTTP (other protocols, lost framing)
	Malformed uint64 // messages given up; HTTP/2 directions given up
	// IgnoredStreams are HTTP/2 streams opened beyond the number tracked
	// at once per connection and direction.
	IgnoredStreams uint64
}

// Parser is the third stage of the pipeline: it parses each connection's
// segments as HTTP/1.x, as HTTP/2 when the client opens with the HTTP/2
// preface, or as SMTP when it opens with EHLO/HELO/LHLO, and returns the
// messages each segment completes. An HTTP/1.1 connection upgraded to
// WebSocket (ws.go) goes on as frames, each message a Message. It keeps
// one parser state per open connection. It is not safe for concurrent use.
type Parser struct {
	limits Limits
	conns  map[stream.Key]*httpConn
	stats  Stats
	out    Output // what the segment being fed completed
}

// Output is what one segment completed: HTTP requests and responses, and
// mails sent over SMTP, in the order they ended. Each is the caller's to
// keep.
type Output struct {
	Messages []*Message
	Mails    []*mail.Message
}

// Empty reports whether the segment completed nothing.
func (o Output) Empty() bool { return len(o.Messages) == 0 && len(o.Mails) == 0 }

// New returns a parser.
func New(limits Limits) *Parser {
	limits.setDefaults()
	return &Parser{limits: limits, conns: map[stream.Key]*httpConn{}}
}

// Feed parses one segment and returns what it completed. A Closed segment
// ends the connection's parser (what it held is flushed).
func (p *Parser) Feed(s stream.Segment) Output {
	p.out = Output{}
	hc := p.conns[s.Conn.Key]
	if s.Closed {
		if hc != nil {
			delete(p.conns, s.Conn.Key)
			hc.close(s.Conn)
		}
		return p.out
	}
	if hc == nil {
		hc = p.newConn()
		p.conns[s.Conn.Key] = hc
	}
	hc.data(s.Dir, s.Data, s.Lost, s.Mono)
	return p.out
}

func (p *Parser) newConn() *httpConn {
	hc := &httpConn{p: p}
	hc.req = httpParser{limits: p.limits}
	hc.resp = httpParser{limits: p.limits, response: true, noBody: hc.answersHead}
	return hc
}

// Stats returns the counters, including those of closed connections.
func (p *Parser) Stats() Stats { return p.stats }

// Busy reports whether the client of connection k is in the middle of an
// outgoing message: its next write may complete it. A connection the
// parser has not seen is not busy.
func (p *Parser) Busy(k stream.Key) bool {
	hc := p.conns[k]
	return hc != nil && hc.busy()
}

// Proto names the protocol the client of connection k speaks: ProtoHTTP1,
// ProtoHTTP2, ProtoSMTP, ProtoWebSocket (from the 101 response that
// switched an HTTP/1.1 connection), ProtoOther (its first bytes started no
// HTTP request or SMTP session), or "" before its first bytes (or while
// they are a prefix of the HTTP/2 preface).
func (p *Parser) Proto(k stream.Key) string {
	if hc := p.conns[k]; hc != nil {
		return hc.proto()
	}
	return ""
}

// maxPending bounds the request methods remembered for pairing responses.
const maxPending = 64

// maxEarly bounds the server bytes kept while the protocol is not known
// yet: an HTTP/2 server may send its SETTINGS before the client's preface
// is complete. Beyond it, the bytes count as lost.
const maxEarly = 16 << 10

// Protocols of a connection, as Proto reports them.
const (
	ProtoHTTP1 = "h1"
	ProtoHTTP2 = "h2"
	ProtoSMTP  = "smtp"
	ProtoOther = "other"
	// ProtoWebSocket: every client write may carry (part of) a message,
	// whatever its first bytes, so the kernel is to hold them all:
	// enforce's connMode maps it to probe.ConnAll (its default case does);
	// ConnH1's single_get or ConnOther's starts_candidate would let frames
	// go unheld. Busy tells when a write starts mid-frame, should a
	// frame-walking mode (like ConnH2's) come later.
	ProtoWebSocket = "ws"
)

type httpConn struct {
	p         *Parser
	protocol  string // "" until the client's first bytes tell
	req, resp httpParser
	methods   []string // methods of requests not answered yet
	other     bool     // HTTP/1 by elimination: the client's first bytes started no request
	smtp      *mail.SMTPSession
	h2        *h2Conn
	// ws: the frames after a request that asked to upgrade to WebSocket,
	// from that request on for the client's bytes, and from the 101 on
	// for the server's (ws.go); wsAhead: responses due before the
	// upgrade's own.
	ws      *wsConn
	wsAhead int

	// Until the protocol is known: client bytes that are a prefix of the
	// HTTP/2 preface, and server bytes that came first.
	head      []byte
	early     []byte
	earlyLost int
	earlyMono uint64
}

// isSMTPGreeting tells whether a client's first bytes open an SMTP session.
func isSMTPGreeting(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	w := bytes.ToUpper(b[:4])
	return bytes.Equal(w, []byte("EHLO")) || bytes.Equal(w, []byte("HELO")) || bytes.Equal(w, []byte("LHLO"))
}

func (hc *httpConn) answersHead() bool {
	if len(hc.methods) == 0 {
		return false
	}
	m := hc.methods[0]
	hc.methods = hc.methods[1:]
	return m == "HEAD"
}

func (hc *httpConn) proto() string {
	if hc.other {
		return ProtoOther
	}
	return hc.protocol
}

func (hc *httpConn) emit(m *Message) {
	hc.p.stats.Messages++
	hc.p.out.Messages = append(hc.p.out.Messages, m)
}

func (hc *httpConn) data(dir stream.Dir, data []byte, lost int, mono uint64) {
	if hc.protocol == "" {
		if dir == stream.Ingress {
			hc.hold(data, lost, mono)
			return
		}
		var ok bool
		if data, ok = hc.detect(data, lost, mono); !ok {
			return
		}
	}
	switch hc.protocol {
	case ProtoSMTP:
		if dir == stream.Egress {
			for _, m := range hc.smtp.Feed(data) {
				hc.p.stats.Messages++
				hc.p.out.Mails = append(hc.p.out.Mails, m)
			}
		}
	case ProtoHTTP2:
		hc.h2.side[dir].feed(data, lost, mono)
	case ProtoWebSocket:
		hc.ws.side[dir].feed(data, lost, mono)
	default:
		hc.feedHTTP1(dir, data, lost, mono)
	}
}

func (hc *httpConn) feedHTTP1(dir stream.Dir, data []byte, lost int, mono uint64) {
	if dir == stream.Egress {
		hc.feedRequests(data, lost, mono, func(m *Message) {
			if len(hc.methods) < maxPending {
				hc.methods = append(hc.methods, m.Method)
			}
			if wsOffered(m) {
				hc.offerWS(m)
			}
			hc.emit(m)
		})
		return
	}
	hc.feedUpgrade(data, lost, mono)
}

// hold keeps server bytes that precede the protocol's decision.
func (hc *httpConn) hold(data []byte, lost int, mono uint64) {
	if len(hc.early) == 0 && hc.earlyLost == 0 {
		hc.earlyMono = mono
	}
	n := min(len(data), maxEarly-len(hc.early))
	if hc.earlyLost > 0 {
		n = 0 // bytes after lost ones cannot be placed
	}
	hc.early = append(hc.early, data[:n]...)
	hc.earlyLost += len(data) - n + lost
}

// detect decides the protocol from the client's first bytes. It returns
// the bytes of this call still to parse, and false while the bytes seen
// are only a prefix of the HTTP/2 preface.
func (hc *httpConn) detect(data []byte, lost int, mono uint64) ([]byte, bool) {
	if len(hc.head) == 0 && isSMTPGreeting(data) {
		hc.protocol = ProtoSMTP
		hc.smtp = mail.NewSMTPSession()
		hc.early, hc.earlyLost = nil, 0 // the server's greeting is not parsed
		return data, true
	}
	seen := len(hc.head)
	n := min(len(h2Preface)-seen, len(data))
	if string(data[:n]) != h2Preface[seen:seen+n] {
		// Not HTTP/2: HTTP/1.x, from the first byte held.
		hc.protocol = ProtoHTTP1
		if first := skipEmptyLines(append(hc.head[:len(hc.head):len(hc.head)], data...), false); len(first) > 0 && !looksLikeStart(first, false) {
			hc.other = true
		}
		hc.replayEarly()
		if len(hc.head) > 0 {
			hc.feedHTTP1(stream.Egress, hc.head, 0, mono)
			hc.head = nil
		}
		return data, true
	}
	if seen+n < len(h2Preface) && (lost == 0 || seen+n < 3) {
		if lost > 0 {
			// Too little to tell, and the rest is gone.
			hc.protocol = ProtoHTTP1
			hc.replayEarly()
			return data, true
		}
		hc.head = append(hc.head, data...)
		return nil, false
	}
	// The preface, whole or with its end lost: HTTP/2.
	hc.protocol = ProtoHTTP2
	hc.head = nil
	hc.h2 = newH2Conn(hc.p.limits, hc.emit)
	hc.replayEarly()
	return data[n:], true
}

// replayEarly parses the server bytes held until the protocol was known.
func (hc *httpConn) replayEarly() {
	if len(hc.early) == 0 && hc.earlyLost == 0 {
		return
	}
	early, lost := hc.early, hc.earlyLost
	hc.early, hc.earlyLost = nil, 0
	if hc.protocol == ProtoHTTP2 {
		hc.h2.side[stream.Ingress].feed(early, lost, hc.earlyMono)
		return
	}
	hc.feedHTTP1(stream.Ingress, early, lost, hc.earlyMono)
}

func (hc *httpConn) close(c *stream.Conn) {
	if hc.protocol == "" {
		// Never decided: what was held is HTTP/1.x (or junk).
		hc.protocol = ProtoHTTP1
		hc.replayEarly()
		if len(hc.head) > 0 {
			hc.feedHTTP1(stream.Egress, hc.head, 0, c.Last)
			hc.head = nil
		}
	}
	if hc.h2 != nil {
		hc.h2.close(c.Last)
		for i := range hc.h2.side {
			s := &hc.h2.side[i]
			hc.p.stats.JunkBytes += uint64(s.junk)
			hc.p.stats.Malformed += uint64(s.malform)
			hc.p.stats.IgnoredStreams += uint64(s.ignored)
		}
	}
	if hc.ws != nil {
		hc.ws.close(c.Last)
		for i := range hc.ws.side {
			s := &hc.ws.side[i]
			hc.p.stats.JunkBytes += uint64(s.junk)
			hc.p.stats.Malformed += uint64(s.malform)
		}
	}
	hc.resp.close(c.Last, hc.emit)
	hc.p.stats.JunkBytes += uint64(hc.req.junk + hc.resp.junk)
	hc.p.stats.Malformed += uint64(hc.req.malform + hc.resp.malform)
}

// busy reports whether a request, or an SMTP transaction, is partly
// written: for HTTP/2, a frame partly written, a header block awaiting
// CONTINUATION, or a request stream not ended yet; for WebSocket, a frame
// partly written or a fragmented message not ended yet.
func (hc *httpConn) busy() bool {
	if hc.ws != nil {
		return hc.ws.side[stream.Egress].busy()
	}
	switch hc.protocol {
	case ProtoSMTP:
		return hc.smtp.Pending() != nil
	case ProtoHTTP2:
		return hc.h2.busy()
	case "":
		return len(hc.head) > 0
	}
	return hc.req.msg != nil || (hc.req.state != stHead && hc.req.state != stJunk)
}
