// Package mcp reads the Model Context Protocol as AARSM observes it: the
// JSON-RPC 2.0 messages an AI application and an MCP server exchange over
// the server's stdin and stdout, or in the bodies of streamable-HTTP
// requests and responses. It decodes those streams (Decoder, SSEDecoder,
// ParseBody), classifies each message and extracts what the agent judges
// with — the server's identity from initialize, its tools, each tools/call
// with its arguments and its result — and tracks per server the tool calls
// being served (Server), so that a request the server makes can be
// attributed to the call that caused it.
//
// Everything is pure and bounded: no clock is read (times are passed in),
// no callback is made, and strange input is counted and skipped, never
// buffered without limit.
package mcp

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// Bounds on what one message may carry into the agent.
const (
	// MaxIDLen bounds the JSON text of an id; a message with a longer id
	// is malformed.
	MaxIDLen = 128
	// MaxNameLen bounds a method, tool, client or server name, a version
	// and a protocol version (longer ones are cut at a rune boundary).
	MaxNameLen = 256
	// MaxArgsLen bounds the arguments of a tools/call kept with the call
	// (Recipients are read from the whole arguments first).
	MaxArgsLen = 64 << 10
	// MaxTools bounds the tool names kept from a tools/list result.
	MaxTools = 512
	// MaxBatch bounds the messages taken from one batch (JSON array).
	MaxBatch = 1024
)

// Kind is what a JSON-RPC message is.
type Kind uint8

// Message kinds.
const (
	KindRequest      Kind = iota + 1 // method and id
	KindNotification                 // method, no id
	KindResult                       // id and result
	KindError                        // id (possibly null) and error
)

func (k Kind) String() string {
	switch k {
	case KindRequest:
		return "request"
	case KindNotification:
		return "notification"
	case KindResult:
		return "result"
	case KindError:
		return "error"
	}
	return "invalid"
}

// ID is a JSON-RPC id in canonical JSON form: an integer as its decimal
// digits ("7"), a string quoted ("\"7\""), so that 7 and "7" — distinct
// ids for JSON-RPC — stay distinct and "\u0037" equals "7". The zero ID is
// absent (or null).
type ID string

// String returns the id as JSON text ("" when absent).
func (id ID) String() string { return string(id) }

// parseID canonicalises a raw JSON id. ok is false for an id that is
// neither a number nor a string, or too long.
func parseID(raw json.RawMessage) (ID, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", true
	}
	if len(raw) > MaxIDLen {
		return "", false
	}
	switch c := raw[0]; {
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return ID(strconv.Quote(s)), true
	case c == '-' || c >= '0' && c <= '9':
		if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return ID(strconv.FormatInt(n, 10)), true
		}
		var f float64
		if json.Unmarshal(raw, &f) != nil {
			return "", false
		}
		// 1.0 and 1e0 name the id 1 (JSON-RPC discourages fractions).
		if f == float64(int64(f)) {
			return ID(strconv.FormatInt(int64(f), 10)), true
		}
		return ID(strconv.FormatFloat(f, 'g', -1, 64)), true
	}
	return "", false
}

// Implementation is the name and version an MCP client or server gives
// of itself (clientInfo, serverInfo).
type Implementation struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Initialize is what an initialize request says of the client.
type Initialize struct {
	ProtocolVersion string
	Client          Implementation
}

// InitializeResult is what an initialize result says of the server.
type InitializeResult struct {
	ProtocolVersion string
	Server          Implementation
}

// ToolCall is a tools/call request: the tool and its arguments.
type ToolCall struct {
	Name string
	// Arguments as the client sent them (compact JSON), nil when they
	// were larger than MaxArgsLen (ArgsSize says how large).
	Arguments json.RawMessage
	ArgsSize  int
	// Recipients are the e-mail addresses the arguments name, read from
	// the whole arguments (see Recipients); RecipientsCut is set when a
	// bound stopped the reading before its end.
	Recipients    []string
	RecipientsCut bool
}

// Message is one JSON-RPC message with what AARSM reads of it. Fields
// that do not apply are zero.
type Message struct {
	Kind   Kind
	ID     ID     // requests, results, errors ("" for a null id)
	Method string // requests and notifications
	Size   int    // bytes of its JSON text
	Batch  bool   // it came in a JSON array
	// EventID is the SSE event id it came with (streamable HTTP).
	EventID string

	// Requests and notifications AARSM follows.
	Init    *Initialize // method "initialize"
	Call    *ToolCall   // method "tools/call"
	Cursor  bool        // a list request asking for a next page
	Cancels ID          // "notifications/cancelled": the request id cancelled

	// Results: what the result's shape says. A result does not name its
	// method; Server matches it to its request by id and uses the field
	// that request asked for.
	InitResult *InitializeResult // result with serverInfo
	Tools      []string          // result with a tools array (tools/list)
	ToolsList  bool              // the result has a tools array (even empty)
	CallResult bool              // result with content or isError (tools/call)
	IsError    bool              // a tools/call result with isError true
	NextCursor bool              // a paginated result with more to come

	// Errors.
	ErrorCode    int
	ErrorMessage string
}

