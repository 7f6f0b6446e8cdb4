package act

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/bpffs"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/statefile"
	"github.com/aarsm/aarsm/bpf/cgroup"
)

// DefaultPinDir and DefaultStateDir are where the agent keeps the
// quarantine: pins in bpffs, and a JSON copy that survives a reboot.
const (
	DefaultPinDir   = "/sys/fs/bpf/aarsm"
	DefaultStateDir = "/var/lib/aarsm"
)

const (
	mapPinName    = "quarantined"
	stateFileName = "quarantine.json"
	lockFileName  = "quarantine.lock"
	forever       = ^uint64(0)
)

// How long the state lock is waited for: by a Quarantine's methods, which
// hold its mutex meanwhile (Add runs in the agent's event loop, while the
// sender is held), and by OpenQuarantine and LiftQuarantine.
const (
	agentLockTimeout = 250 * time.Millisecond
	otherLockTimeout = 10 * time.Second
)

// ErrNotQuarantined is returned by LiftQuarantine for a cgroup that is not
// quarantined.
var ErrNotQuarantined = errors.New("not quarantined")

// ErrStateLocked is returned when the state lock could not be taken in
// time.
var ErrStateLocked = errors.New("quarantine state locked by another process")

// ErrStateCorrupt is wrapped by the error of a state file that does not
// decode. OpenQuarantine moves such a file aside
// (quarantine.json.corrupt-<time>, 0600) and starts a fresh one
// (Quarantine.Recovered); "aarsm quarantine" reports it and leaves it.
var ErrStateCorrupt = errors.New("quarantine state file corrupt")

// maxCorruptState bounds the corrupt state files kept aside.
const maxCorruptState = 3

// ErrProtectedCgroup is returned by Quarantine.Add for the cgroup v2 root
// and for the agent's own cgroup and its ancestors: quarantining those
// would cut the whole machine, or the agent itself, off the network.
var ErrProtectedCgroup = errors.New("cgroup must not be quarantined")

// QuarantineOptions configure OpenQuarantine.
type QuarantineOptions struct {
	// PinDir is the bpffs directory for the map and links, e.g.
	// DefaultPinDir. If its parent directory is not a bpffs, a bpffs is
	// mounted on the parent (the usual case: /sys/fs/bpf not mounted).
	PinDir string
	// StateDir holds quarantine.json, e.g. DefaultStateDir. Empty: no
	// state file (the quarantine then does not survive a reboot).
	StateDir string
	// CgroupMount is the cgroup v2 mount; empty means the one in
	// /proc/self/mountinfo.
	CgroupMount string
}

// QuarantineEntry is one quarantined cgroup.
type QuarantineEntry struct {
	CgroupID uint64 `json:"cgroup_id"`
	// Cgroup is the cgroup's path relative to the cgroup2 mount when it
	// was known at Add (it is used to find the cgroup again after a
	// reboot, when ids change).
	Cgroup string `json:"cgroup,omitempty"`
	// Until is the end of the quarantine; the zero time means no end.
	Until time.Time `json:"until,omitzero"`
}

// Quarantine refuses new egress of chosen cgroups (and of all cgroups
// below them): connect(2) on TCP and UDP sockets and sendmsg(2) on
// unconnected UDP sockets, IPv4 and IPv6, fail with EPERM. Loopback is
// refused too: a quarantined process must not reach a local relay or
// proxy either. Connections that exist already are not affected (see
// DestroySockets), nor are Unix sockets.
//
// The programs are attached once to the cgroup v2 root; the map of
// quarantined cgroups and the links are pinned under PinDir, so the
// quarantine holds while the agent restarts and a new agent takes it over
// (replacing the programs with its own through the links). When the pins
// are gone (after a reboot), OpenQuarantine restores the entries of the
// state file that have not expired.
//
// The state file is the map's contents (plus each cgroup's path), written
// after every change of the map. Two processes change them: the agent
// (Add, Expire) and "aarsm quarantine lift" (LiftQuarantine), which works
// whether an agent runs or not. Each change of the map and the state file
// together is made under an exclusive flock(2) on quarantine.lock in the
// state directory, and the state file is always written from the map as
// it is under the lock, so neither can undo the other's change. (An Add
// that cannot have the lock within agentLockTimeout puts the cgroup in the
// map all the same, the kernel refusing its connections at once, and
// reports the state file as not updated; the next change writes it.)
//
// A Quarantine is safe for concurrent use.
type Quarantine struct {
	opts QuarantineOptions

	mu        sync.Mutex
	m         *ebpf.Map
	links     []link.Link
	protected map[uint64]bool
	paths     map[uint64]string // cgroup id -> path, for the state file
	restored  bool
	closed    bool
	recovered error // the corrupt state file moved aside at open
}

