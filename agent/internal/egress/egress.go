// Package egress is the safety net for what the TLS probes cannot read: the
// egress_policy blocks (package policy) enforced by the kernel at every
// connect(2) and unconnected sendmsg(2), IPv4 and IPv6, of the processes
// in their scope (bpf/cgroup/egress.c).
//
// A process is in a policy's scope by its cgroup (egress_scope: a scope's
// cgroups and the cgroups of its systemd_units, found again every Rescan)
// or by the file it runs (egress_exes: the device and inode of each
// executable a scope names, read from the task's mm->exe_file).
//
// The four programs are attached once to the cgroup v2 root, beside the
// quarantine's (multi-attach links: a connection goes through only if
// every program allows it), and decide per cgroup: the egress_scope map
// gives the policies covering a cgroup (its own entry or an ancestor's),
// so one attachment covers the cgroups of units started later and a
// reload only rewrites maps. Attaching to each cgroup in scope instead
// would spare other processes the program (~0.15 µs of CPU per connect: BenchmarkConnect4)
// but need an attach per new cgroup and could not cover a cgroup created
// before its attach.
//
// Host names are resolved by the agent (resolve.go: its own bounded DNS
// stub, so that TTLs are known) and their addresses written into the
// allow tries; every refusal, and in monitor mode every destination that
// would have been refused, is an event on a ring buffer, journaled once
// per process and destination.
//
// They are attached only while an egress policy is in force. Nothing is
// pinned: the programs leave with the agent (the policy is
// then not enforced until it starts again; systemd restarts it).
package egress

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/bpf/cgroup"
)

// Hooks, in the order of the kernel's counters (enum egress_hook).
var hookNames = [...]string{"connect4", "connect6", "sendmsg4", "sendmsg6"}

const (
	outcomes    = 3 // allowed, blocked, reported (enum egress_outcome)
	counterLost = len(hookNames) * outcomes
)

// DefaultRescan is how often the cgroups of the scopes are looked up
// again (a unit started after the policy was applied is in scope from the
// next rescan on).
const DefaultRescan = 2 * time.Second

// maxSeen bounds the (process, destination) pairs remembered so that each
// is journaled once; the oldest is forgotten first.
const maxSeen = 4096

// Options configure Open.
type Options struct {
	Logger *slog.Logger
	// Journal receives one entry per refused (or, in monitor mode,
	// reported) destination and process; nil: none.
	Journal *journal.Logger
	// Resolver resolves the allowed host names; nil: SystemResolver.
	Resolver Resolver
	// Grace keeps an address allowed this long after DNS stopped giving
	// it; 0: DefaultGrace.
	Grace time.Duration
	// MinRefresh is the shortest TTL honoured; 0: MinRefresh (tests
	// shorten it).
	MinRefresh time.Duration
	// Rescan: 0 is DefaultRescan.
	Rescan time.Duration
	// CgroupMount is the cgroup v2 mount; "": the one mounted.
	CgroupMount string
	// ResolveTimeout bounds the resolution Apply waits for; 0: 3 s.
	ResolveTimeout time.Duration
}

// Enforcer holds the egress programs and keeps their maps in step with
// the policies, the cgroups and DNS. Safe for concurrent use.
type Enforcer struct {
	opts   Options
	log    *slog.Logger
	objs   cgroup.EgressObjects
	links  []link.Link
	reader *ringbuf.Reader
	self   uint64
	kick   chan struct{}

	mu       sync.Mutex
	policies []*policy.EgressPolicy
	enforce  uint64
	names    *names
	scope    map[uint64]uint64
	paths    map[uint64]string
	exes     map[cgroup.EgressInodeKey]uint64
	exePaths map[cgroup.EgressInodeKey]string
	cur      tables
	closed   bool

	seen      map[seenKey]struct{}
	seenOrder []seenKey

	journaled, journalErrors, deduped atomic.Uint64
}

type seenKey struct {
	pid  uint32
	dest netip.AddrPort
	hook uint8
}

