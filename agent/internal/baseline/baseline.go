// Package baseline keeps, per package and build (version and content
// hash), what the package has been seen to do: the destinations it sent
// to (host:port) and the recipient domains of its mail — and tells, for a
// new request, whether the package has done that before ("trust but
// verify", issue 14).
//
// # Identities
//
// A package is a kind and a name: "npm:postmark-mcp", "python:NAME", or,
// for what no package manager installed, the executable or script path:
// "exe:/usr/bin/curl", "script:/srv/tool.js" (Key, KeyOf). A build is one
// version and content hash of a package (pkgid.Hash.Sum): a package
// upgraded in place, or whose files were modified, runs a new build.
// A package seen as an MCP server's is marked so (Key.MCP, Package.MCP,
// Package.Kind: mcp, package, script, exe). An executable whose hash is
// not known yet is checked by path against all its builds
// (CheckUnhashed), never as a rug pull.
//
// # Verdicts
//
// A destination or domain is known when any build of the package was
// seen with it. Check and Observe return:
//
//   - Known: the destination and every recipient domain are known;
//   - UnseenDestination, UnseenDomain: one is not, and the build running
//     now has a baseline of its own (it was seen while learning);
//   - RugPull: one is not, and the package's baseline was learned under
//     other builds only: a version or content the store never let learn
//     sends somewhere its predecessors never did (1.0.15 learned
//     api.postmarkapp.com:443; 1.0.17 sends to a new host, or Bccs a new
//     domain). Result.Changed says the build is new to the package's
//     baseline also when nothing is unseen (a version change, not a
//     violation; FirstChange marks the first time the store says so);
//   - a package with no baseline at all (never seen, or forgotten) has
//     every destination unseen (Result.NoBaseline).
//
// # Learning
//
// The store records only while the package learns; otherwise it checks
// (and keeps the counts and last sights of what it knew):
//
//   - the global mode (Options.Mode, SetMode: the agent's configuration):
//     ModeLearn records everything, ModeEnforce checks;
//   - a window for every package, File.LearnUntil, and one per package,
//     Package.LearnUntil ("aarsm baseline learn [--for D] [PACKAGE]");
//   - a package seen for the first time by an enforcing store learns for
//     Options.FirstLearn (default one hour) from then on: a new MCP
//     server is trusted at first, a new build of a known one is not. A
//     forgotten package learns again from its next use.
//
// A verdict is computed against the baseline before the observation is
// recorded: while learning, Result.Learning is set and a verdict other
// than Known says what was new (it is not a violation: Result.Violation).
//
// # Bounds
//
// Per build at most MaxDestinations destinations and MaxDomains domains;
// per package MaxBuilds builds (the build seen least recently goes first);
// at most MaxPackages packages and MaxEntries destinations and domains in
// all. What a learning build sees beyond its bounds is not recorded
// (Result.Full): entries of a baseline are never pushed out by newer
// ones. A new package, or a new entry over MaxEntries, takes the place of
// the package used least recently (the other's baseline is dropped,
// Result.Evicted) only when that one has not been used for MinIdle
// (default a day): a flood of new identities cannot push out the
// baseline of a package in use; it is then not recorded (Result.Full).
//
// # Persistence and concurrency
//
// The store lives in one file (file.go, disk.go) under <state
// dir>/baseline, root-only, written whole and atomically in the
// background, at most every FlushInterval for new entries and every
// TouchInterval for counts and times only, and at Close. "aarsm baseline"
// changes the file beside a running store (Update); the store reads it
// back within RefreshInterval and merges its own observations into it
// (merge.go). A corrupt file is moved aside (baseline.json.corrupt-<time>)
// and the store starts empty (Open) or keeps what it has in memory (later
// reads); the error wraps ErrCorrupt for the caller to log.
//
// A Store is safe for concurrent use. Time comes from the caller
// (Observe's now), but for the background writes' schedule.
package baseline

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/aarsm/aarsm/agent/internal/pkgid"
)

// Mode is the store's global mode.
type Mode uint8

// Modes.
const (
	ModeLearn   Mode = iota // record what every package does
	ModeEnforce             // check; record only for packages in a learning window
)

