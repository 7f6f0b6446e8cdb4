// Package enforce is the agent that `aarsm run` starts: the observing
// stages (package pipeline: probe → stream → parse) followed by the
// judging ones, in one line per event:
//
//	probe.Event → pipeline.Result → []found (mail messages) → []judged (verdicts) → act → journal
//
// The kernel holds (SIGSTOP) every write of a process in scope that may
// carry mail: an HTTP POST/PUT/PATCH, an SMTP envelope command, or any
// write on a connection in the middle of such a message. The agent handles
// the held event synchronously (handleHeld): the pipeline consumes it, the
// messages it completed — or, if none, what its connection has written so
// far — are judged, and the verdicts' actions are carried out before the
// write is released (or the process killed). Everything else flows on
// untouched and is read in batches.
package enforce

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/baseline"
	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/pipeline"
	"github.com/aarsm/aarsm/agent/internal/pkgid"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Options configure the agent.
type Options struct {
	PolicyDir string
	// StateDir, if set, keeps a copy of the last policies that loaded
	// without error: a start on a broken policy directory falls back to
	// it (and says so) rather than failing.
	StateDir string
	// Verdicts receives one record per judged message.
	Verdicts *journal.Logger
	// Logger receives operational messages.
	Logger *slog.Logger
	Sensor probe.Options
	// Executor carries out responses; nil means kill and socket
	// destruction only.
	Executor *act.Executor
	// HoldCgroups, if set, narrows the hold scope the policies give to
	// these cgroup v2 directories (absolute paths): tests scope themselves
	// this way, and so does "aarsm run --hold-cgroup".
	HoldCgroups []string
	// Fault, for tests only, makes the agent misbehave at the first held
	// write after it released one (so that a healthy start can be checked
	// first): "wedge" blocks the event loop forever, "die-after-take"
	// kills the agent after it took the hold and before it acts.
	Fault string
	// DiagOut receives policy diagnostics (file:line:column).
	DiagOut io.Writer
	// NoMCP turns off the observation of MCP servers' stdio (the judge
	// then has no MCP context).
	NoMCP bool
	// ExeHashWait is how long a verdict waits for the first content hash
	// of an executable (the baseline); 0: 20 ms; negative: not at all.
	ExeHashWait time.Duration
	// Egress, if set, puts the egress_policy blocks in force at every
	// load that has no error (a load with errors applies nothing).
	Egress EgressApplier
}

// EgressApplier puts the egress policies of a set in force
// (egress.Enforcer).
type EgressApplier interface {
	Apply(set *policy.Set) error
}

// Stats count the agent's work.
type Stats struct {
	// Blocked: stopped while held, before the message left. Leaked: a
	// block verdict on a message whose bytes had left already.
	Judged, Blocked, Leaked, Alerted uint64
	Released                         uint64
	ActionErrors                     uint64
	// Expired: held writes whose deadline passed before the verdict (the
	// guard resolved them by their fail mode).
	Expired uint64
}

