package parse

import (
	"bytes"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Handler receives each complete message of a connection. It runs inside
// the call that delivered the message's last byte; m is the handler's to keep.
type Handler func(c *stream.Conn, m *Message)

// Stats count what the parsers of closed connections passed over.
type Stats struct {
	Messages  uint64
	JunkBytes uint64 // bytes that were not HTTP/1.x (other protocols, lost framing)
	Malformed uint64 // messages given up
}

// MailHandler receives each mail message a connection sent over SMTP.
type MailHandler func(c *stream.Conn, m *mail.Message)

// HTTP makes the consumers that parse connections: as HTTP/1.x, or, when
// the client opens with EHLO/HELO and a mail handler is set, as SMTP.
type HTTP struct {
	limits Limits
	handle Handler
	smtp   MailHandler
	stats  Stats
}

// OnSMTP sets the handler of SMTP messages; without one, SMTP is junk.
func (h *HTTP) OnSMTP(handle MailHandler) { h.smtp = handle }

// NewHTTP returns a parser factory calling handle for each message.
func NewHTTP(limits Limits, handle Handler) *HTTP {
	limits.setDefaults()
	return &HTTP{limits: limits, handle: handle}
}

// Factory is the stream.Factory of this parser.
func (h *HTTP) Factory(c *stream.Conn) stream.Consumer {
	hc := &httpConn{h: h}
	hc.req = httpParser{limits: h.limits}
	hc.resp = httpParser{limits: h.limits, response: true, noBody: hc.answersHead}
	return hc
}

// Stats returns the counters, including those of closed connections.
func (h *HTTP) Stats() Stats { return h.stats }

// maxPending bounds the request methods remembered for pairing responses.
const maxPending = 64

type httpConn struct {
	h         *HTTP
	req, resp httpParser
	methods   []string // methods of requests not answered yet
	started   bool     // the first egress bytes were seen
	other     bool     // they started no HTTP request
	smtp      *mail.SMTPSession
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

func (hc *httpConn) Data(c *stream.Conn, dir stream.Dir, data []byte, lost int, mono uint64) {
	if dir == stream.Egress && !hc.started {
		hc.started = true
		if hc.h.smtp != nil && isSMTPGreeting(data) {
			hc.smtp = mail.NewSMTPSession()
		} else if d := skipEmptyLines(data, false); len(d) > 0 && !looksLikeStart(d, false) {
			hc.other = true
		}
	}
	if hc.smtp != nil {
		if dir == stream.Egress {
			for _, m := range hc.smtp.Feed(data) {
				hc.h.stats.Messages++
				hc.h.smtp(c, m)
			}
		}
		return
	}
	if dir == stream.Egress {
		hc.req.feed(data, lost, mono, func(m *Message) {
			if len(hc.methods) < maxPending {
				hc.methods = append(hc.methods, m.Method)
			}
			hc.h.stats.Messages++
			hc.h.handle(c, m)
		})
		return
	}
	hc.resp.feed(data, lost, mono, func(m *Message) {
		hc.h.stats.Messages++
		hc.h.handle(c, m)
	})
}

func (hc *httpConn) Close(c *stream.Conn) {
	hc.resp.close(c.Last, func(m *Message) {
		hc.h.stats.Messages++
		hc.h.handle(c, m)
	})
	hc.h.stats.JunkBytes += uint64(hc.req.junk + hc.resp.junk)
	hc.h.stats.Malformed += uint64(hc.req.malform + hc.resp.malform)
}

// Proto names what the client speaks: "smtp", "h1" (HTTP/1.x), "other"
// (its first bytes started no request), "" before its first write.
func (hc *httpConn) Proto() string {
	switch {
	case !hc.started:
		return ""
	case hc.smtp != nil:
		return "smtp"
	case hc.other:
		return "other"
	}
	return "h1"
}

// Busy reports whether a request, or an SMTP transaction, is partly written.
func (hc *httpConn) Busy() bool {
	if hc.smtp != nil {
		return hc.smtp.Pending() != nil
	}
	return hc.req.msg != nil || (hc.req.state != stHead && hc.req.state != stJunk)
}