func (m Mode) String() string {
	switch m {
	case ModeLearn:
		return "learn"
	case ModeEnforce:
		return "enforce"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// ParseMode parses "learn" or "enforce".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "learn":
		return ModeLearn, nil
	case "enforce":
		return ModeEnforce, nil
	}
	return 0, fmt.Errorf("baseline mode %q is neither learn nor enforce", cut(s, 64))
}

// Key names a build of a package.
type Key struct {
	// Package is the kind and name: "npm:NAME", "python:NAME",
	// "exe:/path", "script:/path".
	Package string
	Version string // "" for executables and scripts
	Hash    string // content hash, "sha256:..."; "" when unknown
	// MCP: the process is an MCP server (or its child); recorded with
	// the package (Package.MCP). Not part of the build's identity.
	MCP bool
}

// KeyOf returns the key of what a process runs: npm and Python packages
// by kind, name, version and hash; executables and scripts by path and
// hash.
func KeyOf(id pkgid.Identity) Key {
	switch id.Kind {
	case pkgid.KindNPM, pkgid.KindPython:
		if id.Name != "" {
			return Key{Package: id.Kind.String() + ":" + id.Name, Version: id.Version, Hash: id.Hash.Sum}
		}
		return Key{Package: pkgid.KindScript.String() + ":" + id.Entry, Hash: id.Hash.Sum}
	}
	return Key{Package: id.Kind.String() + ":" + id.Entry, Hash: id.Hash.Sum}
}

// String returns "npm:NAME@VERSION sha256:0123456789ab" (the hash cut
// to 12 digits), without the parts that are empty.
func (k Key) String() string {
	s := k.Package
	if k.Version != "" {
		s += "@" + k.Version
	}
	if k.Hash != "" {
		s += " " + ShortHash(k.Hash)
	}
	return s
}

// ShortHash cuts a "sha256:..." hash to 12 hex digits.
func ShortHash(h string) string {
	if algo, hex, ok := strings.Cut(h, ":"); ok && len(hex) > 12 {
		return algo + ":" + hex[:12]
	}
	return h
}

// canonical makes every part valid UTF-8, as the file keeps it.
func (k Key) canonical() Key {
	return Key{strings.ToValidUTF8(k.Package, "\uFFFD"), strings.ToValidUTF8(k.Version, "\uFFFD"), strings.ToValidUTF8(k.Hash, "\uFFFD"), k.MCP}
}

func (k Key) valid() bool {
	return checkPackageName(k.Package) == nil && len(k.Version) <= maxVersionLen && len(k.Hash) <= maxHashLen
}

// Verdict is what Check found, from the least to the most severe.
type Verdict uint8

// Verdicts.
const (
	Known             Verdict = iota // the destination and every domain are in the package's baseline
	UnseenDomain                     // a recipient domain is not (the build has a baseline of its own)
	UnseenDestination                // the destination is not (the build has a baseline of its own, or the package none)
	RugPull                          // unseen, and the package's baseline was learned under other builds only
)

