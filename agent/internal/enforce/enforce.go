// Package enforce assembles the whole pipeline — probe → stream → parse →
// judge → act → journal — into the agent that `aarsm run` starts.
//
// The kernel holds (SIGSTOP) every write of a process in scope that may
// carry mail: an HTTP POST/PUT/PATCH, an SMTP envelope command, or any
// write on a connection in the middle of such a message. The agent handles
// the held event synchronously: the stream and the parser consume it, a
// message completed by it is judged, and the verdict's actions are carried
// out before the write is released (or the process killed). Everything
// else flows on untouched and is read in batches.
package enforce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Options configure the agent.
type Options struct {
	PolicyDir string
	// Verdicts receives one record per judged message.
	Verdicts *journal.Logger
	// Logger receives operational messages.
	Logger *slog.Logger
	Sensor probe.Options
	// Executor carries out responses; nil means kill and socket
	// destruction only.
	Executor *act.Executor
	// ScopeCgroups, if set, limits holding in the kernel to these cgroups
	// (tests scope themselves this way); else every process is in scope
	// and the policies' own scopes are applied by the judge.
	ScopeCgroups []uint64
	// DiagOut receives policy diagnostics (file:line:column).
	DiagOut io.Writer
}

// Stats count the agent's work.
type Stats struct {
	Judged, Blocked, Alerted uint64
	Released                 uint64
	ActionErrors             uint64
}

// Agent is the running enforcement pipeline.
type Agent struct {
	opts   Options
	log    *slog.Logger
	sensor *probe.Sensor
	asm    *stream.Assembler
	http   *parse.HTTP
	exec   *act.Executor
	bulk   *judge.BulkState
	procs  proc.FS
	exes   map[uint32]string

	// holdLatency records, for the last held writes, the time from the
	// probe hit to the release (a ring of maxLatencies).
	holdLatency []time.Duration
	holdNext    int

	// Verdicts of the messages completed by the event being handled.
	verdicts []judged
	current  *probe.Event

	// Written by the Run goroutine, read by anyone (Stats).
	judgedN, blockedN, alertedN, releasedN, actionErrorsN atomic.Uint64
	// Written by Reload, read by anyone (Policies).
	loaded     atomic.Pointer[PolicyState]
	reloadFail atomic.Pointer[ReloadFailure]

	shutdownOnce sync.Once
}

// PolicyState is the policy set in force and when it was loaded.
type PolicyState struct {
	Set    *policy.Set
	Loaded time.Time
}

// ReloadFailure is the last reload that failed (the policies in force
// stayed).
type ReloadFailure struct {
	At  time.Time
	Err error
}

type judged struct {
	conn    stream.Key
	verdict judge.Verdict
	msg     *mail.Message
	ctx     judge.Context // the process as it was when the message was judged
}

// ErrPolicy is wrapped by errors in the policies.
var ErrPolicy = errors.New("invalid policy")

