package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/egress"
	"github.com/aarsm/aarsm/agent/internal/enforce"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/status"
)

// The service protocol of "aarsm run" (sd_notify, Type=notify): READY=1
// once the policies are loaded and the probes attached; RELOADING=1 and
// READY=1 around a SIGHUP reload; WATCHDOG=1 only while the event loop goes
// round.

// notify sends one sd_notify message; outside systemd (no NOTIFY_SOCKET) it
// does nothing.
func notify(state string) {
	_, _ = daemon.SdNotify(false, state)
}

// reloadingState is RELOADING=1 with the time systemd 253 and later want
// beside it (older ones ignore the field).
func reloadingState() string {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return fmt.Sprintf("%s\nMONOTONIC_USEC=%d", daemon.SdNotifyReloading, ts.Nano()/1000)
}

// reload reloads the policies between RELOADING=1 and READY=1; a broken
// policy is logged and the previous policies stay.
func reload(agent *enforce.Agent, log *slog.Logger) {
	notify(reloadingState())
	if err := agent.Reload(); err != nil {
		log.Error("reload failed; the previous policies stay in force", "err", err)
		notify(daemon.SdNotifyReady + "\nSTATUS=reload failed; the previous policies stay in force (see the log)")
		return
	}
	st, _ := agent.Policies()
	notify(fmt.Sprintf("%s\nSTATUS=enforcing %d policies", daemon.SdNotifyReady, len(st.Set.Policies)))
}

// watchdog pings the service manager on every tick, but only while the
// event loop's heartbeat is younger than maxAge: a loop stuck in a handler
// stops the pings, and systemd restarts the agent.
func watchdog(ctx context.Context, ticks <-chan time.Time, maxAge time.Duration, heartbeat func() time.Time, ping func(), log *slog.Logger) {
	stale := false
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticks:
			age := now.Sub(heartbeat())
			if age > maxAge {
				if !stale {
					log.Error("event loop stuck; no watchdog ping", "since", age.Round(time.Millisecond).String())
				}
				stale = true
				continue
			}
			stale = false
			ping()
		}
	}
}

// startWatchdog runs watchdog if systemd asked for one (WATCHDOG_USEC):
// ticks at a quarter of the period, a heartbeat older than half of it
// counts as stuck.
func startWatchdog(ctx context.Context, agent *enforce.Agent, log *slog.Logger) {
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil || wd <= 0 {
		return
	}
	t := time.NewTicker(wd / 4)
	go func() {
		defer t.Stop()
		watchdog(ctx, t.C, wd/2, agent.Heartbeat, func() { notify(daemon.SdNotifyWatchdog) }, log)
	}()
}

// checkProbes fails when not a single file could be probed and permission
// was what stopped it: an agent that sees nothing must not report itself
// ready. (A uprobe takes CAP_SYS_ADMIN since CVE-2025-38466 was fixed:
// CAP_PERFMON alone gets EACCES for every attach.)
func checkProbes(targets []probe.Target) error {
	var denied error
	for _, t := range targets {
		if t.Probed() {
			return nil
		}
		// Name a file by its own path rather than through /proc if there
		// is one.
		if errors.Is(t.Err, os.ErrPermission) && (denied == nil || !strings.Contains(t.Path, "/map_files/")) {
			denied = fmt.Errorf("%s: %w", t.Path, t.Err)
		}
	}
	if denied != nil {
		return fmt.Errorf("no TLS library could be probed (uprobes need CAP_SYS_ADMIN on kernels with the CVE-2025-38466 fix, besides CAP_BPF and CAP_PERFMON): %w", denied)
	}
	return nil
}

// statusSource gathers a status.Report from the running agent; every part
// is safe to read while the agent runs.
type statusSource struct {
	started    time.Time
	policyDir  string
	agent      *enforce.Agent
	quarantine *act.Quarantine
	qerr       error // why there is no quarantine
	vault      *vault.Vault
	verr       error // why there is no vault
	egress     *egress.Enforcer
	eerr       error // why there is no egress enforcer
	reloads    atomic.Uint64
	handovers  uint64 // in-place replacements since started
	srv        atomic.Pointer[status.Server]
}