func (v Verdict) String() string {
	switch v {
	case Known:
		return "known"
	case UnseenDomain:
		return "unseen_domain"
	case UnseenDestination:
		return "unseen_destination"
	case RugPull:
		return "rug_pull"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Result is what Check or Observe found.
type Result struct {
	Verdict Verdict
	Key     Key // the build checked
	// Learning: the package learns (global mode, a window): Observe
	// recorded what was new; the verdict says what that was and is not
	// a violation.
	Learning bool
	// NoBaseline: the package has no baseline at all (never seen, or
	// forgotten): every destination is unseen.
	NoBaseline bool
	// Changed: the package has a baseline, learned under other builds
	// only: its version or content changed since (an upgrade in place, a
	// modified package). With Verdict Known it is no violation; the
	// caller may log it, once: FirstChange is set the first time the
	// store reports this build (since it was opened).
	Changed, FirstChange bool
	// Previous is, when Changed, the build of the package seen last.
	Previous Key
	// UnseenDest is the destination (normalised) when it is not in the
	// baseline; UnseenDomains the recipient domains that are not.
	UnseenDest    string
	UnseenDomains []string
	// Full: learning, but a bound kept something from being recorded.
	Full bool
	// Evicted are the packages whose baselines were dropped to make room
	// for this one's.
	Evicted []string
	// Untracked: the key is not one the store keeps (no known kind, a
	// part over its bound); nothing was checked: Verdict is Known.
	Untracked bool
	// HashPending: checked by CheckUnhashed, against every build of the
	// package (the build running is not known yet): never Changed, never
	// RugPull.
	HashPending bool
}

// Violation reports whether the result is a violation to act on: a
// verdict other than Known for a package that is not learning.
func (r Result) Violation() bool { return r.Verdict != Known && !r.Learning && !r.Untracked }

// Default bounds and intervals (Options).
const (
	DefaultMaxPackages     = 1024
	DefaultMaxBuilds       = 8
	DefaultMaxDestinations = 256
	DefaultMaxDomains      = 256
	DefaultMaxEntries      = 1 << 16
	DefaultFirstLearn      = time.Hour
	DefaultMinIdle         = 24 * time.Hour
	DefaultFlushInterval   = 5 * time.Second
	DefaultTouchInterval   = time.Minute
	DefaultRefreshInterval = time.Second
)

// Options configure a Store. Zero fields take the defaults.
type Options struct {
	Mode Mode

	MaxPackages     int // packages kept
	MaxBuilds       int // builds kept per package
	MaxDestinations int // destinations per build
	MaxDomains      int // recipient domains per build
	MaxEntries      int // destinations and domains in all

	// FirstLearn is how long a package learns from its first sight by an
	// enforcing store; negative: not at all (a package without a
	// baseline is checked against none).
	FirstLearn time.Duration
	// MinIdle is how long a package must have gone unused before a new
	// one may take its place; negative: any package may be dropped.
	MinIdle time.Duration

	// FlushInterval: new entries are written at most this often;
	// TouchInterval: counts and times only, at most this often;
	// RefreshInterval: how often the background goroutine looks for a
	// change of the file by another process. A negative RefreshInterval
	// starts no background goroutine: the caller calls Flush.
	FlushInterval, TouchInterval, RefreshInterval time.Duration

	// Log receives the background writes' errors; nil: discarded.
	Log *slog.Logger
	// Now is the clock of the background writes (schedule, the file's
	// "updated", the name a corrupt file is moved to); nil: time.Now.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&o.MaxPackages, DefaultMaxPackages)
	def(&o.MaxBuilds, DefaultMaxBuilds)
	def(&o.MaxDestinations, DefaultMaxDestinations)
	def(&o.MaxDomains, DefaultMaxDomains)
	def(&o.MaxEntries, DefaultMaxEntries)
	defDur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defDur(&o.FirstLearn, DefaultFirstLearn)
	defDur(&o.MinIdle, DefaultMinIdle)
	defDur(&o.FlushInterval, DefaultFlushInterval)
	defDur(&o.TouchInterval, DefaultTouchInterval)
	defDur(&o.RefreshInterval, DefaultRefreshInterval)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Stats count what the store did since it was opened.
type Stats struct {
	Packages, Builds, Entries int // now
	Writes                    uint64
	WriteErrors               uint64
	Reloads                   uint64 // the file changed by another process, read and merged
	Corrupt                   uint64 // corrupt files moved aside
	Evicted                   uint64 // packages dropped to make room
	Refused                   uint64 // observations a bound kept from being recorded
}

// maxAnnounced bounds the builds whose change was reported (FirstChange).
const maxAnnounced = 4096

// Store is the baseline of every package, in memory and on disk.
type Store struct {
	dir  string
	opts Options

	mu        sync.Mutex
	mode      Mode
	st        *state
	base      *File  // the file as last read or written
	id        fileID // its identity
	dirtyNew  bool   // new packages, builds or entries not written yet
	dirty     bool   // counts and times not written yet
	lastWrite time.Time
	announced map[Key]bool
	stats     Stats
	lastErr   string
	closed    bool

	stop chan struct{}
	done chan struct{}
}

// Open opens the baseline of dir (Dir(stateDir)), creating the directory
// (0700) if needed; it refuses a directory or file that is a symbolic
// link or owned by another user. A corrupt file is moved aside: the store
// then starts empty, and Open returns it with an error wrapping
// ErrCorrupt for the caller to log. Unless Options.RefreshInterval is
// negative, a background goroutine writes and reads the file until
// Close.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := prepareDir(dir); err != nil {
		return nil, err
	}
	unlock, err := lock(dir, otherLockTimeout)
	if err != nil {
		return nil, err
	}
	removeTemps(dir)
	id, err := statFile(dir)
	if err != nil {
		unlock()
		return nil, err
	}
	f, err := readFile(dir)
	var openErr error
	if errors.Is(err, ErrCorrupt) {
		if name, merr := moveAside(dir, opts.Now()); merr != nil {
			openErr = errors.Join(err, merr)
		} else {
			openErr = fmt.Errorf("%w (moved to %s; the baseline starts empty)", err, name)
		}
		f, id = nil, fileID{}
	} else if err != nil {
		unlock()
		return nil, err
	}
	unlock()
	if f == nil {
		f = NewFile()
	}
	s := &Store{dir: dir, opts: opts, mode: opts.Mode, st: fromFile(f), base: f, id: id,
		lastWrite: opts.Now(), announced: map[Key]bool{}}
	if openErr != nil {
		s.stats.Corrupt++
	}
	if dropped := s.st.trim(opts); len(dropped) > 0 {
		s.dirtyNew = true
	}
	if opts.RefreshInterval > 0 {
		s.stop, s.done = make(chan struct{}), make(chan struct{})
		go s.run()
	}
	return s, openErr
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Mode returns the global mode.
func (s *Store) Mode() Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetMode changes the global mode (a reload of the agent's
// configuration).
func (s *Store) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode != m {
		s.mode = m
		s.dirtyNew = true
	}
}

// Check returns what Observe would, and changes nothing.
func (s *Store) Check(k Key, dest string, domains []string, now time.Time) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.see(k, dest, domains, now, false, false)
}

// CheckUnhashed checks a request of package pkg (Key.Package) whose
// content hash is not known yet (an executable still being hashed): the
// destination and domains against those of every build of the package.
// It records nothing and never reports a rug pull (Result.HashPending):
// what a new build does is told once its hash is known (Observe).
func (s *Store) CheckUnhashed(pkg string, dest string, domains []string, now time.Time) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.see(Key{Package: pkg}, dest, domains, now, false, true)
}