type attachPoint struct {
	pin    string
	attach ebpf.AttachType
	prog   func(*cgroup.QuarantineObjects) *ebpf.Program
}

// attachPoints lists the programs, where they attach and their pin names.
func attachPoints() []attachPoint {
	return []attachPoint{
		{"connect4", ebpf.AttachCGroupInet4Connect, func(o *cgroup.QuarantineObjects) *ebpf.Program { return o.QuarantineConnect4 }},
		{"connect6", ebpf.AttachCGroupInet6Connect, func(o *cgroup.QuarantineObjects) *ebpf.Program { return o.QuarantineConnect6 }},
		{"sendmsg4", ebpf.AttachCGroupUDP4Sendmsg, func(o *cgroup.QuarantineObjects) *ebpf.Program { return o.QuarantineSendmsg4 }},
		{"sendmsg6", ebpf.AttachCGroupUDP6Sendmsg, func(o *cgroup.QuarantineObjects) *ebpf.Program { return o.QuarantineSendmsg6 }},
	}
}

// OpenQuarantine loads the quarantine programs and attaches them to the
// cgroup v2 root, or takes over the map and links pinned under
// opts.PinDir by an earlier agent.
func OpenQuarantine(opts QuarantineOptions) (*Quarantine, error) {
	if opts.PinDir == "" {
		return nil, fmt.Errorf("open quarantine: no pin directory")
	}
	if opts.CgroupMount == "" {
		mnt, err := CgroupMount()
		if err != nil {
			return nil, fmt.Errorf("open quarantine: %w", err)
		}
		opts.CgroupMount = mnt
	}
	if err := bpffs.Ensure(opts.PinDir); err != nil {
		return nil, fmt.Errorf("open quarantine: %w", err)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("open quarantine: %w", err)
	}
	q := &Quarantine{opts: opts, paths: make(map[uint64]string)}
	var err error
	if q.protected, err = protectedCgroups(opts.CgroupMount); err != nil {
		return nil, fmt.Errorf("open quarantine: %w", err)
	}

	spec, err := cgroup.LoadQuarantine()
	if err != nil {
		return nil, fmt.Errorf("open quarantine: load spec: %w", err)
	}
	// From before the map is pinned until it is restored: a lift must not
	// see a new, empty map and write an empty state file.
	unlock, err := lockState(opts.StateDir, otherLockTimeout)
	if err != nil {
		return nil, fmt.Errorf("open quarantine: %w", err)
	}
	defer unlock()
	mapPin := filepath.Join(opts.PinDir, mapPinName)
	_, statErr := os.Stat(mapPin)
	fresh := errors.Is(statErr, fs.ErrNotExist)
	spec.Maps[mapPinName].Pinning = ebpf.PinByName
	var objs cgroup.QuarantineObjects
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: opts.PinDir},
	}); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("open quarantine: load programs: %+w", ve)
		}
		return nil, fmt.Errorf("open quarantine: load programs: %w", err)
	}
	// The links hold the programs; the map is kept.
	defer objs.QuarantinePrograms.Close()
	q.m = objs.Quarantined

	root := opts.CgroupMount
	for _, a := range attachPoints() {
		l, err := attachOrUpdate(filepath.Join(opts.PinDir, a.pin), root, a.attach, a.prog(&objs))
		if err != nil {
			_ = q.closeAll()
			return nil, fmt.Errorf("open quarantine: %s: %w", a.pin, err)
		}
		q.links = append(q.links, l)
	}

	state, err := q.readState()
	if errors.Is(err, ErrStateCorrupt) {
		// What the pinned map holds stays in force; the paths of its
		// cgroups (for a reboot) are lost with the file.
		q.recovered = q.setAsideState(err)
		state = nil
	} else if err != nil {
		_ = q.closeAll()
		return nil, fmt.Errorf("open quarantine: %w", err)
	}
	for _, e := range state {
		if e.Cgroup != "" {
			q.paths[e.CgroupID] = e.Cgroup
		}
	}
	if fresh && len(state) > 0 {
		if err := q.restore(state, time.Now()); err != nil {
			_ = q.closeAll()
			return nil, fmt.Errorf("open quarantine: restore: %w", err)
		}
		q.restored = true
	}
	return q, nil
}

