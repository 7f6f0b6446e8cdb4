// Package trace assembles the observing half of the pipeline — probe →
// stream → parse — and renders what processes send over TLS, one line per
// request. It is what `aarsm trace` runs, and what the end-to-end tests
// drive against real clients.
package trace

import (
	"context"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/parse"
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
}

// Record is one parsed message with the process that sent or received it.
type Record struct {
	Conn   stream.Key
	TID    uint32
	Comm   string
	Exe    string
	Cgroup uint64
	Time   time.Time // wall clock of the message's last byte
	Msg    *parse.Message
}

// Tracer runs the pipeline.
type Tracer struct {
	opts   Options
	sensor *probe.Sensor
	asm    *stream.Assembler
	http   *parse.HTTP
	exes   map[uint32]string // pid -> executable, learnt at exec or first sight
	boot   time.Time         // wall clock at monotonic zero
	out    func(Record)
}

// Start loads the sensor. Close must be called.
func Start(opts Options) (*Tracer, error) {
	s, err := probe.Load(opts.Sensor)
	if err != nil {
		return nil, err
	}
	t := &Tracer{opts: opts, sensor: s, exes: map[uint32]string{}, boot: bootTime()}
	t.http = parse.NewHTTP(opts.Limits, t.message)
	t.asm = stream.New(t.http.Factory, opts.Stream)
	return t, nil
}

// Sensor returns the loaded sensor (for its targets and counters).
func (t *Tracer) Sensor() *probe.Sensor { return t.sensor }

// Stats returns the counters of every stage.
func (t *Tracer) Stats() (probe.Stats, stream.Stats, parse.Stats, error) {
	ps, err := t.sensor.Stats()
	return ps, t.asm.Stats(), t.http.Stats(), err
}

// Run delivers records to out until ctx is done. out runs on the pipeline's
// goroutine: it must not block for long.
func (t *Tracer) Run(ctx context.Context, out func(Record)) error {
	t.out = out
	evict := time.NewTicker(5 * time.Second)
	defer evict.Stop()
	defer t.asm.CloseAll()
	return t.sensor.Run(ctx, func(ev *probe.Event) {
		select {
		case <-evict.C:
			t.asm.Evict(ev.Mono)
		default:
		}
		switch ev.Kind {
		case probe.KindExec:
			t.learnExe(ev.PID)
		case probe.KindExit:
			delete(t.exes, ev.PID)
		case probe.KindWrite, probe.KindRead:
			if !t.wanted(ev) {
				return
			}
		}
		t.asm.Handle(ev)
	})
}

// Close unloads the sensor.
func (t *Tracer) Close() error { return t.sensor.Close() }

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

func (t *Tracer) message(c *stream.Conn, m *parse.Message) {
	exe, ok := t.exes[c.PID]
	if !ok {
		exe = t.learnExe(c.PID)
	}
	if t.out == nil {
		return
	}
	t.out(Record{
		Conn:   c.Key,
		TID:    c.TID,
		Comm:   c.Comm,
		Exe:    exe,
		Cgroup: c.Cgroup,
		Time:   t.boot.Add(time.Duration(m.End)),
		Msg:    m,
	})
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
