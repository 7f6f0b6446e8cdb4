// Package probe is the first stage of the pipeline: it loads the eBPF "ssl"
// sensor, attaches it to every OpenSSL on the host (shared libssl, and
// executables such as node that carry OpenSSL and export its functions) and
// to Go's crypto/tls in every Go executable (gotls.go), follows new processes and libraries, and delivers the plaintext events.
package probe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/bpffs"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/bpf/ssl"
)

// Options configure a Sensor. The zero value is usable.
type Options struct {
	// Holds prepares the sensor for holding (SetHolds): the agent's event
	// loop then writes its heartbeat for the kernel to see.
	Holds bool
	// WriteGuard attaches, after each write probe, the guard probe that
	// kills a held thread resumed by someone else before its write runs
	// (what a fail-closed policy promises). It costs a second probe hit
	// per write, so only an agent with a fail-closed policy attaches it.
	WriteGuard bool
	// PinDir, if set, is a bpffs directory where the hold map is pinned:
	// holds outlive an agent killed with its guard, for "aarsm
	// release-holds" or the next agent to resolve.
	PinDir string
	// Stdio attaches the program that copies the stdin reads and stdout
	// writes of the processes named by WatchStdio (MCP servers): it runs
	// at the exit of every system call of the host (BenchmarkStdioCost).
	// With it, the loopback socket calls of the processes that listen on
	// loopback (WatchHTTP: MCP over streamable HTTP) are copied too.
	Stdio bool
	// NoHTTP leaves the loopback socket calls out (the stdio program is
	// then what it was without them: BenchmarkStdioCost's baseline).
	NoHTTP bool
	// Reads also probes SSL_read and SSL_read_ex so that responses are seen.
	// It costs a return probe per read; the enforcing agent does not need it.
	Reads bool
	// RingBytes is the size of the ring buffer (a power of two, at least a
	// page). Default 4 MiB: double-mapped, it counts twice in the resident set.
	RingBytes int
	// WakeupBytes: the reader is woken once this much data waits in the
	// ring; below it, events are drained every Poll. 0 means RingBytes/4.
	// Negative wakes the reader for every event.
	WakeupBytes int
	// Poll is how often the reader drains the ring when not woken. Default 5ms.
	Poll time.Duration
	// LibraryDirs are searched (recursively, a few levels deep) for
	// libssl.so* at start. Default: the usual system library directories.
	LibraryDirs []string
	// Logger receives operational messages. Default: slog.Default().
	Logger *slog.Logger
	// Proc is the procfs to read. Default /proc.
	Proc proc.FS
	// Handover, if set, is the sensor of the agent image this one
	// replaces in place (AdoptHandover): this sensor takes over from it
	// when Run starts.
	Handover *Handover
	// OnAttach, if set, is called (from the discovery goroutine) after a
	// file has been examined and, if it has TLS functions, probed.
	OnAttach func(Target)
	// OnUnmonitored, if set, is called (from the discovery goroutine) once
	// per (executable, stack) for a process doing TLS the sensor cannot
	// read (unmonitored.go).
	OnUnmonitored func(Unmonitored)
	// TLSPorts are the TCP ports whose connections tell that a process
	// does TLS: one that connects to them while no file it maps is
	// probed is reported unmonitored. Default 443.
	TLSPorts []uint16

	// beforeExamine, if set, runs before a file is examined (tests use it
	// to make the examination slow).
	beforeExamine func(path string)
	// onEvent, if set, sees every event (tests of the holding sensor).
	onEvent func(*Event)
}

// DefaultLibraryDirs returns where Linux distributions put shared libraries.
func DefaultLibraryDirs() []string {
	return []string{"/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/local/lib64", "/opt"}
}

