package probe

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/bpf/ssl"
)

// The hold guard. A process the sensor stopped waits for the agent; the
// agent may be stopped (a debugger, SIGSTOP), stuck (a wedged event
// loop), starved, or dead. The guard is a separate process, in a session
// of its own, that shares the hold and settings maps and reads a pipe
// whose write end only the agent holds. Every few milliseconds it resolves
// the holds whose deadline has passed, each by its fail mode; when the
// agent is gone (the pipe reaches end of file) it turns holding off and
// resolves every hold at once. Whoever deletes a hold record first owns
// its outcome: the agent's Release and the guard never both act on one.
//
// When the guard dies with the agent (a kill of the whole service cgroup),
// the hold map is pinned: "aarsm release-holds" (the unit's ExecStopPost)
// or the next agent resolves what is left.

// GuardFiles returns the files a guard process needs, in order: the hold
// map, the settings map, the map of its counters and the resolving map. The caller passes them to the guard (as
// ExtraFiles) and closes them.
func (s *Sensor) GuardFiles() ([]*os.File, error) {
	var files []*os.File
	for _, m := range []*ebpf.Map{s.objs.Holds, s.objs.Settings, s.objs.Resolved, s.objs.Resolving} {
		fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, f := range files {
				_ = f.Close()
			}
			return nil, fmt.Errorf("duplicate map descriptor: %w", err)
		}
		files = append(files, os.NewFile(uintptr(fd), "aarsm-map"))
	}
	return files, nil
}

// Outcome is how a hold was resolved without a verdict.
type Outcome string

// Outcomes.
const (
	Resumed Outcome = "resumed" // fail-open: the process went on, unjudged
	Killed  Outcome = "killed"  // fail-closed: the process was killed before its call ran
	Gone    Outcome = "gone"    // the thread had exited (or its id was reused): record dropped
	Judged  Outcome = "judged"  // the agent resolved it first
)

// Counter index of each outcome in the "resolved" map.
func (o Outcome) index() uint32 {
	switch o {
	case Resumed:
		return 0
	case Killed:
		return 1
	case Gone:
		return 2
	default: // Judged
		return 3
	}
}

// Resolved counts the holds the guard resolved, by outcome.
type Resolved struct {
	Resumed, Killed, Gone uint64
}

// Resolved returns the guard's counters.
func (s *Sensor) Resolved() (Resolved, error) {
	var r Resolved
	for i, dst := range []*uint64{&r.Resumed, &r.Killed, &r.Gone} {
		if err := s.objs.Resolved.Lookup(uint32(i), dst); err != nil {
			return r, fmt.Errorf("read guard counter %d: %w", i, err)
		}
	}
	return r, nil
}

// Resolver carries out the fail modes.
type Resolver struct {
	// Holds is the hold map.
	Holds *ebpf.Map
	// Counts, if set, is the "resolved" map, counted into.
	Counts *ebpf.Map
	// Resolving, if set, is the map of holds being resolved: this
	// resolver leaves its trace there while it acts, and ResolveAll
	// sweeps the traces of the resolvers in Sweep (gone, all of them).
	Resolving *ebpf.Map
	// Owner is this resolver (ownerGuard unless set).
	Owner uint32
	// Sweep are the resolvers whose traces ResolveAll acts on.
	Sweep []uint32
	// Kill ends a fail-closed process: destroy its sockets, then SIGKILL.
	// Default: SIGKILL only.
	Kill func(pid uint32) error
	// Proc is the procfs mount. Default /proc.
	Proc string
}

func (r *Resolver) procRoot() string {
	if r.Proc == "" {
		return "/proc"
	}
	return r.Proc
}

// Resolve ends hold h by its fail mode.
func (r *Resolver) Resolve(h Hold) (Outcome, error) {
	owner := r.Owner
	if owner == 0 {
		owner = ownerGuard
	}
	// The record first: it decides who owns the outcome.
	if _, owned, err := claim(r.Holds, r.Resolving, h.TID, owner); err != nil {
		return "", err
	} else if !owned {
		return Judged, nil
	}
	defer settle(r.Resolving, h.TID, owner)
	return r.act(h)
}

// act carries out the fail mode of a hold the resolver owns.
func (r *Resolver) act(h Hold) (Outcome, error) {
	same, err := sameThread(r.procRoot(), h.PID, h.TID, h.Start)
	if err != nil {
		return "", err
	}
	if !same {
		r.count(Gone)
		return Gone, nil
	}
	if h.FailClosed {
		kill := r.Kill
		if kill == nil {
			kill = func(pid uint32) error { return unix.Kill(int(pid), unix.SIGKILL) }
		}
		if err := kill(h.PID); err != nil && !errors.Is(err, unix.ESRCH) {
			return "", fmt.Errorf("kill pid %d: %w", h.PID, err)
		}
		r.count(Killed)
		return Killed, nil
	}
	if err := unix.Kill(int(h.PID), unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
		return "", fmt.Errorf("resume pid %d: %w", h.PID, err)
	}
	r.count(Resumed)
	return Resumed, nil
}

func (r *Resolver) count(o Outcome) {
	if r.Counts == nil {
		return
	}
	var v uint64
	k := o.index()
	_ = r.Counts.Lookup(k, &v)
	_ = r.Counts.Put(k, v+1)
}

