package mcp

import (
	"cmp"
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"
)

// Side says who sent a message on an MCP channel.
type Side uint8

// Sides: the client (the AI application) writes to the server's stdin or
// POSTs; the server writes to its stdout or answers.
const (
	FromClient Side = iota + 1
	FromServer
)

func (s Side) String() string {
	switch s {
	case FromClient:
		return "client"
	case FromServer:
		return "server"
	}
	return "unknown"
}

// Server defaults.
const (
	DefaultMaxPending   = 64
	DefaultMaxDone      = 32
	DefaultCallTimeout  = 15 * time.Minute
	DefaultMaxArgsBytes = 1 << 20
)

// ServerOptions bound a Server. The zero value gives the defaults.
type ServerOptions struct {
	// MaxPending bounds the client requests awaiting their result; at
	// the bound the oldest is dropped (a call among them is expired).
	MaxPending int
	// MaxDone bounds the completed calls kept (Recent).
	MaxDone int
	// CallTimeout: a request without result for this long is expired.
	CallTimeout time.Duration
	// MaxArgsBytes bounds the bytes of arguments kept over all calls
	// held; a call arriving beyond it keeps its recipients and size but
	// not its arguments.
	MaxArgsBytes int
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxDone <= 0 {
		o.MaxDone = DefaultMaxDone
	}
	if o.CallTimeout <= 0 {
		o.CallTimeout = DefaultCallTimeout
	}
	if o.MaxArgsBytes <= 0 {
		o.MaxArgsBytes = DefaultMaxArgsBytes
	}
	return o
}

// CallState is where a tool call is.
type CallState uint8

// Call states.
const (
	CallInFlight  CallState = iota // sent, no result yet
	CallDone                       // a result that is not an error
	CallFailed                     // a JSON-RPC error, or a result with isError
	CallCancelled                  // notifications/cancelled from the client
	CallExpired                    // no result within the timeout, or dropped at the bound
)

func (s CallState) String() string {
	switch s {
	case CallInFlight:
		return "in-flight"
	case CallDone:
		return "done"
	case CallFailed:
		return "failed"
	case CallCancelled:
		return "cancelled"
	case CallExpired:
		return "expired"
	}
	return "unknown"
}

// Call is one tools/call and what became of it.
type Call struct {
	ID            ID
	Tool          string
	Arguments     json.RawMessage // nil when over MaxArgsLen or the server's budget
	ArgsSize      int
	Recipients    []string
	RecipientsCut bool
	Started       time.Time
	Ended         time.Time // zero while in flight
	State         CallState
	Seq           uint64 // order of arrival on this server
}

// Identity is who the two ends of the channel say they are.
type Identity struct {
	Server          Implementation // serverInfo of the initialize result
	ProtocolVersion string         // as the server agreed
	Client          Implementation // clientInfo of the initialize request
	ClientProtocol  string         // as the client asked
	Initialized     bool           // the initialize result was seen
}

// ServerStats count what a Server saw.
type ServerStats struct {
	Messages  uint64 // observed
	Calls     uint64 // tools/call requests
	Done      uint64
	Failed    uint64
	Cancelled uint64
	Expired   uint64 // including requests dropped at the pending bound
	Unmatched uint64 // results and errors answering no pending request
}

// Event says what a message changed on a Server.
type Event uint8

// Events returned by Observe.
const (
	EventNone        Event = iota
	EventClientInit        // an initialize request: the client's identity
	EventIdentified        // an initialize result: the server's identity
	EventTools             // a tools/list result
	EventCallStarted       // a tools/call request
	EventCallEnded         // its result or error, or its cancellation
)

func (e Event) String() string {
	switch e {
	case EventNone:
		return "none"
	case EventClientInit:
		return "client-init"
	case EventIdentified:
		return "identified"
	case EventTools:
		return "tools"
	case EventCallStarted:
		return "call-started"
	case EventCallEnded:
		return "call-ended"
	}
	return "unknown"
}

type pending struct {
	method  string
	cursor  bool
	started time.Time
	seq     uint64
	call    *Call // tools/call only
}

// Server tracks one MCP server as seen on one channel (a stdio pair, or
// one streamable-HTTP session: ids are only unique within a session): its
// identity, its tools, the tool calls it is serving and the last ones it
// served. It is safe for concurrent use.
type Server struct {
	mu        sync.Mutex
	opts      ServerOptions
	id        Identity
	tools     []string
	pending   map[ID]*pending
	done      []Call // oldest first
	seq       uint64
	argsBytes int
	stats     ServerStats
}

// NewServer returns a tracker with the given bounds.
func NewServer(o ServerOptions) *Server {
	return &Server{opts: o.withDefaults(), pending: make(map[ID]*pending)}
}

// Observe takes one message of the channel, sent by from at now, and
// returns what it changed, with the call concerned for the call events.
func (s *Server) Observe(from Side, m Message, now time.Time) (Event, Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stats.Messages++
	s.expire(now)
	switch {
	case from == FromClient && m.Kind == KindRequest:
		return s.request(m, now)
	case from == FromClient && m.Kind == KindNotification && m.Method == "notifications/cancelled":
		p, ok := s.pending[m.Cancels]
		if !ok || m.Cancels == "" {
			return EventNone, Call{}
		}
		delete(s.pending, m.Cancels)
		if p.call == nil {
			return EventNone, Call{}
		}
		s.stats.Cancelled++
		return EventCallEnded, s.finish(p.call, CallCancelled, now)
	case from == FromServer && (m.Kind == KindResult || m.Kind == KindError):
		return s.response(m, now)
	}
	// Requests from the server (sampling, roots, elicitation), answers
	// to them from the client, other notifications: nothing to track.
	return EventNone, Call{}
}