func (o *Options) setDefaults() {
	if o.RingBytes == 0 {
		o.RingBytes = 4 << 20
	}
	if o.WakeupBytes == 0 {
		o.WakeupBytes = o.RingBytes / 4
	}
	if o.Poll == 0 {
		o.Poll = 5 * time.Millisecond
	}
	if o.LibraryDirs == nil {
		o.LibraryDirs = DefaultLibraryDirs()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Target is a file the sensor has examined.
type Target struct {
	ID      proc.FileID
	Path    string   // the path it was opened through
	Symbols []string // TLS functions probed; empty if none
	Err     error    // why it could not be probed, if it could not
	// Stack names the TLS stack of a file that cannot be probed (Stack*
	// values, StackWhy why not); "" when none is recognised.
	Stack, StackWhy string
}

// Probed reports whether the target has at least one probe attached.
func (t Target) Probed() bool { return len(t.Symbols) > 0 && t.Err == nil }

// Stats are the sensor's counters.
type Stats struct {
	Writes, Reads  uint64 // calls seen in the kernel
	Truncated      uint64 // calls longer than MaxData
	Lost           uint64 // events dropped because the ring was full
	CopyFailed     uint64 // plaintext that could not be read
	Holds          uint64 // writes held for judgement
	GuardKills     uint64 // held threads resumed by someone else than the agent, killed
	FileHolds      uint64 // processes stopped until a file they run or map was examined
	Stale          uint64 // holds not taken because the event loop was not running
	HoldMapFull    uint64 // holds not taken because the hold map was full
	FailKills      uint64 // processes killed in the kernel by a fail-closed policy
	ForeignConts   uint64 // SIGCONTs to a held process from someone else than the agent
	HeldExits      uint64 // held threads that exited while held
	Stdio          uint64 // stdin reads and stdout writes of watched processes copied (WatchStdio)
	Sock           uint64 // loopback socket reads and writes of HTTP candidates copied (WatchHTTP)
	HeldLost       uint64 // held writes whose event did not fit in the ring: resolved at once by their fail mode, unjudged
	Predecessor    int    // holds left by a previous agent, resolved at load
	Events         uint64 // events delivered
	Malformed      uint64 // records that did not decode
	DiscoveryDrops uint64 // discovery requests dropped because the queue was full
	Targets        int    // files with probes attached
}

type discovery struct {
	pid, tid uint32
	file     proc.FileID // as reported by the kernel
	held     bool        // the process is stopped until the file is examined
	port     uint16      // KindConnect: the TLS port it connected to (no file)
}

// Sensor is the loaded "ssl" sensor: programs, maps and links that live and
// die together.
type Sensor struct {
	opts   Options
	log    *slog.Logger
	objs   ssl.SensorObjects
	links  []link.Link
	reader *ringbuf.Reader

	queue chan discovery
	done  chan struct{}
	wg    sync.WaitGroup

	mu      sync.Mutex
	files   map[proc.FileID]*Target // examined files
	flinks  map[proc.FileID][]link.Link
	targets int
	unmon   unmonState

	events, malformed, drops atomic.Uint64
	closeOnce                sync.Once

	// born is when the sensor was loaded; beat is when Run's loop last went
	// round, as an offset from born (monotonic).
	born time.Time
	beat atomic.Int64
	// lastBeat is when the heartbeat map was last written (Run only).
	lastBeat time.Time
	// waiting: held writes read from the ring, against the kernel's count
	// of those put in (HoldsWaiting; the reading goroutine only).
	waiting holdsWaiting

	holdCfg     ssl.SensorConfig // under mu
	guardPID    atomic.Uint32
	predecessor int

	// gen is this sensor's generation (bpf/ssl/ssl.c, "active"); prev the
	// predecessor it takes over from, until its probes are detached (Run
	// only).
	gen          uint32
	prev         *predecessor
	stopDiscover sync.Once

	// selfExe is this process's own executable: its Go crypto/tls is
	// never probed (the agent's guard runs it too; a test binary serves
	// TLS to the clients under test).
	selfExe proc.FileID
}

// Load loads the sensor into the kernel, attaches the process tracepoints,
// probes every OpenSSL found on the host and in running processes, and
// starts following new ones. Close releases everything.
func Load(opts Options) (*Sensor, error) {
	opts.setDefaults()
	if opts.RingBytes < os.Getpagesize() || opts.RingBytes&(opts.RingBytes-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two of at least a page", opts.RingBytes)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit (the sensor needs root: CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE): %w", err)
	}
	if err := ensureTracefs(); err != nil {
		return nil, err
	}
	spec, err := ssl.LoadSensor()
	if err != nil {
		return nil, fmt.Errorf("read sensor object: %w", err)
	}
	spec.Maps[ssl.SensorMapEvents].MaxEntries = uint32(opts.RingBytes)
	wakeup := uint64(opts.WakeupBytes)
	if opts.WakeupBytes < 0 {
		wakeup = 0
	}
	if err := spec.Variables["wakeup_bytes"].Set(wakeup); err != nil {
		return nil, fmt.Errorf("set wakeup_bytes: %w", err)
	}
	if opts.NoHTTP {
		if err := spec.Variables["http_on"].Set(uint32(0)); err != nil {
			return nil, fmt.Errorf("set http_on: %w", err)
		}
	}
	if ns, err := ownPIDNamespace(); err != nil {
		return nil, err
	} else if ns.Ino != initialPIDNamespace {
		// In a container: report ids as this process sees them, and
		// never see (nor hold) a process it could not signal.
		if err := spec.Variables["pidns_dev"].Set(uint64(ns.Dev)); err != nil {
			return nil, fmt.Errorf("set pidns_dev: %w", err)
		}
		if err := spec.Variables["pidns_ino"].Set(ns.Ino); err != nil {
			return nil, fmt.Errorf("set pidns_ino: %w", err)
		}
		opts.Logger.Info("not in the initial pid namespace: only processes of this namespace are seen", "pidns", ns.Ino)
	}
	// Before 5.11 tracing programs cannot call
	// bpf_get_current_ancestor_cgroup_id: the scope check then reads the
	// ancestors from the task's cgroup (bpf/ssl/ssl.c, in_scope).
	if features.HaveProgramHelper(ebpf.Kprobe, asm.FnGetCurrentAncestorCgroupId) != nil {
		if err := spec.Variables["have_ancestor_helper"].Set(uint32(0)); err != nil {
			return nil, fmt.Errorf("set have_ancestor_helper: %w", err)
		}
	}

	s := &Sensor{
		opts:   opts,
		log:    opts.Logger,
		queue:  make(chan discovery, 4096),
		done:   make(chan struct{}),
		files:  map[proc.FileID]*Target{},
		flinks: map[proc.FileID][]link.Link{},
		born:   time.Now(),
	}
	if id, _, err := proc.StatID("/proc/self/exe"); err == nil {
		s.selfExe = id
	}
	if err := s.loadObjects(spec); err != nil {
		if opts.Handover != nil {
			_ = opts.Handover.Close()
		}
		return nil, err
	}
	if err := s.attachTracepoints(); err != nil {
		_ = s.Close()
		return nil, err
	}
	if err := s.attachConnect(); err != nil {
		_ = s.Close()
		return nil, err
	}
	s.reader, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	if s.prev != nil {
		if s.prev.reader, err = ringbuf.NewReader(s.prev.h.events); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("open the predecessor's ring buffer: %w", err)
		}
	}
	// Tracepoints first, then the scan: a process started during the scan
	// is reported by an event.
	s.scanLibraries()
	s.scanProcesses()
	s.wg.Add(1)
	go s.discover()
	return s, nil
}

