// Package trace renders what processes send over TLS, one line per
// request, on top of the observing half of the pipeline (package
// pipeline: probe → stream → parse). It is what `aarsm trace` runs, and
// what the end-to-end tests drive against real clients.
package trace

import (
	"context"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/pipeline"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Options select what is traced.
type Options struct {
	PIDs   []uint32 // only these processes; empty: all
	Comms  []string // only these command names; empty: all
	Sensor probe.Options
	Stream stream.Options
	Limits parse.Limits
	// MCP adds the MCP servers' messages (tool calls and their results)
	// and, to each request of an MCP server or its children, the tool
	// call in flight.
	MCP bool
}

// Record is one parsed message with the process that sent or received it:
// an HTTP request or response (Msg), or a mail sent over SMTP (Mail).
type Record struct {
	Conn   stream.Key
	TID    uint32
	Comm   string
	Exe    string
	Cgroup uint64
	Time   time.Time // wall clock of the message's last byte
	Msg    *parse.Message
	Mail   *mail.Message
	// RPC is an MCP server's JSON-RPC message (Options.MCP); Server its
	// serverInfo name.
	RPC *mcp.Message
	// RPCOut: RPC is a message the server sent (stdout, or a response
	// it wrote on a loopback connection).
	RPCOut bool
	Server string
	// Call is, for a request or mail of an MCP server (or of a process it
	// started), the tool call it was serving (Options.MCP).
	Call *mcp.Call
}

// Tracer runs the pipeline.
type Tracer struct {
	opts   Options
	sensor *probe.Sensor
	pipe   *pipeline.Pipeline
	exes   map[uint32]string // pid -> executable, learnt at exec or first sight
	boot   time.Time         // wall clock at monotonic zero
}

// Start loads the sensor. Close must be called.
func Start(opts Options) (*Tracer, error) {
	opts.Sensor.Stdio = opts.MCP
	s, err := probe.Load(opts.Sensor)
	if err != nil {
		return nil, err
	}
	return &Tracer{
		opts:   opts,
		sensor: s,
		pipe:   pipeline.New(pipelineOptions(opts, s)),
		exes:   map[uint32]string{},
		boot:   bootTime(),
	}, nil
}

func pipelineOptions(opts Options, s *probe.Sensor) pipeline.Options {
	po := pipeline.Options{Stream: opts.Stream, Limits: opts.Limits, Proc: opts.Sensor.Proc}
	if opts.MCP {
		po.Stdio = s
	}
	return po
}

// Sensor returns the loaded sensor (for its targets and counters).
func (t *Tracer) Sensor() *probe.Sensor { return t.sensor }

// Stats returns the counters of every stage.
func (t *Tracer) Stats() (probe.Stats, stream.Stats, parse.Stats, error) {
	ps, err := t.sensor.Stats()
	ss, hs := t.pipe.Stats()
	return ps, ss, hs, err
}

// Run delivers records to out until ctx is done. out runs on the pipeline's
// goroutine: it must not block for long.
func (t *Tracer) Run(ctx context.Context, out func(Record)) error {
	defer func() { t.records(t.pipe.Close(), out) }()
	return t.pipe.Run(ctx, t.sensor, t.admit, func(ev *probe.Event, r pipeline.Result) {
		if t.opts.MCP && len(r.MCP) > 0 {
			t.rpcRecords(ev, r.MCP, out)
		}
		t.records(r.Done, out)
	})
}

// Close unloads the sensor.
func (t *Tracer) Close() error { return t.sensor.Close() }

// admit learns executables and drops the reads and writes of processes
// not traced.
func (t *Tracer) admit(ev *probe.Event) bool {
	switch ev.Kind {
	case probe.KindExec:
		t.learnExe(ev.PID)
	case probe.KindExit:
		delete(t.exes, ev.PID)
	case probe.KindWrite, probe.KindRead:
		return t.wanted(ev)
	}
	return true
}

func (t *Tracer) wanted(ev *probe.Event) bool {
	if len(t.opts.PIDs) > 0 && !slices.Contains(t.opts.PIDs, ev.PID) {
		return false
	}
	if len(t.opts.Comms) > 0 && !slices.Contains(t.opts.Comms, ev.Comm()) {
		return false
	}
	return true
}

func (t *Tracer) learnExe(pid uint32) string {
	exe, err := t.opts.Sensor.Proc.Exe(pid)
	if err != nil {
		exe = "?"
	}
	t.exes[pid] = exe
	return exe
}

// records renders what connections completed as records, in order.
func (t *Tracer) records(done []pipeline.Done, out func(Record)) {
	for _, d := range done {
		c := d.Conn
		exe, ok := t.exes[c.PID]
		if !ok {
			exe = t.learnExe(c.PID)
		}
		rec := Record{Conn: c.Key, TID: c.TID, Comm: c.Comm, Exe: exe, Cgroup: c.Cgroup}
		if t.opts.MCP {
			if s := t.pipe.MCP(c.PID); s != nil {
				rec.Server = s.Server.Identity().Server.Name
				if calls := s.Server.InFlight(time.Now()); len(calls) > 0 {
					rec.Call = &calls[0]
				}
			}
		}
		for _, m := range d.Messages {
			rec.Msg, rec.Time = m, t.boot.Add(time.Duration(m.End))
			out(rec)
		}
		rec.Msg = nil
		for _, m := range d.Mails {
			rec.Mail, rec.Time = m, t.boot.Add(time.Duration(c.Last))
			out(rec)
		}
	}
}

// rpcRecords renders an MCP server's stdio messages: what its client
// asked (stdin) and what it answered (stdout).
func (t *Tracer) rpcRecords(ev *probe.Event, msgs []mcp.Message, out func(Record)) {
	if !t.wanted(ev) {
		return
	}
	exe, ok := t.exes[ev.PID]
	if !ok {
		exe = t.learnExe(ev.PID)
	}
	rec := Record{Conn: stream.Key{PID: ev.PID, SSL: ev.SSL}, TID: ev.TID, Comm: ev.Comm(), Exe: exe, Cgroup: ev.Cgroup,
		Time: t.boot.Add(time.Duration(ev.Mono))}
	if s := t.pipe.MCP(ev.PID); s != nil {
		rec.Server = s.Server.Identity().Server.Name
	}
	rec.RPCOut = ev.Kind == probe.KindStdout || ev.Kind == probe.KindSockOut
	for i := range msgs {
		rec.RPC = &msgs[i]
		out(rec)
	}
}

// bootTime is the wall clock time at which CLOCK_MONOTONIC was zero.
func bootTime() time.Time {
	var ts unix.Timespec
	now := time.Now()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return now
	}
	return now.Add(-time.Duration(ts.Nano()))
}