// Open loads the egress programs. They are attached to the cgroup v2 root
// while at least one egress policy is in force (Apply): a host without
// egress policies pays nothing per connect.
func Open(opts Options) (*Enforcer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.MinRefresh == 0 {
		opts.MinRefresh = MinRefresh
	}
	if opts.Rescan == 0 {
		opts.Rescan = DefaultRescan
	}
	if opts.ResolveTimeout == 0 {
		opts.ResolveTimeout = 3 * time.Second
	}
	if opts.Resolver == nil {
		r, err := SystemResolver()
		if err != nil {
			return nil, fmt.Errorf("open egress: %w", err)
		}
		opts.Resolver = r
	}
	if opts.CgroupMount == "" {
		m, err := act.CgroupMount()
		if err != nil {
			return nil, fmt.Errorf("open egress: %w", err)
		}
		opts.CgroupMount = m
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("open egress: %w", err)
	}
	e := &Enforcer{opts: opts, log: opts.Logger, kick: make(chan struct{}, 1), names: newNames(opts.Grace, opts.MinRefresh),
		scope: map[uint64]uint64{}, paths: map[uint64]string{}, seen: map[seenKey]struct{}{},
		exes: map[cgroup.EgressInodeKey]uint64{}, exePaths: map[cgroup.EgressInodeKey]string{},
		cur: tables{v4: map[cgroup.EgressEgressKey4]uint64{}, v6: map[cgroup.EgressEgressKey6]uint64{}}}
	// The agent's own cgroup is never checked: it must reach the name
	// servers and the journal whatever a policy says.
	if self, err := (proc.FS{}).CgroupPath(uint32(os.Getpid())); err == nil {
		if id, err := act.CgroupID(opts.CgroupMount, self); err == nil {
			e.self = id
		}
	}
	if err := cgroup.LoadEgressObjects(&e.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("open egress: load programs: %+w", ve)
		}
		return nil, fmt.Errorf("open egress: load programs: %w", err)
	}
	if err := e.writeSettings(0, false); err != nil {
		_ = e.objs.Close()
		return nil, fmt.Errorf("open egress: %w", err)
	}
	r, err := ringbuf.NewReader(e.objs.EgressEvents)
	if err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("open egress: %w", err)
	}
	e.reader = r
	return e, nil
}

// Close detaches the programs: no egress policy is enforced any more.
func (e *Enforcer) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	var errs []error
	if e.reader != nil {
		errs = append(errs, e.reader.Close())
	}
	e.mu.Lock()
	errs = append(errs, e.detach())
	e.mu.Unlock()
	errs = append(errs, e.objs.Close())
	return errors.Join(errs...)
}

// attach attaches the programs to the cgroup root, if they are not (under
// e.mu).
func (e *Enforcer) attach() error {
	if len(e.links) > 0 {
		return nil
	}
	for _, a := range []struct {
		attach ebpf.AttachType
		prog   *ebpf.Program
	}{
		{ebpf.AttachCGroupInet4Connect, e.objs.EgressConnect4},
		{ebpf.AttachCGroupInet6Connect, e.objs.EgressConnect6},
		{ebpf.AttachCGroupUDP4Sendmsg, e.objs.EgressSendmsg4},
		{ebpf.AttachCGroupUDP6Sendmsg, e.objs.EgressSendmsg6},
	} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: e.opts.CgroupMount, Attach: a.attach, Program: a.prog})
		if err != nil {
			_ = e.detach()
			return fmt.Errorf("attach %s to %s: %w", a.prog, e.opts.CgroupMount, err)
		}
		e.links = append(e.links, l)
	}
	return nil
}

// detach detaches the programs (under e.mu, or once nothing else runs).
func (e *Enforcer) detach() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	e.links = nil
	return errors.Join(errs...)
}

func (e *Enforcer) writeSettings(enforce uint64, haveExes bool) error {
	cfg := cgroup.EgressEgressConfig{Enforce: enforce, SelfCgroup: e.self}
	if haveExes {
		cfg.HaveExes = 1
	}
	if err := e.objs.EgressSettings.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("write egress settings: %w", err)
	}
	return nil
}