// Observe checks a request or mail of build k to dest (host:port, as the
// SNI or Host header gave it; "" when unknown) with recipients in domains
// (none for a request that is not mail), and records it: all of it while
// the package learns; else only the counts and last sights of what was
// known to the build.
func (s *Store) Observe(k Key, dest string, domains []string, now time.Time) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.see(k, dest, domains, now, true, false)
}

func (s *Store) learning(p *pkg, now time.Time) bool {
	return s.mode == ModeLearn || now.Before(s.st.learnUntil) || (p != nil && now.Before(p.learnUntil))
}

// inFirstLearnOnly reports whether p learns now only by the window of
// its first sight (not the global mode, not a window "aarsm baseline
// learn" opened).
func (s *Store) inFirstLearnOnly(p *pkg, now time.Time) bool {
	return s.mode != ModeLearn && !now.Before(s.st.learnUntil) && p.firstOnly && now.Before(p.learnUntil)
}

func (s *Store) see(k Key, dest string, domains []string, now time.Time, record, unhashed bool) Result {
	k = k.canonical()
	r := Result{Key: k, HashPending: unhashed}
	if !k.valid() {
		r.Untracked = true
		return r
	}
	p := s.st.pkgs[k.Package]
	learning := s.learning(p, now)
	firstLearn := false
	if p == nil && !learning && s.opts.FirstLearn > 0 {
		learning, firstLearn = true, true
	}
	r.Learning = learning
	var b *build
	if p != nil && !unhashed {
		b = p.build(k.Version, k.Hash)
	}
	r.NoBaseline = p == nil || len(p.builds) == 0
	if !r.NoBaseline && b == nil && !unhashed && learning && s.inFirstLearnOnly(p, now) {
		// The window a package gets at its first sight trusts the build
		// first seen, not a new one that comes during it (an upgrade in
		// the first hour is checked like any other).
		learning = false
		r.Learning = false
	}
	if !r.NoBaseline && b == nil && !unhashed {
		r.Changed = true
		l := p.latest()
		r.Previous = Key{Package: k.Package, Version: l.version, Hash: l.hash}
	}

	dest = strings.TrimSpace(dest)
	nd, destOK := "", false
	if dest != "" {
		nd, destOK = NormalizeDest(dest)
		if nd == "" {
			nd = "?"
		}
		if !destOK || p == nil || !p.hasDest(nd) {
			r.UnseenDest = nd
		}
	}
	type dom struct {
		v  string
		ok bool
	}
	var doms []dom
	var seen map[string]bool // a mail may have thousands of recipients
	for _, d := range domains {
		if strings.TrimSpace(d) == "" {
			continue
		}
		n, ok := NormalizeDomain(d)
		if n == "" {
			n = "?"
		}
		if seen == nil {
			seen = make(map[string]bool, len(domains))
		}
		if seen[n] {
			continue
		}
		seen[n] = true
		doms = append(doms, dom{n, ok})
		if !ok || p == nil || !p.hasDomain(n) {
			r.UnseenDomains = append(r.UnseenDomains, n)
		}
	}
	slices.Sort(r.UnseenDomains)
	switch {
	case r.UnseenDest == "" && len(r.UnseenDomains) == 0:
		r.Verdict = Known
	case r.Changed:
		r.Verdict = RugPull
	case r.UnseenDest != "":
		r.Verdict = UnseenDestination
	default:
		r.Verdict = UnseenDomain
	}
	if r.Changed && !s.announced[k] {
		r.FirstChange = true
		if record {
			if len(s.announced) >= maxAnnounced {
				clear(s.announced)
			}
			s.announced[k] = true
		}
	}
	if !record {
		return r
	}

	if p == nil {
		if !learning {
			return r
		}
		if !s.makeRoom(&r, k.Package, now, true) {
			return r
		}
		p = &pkg{name: k.Package, first: now, lastUsed: now}
		if firstLearn {
			p.learnUntil, p.firstOnly = now.Add(s.opts.FirstLearn), true
		}
		s.st.pkgs[p.name] = p
		s.dirtyNew = true
	}
	if now.After(p.lastUsed) {
		p.lastUsed = now
		s.dirty = true
	}
	if k.MCP && !p.mcp {
		p.mcp = true
		s.dirtyNew = true
	}
	if b == nil {
		if !learning {
			return r
		}
		if len(p.builds) >= s.opts.MaxBuilds {
			old := slices.MinFunc(p.builds, func(a, b *build) int {
				return cmp.Or(a.last.Compare(b.last), cmp.Compare(a.version, b.version), cmp.Compare(a.hash, b.hash))
			})
			s.st.entries -= len(old.dests) + len(old.domains)
			p.builds = slices.DeleteFunc(p.builds, func(x *build) bool { return x == old })
		}
		b = &build{version: k.Version, hash: k.Hash, first: now, last: now, dests: map[string]*entry{}, domains: map[string]*entry{}}
		p.builds = append(p.builds, b)
		s.dirtyNew = true
	}
	b.last = later(b.last, now)
	if dest != "" {
		s.note(&r, p, b.dests, nd, destOK, dest, s.opts.MaxDestinations, learning, now)
	}
	for _, d := range doms {
		s.note(&r, p, b.domains, d.v, d.ok, "", s.opts.MaxDomains, learning, now)
	}
	return r
}

