package egress

import (
	"encoding/binary"
	"fmt"
	"io/fs"
	"net/netip"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/bpf/cgroup"
)

// MaxAllowEntries bounds the (port, prefix) entries of each family's trie,
// as the map does (bpf/cgroup/egress.c).
const MaxAllowEntries = 16384

// MaxScopeEntries bounds the cgroups in scope, as the map does.
const MaxScopeEntries = 4096

// allowRule is one (prefix, port) an egress policy allows; port 0 means
// every port.
type allowRule struct {
	prefix netip.Prefix
	port   uint16
	mask   uint64
}

// rules returns what the policies allow, with the current addresses of
// their host names (bit i of mask: policy i).
func rules(ps []*policy.EgressPolicy, addrs func(host string) []netip.Addr) []allowRule {
	var out []allowRule
	for i, p := range ps {
		bit := uint64(1) << uint(i)
		for _, a := range p.Allow {
			prefixes := append([]netip.Prefix(nil), a.Prefixes...)
			for _, h := range a.Hosts {
				for _, ad := range addrs(h) {
					prefixes = append(prefixes, netip.PrefixFrom(ad, ad.BitLen()))
				}
			}
			ports := a.Ports
			if len(ports) == 0 {
				ports = []uint16{0}
			}
			for _, pre := range prefixes {
				for _, port := range ports {
					out = append(out, allowRule{prefix: pre, port: port, mask: bit})
				}
			}
		}
	}
	return out
}

// tables are the kernel's allow tries: for each (port, prefix), the
// policies that allow it or any shorter prefix covering it on the same
// port, so that the kernel's longest match alone answers.
type tables struct {
	v4 map[cgroup.EgressEgressKey4]uint64
	v6 map[cgroup.EgressEgressKey6]uint64
}

func buildTables(rs []allowRule) (tables, error) {
	type pk struct {
		prefix netip.Prefix
		port   uint16
	}
	own := map[pk]uint64{}
	for _, r := range rs {
		own[pk{r.prefix, r.port}] |= r.mask
	}
	t := tables{v4: map[cgroup.EgressEgressKey4]uint64{}, v6: map[cgroup.EgressEgressKey6]uint64{}}
	for k, m := range own {
		for c, cm := range own {
			if c.port == k.port && c.prefix.Addr().Is4() == k.prefix.Addr().Is4() &&
				c.prefix.Bits() < k.prefix.Bits() && c.prefix.Contains(k.prefix.Addr()) {
				m |= cm
			}
		}
		if k.prefix.Addr().Is4() {
			t.v4[key4(k.prefix, k.port)] = m
		} else {
			t.v6[key6(k.prefix, k.port)] = m
		}
	}
	if len(t.v4) > MaxAllowEntries || len(t.v6) > MaxAllowEntries {
		return tables{}, fmt.Errorf("%d IPv4 and %d IPv6 allow entries: over %d", len(t.v4), len(t.v6), MaxAllowEntries)
	}
	return t, nil
}

func key4(p netip.Prefix, port uint16) cgroup.EgressEgressKey4 {
	k := cgroup.EgressEgressKey4{Prefixlen: uint32(16 + p.Bits())}
	binary.BigEndian.PutUint16(k.Data[0:2], port)
	a := p.Addr().As4()
	copy(k.Data[2:6], a[:])
	return k
}

func key6(p netip.Prefix, port uint16) cgroup.EgressEgressKey6 {
	k := cgroup.EgressEgressKey6{Prefixlen: uint32(16 + p.Bits())}
	binary.BigEndian.PutUint16(k.Data[0:2], port)
	a := p.Addr().As16()
	copy(k.Data[2:18], a[:])
	return k
}

// allowedBy answers as the kernel does, from the tables: the policies
// allowing addr:port (tests and status use it).
func (t tables) allowedBy(ap netip.AddrPort) uint64 {
	var m uint64
	a := ap.Addr().Unmap()
	for _, port := range []uint16{ap.Port(), 0} {
		best, bestBits := uint64(0), -1
		for bits := a.BitLen(); bits >= 0; bits-- {
			p, _ := a.Prefix(bits)
			var v uint64
			var ok bool
			if a.Is4() {
				v, ok = t.v4[key4(p, port)]
			} else {
				v, ok = t.v6[key6(p, port)]
			}
			if ok {
				best, bestBits = v, bits
				break
			}
		}
		if bestBits >= 0 {
			m |= best
		}
	}
	return m
}

