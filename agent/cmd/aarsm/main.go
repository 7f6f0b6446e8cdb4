// Command aarsm is the AI Agent Runtime Security Monitor: it reads what
// processes write into TLS, before encryption, and stops e-mail data from
// leaving the host against policy.
//
//	aarsm version
//	aarsm trace [-v] [--show-secrets] [--pid PID,...] [--comm NAME,...]
//	aarsm run --policy-dir DIR --log-format journal|json|auto
//	aarsm status [--json]
//	aarsm reload [--pid PID]
//	aarsm handover [--pid PID]
//	aarsm quarantine list|show ID|delete ID|lift CGROUP
//	aarsm baseline show [--json] [PACKAGE]|forget PACKAGE|learn [--for D] [PACKAGE]
//	aarsm policy check PATH...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/bpffs"
	"github.com/aarsm/aarsm/agent/internal/egress"
	"github.com/aarsm/aarsm/agent/internal/enforce"
	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/trace"
)

// version is set at link time: -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: aarsm COMMAND [OPTIONS]

Commands:
  version                 print the version
  trace                   show, live, what processes send over TLS (one line per HTTP request)
  run                     the agent: judge outgoing mail against policies and enforce them
  status                  ask the running agent what it does (probes, policies, counters)
  reload                  make the running agent reload its policies, and wait for the outcome
  quarantine              list, show and delete quarantined messages; lift a network quarantine
  baseline                show what each package was seen to do; forget a package; let it learn
  policy check PATH...    validate policy files or directories
  release-holds           resolve the holds a dead agent left (the unit's ExecStopPost)
  handover                replace the running agent by the installed binary, in place (postinst)

Run "aarsm COMMAND -h" for the options of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version", "-version":
		fmt.Fprintf(stdout, "aarsm %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	case "trace":
		return runTrace(args[1:], stdout, stderr)
	case "run":
		return runAgent(args[1:], stdout, stderr)
	case "status":
		return runStatus(args[1:], stdout, stderr)
	case "reload":
		return runReload(args[1:], stdout, stderr)
	case "policy":
		return runPolicy(args[1:], stdout, stderr)
	case "quarantine":
		return runQuarantine(args[1:], stdout, stderr)
	case "baseline":
		return runBaseline(args[1:], stdout, stderr)
	case "hold-guard": // started by "aarsm run"; not for people
		return runHoldGuard(stderr)
	case "release-holds":
		return runReleaseHolds(args[1:], stdout, stderr)
	case "handover":
		return runHandover(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "aarsm: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// listFlag collects comma-separated or repeated values.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func newLogger(w io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

func runTrace(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("aarsm trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	verbose := fs.Bool("v", false, "show headers, bodies and responses")
	debug := fs.Bool("debug", false, "log every file examined")
	showSecrets := fs.Bool("show-secrets", false, "WARNING: print credentials and secrets verbatim (Authorization, Cookie, API-key headers; API keys, tokens and passwords in targets, bodies and mails); without it they are shown as [redacted:WHAT NB]")
	withMCP := fs.Bool("mcp", false, "also show the MCP servers' tool calls (stdio, and streamable HTTP on loopback), and for each request the tool call it was made for")
	var pids, comms listFlag
	fs.Var(&pids, "pid", "only these process IDs (comma-separated or repeated)")
	fs.Var(&comms, "comm", "only these command names (comma-separated or repeated)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: aarsm trace [-v] [--mcp] [--show-secrets] [--pid PID,...] [--comm NAME,...]\n\n"+
			"Shows, live, every HTTP request that processes write into OpenSSL, read\n"+
			"before encryption: one line per request; with -v also headers, body and\n"+
			"responses. Needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN to read /proc).\n"+
			"Credentials and secrets are redacted ([redacted:WHAT NB]); --show-secrets\n"+
			"prints them verbatim: WARNING, the output then holds live credentials of\n"+
			"every traced process (keep it out of logs, tickets and terminals others see).\n\n")
		fs.PrintDefaults()
	}
	if !parseFlags(fs, args) {
		return 2
	}
	opts := trace.Options{Comms: comms, MCP: *withMCP}
	for _, p := range pids {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			fmt.Fprintf(stderr, "aarsm trace: --pid %q: not a process ID\n", p)
			return 2
		}
		opts.PIDs = append(opts.PIDs, uint32(n))
	}
	log := newLogger(stderr, *debug)
	opts.Sensor = probe.Options{Reads: *verbose, Logger: log}

	t, err := trace.Start(opts)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm trace: %v\n", err)
		return 1
	}
	defer t.Close()
	probed := 0
	for _, tg := range t.Sensor().Targets() {
		if tg.Probed() {
			probed++
		}
	}
	log.Info("tracing TLS writes; stop with Ctrl-C", "libraries", probed)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	var werr error
	err = t.Run(ctx, func(r trace.Record) {
		if werr == nil {
			werr = trace.FormatWith(stdout, r, trace.FormatOptions{Verbose: *verbose, ShowSecrets: *showSecrets})
			if werr != nil {
				cancel()
			}
		}
	})
	if err == nil && werr != nil && !errors.Is(werr, syscall.EPIPE) {
		err = fmt.Errorf("write output: %w", werr)
	}
	ps, ss, hs, _ := t.Stats()
	log.Info("trace stopped", "writes", ps.Writes, "reads", ps.Reads, "lost_events", ps.Lost,
		"truncated", ps.Truncated, "connections", ss.Opened, "retries_dropped", ss.Retries, "messages", hs.Messages)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm trace: %v\n", err)
		return 1
	}
	return 0
}