// note records one destination or domain of build map m.
func (s *Store) note(r *Result, p *pkg, m map[string]*entry, v string, ok bool, given string, max int, learning bool, now time.Time) {
	if e := m[v]; e != nil && ok {
		e.count = addCount(e.count, 1)
		e.last = later(e.last, now)
		if given != "" && learning {
			e.addGiven(v, given)
		}
		s.dirty = true
		return
	}
	if !learning || !ok {
		return
	}
	if len(m) >= max {
		r.Full = true
		s.stats.Refused++
		return
	}
	if s.st.entries >= s.opts.MaxEntries && !s.makeRoom(r, p.name, now, false) {
		return
	}
	e := &entry{first: now, last: now, count: 1}
	if given != "" {
		e.addGiven(v, given)
	}
	m[v] = e
	s.st.entries++
	s.dirtyNew = true
}

// makeRoom drops packages used least recently (not keep, and only those
// unused for MinIdle) until there is room for a new package (pkgs) or a
// new entry. It reports whether there is; when not, r says Full.
func (s *Store) makeRoom(r *Result, keep string, now time.Time, pkgs bool) bool {
	for pkgs && len(s.st.pkgs) >= s.opts.MaxPackages || !pkgs && s.st.entries >= s.opts.MaxEntries {
		lru := s.st.leastUsed(keep)
		if lru == nil || (s.opts.MinIdle > 0 && now.Sub(lru.lastUsed) < s.opts.MinIdle) {
			r.Full = true
			s.stats.Refused++
			return false
		}
		s.st.drop(lru)
		r.Evicted = append(r.Evicted, lru.name)
		s.stats.Evicted++
		s.dirtyNew = true
	}
	return true
}