// loadObjects loads the programs and maps, the hold map pinned in PinDir
// (reused if an agent left it there: its holds are resolved now, by their
// fail mode, since nobody will judge them).
func (s *Sensor) loadObjects(spec *ebpf.CollectionSpec) error {
	opts := &ebpf.CollectionOptions{}
	if h := s.opts.Handover; h != nil {
		// A generation further, sharing the switch and the holds; the
		// predecessor's holds are judged (Run), not resolved here.
		r, err := h.replacements(spec)
		if err != nil {
			return fmt.Errorf("take over: %w", err)
		}
		s.gen = h.generation + 1
		if err := spec.Variables["generation"].Set(s.gen); err != nil {
			return fmt.Errorf("set generation: %w", err)
		}
		opts.MapReplacements = r
		if err := spec.LoadAndAssign(&s.objs, opts); err != nil {
			return fmt.Errorf("load sensor beside the predecessor's: %w", verifierDetail(err))
		}
		s.prev = &predecessor{h: h, detached: make(chan struct{})}
		return nil
	}
	if s.opts.PinDir == "" {
		spec.Maps[ssl.SensorMapHolds].Pinning = ebpf.PinNone
		spec.Maps[ssl.SensorMapResolving].Pinning = ebpf.PinNone
	} else {
		if err := bpffs.Ensure(s.opts.PinDir); err != nil {
			return err
		}
		opts.Maps.PinPath = s.opts.PinDir
	}
	err := spec.LoadAndAssign(&s.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Pinned by another version of the agent, with another layout.
		n, rerr := resumeForeignHolds(s.opts.PinDir)
		s.predecessor += n
		if rerr != nil {
			return rerr
		}
		err = spec.LoadAndAssign(&s.objs, opts)
	}
	if err != nil {
		return fmt.Errorf("load sensor: %w", verifierDetail(err))
	}
	if s.opts.PinDir == "" {
		return nil
	}
	r := Resolver{Holds: s.objs.Holds, Counts: s.objs.Resolved, Resolving: s.objs.Resolving, Proc: s.opts.Proc.Root,
		Owner: ownerSuccessor, Sweep: []uint32{ownerAgent, ownerGuard, ownerSuccessor}}
	err = r.ResolveAll(func(h Hold, o Outcome) {
		s.predecessor++
		s.log.Warn("hold left by a previous agent, resolved by its fail mode", "pid", h.PID, "kind", h.Kind.String(), "outcome", string(o))
	})
	if err != nil {
		_ = s.objs.Close()
		return fmt.Errorf("resolve holds of a previous agent: %w", err)
	}
	return nil
}

