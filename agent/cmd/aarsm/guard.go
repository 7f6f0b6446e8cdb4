package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/bpffs"
	"github.com/aarsm/aarsm/agent/internal/probe"
)

// holdGuard is the guard process of a running agent (see probe.RunGuard),
// restarted if it dies while the agent runs.
type holdGuard struct {
	sensor *probe.Sensor
	log    *slog.Logger
	stderr io.Writer

	mu      sync.Mutex
	cmd     *exec.Cmd
	pipe    *os.File // write end: open as long as the agent lives
	stopped bool
	exited  chan struct{}
}

// startHoldGuard starts "aarsm hold-guard" with the sensor's hold maps and
// the read end of a pipe only this process writes to.
func startHoldGuard(s *probe.Sensor, log *slog.Logger, stderr io.Writer) (*holdGuard, error) {
	g := &holdGuard{sensor: s, log: log, stderr: stderr}
	if err := g.start(); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *holdGuard) start() error {
	files, err := g.sensor.GuardFiles()
	if err != nil {
		return fmt.Errorf("start hold guard: %w", err)
	}
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start hold guard: %w", err)
	}
	defer r.Close()
	self, err := os.Executable()
	if err != nil {
		_ = w.Close()
		return fmt.Errorf("start hold guard: %w", err)
	}
	cmd := exec.Command(self, "hold-guard")          //nolint:gosec // G204: the agent's own binary (/proc/self/exe)
	cmd.ExtraFiles = append([]*os.File{r}, files...) // fds 3 (pipe), 4 (holds), 5 (settings), 6 (counters), 7 (resolving)
	cmd.Stderr = g.stderr
	// A session of its own: a kill of the agent's process group (a
	// Ctrl-C, "kill -- -PGID") does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		_ = w.Close()
		return fmt.Errorf("start hold guard: %w", err)
	}
	if err := g.sensor.SetGuardPID(uint32(cmd.Process.Pid)); err != nil {
		g.log.Warn("cannot tell the kernel the guard's pid", "err", err)
	}
	exited := make(chan struct{})
	g.mu.Lock()
	g.cmd, g.pipe, g.exited = cmd, w, exited
	g.mu.Unlock()
	go g.watch(cmd, w, exited)
	return nil
}

// watch restarts the guard if it dies while the agent runs.
func (g *holdGuard) watch(cmd *exec.Cmd, pipe *os.File, exited chan struct{}) {
	err := cmd.Wait()
	close(exited)
	g.mu.Lock()
	stopped := g.stopped
	g.mu.Unlock()
	if stopped {
		return
	}
	_ = pipe.Close()
	g.log.Error("the hold guard died; starting a new one", "pid", cmd.Process.Pid, "err", err)
	for {
		if err := g.start(); err == nil {
			return
		} else {
			g.log.Error("cannot restart the hold guard", "err", err)
		}
		time.Sleep(100 * time.Millisecond)
		g.mu.Lock()
		stopped := g.stopped
		g.mu.Unlock()
		if stopped {
			return
		}
	}
}

// handOff leaves the guard to a successor image: it is not restarted, and
// its pipe is to stay open across exec. It returns the guard's pid and the
// pipe's descriptor.
func (g *holdGuard) handOff() (pid, pipe int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	return g.cmd.Process.Pid, int(g.pipe.Fd())
}

// stop tells the guard the agent is gone (after it released everything)
// and waits for it.
func (g *holdGuard) stop() {
	g.mu.Lock()
	g.stopped = true
	pipe, exited := g.pipe, g.exited
	g.mu.Unlock()
	_ = pipe.Close()
	<-exited
}

// guardKill ends a fail-closed process: SIGKILL at once (it is stopped:
// its held call never runs), then its sockets, reset while it dies. The
// kill first: the hold record is gone already, and a guard killed in
// between (with the whole service) must not leave the process stopped
// with nothing left to find it.
func guardKill(pid uint32) error {
	if err := unix.Kill(int(pid), unix.SIGKILL); err != nil {
		return err
	}
	if _, err := act.DestroySockets(pid); err != nil && !errors.Is(err, act.ErrGone) {
		return fmt.Errorf("killed, but its sockets: %w", err)
	}
	return nil
}