// ResolveAll ends every hold by its fail mode (the agent is gone), calling
// report for each.
func (r *Resolver) ResolveAll(report func(Hold, Outcome)) error {
	holds, err := listHolds(r.Holds)
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, h := range holds {
		o, err := r.Resolve(h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if report != nil {
			report(h, o)
		}
	}
	errs = append(errs, r.sweep(report))
	return errors.Join(errs...)
}

// sweep acts on the holds that a resolver in r.Sweep took and may not
// have acted on (it is gone): by their fail mode, then drops the trace.
func (r *Resolver) sweep(report func(Hold, Outcome)) error {
	if r.Resolving == nil || len(r.Sweep) == 0 {
		return nil
	}
	type trace struct {
		key ssl.SensorResolvingKey
		h   Hold
	}
	var traces []trace
	var key ssl.SensorResolvingKey
	var v ssl.SensorHold
	it := r.Resolving.Iterate()
	for it.Next(&key, &v) {
		for _, o := range r.Sweep {
			if key.Owner == o {
				traces = append(traces, trace{key, holdOf(key.Tid, v)})
			}
		}
	}
	errs := []error{it.Err()}
	for _, tr := range traces {
		if err := r.Resolving.Delete(&tr.key); err != nil {
			continue // swept by someone else meanwhile
		}
		o, err := r.act(tr.h)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if report != nil {
			report(tr.h, o)
		}
	}
	return errors.Join(errs...)
}

// GuardOptions configure RunGuard.
type GuardOptions struct {
	Resolver
	// Settings is the settings map (holding is turned off through it
	// when the agent is gone).
	Settings *ebpf.Map
	// Agent reaches end of file when the agent is gone.
	Agent io.Reader
	// Tick is how often deadlines are checked. Default 10 ms.
	Tick time.Duration
	// Report is told of every hold resolved, and why ("deadline" or
	// "agent gone").
	Report func(h Hold, o Outcome, why string)
}

// GuardRetire, written to a guard's agent pipe, makes it leave without
// resolving anything: an agent replaced in place has started another.
const GuardRetire = 'q'

// RunGuard resolves every hold whose deadline passes, until the agent is
// gone (or retired by GuardRetire); then it turns holding off, resolves
// the rest, and returns.
func RunGuard(o GuardOptions) error {
	if o.Tick == 0 {
		o.Tick = 10 * time.Millisecond
	}
	gone, retired := make(chan struct{}), make(chan struct{})
	go func() {
		// EOF when the agent is gone; GuardRetire from a successor image
		// whose own guard watches the same holds.
		b := make([]byte, 1)
		for {
			n, err := o.Agent.Read(b)
			if n == 1 && b[0] == GuardRetire {
				close(retired)
				return
			}
			if err != nil {
				close(gone)
				return
			}
		}
	}()
	report := func(why string) func(Hold, Outcome) {
		return func(h Hold, out Outcome) {
			if o.Report != nil && out != Judged {
				o.Report(h, out, why)
			}
		}
	}
	tick := time.NewTicker(o.Tick)
	defer tick.Stop()
	for {
		select {
		case <-retired:
			return nil
		case <-gone:
			var errs []error
			if err := o.Settings.Put(uint32(0), &ssl.SensorConfig{CopyAll: 1}); err != nil {
				errs = append(errs, fmt.Errorf("turn holding off: %w", err))
			}
			// The agent's own unfinished resolutions too: it may have
			// died between taking a hold and acting on it.
			o.Sweep = []uint32{ownerAgent}
			errs = append(errs, o.ResolveAll(report("agent gone")))
			return errors.Join(errs...)
		case <-tick.C:
		}
		holds, err := listHolds(o.Holds)
		if err != nil {
			continue // next tick
		}
		now := MonoNow()
		for _, h := range holds {
			if now < h.Deadline {
				continue
			}
			if out, err := o.Resolve(h); err == nil {
				report("deadline")(h, out)
			}
		}
	}
}

// HoldsPin is the name of the pinned hold map in the pin directory.
const HoldsPin = "holds"

// OpenPinnedHolds opens the hold map an agent pinned in pinDir. It
// returns nil (and no error) when there is none.
func OpenPinnedHolds(pinDir string) (*ebpf.Map, error) {
	return openPinned(pinDir, HoldsPin)
}

func openPinned(pinDir, name string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, name), nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned map %s in %s: %w", name, pinDir, err)
	}
	return m, nil
}

// PinnedResolver returns a resolver of the holds an agent that is gone
// left pinned in pinDir, its own unfinished resolutions and its guard's
// included; nil when there is nothing pinned. Close it after use.
func PinnedResolver(pinDir string, kill func(uint32) error) (*Resolver, error) {
	holds, err := OpenPinnedHolds(pinDir)
	if err != nil || holds == nil {
		return nil, err
	}
	resolving, err := openPinned(pinDir, ssl.SensorMapResolving)
	if err != nil {
		_ = holds.Close()
		return nil, err
	}
	return &Resolver{Holds: holds, Resolving: resolving, Kill: kill, Owner: ownerSuccessor,
		Sweep: []uint32{ownerAgent, ownerGuard, ownerSuccessor}}, nil
}

// Close releases the maps of a resolver from PinnedResolver.
func (r *Resolver) Close() {
	_ = r.Holds.Close()
	if r.Resolving != nil {
		_ = r.Resolving.Close()
	}
}
