package probe

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/bpf/ssl"
)

// Holding: the sensor stops a process (SIGSTOP from the probe, before the
// call runs) when a process in scope starts a write that may carry mail —
// an HTTP POST/PUT/PATCH or an SMTP envelope command — or writes on a
// connection marked with Watch, and when it is about to run a file the
// sensor has not examined yet. The event arrives with Held set; the
// process stays stopped until Release, a kill, or the hold's deadline,
// which the guard process (RunGuard) enforces by the hold's fail mode
// whatever the agent does.

// HoldPolicy is how the holds of a process end when nobody judged them in
// time.
type HoldPolicy struct {
	FailClosed bool          // kill the process (else resume it, unjudged)
	ExecMax    time.Duration // longest hold until a new file is examined
	WriteMax   time.Duration // longest hold of a write
}

// Combine returns the stricter of p and o, field by field.
func (p HoldPolicy) Combine(o HoldPolicy) HoldPolicy {
	p.FailClosed = p.FailClosed || o.FailClosed
	if o.ExecMax < p.ExecMax {
		p.ExecMax = o.ExecMax
	}
	if o.WriteMax < p.WriteMax {
		p.WriteMax = o.WriteMax
	}
	return p
}

func (p HoldPolicy) kernel() ssl.SensorHoldPolicy {
	ms := func(d time.Duration) uint32 {
		if d <= 0 {
			return 1
		}
		return uint32((d + time.Millisecond - 1) / time.Millisecond)
	}
	k := ssl.SensorHoldPolicy{ExecMs: ms(p.ExecMax), WriteMs: ms(p.WriteMax)}
	if p.FailClosed {
		k.FailClosed = 1
	}
	return k
}

// HoldConfig says whom the sensor holds.
type HoldConfig struct {
	Enabled bool
	// All puts every process in scope, under AllPolicy; else only the
	// processes of the cgroups given to SetScope (and their descendants).
	All       bool
	AllPolicy HoldPolicy
	// Scoped (with All): the cgroups given to SetScope have policies of
	// their own, which override AllPolicy for their processes.
	Scoped bool
	// CopyAll copies the writes of processes out of scope too (a
	// monitoring policy wants them); they are never held. Without it an
	// out-of-scope write costs the probe and a map lookup.
	CopyAll bool
	// NewCgroups puts every cgroup created from now on in scope, under
	// PendingPolicy, until the handler of its KindCgroup event decides
	// (SetScopeEntry or DeleteScopeEntry): a policy names units or cgroups
	// that may appear at any time.
	NewCgroups    bool
	PendingPolicy HoldPolicy
	// Stale: while the event loop has not gone round for this long, no
	// hold is taken (the fail mode applies at once). 0: never.
	Stale time.Duration
	// SelfCgroup is the agent's own cgroup: its processes (the agent, its
	// hold guard) are never held, whatever the scope says. 0: none.
	SelfCgroup uint64
}

// SetHolds configures holding.
func (s *Sensor) SetHolds(c HoldConfig) error {
	if c.Enabled && !s.opts.Holds {
		return fmt.Errorf("hold writes: the sensor was loaded without Options.Holds")
	}
	cfg := ssl.SensorConfig{AgentTgid: uint32(os.Getpid()), GuardTgid: s.guardPID.Load(), SelfCgroup: c.SelfCgroup}
	if c.Enabled {
		cfg.Holds = 1
		cfg.StaleNs = uint64(c.Stale)
	}
	if c.All {
		cfg.HoldAll = 1
		cfg.All = c.AllPolicy.kernel()
		if c.Scoped {
			cfg.Scoped = 1
		}
	}
	if c.CopyAll || !c.Enabled {
		cfg.CopyAll = 1
	}
	if c.NewCgroups {
		cfg.WatchMkdir = 1
		cfg.Pending = c.PendingPolicy.kernel()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdCfg = cfg
	if err := s.objs.Settings.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("write sensor settings: %w", err)
	}
	return nil
}

// WriteGuarded reports whether the write guard probes are attached.
func (s *Sensor) WriteGuarded() bool { return s.opts.WriteGuard }

// SetGuardPID names the guard process, whose SIGCONTs are not foreign.
func (s *Sensor) SetGuardPID(pid uint32) error {
	s.guardPID.Store(pid)
	s.mu.Lock()
	defer s.mu.Unlock()
	cfg := s.holdCfg
	cfg.GuardTgid = pid
	cfg.AgentTgid = uint32(os.Getpid())
	s.holdCfg = cfg
	if err := s.objs.Settings.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("write sensor settings: %w", err)
	}
	return nil
}