// Apply puts the egress policies of set in force: their scopes, what they
// allow (host names resolved first, for at most ResolveTimeout) and their
// modes. A set with no egress policy lifts every one.
func (e *Enforcer) Apply(set *policy.Set) error {
	ps := set.Egress
	if len(ps) > policy.MaxEgressPolicies {
		return fmt.Errorf("apply egress policies: %d policies, over %d", len(ps), policy.MaxEgressPolicies)
	}
	var hosts []string
	var enforce uint64
	for i, p := range ps {
		hosts = append(hosts, p.Hosts()...)
		if p.Mode == policy.ModeEnforce {
			enforce |= 1 << uint(i)
		}
	}
	now := time.Now()
	e.mu.Lock()
	e.names.setHosts(hosts, now)
	due := e.names.due(now)
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), e.opts.ResolveTimeout)
	results := e.resolve(ctx, due)
	cancel()

	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("apply egress policies: closed")
	}
	for _, r := range results {
		e.names.update(r.host, r.ans, r.err, time.Now())
	}
	scope, paths, err := scopeIDs(ps, e.opts.CgroupMount)
	if err != nil {
		return fmt.Errorf("apply egress policies: %w", err)
	}
	exes, exePaths, err := exeIDs(ps)
	if err != nil {
		return fmt.Errorf("apply egress policies: %w", err)
	}
	t, err := buildTables(rules(ps, e.names.addrs))
	if err != nil {
		return fmt.Errorf("apply egress policies: %w", err)
	}
	if len(ps) > 0 {
		if err := e.attach(); err != nil {
			return fmt.Errorf("apply egress policies: %w", err)
		}
	}
	if err := e.writeKernel(t, scope, exes, enforce); err != nil {
		return fmt.Errorf("apply egress policies: %w", err)
	}
	if len(ps) == 0 {
		if err := e.detach(); err != nil {
			return fmt.Errorf("apply egress policies: detach: %w", err)
		}
	}
	e.policies, e.enforce, e.paths, e.exePaths = ps, enforce, paths, exePaths
	select {
	case e.kick <- struct{}{}:
	default:
	}
	return nil
}

type resolved struct {
	host string
	ans  []Answer
	err  error
}

// resolve resolves hosts, a few at a time.
func (e *Enforcer) resolve(ctx context.Context, hosts []string) []resolved {
	out := make([]resolved, len(hosts))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ans, err := e.opts.Resolver.Resolve(ctx, h)
			out[i] = resolved{h, ans, err}
		}()
	}
	wg.Wait()
	return out
}