func runAgent(args []string, stdout, stderr io.Writer) int {
	imageStarted := time.Now()
	started := imageStarted
	fs := flag.NewFlagSet("aarsm run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	policyDir := fs.String("policy-dir", "/etc/aarsm/policy.d", "directory of *.hcl policies")
	format := journal.FormatAuto
	fs.Var(&format, "log-format", "verdict log: journal, json (stdout) or auto (journal when journald runs)")
	debugLog := fs.Bool("debug", false, "log every file examined")
	pinDir := fs.String("pin-dir", act.DefaultPinDir, "bpffs directory where the network quarantine and the hold map are pinned (survive restarts)")
	stateDir := fs.String("state-dir", act.DefaultStateDir, "state directory (network quarantine list, quarantined messages in quarantine/, kept across reboots)")
	withMCP := fs.Bool("mcp", true, "observe the stdio of processes that may be MCP servers (pipes or sockets on stdin and stdout), and the loopback connections of processes that listen on loopback (streamable HTTP): tool calls give the judge its MCP context; -mcp=false removes the program that runs at every system call's exit")
	purgeInterval := fs.Duration("purge-interval", time.Minute, "how often expired quarantined messages and network quarantines are purged (also at start, and at the soonest expiry)")
	vaultMax := fs.Int("quarantine-max-messages", vault.DefaultMaxEntries, "at most this many quarantined messages are kept; further ones are refused (logged)")
	vaultMaxBytes := fs.Int64("quarantine-max-bytes", vault.DefaultMaxBytes, "at most this many bytes of quarantined messages are kept; further ones are refused (logged)")
	statusSocket := fs.String("status-socket", status.DefaultSocket, `unix socket (mode 0600) that "aarsm status" asks; empty: none`)
	extras := addRunExtras(fs)
	tlsPorts := fs.String("tls-ports", "443", "TCP ports whose connections tell that a process does TLS: one that connects to them while no file it maps is probed is reported unmonitored (AARSM_UNMONITORED)")
	var holdCgroups listFlag
	fs.Var(&holdCgroups, "hold-cgroup", "narrow the policies' hold scope to these cgroup v2 directories (comma-separated or repeated)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: aarsm run [--policy-dir DIR] [--log-format journal|json|auto] [--hold-cgroup DIR]\n\n"+
			"The agent: holds every write that may carry mail, judges it against the\n"+
			"policies and blocks violations before a byte leaves. SIGHUP reloads the\n"+
			"policies (a broken policy is reported and the old one stays in force);\n"+
			"SIGTERM releases every held write and exits.\n\n"+
			"Under systemd (Type=notify) it speaks sd_notify: READY=1 once the policies\n"+
			"are loaded and every probe is attached, RELOADING=1 ... READY=1 around a\n"+
			"reload, and WATCHDOG=1 (WatchdogSec=) only while its event loop runs.\n"+
			"\"aarsm status\" reads its state from --status-socket.\n\n")
		fs.PrintDefaults()
	}
	if !parseFlags(fs, args) {
		return 2
	}
	ports, err := parseTLSPorts(*tlsPorts)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm run: %v\n", err)
		return 2
	}
	// Before anything can ask for a handover: SIGUSR2 would kill.
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	log := newLogger(stderr, *debugLog)
	ho, err := takeHandover()
	if err != nil {
		log.Error("starting afresh", "err", err)
	}
	if ho != nil {
		started = ho.Started
	}
	verdicts, err := journal.New(journal.Options{Format: format, Out: stdout})
	if err != nil {
		fmt.Fprintf(stderr, "aarsm run: %v\n", err)
		return 1
	}
	defer verdicts.Close()

	// One agent per pin directory: a second would resume and kill the
	// holds of the first.
	// Its state (quarantines, the last good policies) is the agent's alone.
	if err := os.MkdirAll(*stateDir, 0o700); err != nil {
		log.Warn("no state directory: quarantines and the last good policies are not kept", "err", err)
	} else if err := os.Chmod(*stateDir, 0o700); err != nil { //nolint:gosec // G302: a directory: 0700 is root-only
		log.Warn("cannot make the state directory root-only", "dir", *stateDir, "err", err)
	}
	var lock *os.File
	if ho != nil {
		lock = os.NewFile(uintptr(ho.Lock), "agent lock") // held still
	} else if lock, err = lockAgent(*pinDir, *stateDir); err != nil {
		fmt.Fprintf(stderr, "aarsm run: %v\n", err)
		return 1
	}
	defer lock.Close()
	sensorPins := *pinDir
	if err := bpffs.Ensure(*pinDir); err != nil {
		log.Error("cannot pin the hold map: if the agent and its guard are killed together, held processes stay stopped until resumed by hand (kill -CONT)", "err", err)
		sensorPins = ""
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	var adopted *probe.Handover
	if ho != nil {
		if adopted, err = probe.AdoptHandover(ho.Sensor); err != nil {
			log.Error("cannot take over the previous image's probes: starting afresh, its holds resolved by their fail mode", "err", err)
		}
	}
	exec := &act.Executor{}
	src := &statusSource{started: started, policyDir: *policyDir}
	if q, err := act.OpenQuarantine(act.QuarantineOptions{PinDir: *pinDir, StateDir: *stateDir}); err != nil {
		log.Warn("network quarantine unavailable", "err", err)
		src.qerr = err
	} else {
		defer q.Close()
		exec.Quarantine = q
		src.quarantine = q
	}
	var messages *vault.Writer
	if v, err := vault.Open(vaultDir(*stateDir), vault.Limits{MaxEntries: *vaultMax, MaxBytes: *vaultMaxBytes}); err != nil {
		log.Warn("message quarantine unavailable: blocked messages are not kept", "err", err)
		src.verr = err
	} else {
		messages = vault.NewWriter(v, log, 0)
		defer messages.Close() // after the agent: what it queued is written
		exec.Vault = messages
		src.vault = v
	}
	reportRecovered(log, exec.Quarantine, src.vault)
	housekeeping := &housekeeper{vault: src.vault, quarantine: exec.Quarantine, interval: max(*purgeInterval, minHousekeeping), log: log}
	housekeeping.start()
	defer housekeeping.Stop()
	if conn, err := act.DialSystemd(ctx, act.SystemBus); err != nil {
		log.Warn("systemd unavailable: units will not be stopped", "err", err)
	} else {
		defer conn.Close()
		exec.Systemd = conn
	}
	// The egress policies: their programs are attached before the
	// policies load (enforce.New applies them).
	egressEnf, err := egress.Open(egress.Options{Logger: log, Journal: verdicts})
	if err != nil {
		log.Warn("egress policies unavailable: egress_policy blocks are not enforced", "err", err)
		src.eerr = err
	} else {
		defer egressEnf.Close()
		src.egress = egressEnf
	}
	var narrow []string
	for _, dir := range holdCgroups {
		if _, err := cgroupID(dir); err != nil {
			fmt.Fprintf(stderr, "aarsm run: --hold-cgroup %q: %v\n", dir, err)
			return 2
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			fmt.Fprintf(stderr, "aarsm run: --hold-cgroup %q: %v\n", dir, err)
			return 2
		}
		narrow = append(narrow, abs)
	}
	// The policies are loaded, and every OpenSSL on the host and in the
	// running processes probed, before New returns.
	agent, err := enforce.New(enforce.Options{
		HoldCgroups: narrow,
		PolicyDir:   *policyDir,
		StateDir:    *stateDir,
		Verdicts:    verdicts,
		Logger:      log,
		Executor:    exec,
		DiagOut:     stderr,
		Sensor:      probe.Options{PinDir: sensorPins, Handover: adopted, TLSPorts: ports},
		Fault:       os.Getenv("AARSM_TEST_FAULT"),
		NoMCP:       !*withMCP,
		Egress:      egressApplier(egressEnf),
	})
	if err != nil {
		fmt.Fprintf(stderr, "aarsm run: %v\n", err)
		return 1
	}
	defer agent.Close()
	src.agent = agent
	if err := checkProbes(agent.Sensor().Targets()); err != nil {
		fmt.Fprintf(stderr, "aarsm run: %v\n", err)
		return 1
	}
	guard, err := startHoldGuard(agent.Sensor(), log, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm run: %v\n", err)
		return 1
	}
	defer guard.stop()
	if ho != nil {
		retireGuard(ho, log)
		src.handovers = ho.Handovers + 1
	}
	var srv *status.Server
	if *statusSocket != "" {
		// Enforcement matters more than the report: the agent runs on
		// without it.
		if srv, err = listenStatus(*statusSocket, *extras.statusGroup, src.report); err != nil {
			log.Warn("no status socket: aarsm status will not answer", "err", err)
		} else {
			defer srv.Close()
			src.srv.Store(srv)
		}
	}
	metrics := startMetrics(*extras.metricsFile, *extras.metricsInterval, src.report, log)
	defer metrics.Stop()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			reload(agent, log)
			src.reloads.Add(1) // after the outcome is stored: see aarsm reload
		}
	}()
	if egressEnf != nil {
		egressCtx, stopEgress := context.WithCancel(ctx)
		egressDone := make(chan struct{})
		go func() {
			defer close(egressDone)
			if err := egressEnf.Run(egressCtx); err != nil {
				log.Error("egress events: stopped", "err", err)
			}
		}()
		defer func() { stopEgress(); <-egressDone }()
	}
	startWatchdog(ctx, agent, log)
	ps, _ := agent.Policies()
	notify(fmt.Sprintf("%s\nSTATUS=enforcing %d policies", daemon.SdNotifyReady, len(ps.Set.Policies)))
	if ho != nil {
		log.Info("enforcing, handed over in place", "from_version", ho.From, "version", version, "policy_dir", *policyDir,
			"probes", len(agent.Sensor().Targets()), "ready_after", time.Since(imageStarted).Round(time.Millisecond).String())
	} else {
		log.Info("enforcing", "policy_dir", *policyDir, "verdicts", verdicts.Format().String(),
			"probes", len(agent.Sensor().Targets()), "ready_after", time.Since(started).Round(time.Millisecond).String())
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	var handingOver atomic.Bool
	go func() {
		select {
		case <-usr2:
			handingOver.Store(true)
			agent.KeepHolds()
			stopRun()
		case <-runCtx.Done():
		}
	}()
	err = agent.Run(runCtx)
	if err == nil && handingOver.Load() && ctx.Err() != nil {
		// Told to stop meanwhile: a new image would miss it.
		log.Warn("stop requested during the handover: stopping instead")
	} else if err == nil && handingOver.Load() {
		// The new image does not inherit goroutines.
		housekeeping.Stop()
		metrics.Stop()
		if messages != nil {
			messages.Close()
		}
		gpid, gpipe := guard.handOff()
		if srv != nil {
			_ = srv.Close() // the new image listens again
		}
		err = handOver(agent, handoverState{Lock: int(lock.Fd()), GuardPID: gpid, GuardPipe: gpipe,
			Started: started, Handovers: src.handovers, From: version}, log)
		// Only on failure: stop; the held writes are released (Close)
		// and the service manager starts the agent again.
		err = fmt.Errorf("hand over to the installed binary: %w", err)
	}
	notify(daemon.SdNotifyStopping)
	st := agent.Stats()
	log.Info("agent stopped", "judged", st.Judged, "blocked", st.Blocked, "alerted", st.Alerted, "released", st.Released)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm run: %v\n", err)
		return 1
	}
	return 0
}

// cgroupID returns the id of a cgroup v2 directory: its inode number.
func cgroupID(dir string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup: %w", err)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err != nil {
		return 0, fmt.Errorf("statfs cgroup: %w", err)
	}
	const cgroup2Magic = 0x63677270
	if fs.Type != cgroup2Magic {
		return 0, fmt.Errorf("%s is not a cgroup v2 directory", dir)
	}
	return st.Ino, nil
}

// parseFlags parses the flags of a subcommand that takes no arguments,
// reporting errors on the flag set's output (the command's stderr).
func parseFlags(fs *flag.FlagSet, args []string) bool {
	if err := fs.Parse(args); err != nil {
		return false
	}
	if fs.NArg() > 0 {
		_, _ = fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return false
	}
	return true
}

// egressApplier is e as enforce's EgressApplier; nil (no interface value
// holding a nil pointer) when e is nil.
func egressApplier(e *egress.Enforcer) enforce.EgressApplier {
	if e == nil {
		return nil
	}
	return e
}