// verifierDetail returns err with the verifier's whole log, if it is the
// verifier's (%+w formats it as %+v does, and still wraps it).
func verifierDetail(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("verifier: %+w", ve)
	}
	return err
}

// resumeForeignHolds resumes the processes held in a pinned hold map of
// another layout (its key is the thread id, its value starts with the
// process id), then removes the pin. They fail open: nothing here knows
// their policy.
func resumeForeignHolds(pinDir string) (int, error) {
	path := filepath.Join(pinDir, HoldsPin)
	m, err := ebpf.LoadPinnedMap(path, nil)
	if err != nil {
		return 0, fmt.Errorf("open pinned hold map %s: %w", path, err)
	}
	defer m.Close()
	n := 0
	if m.KeySize() == 4 && m.ValueSize() >= 4 {
		var tid uint32
		val := make([]byte, m.ValueSize())
		it := m.Iterate()
		for it.Next(&tid, &val) {
			pid := int(binary.LittleEndian.Uint32(val))
			if unix.Kill(pid, unix.SIGCONT) == nil {
				n++
			}
		}
	}
	if err := m.Unpin(); err != nil {
		return n, fmt.Errorf("remove pinned hold map %s of another layout: %w", path, err)
	}
	return n, nil
}

// initialPIDNamespace is the inode of the initial pid namespace
// (PROC_PID_INIT_INO), the same on every Linux.
const initialPIDNamespace = 0xEFFFFFFC

// ownPIDNamespace returns the pid namespace this process runs in, its
// device in the kernel's encoding.
func ownPIDNamespace() (proc.FileID, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &st); err != nil {
		return proc.FileID{}, fmt.Errorf("read own pid namespace: %w", err)
	}
	return proc.FileID{Dev: unix.Major(st.Dev)<<20 | unix.Minor(st.Dev), Ino: st.Ino}, nil
}

// ensureTracefs mounts tracefs where the kernel expects it if nothing is
// mounted there: syscall tracepoints are attached through it.
func ensureTracefs() error {
	var seen []string
	for _, dir := range []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"} {
		_, err := os.Stat(dir + "/events")
		if err == nil {
			return nil
		}
		seen = append(seen, err.Error())
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mount tracefs on /sys/kernel/tracing (%s): %w", strings.Join(seen, "; "), err)
	}
	return nil
}