// Agent is the running enforcement pipeline.
type Agent struct {
	opts   Options
	log    *slog.Logger
	sensor *probe.Sensor
	pipe   *pipeline.Pipeline
	exec   *act.Executor
	bulk   *judge.BulkState
	procs  proc.FS
	facts  factCache
	// toolCalls are the tool calls of MCP servers as the judge sees them,
	// built once per call (mcp.go).
	toolCalls map[callKey]*judge.ToolCall
	// base is the behavioural baseline (baseline.go): nil without a
	// state directory or with baseline = "off" at start; baseOff turns it
	// off on a reload.
	base    *baseline.Store
	baseOff atomic.Bool
	// ids identifies processes that are no MCP server for the baseline
	// (executables by path only); exeHash hashes their executables in
	// the background. Both nil without a baseline.
	ids     *pkgid.Resolver
	exeHash *pkgid.ExeHasher

	// holdLatency records, for the last held writes, the time from the
	// probe hit to the release (a ring of maxLatencies).
	holdLatency []time.Duration
	holdNext    int

	// pipeStats is the stream and parse stages' counters, published by
	// the Run goroutine (pipestats.go).
	pipeStats pipeStatsState

	// Written by the Run goroutine, read by anyone (Stats).
	judgedN, blockedN, leakedN, alertedN, releasedN, actionErrorsN, expiredN atomic.Uint64

	// The hold scope: its compiled rules, where cgroups are mounted, the
	// narrowing directories (paths below mount) and the entries in force
	// (path → policy). Written by New and Reload, read by the Run
	// goroutine for new cgroups and by HoldScope.
	scopeMu     sync.Mutex
	scope       compiledScope
	cgroupMount string
	selfCgroup  uint64
	narrow      []string
	entries     map[string]probe.HoldPolicy
	// Written by Reload, read by anyone (Policies).
	loaded     atomic.Pointer[PolicyState]
	reloadFail atomic.Pointer[ReloadFailure]
	// Written by the Run goroutine after a stdio event, read by anyone
	// (MCPServers).
	mcpSeen  atomic.Pointer[[]MCPServer]
	mcpStats atomic.Pointer[pipeline.StdioStats]
	// mcpGen counts the changes of the set of MCP servers' pids (Run
	// goroutine only): a process found to be none is not looked at again
	// until it changes (procFacts.noMCP).
	mcpGen uint64

	shutdownOnce sync.Once
	// keep: Run leaves holding on and the holds in place when it returns
	// (KeepHolds: a successor image takes over).
	keep atomic.Bool
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

// found is a mail message a write completed or has in progress, with
// where it is going; or, msg nil, a request that is no mail (for the
// baseline only).
type found struct {
	dest     string // the HTTP Host; "" for SMTP
	msg      *mail.Message
	endpoint string // a request that is no mail: "METHOD host/target"
}

// judged is a message with its verdict.
type judged struct {
	verdict judge.Verdict
	msg     *mail.Message
	ctx     judge.Context // the process as it was when the message was judged
}

// New loads the policies and the sensor, and turns holding on.
func New(opts Options) (*Agent, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DiagOut == nil {
		opts.DiagOut = io.Discard
	}
	a := &Agent{opts: opts, log: opts.Logger, facts: factCache{}, toolCalls: map[callKey]*judge.ToolCall{}, bulk: judge.NewBulkState(4096)}
	if err := a.Reload(); err != nil {
		last, lerr := policy.LoadLastGood(opts.StateDir)
		if opts.StateDir == "" || last == nil || lerr != nil {
			return nil, errors.Join(err, lerr)
		}
		// Enforce what was in force; the failure stays visible in
		// status and the log until a reload succeeds.
		a.log.Error("the policy directory does not load: enforcing the last policies that did", "err", err, "policies", len(last.Policies))
		a.loaded.Store(&PolicyState{Set: last, Loaded: time.Now()})
		if opts.Egress != nil {
			if err := opts.Egress.Apply(last); err != nil {
				return nil, fmt.Errorf("apply the egress policies: %w", err)
			}
		}
	}
	a.openBaseline(a.loaded.Load().Set)
	a.applyBaseline(a.loaded.Load().Set)
	a.exec = opts.Executor
	if a.exec == nil {
		a.exec = &act.Executor{}
	}
	// Before anything is held: the kernel must not have to run modprobe
	// for the agent's responses while the agent holds new executables.
	if err := act.PreloadDiag(); err != nil {
		opts.Logger.Warn("socket destruction may be unavailable", "err", err)
	}
	mount, err := act.CgroupMount()
	if err != nil {
		return nil, err
	}
	a.cgroupMount = mount
	// Never hold the agent's own cgroup: its guard must run, and so must
	// the unit's ExecStopPost.
	if self, err := a.procs.CgroupPath(uint32(os.Getpid())); err == nil {
		if id, err := act.CgroupID(mount, self); err == nil {
			a.selfCgroup = id
		}
	}
	for _, dir := range opts.HoldCgroups {
		rel, err := filepath.Rel(mount, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			return nil, fmt.Errorf("hold cgroup %s: not under the cgroup v2 mount %s", dir, mount)
		}
		a.narrow = append(a.narrow, cleanCgroup(rel))
	}
	opts.Sensor.Logger = opts.Logger
	opts.Sensor.Holds = true
	if next := opts.Sensor.OnUnmonitored; next != nil {
		opts.Sensor.OnUnmonitored = func(u probe.Unmonitored) { a.reportUnmonitored(u); next(u) }
	} else {
		opts.Sensor.OnUnmonitored = a.reportUnmonitored
	}
	opts.Sensor.Stdio = !opts.NoMCP
	set := a.loaded.Load().Set
	// The write guard only for a fail-closed policy: it costs a second
	// probe hit per write.
	opts.Sensor.WriteGuard = len(compileScope(set).failClosed) > 0
	s, err := probe.Load(opts.Sensor)
	if err != nil {
		return nil, err
	}
	a.sensor = s
	popts := pipeline.Options{Proc: a.procs}
	if !opts.NoMCP {
		popts.Stdio = s
	}
	a.pipe = pipeline.New(popts)
	if err := a.applyScope(set); err != nil {
		_ = s.Close()
		return nil, err
	}
	return a, nil
}

// applyScope puts the hold scope of set in force in the kernel.
func (a *Agent) applyScope(set *policy.Set) error {
	c := compileScope(set)
	a.scopeMu.Lock()
	defer a.scopeMu.Unlock()
	if c.enforcing == 0 {
		a.scope, a.entries = c, nil
		if err := a.sensor.SetScope(nil); err != nil {
			return err
		}
		return a.sensor.SetHolds(probe.HoldConfig{Enabled: true, CopyAll: true, SelfCgroup: a.selfCgroup})
	}
	if len(c.failClosed) > 0 && !a.sensor.WriteGuarded() {
		a.log.Warn("a fail-closed policy was added while the agent runs: until it restarts, a held write resumed by someone else's SIGCONT goes on unjudged", "policies", strings.Join(c.failClosed, ","))
	}
	entries, err := c.scopeEntries(a.cgroupMount, a.narrow)
	if err != nil {
		return err
	}
	ids := map[uint64]probe.HoldPolicy{}
	for rel, h := range entries {
		id, err := act.CgroupID(a.cgroupMount, rel)
		if err != nil {
			continue // removed meanwhile
		}
		ids[id] = h
	}
	if err := a.sensor.SetScope(ids); err != nil {
		return err
	}
	stale := c.shortest
	if stale < 100*time.Millisecond {
		stale = 100 * time.Millisecond
	}
	all := c.all && len(a.narrow) == 0
	cfg := probe.HoldConfig{
		Enabled:       true,
		All:           all,
		AllPolicy:     c.allPolicy,
		Scoped:        all && len(ids) > 0,
		CopyAll:       c.copyAll,
		NewCgroups:    len(c.rules) > 0,
		PendingPolicy: c.pending,
		Stale:         stale,
		SelfCgroup:    a.selfCgroup,
	}
	if err := a.sensor.SetHolds(cfg); err != nil {
		return err
	}
	a.scope, a.entries = c, entries
	return nil
}

// newCgroup judges a cgroup the kernel put in scope at its creation.
func (a *Agent) newCgroup(ev *probe.Event) {
	rel := cleanCgroup(ev.Filename)
	a.scopeMu.Lock()
	defer a.scopeMu.Unlock()
	h, ok := a.scope.resolveNew(rel, a.entries, a.narrow)
	var err error
	if ok {
		if a.entries == nil {
			a.entries = map[string]probe.HoldPolicy{}
		}
		a.entries[rel] = h
		err = a.sensor.SetScopeEntry(ev.Cgroup, h)
	} else {
		err = a.sensor.DeleteScopeEntry(ev.Cgroup)
	}
	if err != nil {
		a.log.Warn("cannot judge new cgroup; it stays in the hold scope", "cgroup", rel, "err", err)
	}
}

// HoldScope describes the hold scope in force.
func (a *Agent) HoldScope() HoldScope {
	a.scopeMu.Lock()
	defer a.scopeMu.Unlock()
	c := a.scope
	return HoldScope{
		All:        c.all && len(a.narrow) == 0,
		Cgroups:    sortedKeys(a.entries),
		Widened:    append([]string(nil), c.widened...),
		Narrowed:   append([]string(nil), a.narrow...),
		NewCgroups: len(c.rules) > 0,
		FailClosed: append([]string(nil), c.failClosed...),
		Enforcing:  c.enforcing,
		CopyAll:    c.copyAll,
	}
}

// Reload reads the policy directory again. On error the policies in force
// stay, and the diagnostics go to DiagOut.
func (a *Agent) Reload() error {
	set, diags := policy.Load(a.opts.PolicyDir)
	if diags.HasErrors() {
		if set != nil {
			_ = policy.WriteDiagnostics(a.opts.DiagOut, set.Sources, diags)
		} else {
			_, _ = fmt.Fprintln(a.opts.DiagOut, diags.Error())
		}
		err := fmt.Errorf("load policies from %s: %w: %s", a.opts.PolicyDir, policy.ErrInvalid, diags.Error())
		a.reloadFail.Store(&ReloadFailure{At: time.Now(), Err: err})
		return err
	}
	if a.sensor != nil {
		if err := a.applyScope(set); err != nil {
			err = fmt.Errorf("apply the policies' hold scope: %w", err)
			a.reloadFail.Store(&ReloadFailure{At: time.Now(), Err: err})
			return err
		}
		a.releaseOutOfScope()
	}
	if a.opts.Egress != nil {
		if err := a.opts.Egress.Apply(set); err != nil {
			err = fmt.Errorf("apply the egress policies: %w", err)
			a.reloadFail.Store(&ReloadFailure{At: time.Now(), Err: err})
			return err
		}
	}
	a.loaded.Store(&PolicyState{Set: set, Loaded: time.Now()})
	a.applyBaseline(set)
	a.reloadFail.Store(nil)
	if a.opts.StateDir != "" {
		if err := policy.SaveLastGood(a.opts.StateDir, set); err != nil {
			a.log.Warn("cannot keep a copy of the policies for a restart", "err", err)
		}
	}
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
		Leaked:       a.leakedN.Load(),
		Alerted:      a.alertedN.Load(),
		Released:     a.releasedN.Load(),
		ActionErrors: a.actionErrorsN.Load(),
		Expired:      a.expiredN.Load(),
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

// KeepHolds makes Run, once its context is done, return with holding on
// and every hold in place, for a successor image to judge
// (probe.Sensor.PrepareHandover). Close still releases them.
func (a *Agent) KeepHolds() { a.keep.Store(true) }

// Run enforces until ctx is done, then releases every held write (unless
// KeepHolds was called).
func (a *Agent) Run(ctx context.Context) error {
	defer func() {
		if !a.keep.Load() {
			a.shutdown()
		}
		if a.base != nil {
			// Before a handover's exec too: the successor reads the file.
			if err := a.base.Flush(); err != nil {
				a.log.Error("cannot save the behavioural baseline", "err", err)
			}
		}
	}()
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan struct{})
	go func() { a.watchScope(watchCtx); close(watched) }()
	defer func() { stopWatch(); <-watched }()
	err := a.pipe.Run(ctx, a.sensor, a.admit, a.handle)
	if err == nil && !a.keep.Load() {
		// Stopping (SIGTERM: a restart, an upgrade): no new hold, but the
		// writes held already are judged, not let go unjudged.
		a.stopHolding()
		a.pipe.Drain(a.sensor, a.admit, a.handle, 2*time.Second)
	}
	return err
}

// admit prepares an event for the pipeline: it forgets the facts of a
// process that exec'd or exited, judges a new cgroup (not an event for the
// pipeline), and reads a held write whole, past the sensor's copy.
func (a *Agent) admit(ev *probe.Event) bool {
	switch ev.Kind {
	case probe.KindExec, probe.KindExit:
		a.facts.forget(ev.PID)
	case probe.KindCgroup:
		a.newCgroup(ev)
		return false
	case probe.KindWrite:
		if ev.Held && a.opts.Fault == "wedge" && a.releasedN.Load() > 0 {
			a.log.Warn("test fault: the event loop wedges now", "pid", ev.PID)
			select {}
		}
		if err := ev.ReadRest(a.procs.Path(ev.PID, "mem"), maxHeldWrite); err != nil {
			a.log.Warn("held write judged on what the sensor copied", "pid", ev.PID, "comm", ev.Comm(), "err", err)
		}
	}
	return true
}

// handle judges what a write completed and acts on the verdicts. Reads
// complete responses only: nothing to judge.
func (a *Agent) handle(ev *probe.Event, r pipeline.Result) {
	defer a.publishPipeline()
	if ev.Kind == probe.KindStdin || ev.Kind == probe.KindStdout || ev.Kind == probe.KindSockIn || ev.Kind == probe.KindSockOut ||
		(ev.Kind == probe.KindExit && len(a.MCPServers()) > 0) {
		a.publishMCP() // a server gone leaves the list
	}
	if ev.Kind != probe.KindWrite {
		return
	}
	if ev.Held {
		a.handleHeld(ev, r)
		return
	}
	// Not held: out of scope, or a write the kernel let through (no
	// mail could start in it). A block verdict here comes too late: the
	// bytes left; respond reports it as a leak.
	msgs := a.completed(r)
	if len(msgs) == 0 {
		return
	}
	for _, j := range a.judge(msgs, a.factsOf(ev), false) {
		a.respond(ev, j, false)
	}
}

// handleHeld is the held write's path, from the pipeline's result to the
// process released or stopped:
//
//  1. the messages and requests the write completed are judged; if no
//     mail is among them, what its connection has written so far of the
//     messages in progress (an SMTP envelope, an HTTP body so far, a
//     request's head for the baseline) too, of which only blocks count;
//  2. the hold is taken (unless its deadline passed and the guard
//     resolved it meanwhile);
//  3. each verdict's actions are carried out and logged;
//  4. a blocked write's process stays killed or resumes into a failed
//     write; otherwise the kernel is told what to hold of the connection's
//     next writes, and the process resumes.
func (a *Agent) handleHeld(ev *probe.Event, r pipeline.Result) {
	done := a.completed(r)
	var pend []found
	if r.Conn != nil && !slices.ContainsFunc(done, func(f found) bool { return f.msg != nil }) {
		// No mail completed: the mail in progress is checked early (also
		// beside a request that is no mail, completed on another HTTP/2
		// stream of the connection).
		pend = a.pending(r.Conn.Key)
	}
	var verdicts []judged
	if len(done)+len(pend) > 0 {
		f := a.factsOf(ev)
		verdicts = append(a.judge(done, f, false), a.judge(pend, f, true)...)
	} else {
		a.warmBaseline(ev) // while the process is alive: its next writes may not be held
	}

	held := a.take(ev)
	if held {
		defer a.sensor.Settle(ev.TID)
	}
	blocked := false
	for _, j := range verdicts {
		if a.respond(ev, j, held) {
			blocked = true
		}
	}
	if !held {
		return
	}
	if blocked {
		// respond killed the process or destroyed its sockets; a process
		// still alive resumes into a failed write.
		_ = probe.Resume(ev.PID)
		return
	}
	k := stream.Key{PID: ev.PID, SSL: ev.SSL}
	if err := a.sensor.SetConnMode(ev.PID, ev.SSL, connMode(a.pipe.Busy(k), a.pipe.Proto(k))); err != nil {
		a.log.Warn("cannot classify connection", "pid", ev.PID, "err", err)
	}
	if err := probe.Resume(ev.PID); err != nil {
		a.log.Warn("cannot release held write", "pid", ev.PID, "err", err)
	}
	a.releasedN.Add(1)
	a.recordLatency(sinceMono(ev.Mono))
}

// take makes a held write's hold the agent's: false when the guard
// resolved it first (its deadline passed while the agent was behind) or
// someone else's SIGCONT resumed it.
func (a *Agent) take(ev *probe.Event) bool {
	h, owned, err := a.sensor.Take(ev.PID, ev.TID)
	if err != nil {
		a.log.Warn("cannot take held write", "pid", ev.PID, "err", err)
	}
	switch {
	case !owned:
		a.expiredN.Add(1)
		a.log.Warn("held write resolved by its deadline before the verdict (see the guard's log)", "pid", ev.PID,
			"comm", ev.Comm(), "held_for", sinceMono(ev.Mono).Round(time.Millisecond).String())
		return false
	case h.Foreign:
		a.sensor.Settle(ev.TID)
		a.log.Warn("held write resumed by someone else's SIGCONT before the verdict: it went on unjudged", "pid", ev.PID, "comm", ev.Comm())
		return false
	}
	if a.opts.Fault == "die-after-take" && a.releasedN.Load() > 0 {
		// The window the resolving map covers: the agent dies after it
		// took a hold and before it acted on it.
		a.log.Warn("test fault: the agent dies holding a hold it took", "pid", ev.PID)
		time.Sleep(200 * time.Millisecond)
		_ = unix.Kill(os.Getpid(), unix.SIGKILL)
	}
	return true
}

// stopHolding turns holding off; writes out of scope are copied again (no
// verdict will come of them) until the sensor is closed.
func (a *Agent) stopHolding() {
	if err := a.sensor.SetHolds(probe.HoldConfig{}); err != nil {
		a.log.Error("cannot turn holding off", "err", err)
	}
}

// shutdown stops holding and lets every held write go: with no agent,
// nobody would judge them. Run does it when it returns, Close if Run never
// ran (holding is on from New).
func (a *Agent) shutdown() { a.shutdownOnce.Do(a.releaseAll) }

func (a *Agent) releaseAll() {
	a.stopHolding()
	holds, err := a.sensor.Holds()
	if err != nil {
		a.log.Error("cannot list held writes", "err", err)
	}
	for _, h := range holds {
		if _, err := a.sensor.Release(h.PID, h.TID); err != nil {
			a.log.Error("cannot release held write", "pid", h.PID, "err", err)
		}
	}
	a.pipe.Close()
}

// Close stops holding, releases what is held (if Run did not) and unloads
// the sensor.
func (a *Agent) Close() error {
	a.shutdown()
	a.closeBaseline()
	return a.sensor.Close()
}

// completed returns the mail messages of the requests and SMTP
// transactions the event's connection completed. A mail request that
// cannot be read whole is never let go silently: it is judged
// (unreadable_mail_requests) and logged.
func (a *Agent) completed(r pipeline.Result) []found {
	var out []found
	for _, d := range r.Done {
		if d.Conn != r.Conn {
			continue // flushed from a connection the event closed or evicted
		}
		for _, m := range d.Messages {
			if m.Response {
				continue
			}
			msgs := a.mailOf(d.Conn, m)
			for _, msg := range msgs {
				out = append(out, found{dest: m.Host, msg: msg})
			}
			if len(msgs) == 0 {
				out = a.request(out, m.Head)
			}
		}
		for _, msg := range d.Mails {
			out = append(out, found{msg: msg})
		}
	}
	return out
}

// mailOf returns the mail messages of a complete HTTP request.
func (a *Agent) mailOf(c *stream.Conn, m *parse.Message) []*mail.Message {
	req := &mail.HTTPRequest{Method: m.Method, Host: m.Host, Path: m.Target, Header: http.Header(m.Header), Body: m.Data}
	msgs, err := mail.FromHTTP(req)
	why := ""
	switch {
	case err != nil:
		why = err.Error()
	case len(msgs) > 0 && m.Truncated:
		why = fmt.Sprintf("body not read whole (%d of %d bytes kept)", len(m.Data), m.WireSize)
	case len(msgs) > 0 && m.DecodeErr != nil:
		why = fmt.Sprintf("%s body not decoded: %v", m.Header.Get("Content-Encoding"), m.DecodeErr)
	}
	if why == "" {
		return msgs
	}
	a.log.Warn("mail request not read whole", "pid", c.PID, "comm", c.Comm, "host", m.Host, "path", m.Target, "why", why)
	if len(msgs) == 0 {
		msgs = []*mail.Message{mail.UnreadableRequest(m.Target, why)}
	}
	for _, msg := range msgs {
		msg.Unreadable = why
	}
	return msgs
}

// pending returns what connection k's client has written so far of the
// messages in progress: the SMTP envelope (each RCPT TO before it leaves)
// and headers, or an HTTP request's body so far (none yet for a
// compressed body: its prefix is not decoded).
func (a *Agent) pending(k stream.Key) []found {
	p := a.pipe.Pending(k)
	var out []found
	if p.Mail != nil {
		out = append(out, found{msg: p.Mail})
	}
	for _, r := range p.Requests {
		var msgs []*mail.Message
		if ce := r.Header.Get("Content-Encoding"); ce == "" || strings.EqualFold(ce, "identity") {
			msgs, _ = mail.FromHTTP(&mail.HTTPRequest{Method: r.Method, Host: r.Host, Path: r.Target, Header: http.Header(r.Header), Body: r.Data, Partial: true})
		}
		for _, msg := range msgs {
			out = append(out, found{dest: r.Host, msg: msg})
		}
		if len(msgs) == 0 {
			out = a.request(out, r.Head)
		}
	}
	return out
}

// request adds a request that is no mail to out, for the baseline (when
// it is kept, and the request names its host).
func (a *Agent) request(out []found, h parse.Head) []found {
	if h.Host == "" || !a.baselineOn() {
		return out
	}
	return append(out, found{dest: h.Host, endpoint: h.Method + " " + h.Host + h.Target})
}

// factsOf returns the facts of the process that wrote ev, with its MCP
// context as of now.
func (a *Agent) factsOf(ev *probe.Event) procFacts {
	f := a.facts.of(a.procs, ev)
	if f.noMCP != 0 && f.noMCP == a.mcpGen+1 {
		// No MCP server, nor a child of one, since the set of servers
		// last changed: the ancestry is not walked again (every request
		// of every process comes here for the baseline).
		return f
	}
	f.mcp = a.mcpOf(ev.PID, time.Now())
	if f.mcp == nil {
		a.facts.setNoMCP(ev.PID, a.mcpGen+1)
	}
	return f
}

// judge judges messages of a process. Messages not complete yet (early)
// may only block: anything less waits for the complete message, which is
// judged (and logged) once.
func (a *Agent) judge(msgs []found, f procFacts, early bool) []judged {
	set := a.loaded.Load().Set
	now := time.Now()
	var out []judged
	smtp := ""
	for _, m := range msgs {
		ctx := a.context(f, m.dest)
		dest, domains := ctx.Dest, []string(nil)
		if m.msg != nil {
			domains = recipientDomains(m.msg)
			if dest == "" && a.baselineOn() && a.identityOf(set, ctx) != nil {
				// SMTP names no server: its peer is where it goes.
				if smtp == "" {
					smtp = smtpDest(f.pid)
				}
				dest = smtp
			}
		}
		ctx.Baseline = a.baselineOf(set, ctx, dest, domains, early, now)
		msg := m.msg
		if msg == nil {
			if ctx.Baseline == nil {
				continue // a request that is no mail, as the baseline knows it
			}
			msg = requestMessage(m.endpoint)
		}
		v := judge.Judge(set, msg, ctx, a.bulk, now)
		if early && v.Decision != judge.Block {
			continue
		}
		a.judgedN.Add(1)
		out = append(out, judged{verdict: v, msg: msg, ctx: ctx})
	}
	return out
}

// context describes the process for the judge; host is the HTTP Host of
// the message, "" for an SMTP session, which names no server: its
// destination is its peer, found when the verdict is recorded.
func (a *Agent) context(f procFacts, host string) judge.Context {
	return judge.Context{
		Target:    policy.Target{Exe: f.exe, Comm: f.comm, Unit: f.unit, CgroupPath: f.cgroupPath},
		PID:       f.pid,
		StartTime: f.start,
		CgroupID:  f.cgroup,
		Dest:      addressedDest(host),
		MCP:       f.mcp,
	}
}

// connMode is what the kernel is to hold of a connection's next writes,
// from what its parser has seen: everything while a message is in
// progress (busy).
func connMode(busy bool, proto string) probe.ConnMode {
	if busy {
		return probe.ConnAll
	}
	switch proto {
	case parse.ProtoHTTP1:
		return probe.ConnH1
	case parse.ProtoHTTP2:
		return probe.ConnH2
	case parse.ProtoOther:
		return probe.ConnOther
	case parse.ProtoWebSocket:
		return probe.ConnAll // any write may carry part of a message
	}
	return probe.ConnAll // SMTP, or not known yet: every command may carry the envelope
}

const maxLatencies = 1 << 16

// maxHeldWrite bounds what is read of one held write (ReadRest): the
// parser keeps at most 32 MiB of a body, plus a head.
const maxHeldWrite = 32<<20 + 64<<10

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
func (a *Agent) respond(ev *probe.Event, j judged, held bool) bool {
	v := j.verdict
	decision := v.Decision
	if decision == judge.Block && !held {
		decision = judge.Alert // the bytes had left already
	}
	var peer netip.AddrPort
	if a.opts.Verdicts != nil && a.opts.Verdicts.Records(decision) {
		// Before the response: a block destroys the connections.
		peers, err := act.Peers(ev.PID)
		if err != nil {
			a.log.Debug("cannot list the connections of the process", "pid", ev.PID, "err", err)
		}
		peer = choosePeer(j.ctx.Dest, peers)
	}
	var done []act.Done
	blocked := false
	if v.Decision == judge.Block {
		plan := act.Plan{Actions: v.Actions, StopUnit: slices.Contains(v.Actions, policy.EffectTerminate)}
		if slices.Contains(v.Actions, policy.EffectQuarantine) {
			plan.QuarantineFor = v.QuarantineFor
			plan.Keep = quarantineCopy(ev, j) // see vault.go
		}
		// A held write is blocked by killing the process or by
		// destroying its connections before it resumes.
		if !slices.Contains(v.Actions, policy.EffectTerminate) && !slices.Contains(v.Actions, policy.EffectBlock) {
			plan.Actions = append(slices.Clip(plan.Actions), policy.EffectBlock)
		}
		var err error
		done, err = a.exec.Execute(context.Background(), plan, act.Target{PID: ev.PID, StartTime: j.ctx.StartTime, CgroupID: ev.Cgroup, CgroupPath: j.ctx.CgroupPath})
		if err != nil {
			a.actionErrorsN.Add(1)
			a.log.Error("response incomplete", "pid", ev.PID, "err", err)
		}
		blocked = held
		if held {
			a.blockedN.Add(1)
		} else {
			a.leakedN.Add(1)
		}
	} else if v.Decision == judge.Alert {
		done = []act.Done{{Effect: policy.EffectAlert}}
		a.alertedN.Add(1)
	}
	if a.opts.Verdicts == nil {
		return blocked
	}
	rec := journal.Verdict{
		Reason:     reason(v),
		Priority:   v.Priority,
		Decision:   decision,
		Policy:     v.Policy,
		Rules:      v.Rules,
		Violations: v.Violations,
		PID:        int(ev.PID),
		Comm:       ev.Comm(),
		Exe:        j.ctx.Exe,
		Unit:       j.ctx.Unit,
		Cgroup:     j.ctx.CgroupPath,
		CgroupID:   j.ctx.CgroupID,
		Dest:       j.ctx.Dest,
		Peer:       peer,
		Recipients: addresses(j.msg.Recipients()),
		Latency:    sinceMono(ev.Mono),
	}
	rec.MCP = journal.MCPOf(j.ctx.MCP)
	rec.Baseline = journal.BaselineOf(j.ctx.Baseline)
	if rec.Dest == "" && peer.IsValid() {
		rec.Dest = peer.String() // SMTP names no server: its peer is where it goes
	}
	for _, d := range done {
		if !slices.Contains(rec.Actions, d.Effect) {
			rec.Actions = append(rec.Actions, d.Effect)
		}
		if d.Detail != "" {
			rec.ActionDetails = append(rec.ActionDetails, d.String())
		}
	}
	if decision == judge.Allow {
		rec.Priority = policy.PriorityInfo
	}
	if err := a.opts.Verdicts.Log(rec); err != nil {
		a.log.Error("cannot log verdict", "err", err)
	}
	return blocked
}

func reason(v judge.Verdict) string {
	parts := make([]string, 0, len(v.Findings))
	for _, f := range v.Findings {
		parts = append(parts, strings.ReplaceAll(f.Rule, "_", " ")+" "+f.Value)
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), "; ")
}

func addresses(as []mail.Address) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.Addr)
	}
	return out
}

func sinceMono(mono uint64) time.Duration {
	now := probe.MonoNow()
	if now < mono {
		return 0
	}
	return time.Duration(now - mono)
}
