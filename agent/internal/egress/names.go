package egress

import (
	"net/netip"
	"slices"
	"sort"
	"time"
)

// Refresh bounds: a TTL is clamped to [MinRefresh, MaxRefresh] (a zero
// TTL must not make the agent query in a loop, and a week-long one must
// not keep an address forever); a failed resolution is tried again after
// RetryAfter.
const (
	MinRefresh = 5 * time.Second
	MaxRefresh = time.Hour
	RetryAfter = 5 * time.Second
)

// DefaultGrace is how long an address stays allowed after DNS stopped
// giving it (its TTL ended and a fresh answer lacks it): a connection
// that raced the DNS change with the old address is not refused.
const DefaultGrace = 5 * time.Minute

// names are the resolved addresses of the allowed host names. Not safe
// for concurrent use (the Enforcer's refresh goroutine owns it).
type names struct {
	grace      time.Duration
	minRefresh time.Duration
	hosts      map[string]*hostState
}

type hostState struct {
	// addrs: each address and until when it is allowed (its TTL end
	// plus the grace period).
	addrs map[netip.Addr]time.Time
	next  time.Time // next resolution
	err   error     // last resolution's error
	ok    time.Time // last successful resolution
}

func newNames(grace, minRefresh time.Duration) *names {
	return &names{grace: grace, minRefresh: minRefresh, hosts: map[string]*hostState{}}
}

// setHosts makes hosts the names kept: new ones are due now, dropped ones
// forgotten.
func (n *names) setHosts(hosts []string, now time.Time) {
	keep := map[string]bool{}
	for _, h := range hosts {
		keep[h] = true
		if n.hosts[h] == nil {
			n.hosts[h] = &hostState{addrs: map[netip.Addr]time.Time{}, next: now}
		}
	}
	for h := range n.hosts {
		if !keep[h] {
			delete(n.hosts, h)
		}
	}
}

// due returns the hosts whose resolution is due at now, sorted.
func (n *names) due(now time.Time) []string {
	var out []string
	for h, s := range n.hosts {
		if !s.next.After(now) {
			out = append(out, h)
		}
	}
	sort.Strings(out)
	return out
}

// nextDue returns when the next resolution is due (zero: no host).
func (n *names) nextDue() time.Time {
	var t time.Time
	for _, s := range n.hosts {
		if t.IsZero() || s.next.Before(t) {
			t = s.next
		}
	}
	return t
}

// update records a resolution of host at now. On success every address
// given is allowed until its TTL plus the grace period, and the next
// resolution is due at the shortest TTL; addresses no longer given keep
// their time. On failure nothing is dropped: the addresses last known
// stay until their own time ends, and the resolution is tried again
// after RetryAfter. It reports whether the set of addresses changed.
func (n *names) update(host string, ans []Answer, err error, now time.Time) bool {
	s := n.hosts[host]
	if s == nil {
		return false
	}
	s.err = err
	changed := n.expire(s, now)
	if err != nil {
		retry := RetryAfter
		if n.minRefresh < MinRefresh {
			retry = n.minRefresh // tests
		}
		s.next = now.Add(retry)
		return changed
	}
	s.ok = now
	refresh := MaxRefresh
	for _, a := range ans {
		ttl := min(max(a.TTL, n.minRefresh), MaxRefresh)
		refresh = min(refresh, ttl)
		until := now.Add(ttl + n.grace)
		old, had := s.addrs[a.Addr]
		if !had {
			changed = true
		}
		if !had || until.After(old) {
			s.addrs[a.Addr] = until
		}
	}
	s.next = now.Add(refresh)
	return changed
}

// expire drops the addresses of s whose time ended.
func (n *names) expire(s *hostState, now time.Time) bool {
	changed := false
	for a, until := range s.addrs {
		if !until.After(now) {
			delete(s.addrs, a)
			changed = true
		}
	}
	return changed
}

// expireAll drops every address whose time ended; it reports whether any
// was.
func (n *names) expireAll(now time.Time) bool {
	changed := false
	for _, s := range n.hosts {
		if n.expire(s, now) {
			changed = true
		}
	}
	return changed
}

// addrs returns the addresses allowed now for host, sorted.
func (n *names) addrs(host string) []netip.Addr {
	s := n.hosts[host]
	if s == nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(s.addrs))
	for a := range s.addrs {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}