func (s *Sensor) attachTracepoints() error {
	tps := []struct {
		name string
		prog *ebpf.Program
	}{{"sched_process_exec", s.objs.SchedExec}, {"sched_process_exit", s.objs.SchedExit},
		{"signal_generate", s.objs.SignalGenerate}, {"cgroup_mkdir", s.objs.CgroupMkdir}}
	if s.opts.Stdio {
		tps = append(tps, struct {
			name string
			prog *ebpf.Program
		}{"sys_exit", s.objs.StdioExit})
		if !s.opts.NoHTTP {
			tps = append(tps, struct {
				name string
				prog *ebpf.Program
			}{"inet_sock_set_state", s.objs.HttpListen})
		}
	}
	for _, p := range tps {
		l, err := link.AttachTracing(link.TracingOptions{Program: p.prog})
		if err != nil {
			return fmt.Errorf("attach tp_btf/%s: %w", p.name, err)
		}
		s.links = append(s.links, l)
	}
	l, err := link.Tracepoint("syscalls", "sys_enter_mmap", s.objs.SysEnterMmap, nil)
	if err != nil {
		return fmt.Errorf("attach tracepoint syscalls/sys_enter_mmap: %w", err)
	}
	s.links = append(s.links, l)
	return nil
}

// Run delivers events to handle until ctx is done. Events are delivered
// from a single goroutine, in the order the kernel produced them.
func (s *Sensor) Run(ctx context.Context, handle func(*Event)) error {
	var rec ringbuf.Record
	var ev Event
	var detached chan struct{}
	if s.prev != nil {
		if err := s.takeOver(handle); err != nil {
			return err
		}
		detached = s.prev.detached
	}
	for {
		select {
		case <-ctx.Done():
			return nil // stopped: not an error
		default:
		}
		select {
		case <-detached:
			s.finishTakeOver(handle)
			detached = nil
		default:
		}
		now := time.Now()
		s.beat.Store(int64(now.Sub(s.born)))
		if s.opts.Holds && now.Sub(s.lastBeat) >= time.Millisecond {
			// For the kernel: a loop that stops going round takes no
			// new holds (struct config, stale_ns).
			s.lastBeat = now
			_ = s.objs.Heartbeat.Put(uint32(0), MonoNow())
		}
		s.reader.SetDeadline(now.Add(s.opts.Poll))
		err := s.reader.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read ring buffer: %w", err)
		}
		s.deliver(rec.RawSample, &ev, handle)
	}
}

// deliver decodes one record into ev, has the files it reports examined,
// and hands it to handle.
func (s *Sensor) deliver(raw []byte, ev *Event, handle func(*Event)) {
	if err := ev.decode(raw); err != nil {
		if s.malformed.Add(1) == 1 {
			s.log.Warn("malformed sensor event", "err", err)
		}
		return
	}
	switch ev.Kind {
	case KindMmap:
		s.enqueue(discovery{pid: ev.PID, tid: ev.TID, file: ev.File, held: ev.Held})
		return
	case KindConnect:
		s.enqueue(discovery{pid: ev.PID, tid: ev.TID, port: uint16(ev.SSL)})
		return
	case KindExec:
		if ev.UnknownFile || ev.Held {
			s.enqueue(discovery{pid: ev.PID, tid: ev.TID, file: ev.File, held: ev.Held})
		}
	default: // the other kinds are only handed on
	}
	if ev.Held && ev.Kind == KindWrite {
		s.waiting.read++
		s.waiting.since = time.Time{}
	}
	s.events.Add(1)
	handle(ev)
}

// holdsWaiting compares the held writes read from the ring with the
// kernel's count of those put in (held_in_ring).
type holdsWaiting struct {
	read  uint64    // held writes read (plus the resynchronisations)
	since time.Time // when a difference was first seen, zero if none
}

// resyncAfter bounds how long a difference with no held write read may
// last: a held write whose record did not decode is never read, and the
// count must not stay behind for ever.
const resyncAfter = 2 * time.Second

// HoldsWaiting reports whether a held write waits in the ring behind the
// events being handed on now: then the caller should spend as little as it
// can on what is not enforced (the write's deadline runs). Only from the
// goroutine that reads the ring (in the handle function of Run or Drain);
// no system call (the kernel's count is memory-mapped).
func (s *Sensor) HoldsWaiting() bool {
	var n uint64
	if s.objs.HeldInRing == nil || s.objs.HeldInRing.Get(&n) != nil {
		return false
	}
	w := &s.waiting
	if n <= w.read {
		w.since = time.Time{}
		return false
	}
	now := time.Now()
	if w.since.IsZero() {
		w.since = now
	} else if now.Sub(w.since) > resyncAfter {
		w.read, w.since = n, time.Time{}
		return false
	}
	return true
}