// New loads the policies and the sensor, and turns holding on.
func New(opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DiagOut == nil {
		opts.DiagOut = io.Discard
	}
	a := &Agent{opts: opts, log: opts.Logger, exes: map[uint32]string{}, bulk: judge.NewBulkState(4096)}
	if err := a.Reload(); err != nil {
		return nil, err
	}
	a.exec = opts.Executor
	if a.exec == nil {
		a.exec = &act.Executor{}
	}
	// Before anything is held: the kernel must not have to run modprobe
	// for the agent's responses while the agent holds new executables.
	if err := act.PreloadDiag(); err != nil {
		opts.Logger.Warn("socket destruction may be unavailable", "err", err)
	}
	opts.Sensor.Logger = opts.Logger
	opts.Sensor.Holds = true
	s, err := probe.Load(opts.Sensor)
	if err != nil {
		return nil, err
	}
	a.sensor = s
	a.http = parse.NewHTTP(parse.Limits{}, a.message)
	a.http.OnSMTP(a.smtpMessage)
	a.asm = stream.New(a.http.Factory, stream.Options{})
	scopeAll := opts.ScopeCgroups == nil
	if !scopeAll {
		if err := s.SetScope(opts.ScopeCgroups); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.SetHolds(true, scopeAll); err != nil {
		s.Close()
		return nil, err
	}
	return a, nil
}

// Reload reads the policy directory again. On error the policies in force
// stay, and the diagnostics go to DiagOut.
func (a *Agent) Reload() error {
	set, diags := policy.Load(a.opts.PolicyDir)
	if diags.HasErrors() {
		if set != nil {
			_ = policy.WriteDiagnostics(a.opts.DiagOut, set.Sources, diags)
		} else {
			fmt.Fprintln(a.opts.DiagOut, diags.Error())
		}
		err := fmt.Errorf("load policies from %s: %w: %s", a.opts.PolicyDir, ErrPolicy, diags.Error())
		a.reloadFail.Store(&ReloadFailure{At: time.Now(), Err: err})
		return err
	}
	a.loaded.Store(&PolicyState{Set: set, Loaded: time.Now()})
	a.reloadFail.Store(nil)
	a.log.Info("policies loaded", "dir", a.opts.PolicyDir, "policies", len(set.Policies))
	return nil
}

// Sensor returns the loaded sensor.
func (a *Agent) Sensor() *probe.Sensor { return a.sensor }

// Stats returns the agent's counters. It is safe to call from any
// goroutine while Run runs; each counter is read atomically (the set is not
// one atomic snapshot: a message being judged may be counted as judged and
// not yet as blocked).
func (a *Agent) Stats() Stats {
	return Stats{
		Judged:       a.judgedN.Load(),
		Blocked:      a.blockedN.Load(),
		Alerted:      a.alertedN.Load(),
		Released:     a.releasedN.Load(),
		ActionErrors: a.actionErrorsN.Load(),
	}
}

// Policies returns the policies in force and, if the last reload failed,
// that failure. Safe to call from any goroutine.
func (a *Agent) Policies() (PolicyState, *ReloadFailure) {
	return *a.loaded.Load(), a.reloadFail.Load()
}

// Heartbeat returns when the Run loop last went round: it does at least
// every poll interval of the sensor (5 ms) while it is healthy, and not at
// all while an event handler is stuck. A watchdog reads it.
func (a *Agent) Heartbeat() time.Time { return a.sensor.Heartbeat() }

// Run enforces until ctx is done, then releases every held write.
func (a *Agent) Run(ctx context.Context) error {
	defer a.shutdown()
	evict := time.NewTicker(5 * time.Second)
	defer evict.Stop()
	return a.sensor.Run(ctx, func(ev *probe.Event) {
		select {
		case <-evict.C:
			a.asm.Evict(ev.Mono)
		default:
		}
		switch ev.Kind {
		case probe.KindExec:
			delete(a.exes, ev.PID)
		case probe.KindExit:
			delete(a.exes, ev.PID)
		}
		a.current = ev
		a.verdicts = a.verdicts[:0]
		a.asm.Handle(ev)
		a.current = nil
		if ev.Kind == probe.KindWrite {
			a.decide(ev)
		}
	})
}

// shutdown stops holding and lets every held write go: with no agent,
// nobody would judge them. Run does it when it returns, Close if Run never
// ran (holding is on from New).
func (a *Agent) shutdown() { a.shutdownOnce.Do(a.releaseAll) }

func (a *Agent) releaseAll() {
	if err := a.sensor.SetHolds(false, false); err != nil {
		a.log.Error("cannot turn holding off", "err", err)
	}
	holds, err := a.sensor.Holds()
	if err != nil {
		a.log.Error("cannot list held writes", "err", err)
	}
	for _, h := range holds {
		if err := a.sensor.Release(h.PID, h.TID); err != nil {
			a.log.Error("cannot release held write", "pid", h.PID, "err", err)
		}
	}
	a.asm.CloseAll()
}

// Close stops holding, releases what is held (if Run did not) and unloads
// the sensor.
func (a *Agent) Close() error {
	a.shutdown()
	return a.sensor.Close()
}

// message judges a completed request (called by the parser).
func (a *Agent) message(c *stream.Conn, m *parse.Message) {
	if m.Response {
		return
	}
	req := &mail.HTTPRequest{Method: m.Method, Host: m.Host, Path: m.Target, Header: http.Header(m.Header), Body: m.Data}
	msgs, err := mail.FromHTTP(req)
	if err != nil {
		a.log.Debug("mail request not understood", "pid", c.PID, "host", m.Host, "path", m.Target, "err", err)
	}
	if len(msgs) == 0 {
		return
	}
	a.judge(c, m.Host, msgs)
}

// smtpMessage judges a mail sent over SMTP (called by the parser when the
// write with the end of its DATA arrives).
func (a *Agent) smtpMessage(c *stream.Conn, m *mail.Message) {
	a.judge(c, "smtp", []*mail.Message{m})
}

func (a *Agent) judge(c *stream.Conn, dest string, msgs []*mail.Message) {
	set := a.loaded.Load().Set
	ctx := a.context(c, dest)
	now := time.Now()
	for _, msg := range msgs {
		v := judge.Judge(set, msg, ctx, a.bulk, now)
		a.judgedN.Add(1)
		a.verdicts = append(a.verdicts, judged{conn: c.Key, verdict: v, msg: msg, ctx: ctx})
	}
}

func (a *Agent) context(c *stream.Conn, host string) judge.Context {
	ctx := judge.Context{PID: c.PID, Comm: c.Comm, CgroupID: c.Cgroup, Dest: host}
	ctx.Exe = a.exe(c.PID)
	ctx.StartTime, _ = a.procs.StartTime(c.PID)
	ctx.CgroupPath, _ = a.procs.CgroupPath(c.PID)
	ctx.Unit, _ = act.UnitOf(c.PID)
	return ctx
}

func (a *Agent) exe(pid uint32) string {
	if exe, ok := a.exes[pid]; ok {
		return exe
	}
	exe, err := a.procs.Exe(pid)
	if err != nil {
		exe = "?"
	}
	a.exes[pid] = exe
	return exe
}

// decide acts on the verdicts the write ev produced, then releases it if
// it was held and may proceed.
func (a *Agent) decide(ev *probe.Event) {
	block := false
	for _, j := range a.verdicts {
		if a.respond(ev, j) {
			block = true
		}
	}
	if !ev.Held {
		return
	}
	if block {
		// respond killed the process or destroyed its sockets; a process
		// still alive resumes into a failed write.
		a.sensor.Forget(ev.TID)
		_ = unix.Kill(int(ev.PID), unix.SIGCONT)
		return
	}
	busy := false
	if c := a.asm.Lookup(stream.Key{PID: ev.PID, SSL: ev.SSL}); c != nil {
		busy = c.Busy()
	}
	if err := a.sensor.Watch(ev.PID, ev.SSL, busy); err != nil {
		a.log.Warn("cannot watch connection", "pid", ev.PID, "err", err)
	}
	if err := a.sensor.Release(ev.PID, ev.TID); err != nil {
		a.log.Warn("cannot release held write", "pid", ev.PID, "err", err)
	}
	a.releasedN.Add(1)
	a.recordLatency(sinceMono(ev.Mono))
}

const maxLatencies = 1 << 16

func (a *Agent) recordLatency(d time.Duration) {
	if len(a.holdLatency) < maxLatencies {
		a.holdLatency = append(a.holdLatency, d)
		return
	}
	a.holdLatency[a.holdNext] = d
	a.holdNext = (a.holdNext + 1) % maxLatencies
}

// HoldLatencies returns the hit-to-release times of the last released
// writes, sorted. Call it after Run returned.
func (a *Agent) HoldLatencies() []time.Duration {
	out := append([]time.Duration(nil), a.holdLatency...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// respond carries out a verdict and logs it; it reports whether the write
// was blocked.
func (a *Agent) respond(ev *probe.Event, j judged) bool {
	v := j.verdict
	decision := journal.Allow
	switch v.Decision {
	case judge.Block:
		decision = journal.Block
	case judge.Alert:
		decision = journal.Alert
	}
	var done []string
	blocked := false
	if v.Decision == judge.Block {
		start := j.ctx.StartTime
		plan := act.Plan{Actions: v.Actions, StopUnit: contains(v.Actions, policy.EffectTerminate)}
		if contains(v.Actions, policy.EffectQuarantine) {
			plan.QuarantineFor = v.QuarantineFor
		}
		// A held write is blocked by killing the process or by
		// destroying its connections before it resumes.
		if !contains(v.Actions, policy.EffectTerminate) && !contains(v.Actions, policy.EffectBlock) {
			plan.Actions = append(plan.Actions, policy.EffectBlock)
		}
		var err error
		done, err = a.exec.Execute(context.Background(), plan, act.Target{PID: ev.PID, StartTime: start, CgroupID: ev.Cgroup})
		if err != nil {
			a.actionErrorsN.Add(1)
			a.log.Error("response incomplete", "pid", ev.PID, "err", err)
		}
		blocked = ev.Held
		if !ev.Held {
			decision = journal.Alert // the bytes had left already
		}
		a.blockedN.Add(1)
	} else if v.Decision == judge.Alert {
		done = []string{"alert"}
		a.alertedN.Add(1)
	}
	rec := journal.Verdict{
		Reason:     reason(v),
		Priority:   journal.Priority(v.Priority),
		Decision:   decision,
		Actions:    done,
		Policy:     v.Policy,
		Rules:      v.Rules,
		Violations: v.Violations,
		PID:        int(ev.PID),
		Comm:       ev.Comm(),
		Exe:        j.ctx.Exe,
		Unit:       j.ctx.Unit,
		Cgroup:     fmt.Sprint(ev.Cgroup),
		Dest:       j.ctx.Dest,
		Recipients: addresses(j.msg.Recipients()),
		Latency:    sinceMono(ev.Mono),
	}
	if decision == journal.Allow {
		rec.Priority = journal.Priority(6)
	}
	if a.opts.Verdicts != nil {
		if err := a.opts.Verdicts.Log(rec); err != nil {
			a.log.Error("cannot log verdict", "err", err)
		}
	}
	return blocked
}

func reason(v judge.Verdict) string {
	var parts []string
	seen := map[string]bool{}
	for _, f := range v.Findings {
		s := strings.ReplaceAll(f.Rule, "_", " ") + " " + f.Value
		if !seen[s] {
			seen[s] = true
			parts = append(parts, s)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func addresses(as []mail.Address) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.Addr)
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func sinceMono(mono uint64) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil || uint64(ts.Nano()) < mono {
		return 0
	}
	return time.Duration(uint64(ts.Nano()) - mono)
}