// setAsideState moves the corrupt state file aside and writes a fresh one
// from the map; it returns what to report. The caller holds the state
// lock.
func (q *Quarantine) setAsideState(corrupt error) error {
	p := filepath.Join(q.opts.StateDir, stateFileName)
	moved, err := statefile.MoveAside(p, time.Now(), maxCorruptState)
	if err != nil {
		return errors.Join(corrupt, err)
	}
	if err := q.writeState(); err != nil {
		return fmt.Errorf("%w (moved to %s; a fresh state file could not be written: %w)", corrupt, moved, err)
	}
	return fmt.Errorf("%w (moved to %s; started a fresh one)", corrupt, moved)
}

// Recovered returns, when the state file was corrupt at open, an error
// naming it and where it was moved aside; nil otherwise.
func (q *Quarantine) Recovered() error { return q.recovered }

// attachOrUpdate takes over the link pinned at pin and makes it run prog,
// or attaches prog to the cgroup root and pins the new link.
func attachOrUpdate(pin, root string, attach ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if err == nil {
		if err := l.Update(prog); err != nil {
			_ = l.Close()
			return nil, fmt.Errorf("replace program of pinned link: %w", err)
		}
		return l, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("load pinned link: %w", err)
	}
	l, err = link.AttachCgroup(link.CgroupOptions{Path: root, Attach: attach, Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attach to cgroup %s: %w", root, err)
	}
	if err := l.Pin(pin); err != nil {
		_ = l.Close()
		return nil, fmt.Errorf("pin link: %w", err)
	}
	return l, nil
}

// protectedCgroups returns the ids of the cgroup root and of the agent's
// own cgroup and its ancestors.
func protectedCgroups(mount string) (map[uint64]bool, error) {
	self, err := proc.FS{}.CgroupPath(uint32(os.Getpid()))
	if err != nil {
		return nil, fmt.Errorf("own cgroup: %w", err)
	}
	ids := make(map[uint64]bool)
	p := "/" + strings.Trim(self, "/")
	for {
		id, err := CgroupID(mount, p)
		if err != nil {
			return nil, err
		}
		ids[id] = true
		if p == "/" {
			return ids, nil
		}
		p = filepath.Dir(p)
	}
}

// Restored reports whether OpenQuarantine found no pinned map and filled
// a new one from the state file.
func (q *Quarantine) Restored() bool { return q.restored }

// Add quarantines the cgroup with id cgroupID until the given time (the
// zero time: until lifted). path is the cgroup's path relative to the
// cgroup2 mount ("/system.slice/x.service"), kept in the state file to find
// the cgroup again after a reboot; empty if unknown (then the one given
// before, if any, is kept). Adding a quarantined cgroup again replaces its
// end.
func (q *Quarantine) Add(cgroupID uint64, path string, until time.Time) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("quarantine cgroup %d: quarantine closed", cgroupID)
	}
	if q.protected[cgroupID] {
		return fmt.Errorf("quarantine cgroup %d: %w", cgroupID, ErrProtectedCgroup)
	}
	unlock, lockErr := lockState(q.opts.StateDir, agentLockTimeout)
	if err := q.m.Put(cgroupID, toBoot(until, time.Now())); err != nil {
		if lockErr == nil {
			unlock()
		}
		return fmt.Errorf("quarantine cgroup %d: %w", cgroupID, err)
	}
	if path != "" {
		q.paths[cgroupID] = cleanCgroupPath(path)
	}
	if lockErr != nil {
		return fmt.Errorf("quarantine cgroup %d: in force, but the state file is not updated: %w", cgroupID, lockErr)
	}
	defer unlock()
	if err := q.writeState(); err != nil {
		return fmt.Errorf("quarantine cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Remove lifts the quarantine of cgroupID. Removing a cgroup that is not
// quarantined is not an error.
func (q *Quarantine) Remove(cgroupID uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("release cgroup %d: quarantine closed", cgroupID)
	}
	unlock, err := lockState(q.opts.StateDir, agentLockTimeout)
	if err != nil {
		return fmt.Errorf("release cgroup %d: %w", cgroupID, err)
	}
	defer unlock()
	if err := q.m.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("release cgroup %d: %w", cgroupID, err)
	}
	delete(q.paths, cgroupID)
	if err := q.writeState(); err != nil {
		return fmt.Errorf("release cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// List returns the entries of the map, expired ones included, sorted by
// cgroup id.
func (q *Quarantine) List() ([]QuarantineEntry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, fmt.Errorf("list quarantine: quarantine closed")
	}
	return q.list(time.Now())
}

func (q *Quarantine) list(now time.Time) ([]QuarantineEntry, error) {
	return listMap(q.m, q.paths, now)
}

// listMap returns the entries of a quarantine map, with the paths known.
func listMap(m *ebpf.Map, paths map[uint64]string, now time.Time) ([]QuarantineEntry, error) {
	var out []QuarantineEntry
	var id, boot uint64
	it := m.Iterate()
	for it.Next(&id, &boot) {
		out = append(out, QuarantineEntry{CgroupID: id, Cgroup: paths[id], Until: fromBoot(boot, now)})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	slices.SortFunc(out, func(a, b QuarantineEntry) int { return cmpUint(a.CgroupID, b.CgroupID) })
	return out, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Expire removes the entries that ended at or before now and returns their
// cgroup ids. (The programs already let expired entries through.)
func (q *Quarantine) Expire(now time.Time) ([]uint64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil, fmt.Errorf("expire quarantine: quarantine closed")
	}
	unlock, err := lockState(q.opts.StateDir, agentLockTimeout) // tried again at the next round
	if err != nil {
		return nil, fmt.Errorf("expire quarantine: %w", err)
	}
	defer unlock()
	nowBoot := toBoot(now, time.Now())
	var expired []uint64
	var id, boot uint64
	it := q.m.Iterate()
	for it.Next(&id, &boot) {
		if boot <= nowBoot {
			expired = append(expired, id)
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("expire quarantine: %w", err)
	}
	var errs []error
	for _, id := range expired {
		if err := q.m.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("cgroup %d: %w", id, err))
		}
		delete(q.paths, id)
	}
	if len(expired) > 0 {
		errs = append(errs, q.writeState())
	}
	if err := errors.Join(errs...); err != nil {
		return expired, fmt.Errorf("expire quarantine: %w", err)
	}
	return expired, nil
}

// Close releases the agent's handles. The pins stay: the quarantine goes
// on being enforced, and the next OpenQuarantine takes it over.
func (q *Quarantine) Close() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = true
	return q.closeAll()
}

func (q *Quarantine) closeAll() error {
	var errs []error
	for _, l := range q.links {
		errs = append(errs, l.Close())
	}
	q.links = nil
	if q.m != nil {
		errs = append(errs, q.m.Close())
	}
	return errors.Join(errs...)
}

// Unpin detaches the programs, deletes the pins and the pin directory
// (if empty), and closes q. The state file is kept.
func (q *Quarantine) Unpin() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var errs []error
	if !q.closed {
		for _, l := range q.links {
			errs = append(errs, l.Unpin())
		}
		if q.m != nil {
			errs = append(errs, q.m.Unpin())
		}
		errs = append(errs, q.closeAll())
		q.closed = true
	} else {
		// Closed already: remove the pins by name.
		for _, a := range attachPoints() {
			errs = append(errs, removeIfExists(filepath.Join(q.opts.PinDir, a.pin)))
		}
		errs = append(errs, removeIfExists(filepath.Join(q.opts.PinDir, mapPinName)))
	}
	if err := os.Remove(q.opts.PinDir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unpin quarantine: %w", err)
	}
	return nil
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// restore fills the map from the state file's unexpired entries. A cgroup
// whose path is known is looked up again: after a reboot it has a new id.
func (q *Quarantine) restore(state []QuarantineEntry, now time.Time) error {
	clear(q.paths)
	var errs []error
	for _, e := range state {
		if !e.Until.IsZero() && !e.Until.After(now) {
			continue
		}
		id := e.CgroupID
		if e.Cgroup != "" {
			if cur, err := CgroupID(q.opts.CgroupMount, e.Cgroup); err == nil {
				id = cur
			}
			q.paths[id] = e.Cgroup
		}
		if q.protected[id] {
			continue
		}
		if err := q.m.Put(id, toBoot(e.Until, now)); err != nil {
			errs = append(errs, fmt.Errorf("cgroup %d: %w", id, err))
		}
	}
	errs = append(errs, q.writeState())
	return errors.Join(errs...)
}

func (q *Quarantine) readState() ([]QuarantineEntry, error) {
	return readStateFile(q.opts.StateDir)
}

// writeState replaces the state file with the map's contents. The caller
// holds the state lock.
func (q *Quarantine) writeState() error {
	if q.opts.StateDir == "" {
		return nil
	}
	entries, err := q.list(time.Now())
	if err != nil {
		return err
	}
	return writeStateFile(q.opts.StateDir, entries)
}

type stateFile struct {
	Version int               `json:"version"`
	Entries []QuarantineEntry `json:"entries"`
}

// readStateFile reads dir's state file; none (or no dir) is no entry.
func readStateFile(dir string) ([]QuarantineEntry, error) {
	if dir == "" {
		return nil, nil
	}
	p := filepath.Join(dir, stateFileName)
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("read state %s: %w: %w", p, ErrStateCorrupt, err)
	}
	if s.Version != 1 {
		return nil, fmt.Errorf("read state %s: %w: version %d, want 1", p, ErrStateCorrupt, s.Version)
	}
	return s.Entries, nil
}