// Snapshot returns the baseline as it is in memory (for a status report).
func (s *Store) Snapshot() *File {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot()
}

func (s *Store) snapshot() *File {
	f := s.st.toFile()
	f.Mode = s.mode.String()
	return f
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Packages, st.Entries = len(s.st.pkgs), s.st.entries
	for _, p := range s.st.pkgs {
		st.Builds += len(p.builds)
	}
	return st
}

// flushLockTimeout is how long Flush and Close wait for the lock.
const flushLockTimeout = 2 * time.Second

// Flush reads the file back when another process changed it (merging the
// store's observations into it) and writes what the store has not written
// yet, now.
func (s *Store) Flush() error {
	return s.sync(flushLockTimeout)
}

// Close stops the background goroutine and flushes. The store stays
// usable in memory; nothing more is written.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.stop != nil {
		close(s.stop)
		<-s.done
	}
	return s.sync(flushLockTimeout)
}

func (s *Store) run() {
	defer close(s.done)
	t := time.NewTicker(s.opts.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		err := s.tick()
		s.mu.Lock()
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		report := msg != s.lastErr
		s.lastErr = msg
		s.mu.Unlock()
		if report && err != nil {
			s.opts.Log.Error("baseline not written or read", "dir", s.dir, "err", err)
		} else if report {
			s.opts.Log.Info("baseline written again", "dir", s.dir)
		}
	}
}

// tick syncs when another process changed the file or when something is
// due to be written.
func (s *Store) tick() error {
	id, err := statFile(s.dir)
	if err != nil {
		return err
	}
	now := s.opts.Now()
	s.mu.Lock()
	changed := id != s.id
	due := (s.dirtyNew && now.Sub(s.lastWrite) >= s.opts.FlushInterval) ||
		(s.dirty && now.Sub(s.lastWrite) >= s.opts.TouchInterval)
	s.mu.Unlock()
	if !changed && !due {
		return nil
	}
	return s.sync(agentLockTimeout)
}

// sync merges a change of the file by another process and writes what
// is not written yet, under the lock. See disk.go for the protocol.
func (s *Store) sync(timeout time.Duration) error {
	unlock, err := lock(s.dir, timeout)
	if err != nil {
		return err
	}
	defer unlock()
	id, err := statFile(s.dir)
	if err != nil {
		return err
	}
	now := s.opts.Now()
	var errs []error
	s.mu.Lock()
	if id != s.id {
		f, err := readFile(s.dir)
		switch {
		case errors.Is(err, ErrCorrupt):
			// Keep what is in memory, and write it back.
			s.stats.Corrupt++
			if name, merr := moveAside(s.dir, now); merr != nil {
				errs = append(errs, err, merr)
			} else {
				errs = append(errs, fmt.Errorf("%w (moved to %s; written again from memory)", err, name))
			}
			s.id = fileID{}
			s.dirtyNew = true
		case err != nil:
			s.mu.Unlock()
			return err
		default:
			if f == nil {
				f = NewFile() // removed: everything forgotten
			}
			if s.dirtyNew || s.dirty {
				s.st = merge(s.st, s.base, f)
			} else {
				s.st = fromFile(f)
			}
			if len(s.st.trim(s.opts)) > 0 {
				s.dirtyNew = true
			}
			s.base, s.id = f, id
			s.stats.Reloads++
		}
	}
	if !s.dirtyNew && !s.dirty {
		s.mu.Unlock()
		return errors.Join(errs...)
	}
	snap := s.snapshot()
	snap.Updated = now.UTC()
	s.dirtyNew, s.dirty = false, false
	s.mu.Unlock()

	data, err := snap.Encode()
	if err == nil {
		err = writeFile(s.dir, data)
	}
	var nid fileID
	if err == nil {
		nid, err = statFile(s.dir)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.dirtyNew = true
		s.stats.WriteErrors++
		return errors.Join(append(errs, err)...)
	}
	s.base, s.id, s.lastWrite = snap, nid, now
	s.stats.Writes++
	return errors.Join(errs...)
}