// writeKernel makes the maps hold t, scope and enforce (under e.mu). New
// entries go in first and stale ones out last, so that a destination
// allowed before and after is never refused in between.
func (e *Enforcer) writeKernel(t tables, scope map[uint64]uint64, exes map[cgroup.EgressInodeKey]uint64, enforce uint64) error {
	for k, v := range t.v4 {
		if old, ok := e.cur.v4[k]; !ok || old != v {
			if err := e.objs.EgressAllow4.Put(k, v); err != nil {
				return fmt.Errorf("write allow4: %w", err)
			}
			e.cur.v4[k] = v // what the kernel holds, should a later write fail
		}
	}
	for k, v := range t.v6 {
		if old, ok := e.cur.v6[k]; !ok || old != v {
			if err := e.objs.EgressAllow6.Put(k, v); err != nil {
				return fmt.Errorf("write allow6: %w", err)
			}
			e.cur.v6[k] = v
		}
	}
	for id, m := range scope {
		if old, ok := e.scope[id]; !ok || old != m {
			if err := e.objs.EgressScope.Put(id, m); err != nil {
				return fmt.Errorf("write scope: %w", err)
			}
			e.scope[id] = m
		}
	}
	for k, m := range exes {
		if old, ok := e.exes[k]; !ok || old != m {
			if err := e.objs.EgressExes.Put(k, m); err != nil {
				return fmt.Errorf("write executables: %w", err)
			}
			e.exes[k] = m
		}
	}
	if err := e.writeSettings(enforce, len(exes) > 0); err != nil {
		return err
	}
	var errs []error
	for k := range e.exes {
		if _, ok := exes[k]; !ok {
			if err := e.objs.EgressExes.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for id := range e.scope {
		if _, ok := scope[id]; !ok {
			if err := e.objs.EgressScope.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for k := range e.cur.v4 {
		if _, ok := t.v4[k]; !ok {
			if err := e.objs.EgressAllow4.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	for k := range e.cur.v6 {
		if _, ok := t.v6[k]; !ok {
			if err := e.objs.EgressAllow6.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	e.cur, e.scope, e.exes = t, scope, exes
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete stale egress entries: %w", err)
	}
	return nil
}

// Run reads the kernel's reports and keeps the maps in step with DNS and
// the cgroups until ctx is done.
func (e *Enforcer) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.refreshLoop(ctx)
	}()
	go func() {
		<-ctx.Done()
		_ = e.reader.Close() // wakes Read
	}()
	defer func() { <-done }()
	for {
		rec, err := e.reader.Read()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read egress events: %w", err)
		}
		var ev cgroup.EgressEgressEvent
		if len(rec.RawSample) < eventSize {
			continue
		}
		decodeEvent(rec.RawSample, &ev)
		e.report(&ev)
	}
}

// refreshLoop resolves host names at their TTL and rescans the scopes'
// cgroups, rewriting the maps when anything changed.
func (e *Enforcer) refreshLoop(ctx context.Context) {
	timer := time.NewTimer(e.opts.Rescan)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-e.kick:
		}
		e.refresh(ctx)
		next := time.Now().Add(e.opts.Rescan)
		e.mu.Lock()
		if d := e.names.nextDue(); !d.IsZero() && d.Before(next) {
			next = d
		}
		e.mu.Unlock()
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(max(time.Until(next), 10*time.Millisecond))
	}
}

// refresh does one round of refreshLoop.
func (e *Enforcer) refresh(ctx context.Context) {
	now := time.Now()
	e.mu.Lock()
	due := e.names.due(now)
	e.mu.Unlock()
	results := e.resolve(ctx, due)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	changed := e.names.expireAll(time.Now())
	for _, r := range results {
		if r.err != nil {
			e.log.Warn("egress: cannot resolve an allowed host name; its last addresses stay allowed until their TTL and grace end", "host", r.host, "err", r.err)
		}
		if e.names.update(r.host, r.ans, r.err, time.Now()) {
			changed = true
		}
	}
	scope, paths, err := scopeIDs(e.policies, e.opts.CgroupMount)
	if err != nil {
		e.log.Warn("egress: cannot rescan the cgroups in scope", "err", err)
		scope, paths = e.scope, e.paths
	}
	exes, exePaths, err := exeIDs(e.policies)
	if err != nil {
		e.log.Warn("egress: cannot rescan the executables in scope", "err", err)
		exes, exePaths = e.exes, e.exePaths
	}
	if !changed && mapsEqual(scope, e.scope) && mapsEqual(exes, e.exes) {
		return
	}
	t, err := buildTables(rules(e.policies, e.names.addrs))
	if err == nil {
		err = e.writeKernel(t, scope, exes, e.enforce)
	}
	if err != nil {
		e.log.Error("egress: cannot update the kernel's tables", "err", err)
		return
	}
	e.paths, e.exePaths = paths, exePaths
}

func mapsEqual[K comparable](a, b map[K]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// report journals an event once per process, destination and hook.
func (e *Enforcer) report(ev *cgroup.EgressEgressEvent) {
	var addr netip.Addr
	if ev.Family == 4 {
		addr = netip.AddrFrom4([4]byte(ev.Addr[:4]))
	} else {
		addr = netip.AddrFrom16(ev.Addr)
	}
	key := seenKey{pid: ev.Pid, dest: netip.AddrPortFrom(addr, ev.Port), hook: ev.Hook}
	e.mu.Lock()
	if _, dup := e.seen[key]; dup {
		e.mu.Unlock()
		e.deduped.Add(1)
		return
	}
	if len(e.seenOrder) >= maxSeen {
		delete(e.seen, e.seenOrder[0])
		e.seenOrder = e.seenOrder[1:]
	}
	e.seen[key] = struct{}{}
	e.seenOrder = append(e.seenOrder, key)
	// Known now, for a process gone before /proc is read: the path of its
	// executable if a scope names it, of its cgroup if a scope names it.
	exeKnown := e.exePaths[cgroup.EgressInodeKey{Ino: ev.ExeIno, Dev: ev.ExeDev}]
	cgKnown := e.paths[ev.Cgroup]
	var decided []string
	mask := ev.Policies
	if ev.Blocked != 0 {
		mask &= e.enforce
	}
	for i, p := range e.policies {
		if mask&(1<<uint(i)) != 0 {
			decided = append(decided, p.Name)
		}
	}
	e.mu.Unlock()
	if e.opts.Journal == nil {
		return
	}
	hook := "?"
	if int(ev.Hook) < len(hookNames) {
		hook = hookNames[ev.Hook]
	}
	rec := journal.Egress{
		Blocked: ev.Blocked != 0, Policies: decided, Hook: hook, Dest: key.dest,
		PID: int(ev.Pid), CgroupID: ev.Cgroup, Priority: policy.PriorityErr,
		Comm: commString(ev.Comm),
	}
	if !rec.Blocked {
		rec.Priority = policy.PriorityWarning
	}
	switch ev.Protocol {
	case unix.IPPROTO_TCP:
		rec.Protocol = "tcp"
	case unix.IPPROTO_UDP:
		rec.Protocol = "udp"
	case unix.IPPROTO_ICMP, unix.IPPROTO_ICMPV6:
		rec.Protocol = "icmp"
	}
	fs := proc.FS{}
	switch exe, err := fs.Exe(ev.Pid); {
	case err == nil:
		rec.Exe = exe
	case exeKnown != "":
		rec.Exe = exeKnown
	default:
		rec.Exe = "?"
	}
	if cg, err := fs.CgroupPath(ev.Pid); err == nil {
		rec.Cgroup = cg
	} else {
		rec.Cgroup = cgKnown
	}
	if u, ok := act.ParseUnit(rec.Cgroup); ok && rec.Cgroup != "" {
		rec.Unit = u.Name
	}
	if err := e.opts.Journal.LogEgress(rec); err != nil {
		e.journalErrors.Add(1)
		e.log.Warn("egress: cannot journal", "err", err)
		return
	}
	e.journaled.Add(1)
}

func commString(c [16]int8) string {
	b := make([]byte, 0, len(c))
	for _, x := range c {
		if x == 0 {
			break
		}
		b = append(b, byte(x))
	}
	return string(b)
}

// Counters are what the kernel counted for one hook, in scope only.
type Counters struct {
	Hook                       string
	Allowed, Blocked, Reported uint64
}

// Status is the egress state for "aarsm status".
type Status struct {
	// Attached: the programs are attached (while a policy is in force).
	Attached bool
	Policies []PolicyStatus
	Counters []Counters
	// Lost: events the ring buffer had no room for (counted, not
	// journaled). Journaled: entries written; Deduped: events of a
	// process and destination already journaled.
	Lost, Journaled, JournalErrors, Deduped uint64
}

// PolicyStatus is one egress policy in force.
type PolicyStatus struct {
	Name        string
	Mode        string
	Cgroups     []string // the cgroups in its scope now
	Executables []string // the executables in its scope now
	Hosts       []HostStatus
}

// HostStatus is an allowed host name and its addresses now.
type HostStatus struct {
	Name  string
	Addrs []netip.Addr
	Error string // the last resolution's error, if it failed
}

// Status returns the policies in force and the counters.
func (e *Enforcer) Status() (Status, error) {
	var st Status
	e.mu.Lock()
	st.Attached = len(e.links) > 0
	for i, p := range e.policies {
		ps := PolicyStatus{Name: p.Name, Mode: string(p.Mode)}
		for id, m := range e.scope {
			if m&(1<<uint(i)) != 0 {
				ps.Cgroups = append(ps.Cgroups, e.paths[id])
			}
		}
		sort.Strings(ps.Cgroups)
		for k, m := range e.exes {
			if m&(1<<uint(i)) != 0 {
				ps.Executables = append(ps.Executables, e.exePaths[k])
			}
		}
		sort.Strings(ps.Executables)
		for _, h := range p.Hosts() {
			hs := HostStatus{Name: h, Addrs: e.names.addrs(h)}
			if s := e.names.hosts[h]; s != nil && s.err != nil {
				hs.Error = s.err.Error()
			}
			ps.Hosts = append(ps.Hosts, hs)
		}
		st.Policies = append(st.Policies, ps)
	}
	e.mu.Unlock()
	for h, name := range hookNames {
		c := Counters{Hook: name}
		var err error
		if c.Allowed, err = e.counter(h*outcomes + 0); err != nil {
			return st, err
		}
		if c.Blocked, err = e.counter(h*outcomes + 1); err != nil {
			return st, err
		}
		if c.Reported, err = e.counter(h*outcomes + 2); err != nil {
			return st, err
		}
		st.Counters = append(st.Counters, c)
	}
	lost, err := e.counter(counterLost)
	if err != nil {
		return st, err
	}
	st.Lost = lost
	st.Journaled, st.JournalErrors, st.Deduped = e.journaled.Load(), e.journalErrors.Load(), e.deduped.Load()
	return st, nil
}

func (e *Enforcer) counter(i int) (uint64, error) {
	var per []uint64
	if err := e.objs.EgressCounters.Lookup(uint32(i), &per); err != nil {
		return 0, fmt.Errorf("read egress counter %d: %w", i, err)
	}
	var n uint64
	for _, v := range per {
		n += v
	}
	return n, nil
}
