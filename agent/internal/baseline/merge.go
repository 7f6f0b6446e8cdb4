package baseline

import "slices"

// merge returns the state of f (the file as another process left it) with
// the changes replayed that mem (the store in memory) made since base (the
// file as the store last read or wrote it):
//
//   - a package (or build) in base that f no longer has was forgotten by
//     the other process: the store's observations of it since are dropped;
//   - a package (or build) in neither base nor f is new in the store: added;
//   - the counts of an entry grow by what the store counted since base,
//     first and last sights are the earliest and latest of both, forms
//     given are added;
//   - learning windows are f's (the CLI sets them), but that of a package
//     new on both sides that f gave none: the store's first-learning
//     window.
//
// The other process only ever removes packages and builds (forget) and
// sets windows (learn); nothing else of f is undone.
func merge(mem *state, base, f *File) *state {
	out := fromFile(f)
	old := fromFile(base)
	for name, mp := range mem.pkgs {
		bp := old.pkgs[name]
		fp := out.pkgs[name]
		if fp == nil {
			if bp == nil {
				fp = clonePkg(mp)
				out.pkgs[name] = fp
				out.entries += fp.entries()
			}
			continue
		}
		fp.first = earlier(fp.first, mp.first)
		fp.lastUsed = later(fp.lastUsed, mp.lastUsed)
		fp.mcp = fp.mcp || mp.mcp
		if bp == nil && fp.learnUntil.IsZero() {
			fp.learnUntil, fp.firstOnly = mp.learnUntil, mp.firstOnly
		}
		for _, mb := range mp.builds {
			var bb *build
			if bp != nil {
				bb = bp.build(mb.version, mb.hash)
			}
			fb := fp.build(mb.version, mb.hash)
			if fb == nil {
				if bb == nil {
					fb = cloneBuild(mb)
					fp.builds = append(fp.builds, fb)
					out.entries += len(fb.dests) + len(fb.domains)
				}
				continue
			}
			fb.first = earlier(fb.first, mb.first)
			fb.last = later(fb.last, mb.last)
			var bd, bm map[string]*entry
			if bb != nil {
				bd, bm = bb.dests, bb.domains
			}
			out.entries += mergeEntries(fb.dests, mb.dests, bd)
			out.entries += mergeEntries(fb.domains, mb.domains, bm)
		}
	}
	return out
}

// mergeEntries adds to dst what mem counted since base and returns how
// many entries it added.
func mergeEntries(dst, mem, base map[string]*entry) int {
	added := 0
	for v, me := range mem {
		be := base[v]
		since := me.count
		if be != nil {
			since = 0
			if me.count > be.count {
				since = me.count - be.count
			}
		}
		de := dst[v]
		if de == nil {
			if be != nil {
				continue // removed by the other process
			}
			dst[v] = cloneEntry(me)
			added++
			continue
		}
		de.count = addCount(de.count, since)
		de.first = earlier(de.first, me.first)
		de.last = later(de.last, me.last)
		for _, g := range me.given {
			de.addGiven(v, g)
		}
	}
	return added
}

func clonePkg(p *pkg) *pkg {
	c := *p
	c.builds = make([]*build, len(p.builds))
	for i, b := range p.builds {
		c.builds[i] = cloneBuild(b)
	}
	return &c
}

func cloneBuild(b *build) *build {
	c := *b
	c.dests = cloneEntries(b.dests)
	c.domains = cloneEntries(b.domains)
	return &c
}

func cloneEntries(m map[string]*entry) map[string]*entry {
	c := make(map[string]*entry, len(m))
	for k, e := range m {
		c[k] = cloneEntry(e)
	}
	return c
}

func cloneEntry(e *entry) *entry {
	c := *e
	c.given = slices.Clone(e.given)
	return &c
}
