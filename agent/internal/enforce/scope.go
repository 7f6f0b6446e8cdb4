package enforce

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/probe"
)

// The hold scope: what the kernel can check of the enforcing policies'
// scopes. A process no enforcing policy can match is never held and its
// writes are not copied (unless a monitoring policy wants them). The
// kernel checks cgroups: a scope's cgroups and systemd_units become the
// ids of those cgroups (a unit's processes live in its cgroup), and a new
// cgroup is in scope from its creation until its path has been matched. A
// scope that names only executables, commands or MCP servers cannot be
// checked in the kernel: it widens the hold scope to every process, and
// HoldScope says so.

// HoldScope describes the hold scope in force, for "aarsm status".
type HoldScope struct {
	// All: every process is held (for the policies in Widened).
	All bool
	// Cgroups are the cgroup paths in scope now, sorted.
	Cgroups []string
	// Widened says, per policy, why the scope covers every process.
	Widened []string
	// Narrowed lists the --hold-cgroup directories that narrow it.
	Narrowed []string
	// NewCgroups: new cgroups are in scope until matched.
	NewCgroups bool
	// FailClosed lists the fail-closed policies.
	FailClosed []string
	// Enforcing counts the enforcing policies (0: nothing is held).
	Enforcing int
	// CopyAll: a monitoring policy wants every write, so writes out of
	// scope are still copied (never held).
	CopyAll bool
}

type scopeRule struct {
	prefix string // a cgroup path ("" for none)
	unit   string // a unit pattern ("" for none)
	hold   probe.HoldPolicy
}

// compiledScope is the kernel form of a policy set.
type compiledScope struct {
	enforcing  int
	all        bool
	allPolicy  probe.HoldPolicy
	rules      []scopeRule
	widened    []string
	failClosed []string
	copyAll    bool
	pending    probe.HoldPolicy // for a new cgroup: the strictest of the rules
	shortest   time.Duration    // shortest deadline of any enforcing policy
}

func holdPolicy(h policy.HoldSettings) probe.HoldPolicy {
	return probe.HoldPolicy{FailClosed: h.FailMode == policy.FailClosed, ExecMax: h.ExecTimeout, WriteMax: h.WriteTimeout}
}

// compileScope turns the enforcing policies' scopes into cgroup rules.
func compileScope(set *policy.Set) compiledScope {
	var c compiledScope
	first := true
	for _, p := range set.Policies {
		if p.Mode != policy.ModeEnforce {
			c.copyAll = true
			continue
		}
		c.enforcing++
		hs := set.Holds(p)
		hp := holdPolicy(hs)
		if hs.FailMode == policy.FailClosed {
			c.failClosed = append(c.failClosed, p.Name)
		}
		for _, d := range []time.Duration{hs.ExecTimeout, hs.WriteTimeout} {
			if c.shortest == 0 || d < c.shortest {
				c.shortest = d
			}
		}
		widen := func(why string) {
			if !c.all {
				c.all, c.allPolicy = true, hp
			} else {
				c.allPolicy = c.allPolicy.Combine(hp)
			}
			c.widened = append(c.widened, fmt.Sprintf("policy %q %s", p.Name, why))
		}
		if len(p.Scopes) == 0 {
			widen("has no scope")
			continue
		}
		for i := range p.Scopes {
			s := &p.Scopes[i]
			switch {
			case len(s.CgroupPrefix) > 0:
				for _, pre := range s.CgroupPrefix {
					c.rules = append(c.rules, scopeRule{prefix: cleanCgroup(pre), hold: hp})
				}
			case len(s.SystemdUnits) > 0:
				for _, u := range s.UnitPatterns() {
					c.rules = append(c.rules, scopeRule{unit: u, hold: hp})
				}
			default:
				widen(fmt.Sprintf("scope at %s: executables, commands and mcp_servers cannot be checked in the kernel, so every process is held for it", s.DeclRange.String()))
			}
		}
	}
	for _, r := range c.rules {
		if first {
			c.pending, first = r.hold, false
		} else {
			c.pending = c.pending.Combine(r.hold)
		}
	}
	if c.all {
		c.pending = c.pending.Combine(c.allPolicy)
	}
	return c
}

func cleanCgroup(p string) string {
	p = path.Clean("/" + p)
	return p
}

// own returns the policy the rules give cgroup rel itself (not through an
// ancestor), and whether any does.
func (c *compiledScope) own(rel string) (probe.HoldPolicy, bool) {
	var out probe.HoldPolicy
	found := false
	add := func(h probe.HoldPolicy) {
		if !found {
			out, found = h, true
		} else {
			out = out.Combine(h)
		}
	}
	var unit string
	if u, ok := act.ParseUnit(rel); ok && u.Cgroup == rel {
		unit = u.Name
	}
	for _, r := range c.rules {
		if r.prefix != "" && r.prefix == rel {
			add(r.hold)
		}
		if r.unit != "" && unit != "" {
			if ok, err := path.Match(r.unit, unit); ok && err == nil {
				add(r.hold)
			}
		}
	}
	return out, found
}