func (s *statusSource) report() status.Report {
	now := time.Now()
	r := status.Report{
		Version:             version,
		PID:                 os.Getpid(),
		Started:             s.started,
		UptimeSeconds:       now.Sub(s.started).Seconds(),
		PolicyDir:           s.policyDir,
		Probes:              []status.Probe{},
		Policies:            []status.Policy{},
		Quarantines:         []status.Quarantine{},
		QuarantinedMessages: []status.QuarantinedMessage{},
		MCPServers:          []status.MCPServer{},
		Reloads:             s.reloads.Load(),
		CanHandOver:         true,
		Handovers:           s.handovers,
	}
	ps, fail := s.agent.Policies()
	r.PoliciesLoaded = ps.Loaded
	for _, p := range ps.Set.Policies {
		r.Policies = append(r.Policies, status.Policy{Name: p.Name, Mode: string(p.Mode), File: p.DeclRange.Filename})
	}
	if fail != nil {
		r.ReloadError = &status.ReloadError{At: fail.At, Error: fail.Err.Error()}
	}
	sensor := s.agent.Sensor()
	for _, t := range sensor.Targets() {
		p := status.Probe{Path: t.Path, Symbols: t.Symbols}
		if t.Err != nil {
			p.Error = t.Err.Error()
		}
		r.Probes = append(r.Probes, p)
	}
	if st, err := sensor.Stats(); err == nil {
		r.Events = status.Events{
			Seen: st.Events, Lost: st.Lost, Writes: st.Writes, Truncated: st.Truncated,
			Holds: st.Holds, FileHolds: st.FileHolds, GuardKills: st.GuardKills,
			Malformed: st.Malformed, DiscoveryDrops: st.DiscoveryDrops,
			StaleSkips: st.Stale, HoldMapFull: st.HoldMapFull, FailKills: st.FailKills,
			ForeignConts: st.ForeignConts, HeldExits: st.HeldExits, Predecessor: st.Predecessor,
		}
		r.Stdio.Copied = st.Stdio
		r.MCPHTTP.Copied = st.Sock
	}
	if progs, err := sensor.ProgramStats(); err == nil {
		for _, p := range progs {
			r.Programs = append(r.Programs, status.Program{Name: p.Name, Missed: p.Missed})
		}
	}
	if srv := s.srv.Load(); srv != nil {
		r.StatusRefused = srv.Refused()
	}
	if res, err := sensor.Resolved(); err == nil {
		r.Events.DeadlineResumed, r.Events.DeadlineKilled, r.Events.DeadlineGone = res.Resumed, res.Killed, res.Gone
	}
	for _, m := range s.agent.MCPServers() {
		r.MCPServers = append(r.MCPServers, status.MCPServer{PID: int(m.PID), Name: m.Name, Version: m.Version,
			Package: m.Package, Hash: m.Hash, Client: m.Client, Calls: m.Calls, LastTool: m.LastTool, LastCall: m.LastCall, Transport: m.Transport})
	}
	r.Unmonitored = []status.Unmonitored{}
	for _, u := range s.agent.Unmonitored() {
		r.Unmonitored = append(r.Unmonitored, status.Unmonitored{PID: int(u.PID), Exe: u.Exe, Stack: u.Stack, Reason: u.Reason, FirstSeen: u.First})
	}
	pl := s.agent.PipelineStats()
	r.Pipeline = status.Pipeline{ConnsOpen: pl.Stream.Open, ConnsOpened: pl.Stream.Opened, ConnsEvicted: pl.Stream.Evicted,
		RetriesDropped: pl.Stream.Retries, LostBytes: pl.Stream.LostBytes, Messages: pl.Parse.Messages,
		JunkBytes: pl.Parse.JunkBytes, Malformed: pl.Parse.Malformed, IgnoredStreams: pl.Parse.IgnoredStreams}
	sd := s.agent.StdioStats()
	r.Stdio.Watched, r.Stdio.GivenUp, r.Stdio.Messages = sd.Watched, sd.GivenUp, sd.Messages
	r.Stdio.Malformed, r.Stdio.Oversize = sd.Malformed, sd.Oversize
	hd := sd.HTTP
	r.MCPHTTP.Watched, r.MCPHTTP.Conns, r.MCPHTTP.ConnsGivenUp, r.MCPHTTP.GivenUp = hd.Watched, hd.Conns, hd.ConnsGivenUp, hd.GivenUp
	r.MCPHTTP.Messages, r.MCPHTTP.Skipped = hd.Messages, hd.Malformed+hd.Oversize
	hs := s.agent.HoldScope()
	r.HoldScope = status.HoldScope{
		EveryProcess: hs.All, Cgroups: hs.Cgroups, Widened: hs.Widened, Narrowed: hs.Narrowed,
		NewCgroups: hs.NewCgroups, FailClosed: hs.FailClosed, EnforcingPolicies: hs.Enforcing, CopyAll: hs.CopyAll,
	}
	if r.HoldScope.Cgroups == nil {
		r.HoldScope.Cgroups = []string{}
	}
	if holds, err := sensor.Holds(); err == nil {
		r.Events.HeldNow = len(holds)
	}
	r.LoopAgeSeconds = now.Sub(s.agent.Heartbeat()).Seconds()
	ss := s.agent.State()
	r.State = status.State{Connections: ss.Connections, Processes: ss.Processes}
	st := s.agent.Stats()
	r.Verdicts = status.Verdicts{Judged: st.Judged, Blocked: st.Blocked, Leaked: st.Leaked, Alerted: st.Alerted, Released: st.Released, ActionErrors: st.ActionErrors, Expired: st.Expired}
	switch {
	case s.quarantine == nil && s.qerr != nil:
		r.QuarantineError = s.qerr.Error()
	case s.quarantine != nil:
		entries, err := s.quarantine.List()
		if err != nil {
			r.QuarantineError = err.Error()
		}
		for _, e := range entries {
			if e.Until.IsZero() || e.Until.After(now) {
				r.Quarantines = append(r.Quarantines, status.Quarantine{CgroupID: e.CgroupID, Cgroup: e.Cgroup, Until: e.Until})
			}
		}
	}
	switch {
	case s.vault == nil && s.verr != nil:
		r.VaultError = s.verr.Error()
	case s.vault != nil:
		ms, err := quarantinedMessages(s.vault, now)
		if err != nil {
			r.VaultError = err.Error()
		}
		r.QuarantinedMessages = ms
	}
	r.Egress, r.EgressError = egressReport(s.egress, s.eerr)
	return r
}