// writeStateFile replaces dir's state file (written aside and renamed).
func writeStateFile(dir string, entries []QuarantineEntry) error {
	if entries == nil {
		entries = []QuarantineEntry{}
	}
	b, err := json.MarshalIndent(stateFile{Version: 1, Entries: entries}, "", "  ")
	if err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	if err := statefile.WriteAtomic(filepath.Join(dir, stateFileName), "."+stateFileName+".tmp-", append(b, '\n')); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// lockState takes the state lock of dir (see Quarantine), waiting at most
// timeout, and returns its release. With no state directory there is no
// lock.
func lockState(dir string, timeout time.Duration) (func(), error) {
	if dir == "" {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("lock quarantine state: %w", err)
	}
	release, err := statefile.Lock(filepath.Join(dir, lockFileName), timeout, ErrStateLocked)
	if err != nil {
		return nil, fmt.Errorf("lock quarantine state: %w", err)
	}
	return release, nil
}

// cleanCgroupPath puts a cgroup path relative to the mount in the form of
// /proc/PID/cgroup: "/a/b".
func cleanCgroupPath(p string) string {
	return filepath.Clean("/" + strings.Trim(p, "/"))
}

// ListQuarantine returns the network quarantines in force without asking
// the agent: the pinned map's entries with the paths of the state file,
// or, when nothing is pinned (after a reboot, before the agent restores
// them), the state file's. Expired entries are left out.
func ListQuarantine(opts QuarantineOptions) ([]QuarantineEntry, error) {
	now := time.Now()
	state, err := readStateFile(opts.StateDir)
	if err != nil {
		return nil, err
	}
	entries := state
	m, err := loadPinnedQuarantine(opts.PinDir)
	if err != nil {
		return nil, err
	}
	if m != nil {
		defer m.Close()
		if entries, err = listMap(m, statePaths(state), now); err != nil {
			return nil, err
		}
	}
	var out []QuarantineEntry
	for _, e := range entries {
		if e.Until.IsZero() || e.Until.After(now) {
			out = append(out, e)
		}
	}
	return out, nil
}

// LiftQuarantine ends the network quarantine of one cgroup before its
// expiry, whether an agent runs or not: it deletes the cgroup from the
// pinned map (the kernel lets its connections through at once) and from
// the state file (a restore will not bring it back), under the state lock
// the agent takes for its own changes. cgroup is a cgroup id, a path
// relative to the cgroup2 mount ("/system.slice/x.service", as
// /proc/PID/cgroup and "aarsm status" name it) or the cgroup's directory
// ("/sys/fs/cgroup/system.slice/x.service"). It returns the entry lifted;
// ErrNotQuarantined if there is none.
func LiftQuarantine(opts QuarantineOptions, cgroup string) (QuarantineEntry, error) {
	if opts.CgroupMount == "" {
		mnt, err := CgroupMount()
		if err != nil {
			return QuarantineEntry{}, fmt.Errorf("lift quarantine: %w", err)
		}
		opts.CgroupMount = mnt
	}
	unlock, err := lockState(opts.StateDir, otherLockTimeout)
	if err != nil {
		return QuarantineEntry{}, fmt.Errorf("lift quarantine: %w", err)
	}
	defer unlock()
	state, err := readStateFile(opts.StateDir)
	if err != nil {
		return QuarantineEntry{}, fmt.Errorf("lift quarantine: %w", err)
	}
	m, err := loadPinnedQuarantine(opts.PinDir)
	if err != nil {
		return QuarantineEntry{}, fmt.Errorf("lift quarantine: %w", err)
	}
	paths := statePaths(state)
	entries := state
	now := time.Now()
	if m != nil {
		defer m.Close()
		if entries, err = listMap(m, paths, now); err != nil {
			return QuarantineEntry{}, fmt.Errorf("lift quarantine: %w", err)
		}
	}
	e, ok := matchQuarantine(entries, cgroup, opts.CgroupMount)
	if !ok {
		return QuarantineEntry{}, fmt.Errorf("lift quarantine: cgroup %s: %w", cgroup, ErrNotQuarantined)
	}
	rest := slices.DeleteFunc(slices.Clone(state), func(s QuarantineEntry) bool { return s.CgroupID == e.CgroupID })
	if m != nil {
		if err := m.Delete(e.CgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return e, fmt.Errorf("lift quarantine of cgroup %d: %w", e.CgroupID, err)
		}
		if rest, err = listMap(m, paths, now); err != nil {
			return e, fmt.Errorf("lift quarantine of cgroup %d: lifted, but %w", e.CgroupID, err)
		}
	}
	if opts.StateDir != "" {
		if err := writeStateFile(opts.StateDir, rest); err != nil {
			return e, fmt.Errorf("lift quarantine of cgroup %d: %w", e.CgroupID, err)
		}
	}
	return e, nil
}

// loadPinnedQuarantine opens the map pinned in pinDir; nil if there is
// none.
func loadPinnedQuarantine(pinDir string) (*ebpf.Map, error) {
	if pinDir == "" {
		return nil, nil
	}
	p := filepath.Join(pinDir, mapPinName)
	m, err := ebpf.LoadPinnedMap(p, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open pinned quarantine map %s: %w", p, err)
	}
	if m.KeySize() != 8 || m.ValueSize() != 8 {
		_ = m.Close()
		return nil, fmt.Errorf("pinned map %s is not a quarantine map (key %d, value %d bytes)", p, m.KeySize(), m.ValueSize())
	}
	return m, nil
}

func statePaths(state []QuarantineEntry) map[uint64]string {
	paths := make(map[uint64]string, len(state))
	for _, e := range state {
		if e.Cgroup != "" {
			paths[e.CgroupID] = e.Cgroup
		}
	}
	return paths
}

// matchQuarantine finds the entry that which names: a cgroup id, a path
// relative to mount, or a directory under mount.
func matchQuarantine(entries []QuarantineEntry, which, mount string) (QuarantineEntry, bool) {
	if id, err := strconv.ParseUint(which, 10, 64); err == nil {
		for _, e := range entries {
			if e.CgroupID == id {
				return e, true
			}
		}
		return QuarantineEntry{}, false
	}
	rel := which
	if r, err := filepath.Rel(mount, which); err == nil && filepath.IsAbs(which) && !strings.HasPrefix(r, "..") {
		rel = r
	}
	rel = cleanCgroupPath(rel)
	id, idErr := CgroupID(mount, rel) // the cgroup as it is now
	for _, e := range entries {
		if (e.Cgroup != "" && e.Cgroup == rel) || (idErr == nil && e.CgroupID == id) {
			return e, true
		}
	}
	return QuarantineEntry{}, false
}

// bootNow returns CLOCK_BOOTTIME, the clock of bpf_ktime_get_boot_ns.
func bootNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	return uint64(ts.Nano())
}

// toBoot converts a wall-clock time to CLOCK_BOOTTIME ns, now being the
// current wall-clock time. The zero time is "forever".
func toBoot(t, now time.Time) uint64 {
	if t.IsZero() {
		return forever
	}
	b := int64(bootNow()) + int64(t.Sub(now))
	if b < 0 {
		return 0
	}
	return uint64(b)
}

func fromBoot(b uint64, now time.Time) time.Time {
	if b == forever {
		return time.Time{}
	}
	return now.Add(time.Duration(int64(b) - int64(bootNow())))
}
