package baseline

import (
	"cmp"
	"maps"
	"slices"
	"strings"
	"time"
)

// state is the store in memory: the File's contents, indexed.
type state struct {
	learnUntil time.Time
	pkgs       map[string]*pkg
	entries    int // destinations and domains of every build
}

type pkg struct {
	name       string
	first      time.Time
	lastUsed   time.Time
	learnUntil time.Time
	firstOnly  bool     // learnUntil is its first sight's window (Package.FirstLearnOnly)
	mcp        bool     // seen as an MCP server's package (Package.MCP)
	builds     []*build // few (Options.MaxBuilds)
}

type build struct {
	version, hash string
	first, last   time.Time
	dests         map[string]*entry
	domains       map[string]*entry
}

type entry struct {
	first, last time.Time
	count       uint64
	given       []string
}

func newState() *state { return &state{pkgs: map[string]*pkg{}} }

func (p *pkg) build(version, hash string) *build {
	for _, b := range p.builds {
		if b.version == version && b.hash == hash {
			return b
		}
	}
	return nil
}

// latest returns the build seen last (nil: none).
func (p *pkg) latest() *build {
	var l *build
	for _, b := range p.builds {
		if l == nil || b.last.After(l.last) {
			l = b
		}
	}
	return l
}

func (p *pkg) hasDest(v string) bool {
	return slices.ContainsFunc(p.builds, func(b *build) bool { return b.dests[v] != nil })
}

func (p *pkg) hasDomain(v string) bool {
	return slices.ContainsFunc(p.builds, func(b *build) bool { return b.domains[v] != nil })
}

func (p *pkg) entries() int {
	n := 0
	for _, b := range p.builds {
		n += len(b.dests) + len(b.domains)
	}
	return n
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// earlier returns the earlier of two times, a zero time counting as
// unknown.
func earlier(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

func addCount(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

// addGiven adds a form given of a destination (cut to maxGivenLen) unless
// it is the value itself, known, or there are maxGiven already.
func (e *entry) addGiven(value, given string) {
	given = cut(strings.TrimSpace(given), maxGivenLen)
	if given == "" || given == value || len(e.given) >= maxGiven || slices.Contains(e.given, given) {
		return
	}
	e.given = append(e.given, given)
}

// fromFile indexes a decoded file. The file is not kept (nothing is
// shared with it).
func fromFile(f *File) *state {
	s := newState()
	if f == nil {
		return s
	}
	s.learnUntil = f.LearnUntil
	for _, fp := range f.Packages {
		p := &pkg{name: fp.Name, first: fp.FirstSeen, lastUsed: fp.LastUsed, learnUntil: fp.LearnUntil, firstOnly: fp.FirstLearnOnly, mcp: fp.MCP}
		for _, fb := range fp.Builds {
			b := &build{version: fb.Version, hash: fb.Hash, first: fb.FirstSeen, last: fb.LastSeen,
				dests: entryMap(fb.Destinations), domains: entryMap(fb.Domains)}
			p.builds = append(p.builds, b)
			s.entries += len(b.dests) + len(b.domains)
		}
		s.pkgs[p.name] = p
	}
	return s
}

func entryMap(es []Entry) map[string]*entry {
	m := make(map[string]*entry, len(es))
	for _, e := range es {
		m[e.Value] = &entry{first: e.FirstSeen, last: e.LastSeen, count: e.Count, given: slices.Clone(e.Given)}
	}
	return m
}

// toFile returns the state as a new File: packages by name, builds by
// first sight, entries by value.
func (s *state) toFile() *File {
	f := NewFile()
	f.LearnUntil = s.learnUntil
	for _, name := range slices.Sorted(maps.Keys(s.pkgs)) {
		p := s.pkgs[name]
		fp := Package{Name: p.name, FirstSeen: p.first, LastUsed: p.lastUsed, LearnUntil: p.learnUntil, FirstLearnOnly: p.firstOnly, MCP: p.mcp, Builds: []Build{}}
		builds := slices.Clone(p.builds)
		slices.SortStableFunc(builds, func(a, b *build) int {
			return cmp.Or(a.first.Compare(b.first), cmp.Compare(a.version, b.version), cmp.Compare(a.hash, b.hash))
		})
		for _, b := range builds {
			fp.Builds = append(fp.Builds, Build{Version: b.version, Hash: b.hash, FirstSeen: b.first, LastSeen: b.last,
				Destinations: entryList(b.dests), Domains: entryList(b.domains)})
		}
		f.Packages = append(f.Packages, fp)
	}
	return f
}

func entryList(m map[string]*entry) []Entry {
	out := make([]Entry, 0, len(m))
	for _, v := range slices.Sorted(maps.Keys(m)) {
		e := m[v]
		out = append(out, Entry{Value: v, Given: slices.Clone(e.given), FirstSeen: e.first, LastSeen: e.last, Count: e.count})
	}
	return out
}

// leastUsed returns the package used least recently but keep (ties: by
// name), nil when there is none.
func (s *state) leastUsed(keep string) *pkg {
	var lru *pkg
	for _, p := range s.pkgs {
		if p.name == keep {
			continue
		}
		if lru == nil || p.lastUsed.Before(lru.lastUsed) || (p.lastUsed.Equal(lru.lastUsed) && p.name < lru.name) {
			lru = p
		}
	}
	return lru
}

func (s *state) drop(p *pkg) {
	s.entries -= p.entries()
	delete(s.pkgs, p.name)
}

// trim applies the bounds to a state read or merged: the packages used
// least recently, the builds seen least recently and the entries seen
// least recently go first. It returns the packages dropped.
func (s *state) trim(o Options) []string {
	var dropped []string
	for _, p := range s.pkgs {
		if len(p.builds) > o.MaxBuilds {
			slices.SortStableFunc(p.builds, func(a, b *build) int {
				return cmp.Or(b.last.Compare(a.last), cmp.Compare(a.version, b.version), cmp.Compare(a.hash, b.hash))
			})
			for _, b := range p.builds[o.MaxBuilds:] {
				s.entries -= len(b.dests) + len(b.domains)
			}
			p.builds = p.builds[:o.MaxBuilds]
		}
		for _, b := range p.builds {
			s.entries -= trimEntries(b.dests, o.MaxDestinations)
			s.entries -= trimEntries(b.domains, o.MaxDomains)
		}
	}
	for len(s.pkgs) > o.MaxPackages || (s.entries > o.MaxEntries && len(s.pkgs) > 0) {
		p := s.leastUsed("")
		s.drop(p)
		dropped = append(dropped, p.name)
	}
	return dropped
}

// trimEntries keeps the max entries of m seen last and returns how many
// it removed.
func trimEntries(m map[string]*entry, max int) int {
	if len(m) <= max {
		return 0
	}
	keys := slices.Collect(maps.Keys(m))
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(m[b].last.Compare(m[a].last), cmp.Compare(a, b)) })
	for _, k := range keys[max:] {
		delete(m, k)
	}
	return len(keys) - max
}