// Drain delivers to handle, as Run does, the events the kernel produced
// before now that are still in the ring buffer (for at most max): an
// agent stopping on SIGTERM judges what the kernel held before it turned
// holding off. It returns at the first later event.
func (s *Sensor) Drain(handle func(*Event), max time.Duration) {
	var rec ringbuf.Record
	var ev Event
	until := MonoNow()
	end := time.Now().Add(max)
	for time.Now().Before(end) {
		s.reader.SetDeadline(time.Now().Add(time.Millisecond))
		if err := s.reader.ReadInto(&rec); err != nil {
			return // empty (deadline), or closed
		}
		if err := ev.decode(rec.RawSample); err != nil {
			s.malformed.Add(1)
			continue
		}
		if ev.Mono > until {
			return
		}
		if ev.Kind == KindMmap || ev.Kind == KindConnect {
			continue // no new discoveries: the files are released below
		}
		s.events.Add(1)
		handle(&ev)
	}
}

// Heartbeat returns when Run's loop last went round: at least every Poll
// while it runs and no handler is stuck; the load time before Run starts.
// Safe to call from any goroutine.
func (s *Sensor) Heartbeat() time.Time {
	return s.born.Add(time.Duration(s.beat.Load()))
}

func (s *Sensor) enqueue(d discovery) {
	select {
	case s.queue <- d:
	default:
		// Forget the sighting so that the next mapping reports it again.
		s.drops.Add(1)
		s.forget(d.file)
		if d.held {
			// Nobody will examine the file for it: a process must not
			// stay stopped because the agent is flooded.
			s.releaseFileHold(d)
		}
	}
}

// Stats returns the sensor's counters.
func (s *Sensor) Stats() (Stats, error) {
	var st Stats
	for i, dst := range []*uint64{&st.Writes, &st.Reads, &st.Truncated, &st.Lost, &st.CopyFailed, &st.Holds, &st.GuardKills, &st.FileHolds,
		&st.Stale, &st.HoldMapFull, &st.FailKills, &st.ForeignConts, &st.HeldExits, &st.Stdio, &st.Sock, &st.HeldLost} {
		var perCPU []uint64
		if err := s.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return st, fmt.Errorf("read counter %d: %w", i, err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	st.Events = s.events.Load()
	st.Malformed = s.malformed.Load()
	st.DiscoveryDrops = s.drops.Load()
	st.Predecessor = s.predecessor
	s.mu.Lock()
	st.Targets = s.targets
	s.mu.Unlock()
	return st, nil
}

// Targets returns the files examined so far that have TLS functions.
func (s *Sensor) Targets() []Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Target
	seen := map[*Target]bool{} // a file known by two identities once
	for _, t := range s.files {
		if !seen[t] && (len(t.Symbols) > 0 || t.Err != nil) {
			seen[t] = true
			out = append(out, *t)
		}
	}
	return out
}

// Close detaches every probe and unloads the sensor.
func (s *Sensor) Close() error {
	var errs []error
	s.closeOnce.Do(func() {
		s.stopDiscovery()
		if s.reader != nil {
			errs = append(errs, s.reader.Close())
		}
		if p := s.prev; p != nil {
			if p.reader != nil {
				errs = append(errs, p.reader.Close())
			}
			if p.h.links == nil {
				<-p.detached // being detached by Run
			}
			errs = append(errs, p.h.Close())
		}
		s.mu.Lock()
		all := append([]link.Link(nil), s.links...)
		for _, ls := range s.flinks {
			all = append(all, ls...)
		}
		s.flinks = nil
		s.mu.Unlock()
		// A restart's gap in enforcement is mostly this (~0.5 s); an
		// upgrade in place has none (PrepareHandover).
		errs = append(errs, closeLinks(all))
		errs = append(errs, s.objs.Close())
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close sensor: %w", err)
	}
	return nil
}