// scopeIDs resolves the policies' scopes to the cgroup ids the kernel
// looks up: each cgroups prefix that exists, and each cgroup of a systemd
// unit the patterns match (found by walking the hierarchy under mount).
// paths receives each id's path, for reports.
func scopeIDs(ps []*policy.EgressPolicy, mount string) (map[uint64]uint64, map[uint64]string, error) {
	ids := map[uint64]uint64{}
	paths := map[uint64]string{}
	var units []struct {
		pattern string
		bit     uint64
	}
	add := func(rel string, bit uint64) {
		id, err := act.CgroupID(mount, rel)
		if err != nil {
			return // not there (yet): the next rescan finds it
		}
		ids[id] |= bit
		paths[id] = rel
	}
	for i, p := range ps {
		bit := uint64(1) << uint(i)
		for _, s := range p.Scopes {
			for _, pre := range s.CgroupPrefix {
				add(path.Clean("/"+pre), bit)
			}
			for _, u := range s.UnitPatterns() {
				units = append(units, struct {
					pattern string
					bit     uint64
				}{u, bit})
			}
		}
	}
	if len(units) > 0 {
		err := filepath.WalkDir(mount, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil //nolint:nilerr // a cgroup removed during the walk: go on with the others
			}
			rel := path.Clean("/" + strings.TrimPrefix(strings.TrimPrefix(p, mount), "/"))
			u, ok := act.ParseUnit(rel)
			if !ok || u.Cgroup != rel {
				return nil
			}
			for _, up := range units {
				if m, err := path.Match(up.pattern, u.Name); err == nil && m {
					add(rel, up.bit)
				}
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("walk cgroups under %s: %w", mount, err)
		}
	}
	if len(ids) > MaxScopeEntries {
		return nil, nil, fmt.Errorf("%d cgroups in egress scope: over %d", len(ids), MaxScopeEntries)
	}
	return ids, paths, nil
}

// MaxExeFiles bounds the executables an egress scope resolves to (the
// files a "dir/**" pattern or a glob covers), as the map does.
const MaxExeFiles = 4096

// exeIDs resolves the executables of the policies' scopes to the (device,
// inode) pairs the kernel compares with the file a task runs: a path as
// given (symbolic links followed, as /proc/PID/exe is), the regular files a
// glob matches, every regular file under DIR for "DIR/**". paths receives
// each file's path, for reports.
func exeIDs(ps []*policy.EgressPolicy) (map[cgroup.EgressInodeKey]uint64, map[cgroup.EgressInodeKey]string, error) {
	ids := map[cgroup.EgressInodeKey]uint64{}
	paths := map[cgroup.EgressInodeKey]string{}
	add := func(p string, bit uint64) {
		id, st, err := proc.StatID(p)
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			return // not there (yet), or no file: the next rescan looks again
		}
		k := cgroup.EgressInodeKey{Ino: id.Ino, Dev: id.Dev}
		ids[k] |= bit
		if _, ok := paths[k]; !ok {
			paths[k] = p
		}
	}
	for i, p := range ps {
		bit := uint64(1) << uint(i)
		for _, s := range p.Scopes {
			for _, pat := range s.Executables {
				if dir, ok := strings.CutSuffix(pat, "/**"); ok {
					n := 0
					_ = filepath.WalkDir(dir, func(f string, d fs.DirEntry, err error) error {
						if err != nil {
							return nil //nolint:nilerr // unreadable: go on with the others
						}
						if n++; n > MaxExeFiles {
							return filepath.SkipAll
						}
						if d.Type().IsRegular() {
							add(f, bit)
						}
						return nil
					})
					continue
				}
				matches, err := filepath.Glob(pat)
				if err != nil {
					continue // checked at load
				}
				for _, m := range matches {
					add(m, bit)
				}
			}
		}
		if len(ids) > MaxExeFiles {
			return nil, nil, fmt.Errorf("%d executables in egress scope: over %d", len(ids), MaxExeFiles)
		}
	}
	return ids, paths, nil
}