// SetScope replaces the cgroups whose processes are in scope, each with
// its policy (already combined with those of its ancestors). Entries the
// kernel added for new cgroups and the handler has not judged yet stay.
func (s *Sensor) SetScope(cgroups map[uint64]HoldPolicy) error {
	var key uint64
	var val ssl.SensorHoldPolicy
	var stale []uint64
	it := s.objs.Scope.Iterate()
	for it.Next(&key, &val) {
		if _, ok := cgroups[key]; !ok && val.Pending == 0 {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read scope: %w", err)
	}
	for _, id := range stale {
		if err := s.DeleteScopeEntry(id); err != nil {
			return err
		}
	}
	for id, p := range cgroups {
		if err := s.SetScopeEntry(id, p); err != nil {
			return err
		}
	}
	return nil
}

// SetScopeEntry puts one cgroup in scope.
func (s *Sensor) SetScopeEntry(id uint64, p HoldPolicy) error {
	v := p.kernel()
	if err := s.objs.Scope.Put(id, &v); err != nil {
		return fmt.Errorf("add cgroup %d to scope: %w", id, err)
	}
	return nil
}

// DeleteScopeEntry takes one cgroup out of scope.
func (s *Sensor) DeleteScopeEntry(id uint64) error {
	if err := s.objs.Scope.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove cgroup %d from scope: %w", id, err)
	}
	return nil
}

// ScopeSize returns the number of cgroups in scope, and how many of them
// are new ones not judged yet.
func (s *Sensor) ScopeSize() (n, pending int, err error) {
	var key uint64
	var val ssl.SensorHoldPolicy
	it := s.objs.Scope.Iterate()
	for it.Next(&key, &val) {
		n++
		if val.Pending != 0 {
			pending++
		}
	}
	if err := it.Err(); err != nil {
		return n, pending, fmt.Errorf("read scope: %w", err)
	}
	return n, pending, nil
}

// ConnMode is what the kernel holds of a connection's writes: enum
// conn_mode in bpf/include/aarsm.h. A connection it has no mode for is
// held at its next write whatever it writes.
type ConnMode uint8

const (
	ConnAll   ConnMode = 1 // a message in progress, or SMTP: every write
	ConnH1    ConnMode = 2 // HTTP/1.x between requests: all but one whole GET or HEAD
	ConnH2    ConnMode = 3 // HTTP/2: writes that may carry a request body
	ConnOther ConnMode = 4 // neither: writes that start a request or an SMTP command
)

// SetConnMode tells the kernel which writes of a connection to hold from
// now on (set while its process is held, before it resumes).
func (s *Sensor) SetConnMode(pid uint32, sslPtr uint64, m ConnMode) error {
	key := ssl.SensorConnKey{Pid: pid, Ssl: sslPtr}
	if err := s.objs.Watch.Put(&key, uint8(m)); err != nil {
		return fmt.Errorf("set the hold mode of a connection of pid %d: %w", pid, err)
	}
	return nil
}

// Release lets the held call of thread tid (of process pid) proceed: the
// hold record goes first (Take), then SIGCONT. It reports false, and does
// nothing, when the record was gone already: the guard resolved the hold
// (its deadline passed), or the thread died.
func (s *Sensor) Release(pid, tid uint32) (bool, error) {
	_, owned, err := s.Take(pid, tid)
	if !owned || err != nil {
		return owned, err
	}
	err = Resume(pid)
	s.Settle(tid)
	return true, err
}

// Resolvers, the owner field of the resolving map's keys.
const (
	ownerAgent     = 1 // the agent judging the write
	ownerGuard     = 2 // the hold guard, at a deadline or when the agent is gone
	ownerSuccessor = 3 // a later agent, or "aarsm release-holds"
)

// claim makes owner the resolver of thread tid's hold. Its entry in
// resolving goes first, then the hold record (whoever deletes it owns the
// hold; a loser takes its entry back); once the owner has acted it calls
// settle. An owner killed in between leaves its entry for the others to
// sweep (Resolver.ResolveAll). resolving may be nil (no trace).
func claim(holds, resolving *ebpf.Map, tid, owner uint32) (Hold, bool, error) {
	var v ssl.SensorHold
	if err := holds.Lookup(tid, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Hold{}, false, nil
		}
		return Hold{}, false, fmt.Errorf("read hold of thread %d: %w", tid, err)
	}
	key := ssl.SensorResolvingKey{Tid: tid, Owner: owner}
	traced := resolving != nil && resolving.Put(&key, &v) == nil
	if err := holds.Delete(tid); err != nil {
		if traced {
			_ = resolving.Delete(&key)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Hold{}, false, nil
		}
		return Hold{}, false, fmt.Errorf("take hold of thread %d: %w", tid, err)
	}
	return holdOf(tid, v), true, nil
}