// isUnder reports whether cgroup path p is q or below it.
func isUnder(p, q string) bool {
	return q == "/" || p == q || strings.HasPrefix(p, q+"/")
}

// scopeEntries resolves the rules against the cgroups that exist under
// mount, narrowed to the hold cgroups (paths; none: no narrowing). Each
// entry's policy is combined with those of the entries above it, and with
// the policy of every process when c.all.
func (c *compiledScope) scopeEntries(mount string, narrow []string) (map[string]probe.HoldPolicy, error) {
	own := map[string]probe.HoldPolicy{}
	needWalk := false
	for _, r := range c.rules {
		if r.unit != "" {
			needWalk = true
		} else if h, ok := c.own(r.prefix); ok {
			if dirExists(filepath.Join(mount, r.prefix)) {
				own[r.prefix] = h
			}
		}
	}
	if needWalk {
		err := filepath.WalkDir(mount, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil //nolint:nilerr // a cgroup removed during the walk: go on with the others
			}
			if !d.IsDir() {
				return nil
			}
			rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, mount), "/")
			if h, ok := c.own(path.Clean(rel)); ok {
				own[path.Clean(rel)] = h
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("walk cgroups under %s: %w", mount, err)
		}
	}
	combined := func(rel string) (probe.HoldPolicy, bool) {
		var out probe.HoldPolicy
		found := false
		if c.all {
			out, found = c.allPolicy, true
		}
		for q, h := range own {
			if isUnder(rel, q) {
				if !found {
					out, found = h, true
				} else {
					out = out.Combine(h)
				}
			}
		}
		return out, found
	}
	out := map[string]probe.HoldPolicy{}
	for rel := range own {
		if len(narrow) > 0 && !underAny(rel, narrow) {
			continue
		}
		out[rel], _ = combined(rel)
	}
	for _, n := range narrow {
		if h, ok := combined(n); ok {
			out[n] = h
		}
	}
	return out, nil
}

// resolveNew returns the policy of a new cgroup at rel, given the entries
// in force (paths), and whether it is in scope itself.
func (c *compiledScope) resolveNew(rel string, entries map[string]probe.HoldPolicy, narrow []string) (probe.HoldPolicy, bool) {
	h, ok := c.own(rel)
	if !ok {
		return h, false
	}
	if len(narrow) > 0 && !underAny(rel, narrow) {
		return h, false
	}
	if c.all {
		h = h.Combine(c.allPolicy)
	}
	for q, e := range entries {
		if isUnder(rel, q) {
			h = h.Combine(e)
		}
	}
	return h, true
}

func underAny(p string, dirs []string) bool {
	for _, d := range dirs {
		if isUnder(p, d) {
			return true
		}
	}
	return false
}

func dirExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func sortedKeys(m map[string]probe.HoldPolicy) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// inScope reports whether a process in cgroup rel is in the hold scope
// in force (under a.scopeMu).
func (a *Agent) inScopeLocked(rel string) bool {
	if a.scope.enforcing == 0 {
		return false
	}
	if len(a.narrow) > 0 && !underAny(rel, a.narrow) {
		return false
	}
	if a.scope.all {
		return true
	}
	for q := range a.entries {
		if isUnder(rel, q) {
			return true
		}
	}
	_, own := a.scope.own(rel) // a new cgroup not judged yet
	return own
}

// releaseOutOfScope resumes the held processes no enforcing policy can
// match any more: moved to another cgroup while held, or out of the scope
// of the policies just reloaded. Nothing will judge them.
func (a *Agent) releaseOutOfScope() {
	holds, err := a.sensor.Holds()
	if err != nil {
		return
	}
	for _, h := range holds {
		rel, err := a.procs.CgroupPath(h.PID)
		if err != nil {
			continue // gone: the kernel drops its record
		}
		a.scopeMu.Lock()
		in := a.inScopeLocked(cleanCgroup(rel))
		a.scopeMu.Unlock()
		if in {
			continue
		}
		if owned, err := a.sensor.Release(h.PID, h.TID); err != nil {
			a.log.Warn("cannot release a held process that left the hold scope", "pid", h.PID, "err", err)
		} else if owned {
			a.log.Info("held process left the hold scope: released", "pid", h.PID, "cgroup", rel, "kind", h.Kind.String())
		}
	}
}

// watchScope releases processes that leave the scope while held, until
// ctx is done. It runs beside the event loop: a process moved out of
// scope is let go even while the loop is stuck.
func (a *Agent) watchScope(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.releaseOutOfScope()
		}
	}
}
