package parse

import (
	"sort"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Pending is what is known of the messages a connection's client is in
// the middle of writing, so that they can be judged before the write that
// completes them: HTTP requests whose head arrived and whose body has not
// ended (HTTP/1.x: at most one; HTTP/2: every open stream, in stream
// order), the WebSocket message the client is writing (its frames so far,
// unmasked; inflated when compressed), or the SMTP transaction in progress
// (envelope, and headers once the DATA's header section arrived). The
// requests are copies with Partial set whose Data, the body so far and
// undecoded (but for WebSocket), is the parser's: read it only during the
// call.
type Pending struct {
	Requests []*Message
	Mail     *mail.Message
}

// Pending returns what the client of connection k is in the middle of
// writing.
func (p *Parser) Pending(k stream.Key) Pending {
	hc := p.conns[k]
	if hc == nil {
		return Pending{}
	}
	if hc.ws != nil {
		if m := hc.ws.side[stream.Egress].pending(); m != nil {
			return Pending{Requests: []*Message{m}}
		}
		return Pending{}
	}
	switch hc.protocol {
	case ProtoSMTP:
		return Pending{Mail: hc.smtp.Pending()}
	case ProtoHTTP2:
		side := &hc.h2.side[stream.Egress]
		if side.dead {
			return Pending{}
		}
		ids := make([]uint32, 0, len(side.streams))
		for id, st := range side.streams {
			if st.head && st.msg != nil {
				ids = append(ids, id)
			}
		}
		sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
		var pend Pending
		for _, id := range ids {
			pend.Requests = append(pend.Requests, partial(side.streams[id].msg))
		}
		return pend
	case ProtoHTTP1:
		if m := hc.req.msg; m != nil && hc.req.state != stHead && hc.req.state != stJunk {
			return Pending{Requests: []*Message{partial(m)}}
		}
	}
	return Pending{}
}

// partial is a shallow copy of m marked Partial (the parser's own goes on).
func partial(m *Message) *Message {
	cp := *m
	cp.Partial = true
	return &cp
}