// egressReport is the egress part of the status report.
func egressReport(e *egress.Enforcer, why error) (*status.Egress, string) {
	if e == nil {
		if why != nil {
			return nil, why.Error()
		}
		return nil, ""
	}
	st, err := e.Status()
	out := &status.Egress{Attached: st.Attached, Policies: []status.EgressPolicy{}, Counters: []status.EgressCounters{},
		Lost: st.Lost, Journaled: st.Journaled, JournalErrors: st.JournalErrors, Deduped: st.Deduped}
	for _, p := range st.Policies {
		sp := status.EgressPolicy{Name: p.Name, Mode: p.Mode, Cgroups: p.Cgroups, Executables: p.Executables, Hosts: []status.EgressHost{}}
		if sp.Cgroups == nil {
			sp.Cgroups = []string{}
		}
		if sp.Executables == nil {
			sp.Executables = []string{}
		}
		for _, h := range p.Hosts {
			sh := status.EgressHost{Name: h.Name, Addrs: []string{}, Error: h.Error}
			for _, a := range h.Addrs {
				sh.Addrs = append(sh.Addrs, a.String())
			}
			sp.Hosts = append(sp.Hosts, sh)
		}
		out.Policies = append(out.Policies, sp)
	}
	for _, c := range st.Counters {
		out.Counters = append(out.Counters, status.EgressCounters{Hook: c.Hook, Allowed: c.Allowed, Blocked: c.Blocked, Reported: c.Reported})
	}
	if err != nil {
		return out, err.Error()
	}
	return out, ""
}

// Exit status of "aarsm status" when no agent answers (as for LSB init
// scripts' "status": program is not running).
const exitNotRunning = 3