// reportHold logs a hold resolved without a verdict.
func reportHold(log *slog.Logger, h probe.Hold, o probe.Outcome, why string) {
	comm := "?"
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", h.PID)); err == nil {
		comm = string(b[:max(len(b)-1, 0)])
	}
	held := time.Duration(0)
	if now := probe.MonoNow(); now > h.Mono {
		held = time.Duration(now - h.Mono)
	}
	mode := "fail_open"
	if h.FailClosed {
		mode = "fail_closed"
	}
	msg := "hold resolved unjudged"
	switch o {
	case probe.Resumed:
		msg = "held process resumed unjudged (fail_open)"
	case probe.Killed:
		msg = "held process killed unjudged (fail_closed): nothing of its call left"
	case probe.Gone:
		msg = "hold of a thread that is gone dropped"
	}
	log.Warn(msg, "why", why, "pid", h.PID, "tid", h.TID, "comm", comm, "kind", h.Kind.String(), "mode", mode,
		"held_for", held.Round(time.Millisecond).String(), "foreign_sigcont", h.Foreign)
}

func runHoldGuard(stderr io.Writer) int {
	// A service manager stopping the agent signals the whole cgroup: the
	// guard leaves only once the agent is gone and the holds are resolved.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	log := newLogger(stderr, false).With("component", "hold-guard")
	maps := make([]*ebpf.Map, 4)
	for i := range maps {
		m, err := ebpf.NewMapFromFD(4 + i)
		if err != nil {
			fmt.Fprintf(stderr, "aarsm hold-guard: open map %d: %v\n", i, err)
			return 1
		}
		defer m.Close() //nolint:revive,errcheck // defer in a loop, its error of no use: the four maps are held until the guard exits
		maps[i] = m
	}
	err := probe.RunGuard(probe.GuardOptions{
		Resolver: probe.Resolver{Holds: maps[0], Counts: maps[2], Resolving: maps[3], Kill: guardKill},
		Settings: maps[1],
		Agent:    os.NewFile(3, "agent"),
		Report:   func(h probe.Hold, o probe.Outcome, why string) { reportHold(log, h, o, why) },
	})
	if err != nil {
		fmt.Fprintf(stderr, "aarsm hold-guard: %v\n", err)
		return 1
	}
	return 0
}

// runReleaseHolds resolves, by their fail mode, the holds an agent left in
// its pinned hold map: the unit's ExecStopPost, after the whole service
// (agent and guard) is gone, however it died.
func runReleaseHolds(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("aarsm release-holds", flag.ContinueOnError)
	fs.SetOutput(stderr)
	pinDir := fs.String("pin-dir", act.DefaultPinDir, "the agent's bpffs pin directory")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: aarsm release-holds [--pin-dir DIR]\n\n"+
			"Resolves every process an agent that is gone left held: fail-open ones\n"+
			"resume, fail-closed ones are killed. The systemd unit runs it after the\n"+
			"agent stopped, however it stopped. Refused while an agent runs.\n\n")
		fs.PrintDefaults()
	}
	if !parseFlags(fs, args) {
		return 2
	}
	lock, err := lockAgent(*pinDir, "")
	if err != nil {
		fmt.Fprintf(stderr, "aarsm release-holds: %v\n", err)
		return 1
	}
	defer lock.Close()
	r, err := probe.PinnedResolver(*pinDir, guardKill)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm release-holds: %v\n", err)
		return 1
	}
	if r == nil {
		return 0
	}
	defer r.Close()
	log := newLogger(stderr, false)
	n := 0
	err = r.ResolveAll(func(h probe.Hold, o probe.Outcome) {
		n++
		reportHold(log, h, o, "agent gone")
	})
	fmt.Fprintf(stdout, "%d hold(s) resolved\n", n)
	if err != nil {
		fmt.Fprintf(stderr, "aarsm release-holds: %v\n", err)
		return 1
	}
	return 0
}

// lockAgent takes the lock that keeps a second agent (or release-holds)
// off a pin directory another agent uses: two agents would resume and
// kill each other's holds. The lock is the pin directory itself (flock),
// or, when that cannot be made, the file agent.lock in fallback (the
// state directory).
func lockAgent(pinDir, fallback string) (*os.File, error) {
	path := pinDir
	if err := bpffs.Ensure(pinDir); err != nil {
		if fallback == "" {
			return nil, err
		}
		if err := os.MkdirAll(fallback, 0o700); err != nil {
			return nil, fmt.Errorf("lock: %w", err)
		}
		path = filepath.Join(fallback, "agent.lock")
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil && errors.Is(err, unix.EISDIR) {
		f, err = os.Open(path)
	}
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("another aarsm agent is running (it holds %s): only one may hold processes on a host", path)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