// settle removes owner's trace of the hold of tid, once it has acted.
func settle(resolving *ebpf.Map, tid, owner uint32) {
	if resolving != nil {
		key := ssl.SensorResolvingKey{Tid: tid, Owner: owner}
		_ = resolving.Delete(&key)
	}
}

// Take makes the agent the owner of thread tid's hold: neither the write
// guard nor the hold guard acts on it from then on, and the process stays
// stopped until Resume or a kill — unless the record says someone else
// resumed it already (Hold.Foreign). It reports false when the record was
// gone: the guard resolved the hold, or the thread died. Call Settle once
// the process is resumed or killed.
func (s *Sensor) Take(pid, tid uint32) (Hold, bool, error) {
	h, owned, err := claim(s.objs.Holds, s.objs.Resolving, tid, ownerAgent)
	if err != nil {
		return h, false, fmt.Errorf("pid %d: %w", pid, err)
	}
	return h, owned, nil
}

// Settle tells the kernel maps that the agent has acted on the hold of
// tid it took.
func (s *Sensor) Settle(tid uint32) { settle(s.objs.Resolving, tid, ownerAgent) }

// Resume sends SIGCONT to a process whose hold was taken.
func Resume(pid uint32) error {
	if err := unix.Kill(int(pid), unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("resume pid %d: %w", pid, err)
	}
	return nil
}

// HoldKind is what a process is held for.
type HoldKind uint8

// Hold kinds (HOLD_* in bpf/include/aarsm.h).
const (
	HoldWrite HoldKind = 1 // a write that may carry mail, until judged
	HoldFile  HoldKind = 2 // an exec or executable mapping, until the file is examined
)

func (k HoldKind) String() string {
	switch k {
	case HoldWrite:
		return "write"
	case HoldFile:
		return "file"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Hold is a process held now.
type Hold struct {
	PID, TID   uint32
	Kind       HoldKind
	FailClosed bool
	// Foreign: someone else than the agent sent the process SIGCONT
	// while it was held.
	Foreign  bool
	SSL      uint64
	Mono     uint64 // when held (CLOCK_MONOTONIC ns)
	Deadline uint64 // by when it is resolved (CLOCK_MONOTONIC ns)
	Start    uint64 // the thread's start, boot-time ns
}

func holdOf(tid uint32, h ssl.SensorHold) Hold {
	return Hold{PID: h.Pid, TID: tid, Kind: HoldKind(h.Kind), FailClosed: h.FailClosed != 0, Foreign: h.Flags&1 != 0,
		SSL: h.Ssl, Mono: h.Ts, Deadline: h.Deadline, Start: h.Start}
}

// Holds lists the processes held now.
func (s *Sensor) Holds() ([]Hold, error) {
	return listHolds(s.objs.Holds)
}

func listHolds(m *ebpf.Map) ([]Hold, error) {
	var tid uint32
	var h ssl.SensorHold
	var out []Hold
	it := m.Iterate()
	for it.Next(&tid, &h) {
		out = append(out, holdOf(tid, h))
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read holds: %w", err)
	}
	return out, nil
}

// sameThread reports whether thread tid of pid is still the one held at
// start (boot-time ns): a thread id is reused once its thread is gone.
// procRoot is the procfs mount.
func sameThread(procRoot string, pid, tid uint32, start uint64) (bool, error) {
	ticks, err := threadStartTicks(procRoot, pid, tid)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	want := start / nsPerTick
	return ticks == want || ticks+1 == want || ticks == want+1, nil
}

const nsPerTick = 1e9 / 100 // USER_HZ

// threadStartTicks returns when thread tid of pid started, in clock ticks
// since boot (field 22 of its stat).
func threadStartTicks(procRoot string, pid, tid uint32) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/task/%d/stat", procRoot, pid, tid))
	if err != nil {
		return 0, fmt.Errorf("read thread %d of pid %d: %w", tid, pid, err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("thread %d of pid %d: unexpected stat %q", tid, pid, s)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("thread %d of pid %d: short stat", tid, pid)
	}
	ticks, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("thread %d of pid %d: starttime: %w", tid, pid, err)
	}
	return ticks, nil
}

// MonoNow returns CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns
// (Event.Mono, Hold.Mono, Hold.Deadline).
func MonoNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
