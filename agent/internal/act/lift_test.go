package act

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// pinnedIDs reads the cgroup ids in the pinned map as the kernel has them.
func pinnedIDs(t *testing.T, pinDir string) []uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, mapPinName), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var ids []uint64
	var id, until uint64
	it := m.Iterate()
	for it.Next(&id, &until) {
		ids = append(ids, id)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

// stateIDs reads the cgroup ids in the state file.
func stateIDs(t *testing.T, stateDir string) []uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	var s stateFile
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	ids := []uint64{}
	for _, e := range s.Entries {
		ids = append(ids, e.CgroupID)
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...uint64) []uint64 {
	slices.Sort(ids)
	return ids
}

// "aarsm quarantine lift": by path, by directory and by id, beside an open
// Quarantine (the agent), and with nothing pinned (after a reboot): the
// cgroup leaves the map and the state file, and connects again.
func TestLiftQuarantine(t *testing.T) {
	testenv.RequireRoot(t)
	opts := QuarantineOptions{PinDir: testPinDir(t), StateDir: t.TempDir()}
	q := openTestQuarantine(t, opts)
	srv := newLoopbackServers(t)
	a, b, c := testenv.NewCgroup(t), testenv.NewCgroup(t), testenv.NewCgroup(t)
	until := time.Now().Add(time.Hour)
	for _, cg := range []*testenv.Cgroup{a, b, c} {
		if err := q.Add(cg.ID(), cg.Name(), until); err != nil {
			t.Fatal(err)
		}
	}
	if got := egress(t, a, srv); got[0] != "EPERM" {
		t.Fatalf("quarantined: %v", got)
	}
	l, err := ListQuarantine(opts)
	if err != nil || len(l) != 3 {
		t.Fatalf("ListQuarantine: %+v %v", l, err)
	}
	for _, e := range l {
		if e.Cgroup == "" || e.Until.Sub(until).Abs() > time.Millisecond {
			t.Errorf("listed %+v, want a path and the end %v", e, until)
		}
	}

	// By the path "aarsm status" shows.
	e, err := LiftQuarantine(opts, a.Name())
	if err != nil || e.CgroupID != a.ID() {
		t.Fatalf("lift %s: %+v %v", a.Name(), e, err)
	}
	if got := egress(t, a, srv); got != [3]string{"ok", "ok", "ok"} {
		t.Fatalf("after the lift: %v", got)
	}
	if got, want := pinnedIDs(t, opts.PinDir), sorted(b.ID(), c.ID()); !slices.Equal(got, want) {
		t.Fatalf("pinned map %v, want %v", got, want)
	}
	if got, want := stateIDs(t, opts.StateDir), sorted(b.ID(), c.ID()); !slices.Equal(got, want) {
		t.Fatalf("state file %v, want %v", got, want)
	}
	// The agent's own view follows, and its next change keeps the lift.
	if l, err := q.List(); err != nil || len(l) != 2 {
		t.Fatalf("the agent lists %+v %v", l, err)
	}
	if _, err := LiftQuarantine(opts, a.Name()); !errors.Is(err, ErrNotQuarantined) {
		t.Fatalf("lift again: %v, want ErrNotQuarantined", err)
	}
	// By its directory.
	if _, err := LiftQuarantine(opts, b.Path()); err != nil {
		t.Fatalf("lift %s: %v", b.Path(), err)
	}
	if got := egress(t, b, srv); got[0] != "ok" {
		t.Fatalf("after the lift by directory: %v", got)
	}
	if _, err := LiftQuarantine(opts, "/no/such/cgroup"); !errors.Is(err, ErrNotQuarantined) {
		t.Fatalf("lift of an unknown cgroup: %v", err)
	}

	// A reboot: the pins are gone, the state file lists c. Lifted then, c
	// is not restored.
	if err := q.Unpin(); err != nil {
		t.Fatal(err)
	}
	if l, err := ListQuarantine(opts); err != nil || len(l) != 1 || l[0].CgroupID != c.ID() {
		t.Fatalf("ListQuarantine from the state file: %+v %v", l, err)
	}
	if _, err := LiftQuarantine(opts, fmt.Sprint(c.ID())); err != nil {
		t.Fatalf("lift by id with nothing pinned: %v", err)
	}
	if got := stateIDs(t, opts.StateDir); len(got) != 0 {
		t.Fatalf("state file %v after the lift", got)
	}
	q2 := openTestQuarantine(t, opts)
	if l, err := q2.List(); err != nil || len(l) != 0 {
		t.Fatalf("restored %+v %v", l, err)
	}
	if got := egress(t, c, srv); got[0] != "ok" {
		t.Fatalf("after the restart: %v", got)
	}
}

// Expire takes the ended entries out of the map and the state file.
func TestExpireLeavesMapAndState(t *testing.T) {
	testenv.RequireRoot(t)
	opts := QuarantineOptions{PinDir: testPinDir(t), StateDir: t.TempDir()}
	q := openTestQuarantine(t, opts)
	short, long := testenv.NewCgroup(t), testenv.NewCgroup(t)
	now := time.Now()
	if err := q.Add(short.ID(), short.Name(), now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := q.Add(long.ID(), long.Name(), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := stateIDs(t, opts.StateDir); len(got) != 2 {
		t.Fatalf("state file %v", got)
	}
	if ids, err := q.Expire(now.Add(500 * time.Millisecond)); err != nil || len(ids) != 0 {
		t.Fatalf("early Expire: %v %v", ids, err)
	}
	ids, err := q.Expire(now.Add(2 * time.Second))
	if err != nil || !slices.Equal(ids, []uint64{short.ID()}) {
		t.Fatalf("Expire: %v %v", ids, err)
	}
	if got := pinnedIDs(t, opts.PinDir); !slices.Equal(got, []uint64{long.ID()}) {
		t.Fatalf("pinned map %v", got)
	}
	if got := stateIDs(t, opts.StateDir); !slices.Equal(got, []uint64{long.ID()}) {
		t.Fatalf("state file %v", got)
	}
}

// While someone else holds the state lock (a lift that hangs), Add does
// not wait for it long: the cgroup is quarantined at once and the error
// says the state file lags; the next change writes it.
func TestAddBesideHeldStateLock(t *testing.T) {
	testenv.RequireRoot(t)
	opts := QuarantineOptions{PinDir: testPinDir(t), StateDir: t.TempDir()}
	q := openTestQuarantine(t, opts)
	srv := newLoopbackServers(t)
	cg, other := testenv.NewCgroup(t), testenv.NewCgroup(t)
	unlock, err := lockState(opts.StateDir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = q.Add(cg.ID(), cg.Name(), time.Now().Add(time.Hour))
	if !errors.Is(err, ErrStateLocked) || time.Since(start) > 5*time.Second {
		t.Fatalf("Add beside a held lock: %v after %v", err, time.Since(start))
	}
	if got := egress(t, cg, srv); got[0] != "EPERM" {
		t.Fatalf("not quarantined: %v", got)
	}
	unlock()
	if err := q.Add(other.ID(), other.Name(), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, want := stateIDs(t, opts.StateDir), sorted(cg.ID(), other.ID()); !slices.Equal(got, want) {
		t.Fatalf("state file %v, want %v", got, want)
	}
}