// wire is a JSON-RPC 2.0 message as sent.
type wire struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Method  *string         `json:"method"`
	Params  json.RawMessage `json:"params"`
	Result  json.RawMessage `json:"result"`
	Error   json.RawMessage `json:"error"`
}

// decodeJSON decodes one frame: a JSON-RPC message or a batch of them.
// ok is false when the frame is not JSON-RPC 2.0 at all (a batch counts
// as JSON-RPC when one of its elements is).
func decodeJSON(b []byte, out []Message) ([]Message, bool) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return out, false
	}
	switch b[0] {
	case '{':
		m, ok := decodeMessage(b)
		if !ok {
			return out, false
		}
		return append(out, m), true
	case '[':
		var elems []json.RawMessage
		if json.Unmarshal(b, &elems) != nil {
			return out, false
		}
		found := false
		for i, e := range elems {
			if i == MaxBatch {
				break
			}
			m, ok := decodeMessage(e)
			if !ok {
				continue
			}
			m.Batch = true
			out = append(out, m)
			found = true
		}
		return out, found
	}
	return out, false
}

// decodeMessage decodes and classifies one JSON-RPC object.
func decodeMessage(b []byte) (Message, bool) {
	var w wire
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' || json.Unmarshal(b, &w) != nil || w.JSONRPC != "2.0" {
		return Message{}, false
	}
	m := Message{Size: len(b)}
	id, ok := parseID(w.ID)
	if !ok {
		return Message{}, false
	}
	m.ID = id
	hasID := len(bytes.TrimSpace(w.ID)) > 0 && id != ""
	switch {
	case w.Method != nil:
		if *w.Method == "" {
			return Message{}, false
		}
		m.Method = cut(*w.Method, MaxNameLen)
		m.Kind = KindNotification
		if hasID {
			m.Kind = KindRequest
		}
		decodeParams(&m, w.Params)
	case w.Error != nil && string(w.Error) != "null":
		m.Kind = KindError
		var e struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(w.Error, &e)
		m.ErrorCode, m.ErrorMessage = e.Code, cut(e.Message, MaxNameLen)
	case w.Result != nil && hasID:
		m.Kind = KindResult
		decodeResult(&m, w.Result)
	default:
		return Message{}, false
	}
	return m, true
}

func decodeParams(m *Message, params json.RawMessage) {
	switch m.Method {
	case "initialize":
		var p struct {
			ProtocolVersion string         `json:"protocolVersion"`
			ClientInfo      Implementation `json:"clientInfo"`
		}
		_ = json.Unmarshal(params, &p)
		m.Init = &Initialize{
			ProtocolVersion: cut(p.ProtocolVersion, MaxNameLen),
			Client:          cutImpl(p.ClientInfo),
		}
	case "tools/call":
		var p struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}
		_ = json.Unmarshal(params, &p)
		c := &ToolCall{Name: cut(p.Name, MaxNameLen), ArgsSize: len(p.Arguments)}
		c.Recipients, c.RecipientsCut = scanRecipients(p.Arguments)
		if len(p.Arguments) <= MaxArgsLen {
			var buf bytes.Buffer
			if json.Compact(&buf, p.Arguments) == nil {
				c.Arguments = buf.Bytes()
			}
		}
		m.Call = c
	case "tools/list", "resources/list", "prompts/list", "resources/templates/list":
		var p struct {
			Cursor *string `json:"cursor"`
		}
		_ = json.Unmarshal(params, &p)
		m.Cursor = p.Cursor != nil
	case "notifications/cancelled":
		var p struct {
			RequestID json.RawMessage `json:"requestId"`
		}
		if json.Unmarshal(params, &p) == nil {
			m.Cancels, _ = parseID(p.RequestID)
		}
	}
}

func decodeResult(m *Message, result json.RawMessage) {
	var r struct {
		ProtocolVersion string          `json:"protocolVersion"`
		ServerInfo      *Implementation `json:"serverInfo"`
		Tools           []struct {
			Name string `json:"name"`
		} `json:"tools"`
		Content    json.RawMessage `json:"content"`
		Structured json.RawMessage `json:"structuredContent"`
		IsError    *bool           `json:"isError"`
		NextCursor *string         `json:"nextCursor"`
	}
	if json.Unmarshal(result, &r) != nil {
		// Not an object, or fields of unexpected types: a result of
		// a method AARSM does not read.
		return
	}
	if r.ServerInfo != nil {
		m.InitResult = &InitializeResult{ProtocolVersion: cut(r.ProtocolVersion, MaxNameLen), Server: cutImpl(*r.ServerInfo)}
	}
	if r.Tools != nil {
		m.ToolsList = true
		for i, t := range r.Tools {
			if i == MaxTools {
				break
			}
			m.Tools = append(m.Tools, cut(t.Name, MaxNameLen))
		}
	}
	if r.Content != nil || r.Structured != nil || r.IsError != nil {
		m.CallResult = true
		m.IsError = r.IsError != nil && *r.IsError
	}
	m.NextCursor = r.NextCursor != nil && *r.NextCursor != ""
}

func cutImpl(i Implementation) Implementation {
	return Implementation{Name: cut(i.Name, MaxNameLen), Version: cut(i.Version, MaxNameLen)}
}

// cut shortens s to at most n bytes without splitting a rune.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
