// Package pipeline runs the observing stages of AARSM in order, for both
// `aarsm trace` and `aarsm run`:
//
//	probe.Event → stream.Assembler → []stream.Segment → parse.Parser → parse.Output
//
// Each stage returns its result to the next; nothing calls back. What the
// stages made of an event is a Result: the event's connection and the
// messages it completed. The judging half (judge → act → journal) is the
// enforce package's, on top of a Result.
package pipeline

import (
	"context"
	"os"
	"time"

	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/pkgid"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Options configure the stages. The zero value gives the defaults.
type Options struct {
	Stream stream.Options
	Limits parse.Limits
	// EvictEvery is how often idle connections are closed; default 5 s.
	EvictEvery time.Duration
	// Stdio, if set, is told which processes' stdio to copy: those that
	// may be MCP servers (mcp.go). Nil: no MCP context.
	Stdio StdioWatcher
	// Proc reads /proc (the agent's view).
	Proc proc.FS
}

// Pipeline holds the state of the stages: connections and their parsers.
// It is not safe for concurrent use: the sensor delivers events from one
// goroutine.
type Pipeline struct {
	asm        *stream.Assembler
	parser     *parse.Parser
	evictEvery uint64 // monotonic ns
	lastEvict  uint64

	// The MCP branch (mcp.go): the processes whose stdio is watched.
	stdio     StdioWatcher
	procs     proc.FS
	self      uint32
	mcp       map[uint32]*MCPServer
	packages  *pkgid.Resolver
	stdioDone StdioStats // of the processes no longer watched
	// The streamable-HTTP servers (mcphttp.go); nil when the Stdio
	// watcher cannot watch loopback connections.
	http *httpBranch
}

// Result is what the stages made of one event.
type Result struct {
	// Conn is the connection of a read or write event (nil for other
	// events, and for a write dropped as the retry of a failed one).
	Conn *stream.Conn
	// Done lists the messages the event completed, per connection: those
	// of Conn, and those flushed from connections the event closed.
	Done []Done
	// MCP lists the JSON-RPC messages of a stdio event (KindStdin: from
	// the client; KindStdout: from the server) or of a loopback
	// connection of a streamable-HTTP server (KindSockIn: requests;
	// KindSockOut: responses).
	MCP []mcp.Message
}

// Done is what one connection completed.
type Done struct {
	Conn *stream.Conn
	parse.Output
}

// New returns a pipeline.
func New(opts Options) *Pipeline {
	if opts.EvictEvery <= 0 {
		opts.EvictEvery = 5 * time.Second
	}
	p := &Pipeline{
		asm:        stream.New(opts.Stream),
		parser:     parse.New(opts.Limits),
		evictEvery: uint64(opts.EvictEvery),
		stdio:      opts.Stdio,
		procs:      opts.Proc,
		self:       uint32(os.Getpid()),
		mcp:        map[uint32]*MCPServer{},
		packages:   pkgid.New(opts.Proc, pkgid.Options{}),
	}
	if p.stdio != nil {
		p.watchExisting()
	}
	if w, ok := opts.Stdio.(HTTPWatcher); ok {
		p.http = newHTTPBranch(w)
		p.watchExistingHTTP()
	}
	return p
}

// Feed passes one event through the stream and parse stages.
func (p *Pipeline) Feed(ev *probe.Event) Result {
	var r Result
	if p.stdio != nil {
		switch ev.Kind {
		case probe.KindExec:
			p.considerStdio(ev.PID)
			p.forgetHTTP(ev.PID, false)
		case probe.KindExit:
			p.forgetStdio(ev.PID)
			p.forgetHTTP(ev.PID, true)
		case probe.KindStdin, probe.KindStdout:
			r.MCP = p.stdioData(ev)
			return r
		case probe.KindSockIn, probe.KindSockOut:
			r.MCP = p.sockData(ev)
			return r
		}
	}
	if ev.Mono >= p.lastEvict+p.evictEvery {
		if p.lastEvict != 0 {
			r.Done = p.parse(p.asm.Evict(ev.Mono), r.Done)
		}
		p.lastEvict = ev.Mono
	}
	segs := p.asm.Handle(ev)
	for _, s := range segs {
		if !s.Closed && (ev.Kind == probe.KindWrite || ev.Kind == probe.KindRead) {
			r.Conn = s.Conn
		}
	}
	r.Done = p.parse(segs, r.Done)
	return r
}

func (p *Pipeline) parse(segs []stream.Segment, done []Done) []Done {
	for _, s := range segs {
		if out := p.parser.Feed(s); !out.Empty() {
			done = append(done, Done{Conn: s.Conn, Output: out})
		}
	}
	return done
}

// Close ends every connection and returns what their parsers flushed.
func (p *Pipeline) Close() []Done { return p.parse(p.asm.CloseAll(), nil) }

// Lookup returns the open connection k, or nil.
func (p *Pipeline) Lookup(k stream.Key) *stream.Conn { return p.asm.Lookup(k) }

// Busy reports whether the client of connection k is in the middle of an
// outgoing message (parse.Parser.Busy).
func (p *Pipeline) Busy(k stream.Key) bool { return p.parser.Busy(k) }

// Proto names the protocol the client of connection k speaks
// (parse.Parser.Proto).
func (p *Pipeline) Proto(k stream.Key) string { return p.parser.Proto(k) }

// Pending returns what the client of connection k is in the middle of
// writing (parse.Parser.Pending).
func (p *Pipeline) Pending(k stream.Key) parse.Pending { return p.parser.Pending(k) }

// Stats returns the counters of the stream and parse stages.
func (p *Pipeline) Stats() (stream.Stats, parse.Stats) { return p.asm.Stats(), p.parser.Stats() }

// Run reads the sensor's events until ctx is done. Each event that admit
// accepts (nil: every event) goes through the stages, and sink receives
// the event and what came of it. Both run on the sensor's goroutine.
func (p *Pipeline) Run(ctx context.Context, s *probe.Sensor, admit func(*probe.Event) bool, sink func(*probe.Event, Result)) error {
	return s.Run(ctx, p.step(admit, sink))
}

// Drain passes the events already in the sensor's ring through the stages
// as Run does, for at most max.
func (p *Pipeline) Drain(s *probe.Sensor, admit func(*probe.Event) bool, sink func(*probe.Event, Result), max time.Duration) {
	s.Drain(p.step(admit, sink), max)
}

func (p *Pipeline) step(admit func(*probe.Event) bool, sink func(*probe.Event, Result)) func(*probe.Event) {
	return func(ev *probe.Event) {
		if admit != nil && !admit(ev) {
			return
		}
		sink(ev, p.Feed(ev))
	}
}
