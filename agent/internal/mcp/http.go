package mcp

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
)

// Streamable HTTP: the client POSTs one JSON-RPC message or a batch; the
// server answers with application/json (a message or a batch), with
// text/event-stream (SSE events whose data are messages), or with 202 and
// no body. A GET opens an SSE stream of server messages.

// ErrNotJSONRPC is returned for a body that holds no JSON-RPC 2.0 message.
var ErrNotJSONRPC = errors.New("not a JSON-RPC 2.0 message")

// ParseBody parses a POST body or an application/json response body: one
// JSON-RPC message or a batch. Bodies over DefaultMaxMessage are refused.
func ParseBody(body []byte) ([]Message, error) {
	if len(body) > DefaultMaxMessage {
		return nil, fmt.Errorf("parse body of %d bytes: over the %d-byte bound", len(body), DefaultMaxMessage)
	}
	msgs, ok := decodeJSON(body, nil)
	if !ok {
		return nil, fmt.Errorf("parse body: %w", ErrNotJSONRPC)
	}
	return msgs, nil
}

// ParseResponse parses a streamable-HTTP response body by its
// Content-Type: JSON or SSE. An empty body (202 Accepted) has no message.
func ParseResponse(contentType string, body []byte) ([]Message, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, fmt.Errorf("parse response content type %q: %w", contentType, err)
	}
	switch mt {
	case "application/json":
		return ParseBody(body)
	case "text/event-stream":
		var d SSEDecoder
		return d.Feed(body), nil
	}
	return nil, fmt.Errorf("parse response: content type %q is neither JSON nor SSE", mt)
}

// SSEDecoder decodes a text/event-stream body (a response to a POST, or
// the stream of a GET) as it arrives: each event of type "message" (the
// default) carries one JSON-RPC message or a batch in its data lines.
// Lines may end in CRLF, LF or CR. An event still open when the body ends
// is not dispatched, as EventSource does. The zero SSEDecoder is ready
// with the default bounds; it is not safe for concurrent use.
type SSEDecoder struct {
	// MaxMessage bounds an event's data (default DefaultMaxMessage): a
	// larger event is dropped and counted as Oversize.
	MaxMessage int

	line     []byte
	skipLine bool // the line in progress is over the bound
	afterCR  bool // the last byte was a CR: a LF right after it ends nothing
	data     []byte
	hasData  bool
	oversize bool // the event in progress is over the bound
	event    string
	lastID   string
	stats    Stats
}

// Stats returns the decoder's counters.
func (s *SSEDecoder) Stats() Stats { return s.stats }

// LastEventID returns the last event id seen (for Last-Event-ID).
func (s *SSEDecoder) LastEventID() string { return s.lastID }

func (s *SSEDecoder) max() int {
	if s.MaxMessage <= 0 {
		return DefaultMaxMessage
	}
	return s.MaxMessage
}

// Feed takes the next bytes of the body and returns the messages of the
// events they completed.
func (s *SSEDecoder) Feed(data []byte) []Message {
	s.stats.Bytes += uint64(len(data))
	var out []Message
	for len(data) > 0 {
		if s.afterCR {
			s.afterCR = false
			if data[0] == '\n' {
				data = data[1:]
				continue
			}
		}
		i := bytes.IndexAny(data, "\r\n")
		chunk := data
		if i >= 0 {
			chunk = data[:i]
		}
		if !s.skipLine {
			// A data line holds at most the event's data, plus its
			// field name.
			if len(s.line)+len(chunk) > s.max()+16 {
				s.skipLine = true
				s.oversize = true
				s.line = nil
			} else {
				s.line = append(s.line, chunk...)
			}
		}
		if i < 0 {
			break
		}
		s.afterCR = data[i] == '\r'
		data = data[i+1:]
		if s.skipLine {
			s.skipLine = false
		} else {
			out = s.fieldLine(out)
		}
		s.line = s.line[:0]
		if cap(s.line) > keepBuffer {
			s.line = nil
		}
	}
	return out
}

// fieldLine handles one complete line in s.line.
func (s *SSEDecoder) fieldLine(out []Message) []Message {
	line := s.line
	if len(line) == 0 {
		return s.dispatch(out)
	}
	if line[0] == ':' {
		return out // comment
	}
	name, value, found := bytes.Cut(line, []byte{':'})
	if found && len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	switch string(name) {
	case "data":
		if s.oversize {
			return out
		}
		if len(s.data)+len(value)+1 > s.max() {
			s.oversize = true
			s.data = nil
			return out
		}
		if s.hasData {
			s.data = append(s.data, '\n')
		}
		s.data = append(s.data, value...)
		s.hasData = true
	case "event":
		s.event = cut(string(value), MaxNameLen)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			s.lastID = cut(string(value), MaxNameLen)
		}
	}
	return out
}

// dispatch ends the event in progress.
func (s *SSEDecoder) dispatch(out []Message) []Message {
	event, hasData, oversize := s.event, s.hasData, s.oversize
	s.event, s.hasData, s.oversize = "", false, false
	data := s.data
	s.data = s.data[:0]
	if cap(s.data) > keepBuffer {
		s.data = nil
	}
	if oversize {
		s.stats.Oversize++
		return out
	}
	if !hasData || event != "" && event != "message" {
		return out
	}
	n := len(out)
	out, ok := decodeJSON(data, out)
	if !ok {
		if len(bytes.TrimSpace(data)) > 0 {
			s.stats.Malformed++
		}
		return out
	}
	for i := n; i < len(out); i++ {
		out[i].EventID = s.lastID
	}
	s.stats.Messages += uint64(len(out) - n)
	return out
}