func (s *Server) request(m Message, now time.Time) (Event, Call) {
	if old, ok := s.pending[m.ID]; ok {
		// An id reused while pending: the old request will never be
		// told apart from the new one.
		delete(s.pending, m.ID)
		if old.call != nil {
			s.stats.Expired++
			s.finish(old.call, CallExpired, now)
		}
	}
	if len(s.pending) >= s.opts.MaxPending {
		s.dropOldest(now)
	}
	s.seq++
	p := &pending{method: m.Method, cursor: m.Cursor, started: now, seq: s.seq}
	s.pending[m.ID] = p
	switch {
	case m.Init != nil:
		s.id.Client, s.id.ClientProtocol = m.Init.Client, m.Init.ProtocolVersion
		return EventClientInit, Call{}
	case m.Call != nil:
		s.stats.Calls++
		c := &Call{
			ID: m.ID, Tool: m.Call.Name, ArgsSize: m.Call.ArgsSize,
			Recipients: m.Call.Recipients, RecipientsCut: m.Call.RecipientsCut,
			Started: now, State: CallInFlight, Seq: s.seq,
		}
		if s.argsBytes+len(m.Call.Arguments) <= s.opts.MaxArgsBytes {
			c.Arguments = m.Call.Arguments
			s.argsBytes += len(c.Arguments)
		}
		p.call = c
		return EventCallStarted, *c
	}
	return EventNone, Call{}
}

func (s *Server) response(m Message, now time.Time) (Event, Call) {
	p, ok := s.pending[m.ID]
	if !ok || m.ID == "" {
		s.stats.Unmatched++
		// A server's identity is worth taking even when its request
		// was missed (the agent started between the two).
		if m.InitResult != nil {
			s.identify(m.InitResult)
			return EventIdentified, Call{}
		}
		return EventNone, Call{}
	}
	delete(s.pending, m.ID)
	switch p.method {
	case "initialize":
		if m.InitResult != nil {
			s.identify(m.InitResult)
			return EventIdentified, Call{}
		}
	case "tools/list":
		if m.ToolsList {
			if !p.cursor {
				s.tools = s.tools[:0]
			}
			for _, t := range m.Tools {
				if len(s.tools) == MaxTools {
					break
				}
				s.tools = append(s.tools, t)
			}
			return EventTools, Call{}
		}
	case "tools/call":
		if p.call == nil {
			break
		}
		state := CallDone
		if m.Kind == KindError || m.IsError {
			state = CallFailed
			s.stats.Failed++
		} else {
			s.stats.Done++
		}
		return EventCallEnded, s.finish(p.call, state, now)
	}
	return EventNone, Call{}
}

func (s *Server) identify(r *InitializeResult) {
	s.id.Server, s.id.ProtocolVersion, s.id.Initialized = r.Server, r.ProtocolVersion, true
}

// finish moves a call to the completed ring and returns it.
func (s *Server) finish(c *Call, state CallState, now time.Time) Call {
	c.State, c.Ended = state, now
	if len(s.done) == s.opts.MaxDone {
		s.argsBytes -= len(s.done[0].Arguments)
		s.done = slices.Delete(s.done, 0, 1)
	}
	s.done = append(s.done, *c)
	return *c
}

// dropOldest drops the oldest pending request.
func (s *Server) dropOldest(now time.Time) {
	var oldest ID
	var op *pending
	for id, p := range s.pending {
		if op == nil || p.seq < op.seq {
			oldest, op = id, p
		}
	}
	if op == nil {
		return
	}
	delete(s.pending, oldest)
	if op.call != nil {
		s.stats.Expired++
		s.finish(op.call, CallExpired, now)
	}
}

// expire drops the requests pending for longer than the timeout.
func (s *Server) expire(now time.Time) int {
	stale := false
	for _, p := range s.pending {
		if now.Sub(p.started) >= s.opts.CallTimeout {
			stale = true
			break
		}
	}
	if !stale {
		return 0
	}
	n := 0
	// Oldest first, so that the completed ring stays in order.
	ids := slices.Collect(maps.Keys(s.pending))
	slices.SortFunc(ids, func(a, b ID) int { return cmp.Compare(s.pending[a].seq, s.pending[b].seq) })
	for _, id := range ids {
		p := s.pending[id]
		if now.Sub(p.started) < s.opts.CallTimeout {
			continue
		}
		delete(s.pending, id)
		if p.call != nil {
			s.stats.Expired++
			s.finish(p.call, CallExpired, now)
			n++
		}
	}
	return n
}

// Expire expires the calls pending for longer than the timeout at now
// and returns how many.
func (s *Server) Expire(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expire(now)
}

// InFlight returns the tool calls being served at now (those pending for
// longer than the timeout are expired first), most recent first: the
// calls a request the server makes now may be serving.
func (s *Server) InFlight(now time.Time) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(now)
	var out []Call
	for _, p := range s.pending {
		if p.call != nil {
			out = append(out, *p.call)
		}
	}
	slices.SortFunc(out, func(a, b Call) int { return cmp.Compare(b.Seq, a.Seq) })
	return out
}

// Recent returns the completed calls kept, most recent first.
func (s *Server) Recent() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.done)
	slices.Reverse(out)
	return out
}

// Identity returns what the initialize exchange said.
func (s *Server) Identity() Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

// Tools returns the tool names of the last tools/list result.
func (s *Server) Tools() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tools)
}

// Stats returns the server's counters.
func (s *Server) Stats() ServerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}