// signalAgent sends sig to the agent answering on socket (refused if pid
// is given and it is another, or if check says no) and polls its status
// until done reports the outcome, or timeout. An error wrapping
// status.ErrNotRunning means nothing was sent.
func signalAgent(socket string, pid int, timeout time.Duration, sig syscall.Signal, check func(status.Report) error,
	done func(before, now status.Report, err error) (bool, error)) (before, now status.Report, err error) {
	before, err = status.Query(socket, timeout)
	if err != nil {
		return before, now, err
	}
	if pid != 0 && before.PID != pid {
		return before, now, fmt.Errorf("the agent on %s is pid %d, not %d: %w", socket, before.PID, pid, status.ErrNotRunning)
	}
	if check != nil {
		if err := check(before); err != nil {
			return before, now, fmt.Errorf("%w: %w", err, status.ErrNotRunning)
		}
	}
	if err := syscall.Kill(before.PID, sig); err != nil {
		return before, now, fmt.Errorf("signal the agent (pid %d): %w", before.PID, err)
	}
	deadline := time.Now().Add(timeout)
	for {
		now, err = status.Query(socket, time.Second)
		if err == nil && now.PID != before.PID {
			return before, now, fmt.Errorf("another agent (pid %d) answers on %s", now.PID, socket)
		}
		if finished, err := done(before, now, err); finished || err != nil {
			return before, now, err
		}
		if time.Now().After(deadline) {
			return before, now, fmt.Errorf("no outcome within %s", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("aarsm status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("status-socket", status.DefaultSocket, "the running agent's status socket")
	asJSON := fs.Bool("json", false, "print the report as JSON (for scripts)")
	asProm := fs.Bool("prometheus", false, "print the counters in the Prometheus text format (what --metrics-textfile writes)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up when the agent does not answer within this time")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: aarsm status [--json|--prometheus] [--status-socket PATH]\n\n"+
			"Asks the running agent (aarsm run) over its root-only unix socket what it\n"+
			"is doing: probes attached, policies loaded, events seen and lost, holds,\n"+
			"verdicts, network quarantines in force, quarantined messages, uptime.\n"+
			"Exits %d when no agent answers.\n\n", exitNotRunning)
		fs.PrintDefaults()
	}
	if !parseFlags(fs, args) {
		return 2
	}
	r, err := status.Query(*socket, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm status: %v\n", err)
		if errors.Is(err, status.ErrNotRunning) {
			return exitNotRunning
		}
		return 1
	}
	if *asProm {
		err = status.WritePrometheus(stdout, r)
	} else if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(r)
	} else {
		err = status.Format(stdout, r)
	}
	if err != nil {
		fmt.Fprintf(stderr, "aarsm status: %v\n", err)
		return 1
	}
	return 0
}

func runReload(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("aarsm reload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("status-socket", status.DefaultSocket, "the running agent's status socket")
	pid := fs.Int("pid", 0, "the agent's process ID (ExecReload: $MAINPID); refused if the agent on the socket is another")
	timeout := fs.Duration("timeout", 90*time.Second, "give up when the reload has not finished within this time")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: aarsm reload [--pid PID] [--status-socket PATH]\n\n"+
			"Sends SIGHUP to the running agent and waits, over its status socket,\n"+
			"until it has reloaded its policies: exit 0 when the new policies are in\n"+
			"force, 1 with the diagnostics when the agent kept the old ones, %d when\n"+
			"no agent answers. (systemd 252 does not wait for RELOADING=1/READY=1\n"+
			"after kill -HUP; this makes \"systemctl reload\" synchronous.)\n\n", exitNotRunning)
		fs.PrintDefaults()
	}
	if !parseFlags(fs, args) {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "aarsm reload: %v\n", err)
		if errors.Is(err, status.ErrNotRunning) {
			return exitNotRunning
		}
		return 1
	}
	_, r, err := signalAgent(*socket, *pid, *timeout, syscall.SIGHUP, nil, func(before, r status.Report, err error) (bool, error) {
		switch {
		case err != nil:
			return true, fmt.Errorf("the agent went away during the reload: %w", err)
		case r.Reloads > before.Reloads && r.ReloadError != nil:
			return true, fmt.Errorf("the agent kept its policies: %s", r.ReloadError.Error)
		}
		return r.Reloads > before.Reloads, nil
	})
	if err != nil {
		return fail(err)
	}
	fmt.Fprintf(stdout, "reloaded: %d policies from %s\n", len(r.Policies), r.PolicyDir)
	return 0
}
