package baseline

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/pkgid"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

var t0 = time.Date(2025, 9, 1, 10, 0, 0, 0, time.UTC)

const (
	hashA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	hashB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	hashC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	api   = "api.postmarkapp.com:443"
)

func postmark(version, hash string) Key {
	return Key{Package: "npm:postmark-mcp", Version: version, Hash: hash}
}

// clock is a settable clock for Options.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// openStore opens a store without a background goroutine (unless o says
// otherwise), closed at the end of the test.
func openStore(t *testing.T, dir string, o Options) *Store {
	t.Helper()
	if o.RefreshInterval == 0 {
		o.RefreshInterval = -1
	}
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func want(t *testing.T, r Result, v Verdict, learning bool) {
	t.Helper()
	if r.Verdict != v || r.Learning != learning {
		t.Fatalf("result %+v: want verdict %v learning %v", r, v, learning)
	}
}

func readBack(t *testing.T, dir string) *File {
	t.Helper()
	f, err := Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func pkgOf(t *testing.T, f *File, name string) Package {
	t.Helper()
	i := f.Find(name)
	if i < 0 {
		t.Fatalf("no package %s in %+v", name, f.Packages)
	}
	return f.Packages[i]
}

func TestLearnThenEnforce(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Mode: ModeLearn})
	k := postmark("1.0.15", hashA)

	r := s.Observe(k, "API.PostmarkApp.com.:443", []string{"Company.COM"}, t0)
	want(t, r, UnseenDestination, true)
	if !r.NoBaseline || r.UnseenDest != api || !slices.Equal(r.UnseenDomains, []string{"company.com"}) || r.Violation() {
		t.Fatalf("first sight: %+v", r)
	}
	want(t, s.Observe(k, api, []string{"company.com"}, t0.Add(time.Second)), Known, true)

	s.SetMode(ModeEnforce)
	r = s.Observe(k, "api.postmarkapp.com:443", []string{"company.com"}, t0.Add(time.Minute))
	want(t, r, Known, false)
	if r.Changed || r.NoBaseline || r.Violation() {
		t.Fatalf("known: %+v", r)
	}
	for range 2 { // not recorded: flagged every time
		r = s.Observe(k, "collector.example:443", nil, t0.Add(2*time.Minute))
		want(t, r, UnseenDestination, false)
		if !r.Violation() || r.UnseenDest != "collector.example:443" {
			t.Fatalf("unseen host: %+v", r)
		}
	}
	r = s.Observe(k, api, []string{"company.com", "giftshop.club"}, t0.Add(3*time.Minute))
	want(t, r, UnseenDomain, false)
	if !slices.Equal(r.UnseenDomains, []string{"giftshop.club"}) {
		t.Fatalf("unseen domain: %+v", r)
	}
	// A port is part of the destination.
	want(t, s.Observe(k, "api.postmarkapp.com:8443", nil, t0.Add(4*time.Minute)), UnseenDestination, false)

	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	b := pkgOf(t, readBack(t, dir), "npm:postmark-mcp").Builds
	if len(b) != 1 || b[0].Version != "1.0.15" || b[0].Hash != hashA || len(b[0].Destinations) != 1 || len(b[0].Domains) != 1 {
		t.Fatalf("file: %+v", b)
	}
	d := b[0].Destinations[0]
	if d.Value != api || d.Count != 4 || !d.FirstSeen.Equal(t0) || !d.LastSeen.Equal(t0.Add(3*time.Minute)) ||
		!slices.Equal(d.Given, []string{"API.PostmarkApp.com.:443"}) {
		t.Fatalf("destination: %+v", d)
	}
	if dm := b[0].Domains[0]; dm.Value != "company.com" || dm.Count != 4 {
		t.Fatalf("domain: %+v", dm)
	}
}

func TestRugPullOnUpgrade(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Mode: ModeLearn})
	s.Observe(postmark("1.0.15", hashA), api, []string{"company.com"}, t0)
	s.SetMode(ModeEnforce)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The agent restarts; the package is upgraded in place meanwhile.
	s = openStore(t, dir, Options{Mode: ModeEnforce})

	k17 := postmark("1.0.17", hashB)
	r := s.Observe(k17, "collector.example:443", []string{"company.com"}, t0.Add(time.Hour))
	want(t, r, RugPull, false)
	if !r.Changed || !r.FirstChange || r.Previous != postmark("1.0.15", hashA) || !r.Violation() || r.NoBaseline {
		t.Fatalf("rug pull: %+v", r)
	}
	// Same host and domains: a version change, no violation, said once.
	r = s.Observe(k17, api, []string{"company.com"}, t0.Add(time.Hour))
	want(t, r, Known, false)
	if !r.Changed || r.FirstChange || r.Violation() {
		t.Fatalf("version change: %+v", r)
	}
	// postmark-mcp 1.0.16: the same API host, one more Bcc domain.
	r = s.Observe(postmark("1.0.16", hashC), api, []string{"company.com", "giftshop.club"}, t0.Add(time.Hour))
	want(t, r, RugPull, false)
	if !slices.Equal(r.UnseenDomains, []string{"giftshop.club"}) || r.UnseenDest != "" || !r.FirstChange {
		t.Fatalf("bcc rug pull: %+v", r)
	}
	// The old build still runs as learned.
	want(t, s.Observe(postmark("1.0.15", hashA), api, []string{"company.com"}, t0.Add(time.Hour)), Known, false)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if b := pkgOf(t, readBack(t, dir), "npm:postmark-mcp").Builds; len(b) != 1 {
		t.Fatalf("an enforcing store recorded a new build: %+v", b)
	}
}

func TestRugPullSameVersionNewHash(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Mode: ModeLearn})
	s.Observe(postmark("1.0.15", hashA), api, nil, t0)
	s.SetMode(ModeEnforce)
	r := s.Observe(postmark("1.0.15", hashB), "collector.example:443", nil, t0.Add(time.Minute))
	want(t, r, RugPull, false)
	if r.Previous.Hash != hashA {
		t.Fatalf("previous: %+v", r)
	}
	r = s.Observe(postmark("1.0.15", hashB), api, nil, t0.Add(time.Minute))
	want(t, r, Known, false)
	if !r.Changed {
		t.Fatalf("changed hash: %+v", r)
	}
	// Executables: by path and hash.
	s.SetMode(ModeLearn)
	curl := Key{Package: "exe:/usr/bin/curl", Hash: hashA}
	s.Observe(curl, "example.org:443", nil, t0)
	s.SetMode(ModeEnforce)
	want(t, s.Observe(curl, "example.org:443", nil, t0), Known, false)
	want(t, s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashB}, "evil.example:443", nil, t0), RugPull, false)
}

func TestCheckChangesNothing(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Mode: ModeLearn})
	k := postmark("1.0.15", hashA)
	for range 2 {
		r := s.Check(k, api, []string{"company.com"}, t0)
		want(t, r, UnseenDestination, true)
	}
	if st := s.Stats(); st.Packages != 0 {
		t.Fatalf("Check recorded: %+v", st)
	}
	s.Observe(k, api, nil, t0)
	s.SetMode(ModeEnforce)
	for range 2 {
		if r := s.Check(postmark("1.0.17", hashB), api, nil, t0); !r.FirstChange {
			t.Fatalf("Check used up FirstChange: %+v", r)
		}
	}
}

func TestFirstLearnAndForget(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Mode: ModeEnforce, FirstLearn: time.Hour})
	k := postmark("1.0.15", hashA)
	// A package seen for the first time while enforcing learns for an hour.
	r := s.Observe(k, api, nil, t0)
	want(t, r, UnseenDestination, true)
	if !r.NoBaseline {
		t.Fatalf("first sight: %+v", r)
	}
	want(t, s.Observe(k, "second.example:443", nil, t0.Add(59*time.Minute)), UnseenDestination, true)
	want(t, s.Observe(k, "second.example:443", nil, t0.Add(61*time.Minute)), Known, false)
	want(t, s.Observe(k, "third.example:443", nil, t0.Add(61*time.Minute)), UnseenDestination, false)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if p := pkgOf(t, readBack(t, dir), "npm:postmark-mcp"); !p.LearnUntil.Equal(t0.Add(time.Hour)) {
		t.Fatalf("learning window: %+v", p)
	}

	// "aarsm baseline forget" while the store is open: it learns again.
	forget(t, dir, "npm:postmark-mcp")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	r = s.Observe(k, "third.example:443", nil, t0.Add(2*time.Hour))
	want(t, r, UnseenDestination, true)
	if !r.NoBaseline {
		t.Fatalf("after forget: %+v", r)
	}
	want(t, s.Observe(k, api, nil, t0.Add(4*time.Hour)), UnseenDestination, false) // forgotten, not learned since
	want(t, s.Observe(k, "third.example:443", nil, t0.Add(4*time.Hour)), Known, false)

	// Without a first-learning window a new package is checked against nothing.
	s2 := openStore(t, t.TempDir(), Options{Mode: ModeEnforce, FirstLearn: -1})
	for range 2 {
		r = s2.Observe(k, api, nil, t0)
		want(t, r, UnseenDestination, false)
		if !r.NoBaseline || !r.Violation() {
			t.Fatalf("no first learning: %+v", r)
		}
	}
}

func forget(t *testing.T, dir, sel string) {
	t.Helper()
	err := Update(dir, time.Now(), func(f *File) error {
		s, err := ParseSelector(sel)
		if err != nil {
			return err
		}
		_, err = f.Forget(s)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func learn(t *testing.T, dir, sel string, until time.Time) {
	t.Helper()
	err := Update(dir, time.Now(), func(f *File) error {
		if sel == "" {
			f.LearnUntil = until
			return nil
		}
		s, err := ParseSelector(sel)
		if err != nil {
			return err
		}
		_, err = f.Learn(s, until)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLearnWindows(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Mode: ModeLearn})
	k := postmark("1.0.15", hashA)
	s.Observe(k, api, nil, t0)
	s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashA}, "example.org:443", nil, t0)
	s.SetMode(ModeEnforce)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// A legitimate upgrade: the operator lets the package learn for 10 minutes.
	learn(t, dir, "postmark-mcp", t0.Add(10*time.Minute))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	k17 := postmark("1.0.17", hashB)
	r := s.Observe(k17, "new.postmarkapp.com:443", nil, t0.Add(time.Minute))
	want(t, r, RugPull, true) // said, but learned
	if r.Violation() {
		t.Fatalf("learning: %+v", r)
	}
	want(t, s.Observe(k17, "new.postmarkapp.com:443", nil, t0.Add(11*time.Minute)), Known, false)
	want(t, s.Observe(k17, "other.example:443", nil, t0.Add(11*time.Minute)), UnseenDestination, false)
	// Other packages were not in the window.
	want(t, s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashA}, "x.example:443", nil, t0.Add(time.Minute)), UnseenDestination, false)

	// Everything learns.
	learn(t, dir, "", t0.Add(time.Hour))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	want(t, s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashA}, "x.example:443", nil, t0.Add(30*time.Minute)), UnseenDestination, true)
	want(t, s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashA}, "x.example:443", nil, t0.Add(2*time.Hour)), Known, false)
	// A window ended early ("learn --for 0").
	learn(t, dir, "", t0.Add(time.Minute))
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	want(t, s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashA}, "y.example:443", nil, t0.Add(30*time.Minute)), UnseenDestination, false)
}

func TestBounds(t *testing.T) {
	t.Run("entries per build", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{Mode: ModeLearn, MaxDestinations: 2, MaxDomains: 1})
		k := postmark("1", hashA)
		s.Observe(k, "a.example:443", []string{"a.example"}, t0)
		s.Observe(k, "b.example:443", nil, t0)
		r := s.Observe(k, "c.example:443", []string{"b.example"}, t0)
		if !r.Full {
			t.Fatalf("over the bound: %+v", r)
		}
		s.SetMode(ModeEnforce)
		want(t, s.Observe(k, "b.example:443", []string{"a.example"}, t0), Known, false)
		want(t, s.Observe(k, "c.example:443", nil, t0), UnseenDestination, false)
		want(t, s.Observe(k, "a.example:443", []string{"b.example"}, t0), UnseenDomain, false)
	})
	t.Run("packages", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{Mode: ModeLearn, MaxPackages: 2, MinIdle: time.Hour})
		a, b, c := Key{Package: "npm:a"}, Key{Package: "npm:b"}, Key{Package: "npm:c"}
		s.Observe(a, "a.example:443", nil, t0)
		s.Observe(b, "b.example:443", nil, t0.Add(time.Minute))
		// Both in use: the new one is not recorded.
		r := s.Observe(c, "c.example:443", nil, t0.Add(30*time.Minute))
		if !r.Full || len(r.Evicted) > 0 || s.Stats().Packages != 2 {
			t.Fatalf("flood: %+v %+v", r, s.Stats())
		}
		// a has been idle for MinIdle: it goes.
		r = s.Observe(c, "c.example:443", nil, t0.Add(time.Hour))
		if r.Full || !slices.Equal(r.Evicted, []string{"npm:a"}) {
			t.Fatalf("eviction: %+v", r)
		}
		s.SetMode(ModeEnforce)
		want(t, s.Observe(b, "b.example:443", nil, t0.Add(time.Hour)), Known, false)
		want(t, s.Observe(c, "c.example:443", nil, t0.Add(time.Hour)), Known, false)
		if r := s.Observe(a, "a.example:443", nil, t0.Add(time.Hour)); !r.NoBaseline {
			t.Fatalf("evicted package: %+v", r)
		}
		if st := s.Stats(); st.Evicted != 1 || st.Refused < 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("builds", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{Mode: ModeLearn, MaxBuilds: 2})
		s.Observe(postmark("1", hashA), "one.example:443", nil, t0)
		s.Observe(postmark("2", hashA), "two.example:443", nil, t0.Add(time.Minute))
		s.Observe(postmark("1", hashA), "one.example:443", nil, t0.Add(2*time.Minute))
		s.Observe(postmark("3", hashA), "three.example:443", nil, t0.Add(3*time.Minute)) // 2 seen least recently
		s.SetMode(ModeEnforce)
		want(t, s.Observe(postmark("9", hashA), "two.example:443", nil, t0), RugPull, false)
		want(t, s.Observe(postmark("9", hashA), "one.example:443", nil, t0), Known, false)
		want(t, s.Observe(postmark("9", hashA), "three.example:443", nil, t0), Known, false)
	})
	t.Run("entries in all", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{Mode: ModeLearn, MaxEntries: 3, MinIdle: -1})
		s.Observe(Key{Package: "npm:a"}, "a.example:443", []string{"a.example"}, t0)
		s.Observe(Key{Package: "npm:b"}, "b.example:443", nil, t0.Add(time.Minute))
		r := s.Observe(Key{Package: "npm:b"}, "b2.example:443", nil, t0.Add(2*time.Minute))
		if !slices.Equal(r.Evicted, []string{"npm:a"}) {
			t.Fatalf("eviction: %+v", r)
		}
		if st := s.Stats(); st.Entries != 2 || st.Packages != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("on load", func(t *testing.T) {
		dir := t.TempDir()
		s := openStore(t, dir, Options{Mode: ModeLearn})
		for i, n := range []string{"npm:a", "npm:b", "npm:c"} {
			s.Observe(Key{Package: n}, "x.example:443", nil, t0.Add(time.Duration(i)*time.Minute))
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s = openStore(t, dir, Options{MaxPackages: 2})
		if f := s.Snapshot(); len(f.Packages) != 2 || f.Find("npm:a") >= 0 {
			t.Fatalf("loaded over the bound: %+v", f.Packages)
		}
	})
	t.Run("strings", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{Mode: ModeLearn})
		long := strings.Repeat("a", 2000) + ".example:443"
		r := s.Observe(postmark("1", hashA), long, []string{"not a domain!"}, t0)
		if len(r.UnseenDest) > maxGivenLen || !slices.Equal(r.UnseenDomains, []string{"not a domain!"}) {
			t.Fatalf("bad values: %+v", r)
		}
		want(t, s.Observe(postmark("1", hashA), long, nil, t0), UnseenDestination, true) // never recorded
		if r := s.Observe(Key{Package: "npm:"}, api, nil, t0); !r.Untracked || r.Violation() {
			t.Fatalf("no name: %+v", r)
		}
		if r := s.Observe(Key{Package: "rpm:x"}, api, nil, t0); !r.Untracked {
			t.Fatalf("unknown kind: %+v", r)
		}
		if r := s.Observe(Key{Package: "exe:/bin/\xff"}, api, nil, t0); r.Untracked || r.Key.Package != "exe:/bin/\uFFFD" {
			t.Fatalf("invalid UTF-8: %+v", r)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPersistence(t *testing.T) {
	state := t.TempDir()
	dir := Dir(state)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, Options{Mode: ModeLearn})
	s.Observe(postmark("1.0.15", hashA), api, []string{"company.com"}, t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory: %v %v", st.Mode(), err)
	}
	if st, err := os.Stat(Path(dir)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file: %v %v", st.Mode(), err)
	}
	if des, _ := os.ReadDir(dir); len(des) != 2 { // the file and the lock
		t.Fatalf("directory holds %v", des)
	}
	f := readBack(t, dir)
	if f.Mode != "learn" || f.Updated.IsZero() || len(f.Packages) != 1 {
		t.Fatalf("file %+v", f)
	}
	s = openStore(t, dir, Options{Mode: ModeEnforce})
	want(t, s.Observe(postmark("1.0.15", hashA), api, []string{"company.com"}, t0), Known, false)

	// Refused: a symbolic link for the file or the directory.
	if err := os.Rename(Path(dir), filepath.Join(dir, "real.json")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real.json", Path(dir)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{RefreshInterval: -1}); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("symlinked file: %v", err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(link, Options{RefreshInterval: -1}); err == nil || !strings.Contains(err.Error(), "not a plain directory") {
		t.Fatalf("symlinked directory: %v", err)
	}
	if _, err := Read(link); err == nil {
		t.Fatal("Read followed a symlinked directory")
	}
}

func TestCorruptFileMovedAside(t *testing.T) {
	dir := t.TempDir()
	garbage := []byte(`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:x","builds":[{"destinations":[{"value":"UPPER.example:443"}]}]}]}`)
	if err := os.WriteFile(Path(dir), garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(dir); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Read: %v", err)
	}
	s, err := Open(dir, Options{Mode: ModeLearn, RefreshInterval: -1})
	if !errors.Is(err, ErrCorrupt) || s == nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if st := s.Stats(); st.Packages != 0 || st.Corrupt != 1 {
		t.Fatalf("not empty: %+v", st)
	}
	aside := corruptFiles(t, dir)
	if len(aside) != 1 {
		t.Fatalf("moved aside: %v", aside)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, aside[0])); string(b) != string(garbage) {
		t.Fatalf("moved copy: %q", b)
	}
	if _, err := os.Stat(Path(dir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("file still there: %v", err)
	}

	// While open: the file is broken under the store, which writes what it
	// has back.
	s.Observe(postmark("1", hashA), api, nil, t0)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := os.WriteFile(Path(dir), []byte("not json"+strings.Repeat("!", i)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flush: %v", err)
		}
	}
	if f := readBack(t, dir); f.Find("npm:postmark-mcp") < 0 {
		t.Fatalf("not written back: %+v", f)
	}
	if aside := corruptFiles(t, dir); len(aside) != maxCorrupt {
		t.Fatalf("kept %d corrupt copies: %v", len(aside), aside)
	}
	// An edit refuses a corrupt file and leaves it.
	if err := os.WriteFile(Path(dir), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Update(dir, t0, func(*File) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("update: %v", err)
	}
	if b, _ := os.ReadFile(Path(dir)); string(b) != "{" {
		t.Fatalf("update changed a corrupt file: %q", b)
	}
}

func corruptFiles(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), fileName+corruptMark) {
			out = append(out, de.Name())
		}
	}
	return out
}

func TestConcurrentEdit(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Mode: ModeLearn})
	k := postmark("1.0.15", hashA)
	curl := Key{Package: "exe:/usr/bin/curl", Hash: hashA}
	s.Observe(k, api, []string{"company.com"}, t0)
	s.Observe(curl, "example.org:443", nil, t0)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Observations not yet written, then the CLI changes the file.
	s.Observe(k, api, []string{"company.com"}, t0.Add(time.Minute))
	s.Observe(k, api, nil, t0.Add(2*time.Minute))
	s.Observe(k, "new.example:443", nil, t0.Add(2*time.Minute))
	s.Observe(curl, "example.org:443", nil, t0.Add(2*time.Minute))
	s.Observe(Key{Package: "npm:fresh"}, "fresh.example:443", nil, t0.Add(2*time.Minute))
	learn(t, dir, "npm:other", t0.Add(time.Hour))
	forget(t, dir, "/usr/bin/curl")
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	f := readBack(t, dir)
	if f.Find("exe:/usr/bin/curl") >= 0 {
		t.Fatalf("forgotten package written back: %+v", f.Packages)
	}
	if p := pkgOf(t, f, "npm:other"); !p.LearnUntil.Equal(t0.Add(time.Hour)) {
		t.Fatalf("learn undone: %+v", p)
	}
	pkgOf(t, f, "npm:fresh")
	b := pkgOf(t, f, "npm:postmark-mcp").Builds[0]
	if len(b.Destinations) != 2 || b.Destinations[0].Value != api || b.Destinations[0].Count != 3 || b.Domains[0].Count != 2 {
		t.Fatalf("observations lost: %+v", b)
	}
	if st := s.Stats(); st.Reloads != 1 || st.Packages != 3 {
		t.Fatalf("stats %+v", st)
	}
	// The file removed: everything forgotten.
	if err := os.Remove(Path(dir)); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Packages != 0 {
		t.Fatalf("after removal: %+v", st)
	}
}

func TestBackground(t *testing.T) {
	dir := t.TempDir()
	c := &clock{t: t0}
	s := openStore(t, dir, Options{Mode: ModeLearn, RefreshInterval: 2 * time.Millisecond,
		FlushInterval: 5 * time.Second, TouchInterval: time.Minute, Now: c.now})
	k := postmark("1.0.15", hashA)
	for i := range 50 {
		s.Observe(k, api, []string{"company.com"}, t0)
		s.Observe(Key{Package: "npm:p" + string(rune('a'+i%26))}, api, nil, t0)
	}
	time.Sleep(50 * time.Millisecond) // ~25 rounds of the background goroutine
	if st := s.Stats(); st.Writes != 0 {
		t.Fatalf("written before FlushInterval: %+v", st)
	}
	c.add(5 * time.Second)
	testenv.Eventually(t, 5*time.Second, "the background write", func() bool { return s.Stats().Writes == 1 })
	if f := readBack(t, dir); len(f.Packages) != 27 {
		t.Fatalf("written: %d packages", len(f.Packages))
	}
	// Counts only: written after TouchInterval.
	s.Observe(k, api, nil, t0)
	c.add(30 * time.Second)
	time.Sleep(20 * time.Millisecond)
	if st := s.Stats(); st.Writes != 1 {
		t.Fatalf("counts written before TouchInterval: %+v", st)
	}
	c.add(30 * time.Second)
	testenv.Eventually(t, 5*time.Second, "the counts written", func() bool { return s.Stats().Writes == 2 })

	// The CLI's change is seen without a write of the store's.
	learn(t, dir, "npm:postmark-mcp", t0.Add(time.Hour))
	testenv.Eventually(t, 5*time.Second, "the change read back", func() bool { return s.Stats().Reloads == 1 })
	s.SetMode(ModeEnforce)
	want(t, s.Observe(postmark("1.0.17", hashB), "x.example:443", nil, t0.Add(time.Minute)), RugPull, true)
	s.Observe(Key{Package: "npm:late"}, "late.example:443", nil, t0)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f := readBack(t, dir)
	if f.Find("npm:late") < 0 || len(pkgOf(t, f, "npm:postmark-mcp").Builds) != 2 {
		t.Fatalf("not written at Close: %+v", f.Packages)
	}
}

func TestNormalize(t *testing.T) {
	for _, c := range []struct {
		in, out string
		ok      bool
	}{
		{"api.postmarkapp.com:443", "api.postmarkapp.com:443", true},
		{" API.PostmarkApp.COM.:0443 ", "api.postmarkapp.com:443", true},
		{"api.postmarkapp.com", "api.postmarkapp.com", true},
		{"ｇｉｆｔｓｈｏｐ．ｃｌｕｂ:443", "giftshop.club:443", true},
		{"bücher.example:443", "xn--bcher-kva.example:443", true},
		{"[::FFFF:192.0.2.1]:443", "192.0.2.1:443", true},
		{"[2001:DB8::1]:443", "[2001:db8::1]:443", true},
		{"2001:db8::1", "[2001:db8::1]", true},
		{"[2001:db8::1]", "[2001:db8::1]", true},
		{"192.0.2.1:25", "192.0.2.1:25", true},
		{"host:0", "", false},
		{"host:99999", "", false},
		{"bad host:443", "", false},
		{"a..b:443", "", false},
		{"", "", false},
	} {
		got, ok := NormalizeDest(c.in)
		if ok != c.ok || (ok && got != c.out) {
			t.Errorf("NormalizeDest(%q) = %q, %v; want %q, %v", c.in, got, ok, c.out, c.ok)
		}
	}
	for _, c := range []struct {
		in, out string
		ok      bool
	}{
		{"Company.COM", "company.com", true},
		{"@company.com.", "company.com", true},
		{"ｇｉｆｔｓｈｏｐ．ｃｌｕｂ", "giftshop.club", true},
		{"[192.0.2.1]", "[192.0.2.1]", true},
		{"no domain", "", false},
	} {
		got, ok := NormalizeDomain(c.in)
		if ok != c.ok || (ok && got != c.out) {
			t.Errorf("NormalizeDomain(%q) = %q, %v; want %q, %v", c.in, got, ok, c.out, c.ok)
		}
	}
}

func TestSelectors(t *testing.T) {
	for _, c := range []struct {
		in  string
		sel Selector
		err bool
	}{
		{in: "npm:postmark-mcp", sel: Selector{Package: "npm:postmark-mcp"}},
		{in: "npm:postmark-mcp@1.0.15", sel: Selector{Package: "npm:postmark-mcp", Version: "1.0.15", HasVersion: true}},
		{in: "npm:@scope/name@2.0.0", sel: Selector{Package: "npm:@scope/name", Version: "2.0.0", HasVersion: true}},
		{in: "npm:@scope/name", sel: Selector{Package: "npm:@scope/name"}},
		{in: "python:mcp-server-x@0.3", sel: Selector{Package: "python:mcp-server-x", Version: "0.3", HasVersion: true}},
		{in: "exe:/opt/a@b/bin", sel: Selector{Package: "exe:/opt/a@b/bin"}},
		{in: "/usr/bin/curl", sel: Selector{Package: "/usr/bin/curl", Bare: true}},
		{in: "postmark-mcp@1.0.15", sel: Selector{Package: "postmark-mcp", Version: "1.0.15", HasVersion: true, Bare: true}},
		{in: "", err: true},
		{in: "npm:", err: true},
		{in: "npm:x@", err: true},
		{in: "rpm:x", err: true},
	} {
		sel, err := ParseSelector(c.in)
		if (err != nil) != c.err || (err == nil && sel != c.sel) {
			t.Errorf("ParseSelector(%q) = %+v, %v", c.in, sel, err)
		}
	}
	f := NewFile()
	f.Packages = []Package{{Name: "exe:/usr/bin/x"}, {Name: "npm:x"}, {Name: "python:y"}}
	for in, want := range map[string]string{"y": "python:y", "/usr/bin/x": "exe:/usr/bin/x", "npm:x": "npm:x", "npm:new": "npm:new"} {
		sel, _ := ParseSelector(in)
		if got, err := f.Resolve(sel); err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v", in, got, err)
		}
	}
	sel, _ := ParseSelector("z")
	if _, err := f.Resolve(sel); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve(z): %v", err)
	}
	f.Packages = append(f.Packages, Package{Name: "python:x"})
	sel, _ = ParseSelector("x")
	if _, err := f.Resolve(sel); err == nil || !strings.Contains(err.Error(), "npm:x, python:x") {
		t.Errorf("ambiguous: %v", err)
	}
}

func TestKeyOf(t *testing.T) {
	for _, c := range []struct {
		id   pkgid.Identity
		want Key
	}{
		{pkgid.Identity{Kind: pkgid.KindNPM, Name: "postmark-mcp", Version: "1.0.16", Entry: "/x/index.js", Hash: pkgid.Hash{Sum: hashA}},
			Key{Package: "npm:postmark-mcp", Version: "1.0.16", Hash: hashA}},
		{pkgid.Identity{Kind: pkgid.KindPython, Name: "mcp-x", Version: "0.1", Hash: pkgid.Hash{Sum: hashB}},
			Key{Package: "python:mcp-x", Version: "0.1", Hash: hashB}},
		{pkgid.Identity{Kind: pkgid.KindExe, Entry: "/usr/bin/curl", Hash: pkgid.Hash{Sum: hashC}},
			Key{Package: "exe:/usr/bin/curl", Hash: hashC}},
		{pkgid.Identity{Kind: pkgid.KindScript, Entry: "/srv/t.js", Interpreter: "/usr/bin/node"},
			Key{Package: "script:/srv/t.js"}},
	} {
		if got := KeyOf(c.id); got != c.want {
			t.Errorf("KeyOf(%s) = %+v, want %+v", c.id, got, c.want)
		}
	}
	if s := postmark("1.0.16", hashA).String(); s != "npm:postmark-mcp@1.0.16 sha256:aaaaaaaaaaaa" {
		t.Errorf("String: %q", s)
	}
}

// TestPlainAgrees: the fast path of NormalizeDest and NormalizeDomain
// (plainDest, plainHost) says "already normal" only where the IDNA path
// returns the input unchanged.
func TestPlainAgrees(t *testing.T) {
	alphabet := "ab0-_.:9x" + "nA"
	rnd := rand.New(rand.NewPCG(1, 2)) //nolint:gosec // G404: test inputs, the same on every run
	inputs := []string{"xn--bcher-kva.example", "ab--cd.example", "a.b:443", "a.b:65536", "a.b:0", "a.b:00443",
		"192.0.2.1", "192.0.2.1:25", "1.2.3.4.5", "_dmarc.example", strings.Repeat("a", 63) + ".b", strings.Repeat("a", 64) + ".b"}
	for range 200000 {
		b := make([]byte, 1+rnd.IntN(16))
		for i := range b {
			b[i] = alphabet[rnd.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		if plainHost(in) {
			if n, ok := mail.NormalizeDomain(in); !ok || n != in {
				t.Fatalf("plainHost(%q), but NormalizeDomain gives %q, %v", in, n, ok)
			}
		}
		if plainDest(in) {
			if n, ok := normalizeDestOnce(in); !ok || n != in {
				t.Fatalf("plainDest(%q), but the slow path gives %q, %v", in, n, ok)
			}
		}
	}
}

// The window a package gets at its first sight by an enforcing store
// trusts the build first seen: an upgrade within it is checked (a rug
// pull), and the window survives a restart; "aarsm baseline learn" opens
// a window that trusts every build.
func TestFirstLearnTrustsTheFirstBuildOnly(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	s := openStore(t, dir, Options{Mode: ModeEnforce, RefreshInterval: -1})
	want(t, s.Observe(postmark("1.0.15", hashA), api, []string{"company.com"}, t0), UnseenDestination, true)
	want(t, s.Observe(postmark("1.0.17", hashB), "copy.example:443", nil, t0.Add(time.Minute)), RugPull, false)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Mode: ModeEnforce, RefreshInterval: -1})
	want(t, s.Observe(postmark("1.0.17", hashB), "copy.example:443", nil, t0.Add(2*time.Minute)), RugPull, false)
	want(t, s.Observe(postmark("1.0.15", hashA), "second.example:443", nil, t0.Add(2*time.Minute)), UnseenDestination, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	learn(t, dir, "npm:postmark-mcp", t0.Add(time.Hour))
	s = openStore(t, dir, Options{Mode: ModeEnforce, RefreshInterval: -1})
	want(t, s.Observe(postmark("1.0.17", hashB), "copy.example:443", nil, t0.Add(3*time.Minute)), RugPull, true)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// An executable whose hash is not known yet is checked against every
// build of its path: an unseen destination is one, a rug pull is never
// claimed, and nothing is recorded.
func TestCheckUnhashed(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Mode: ModeLearn})
	const exe = "exe:/opt/tool"
	s.Observe(Key{Package: exe, Hash: hashA}, "a.example:443", nil, t0)
	s.SetMode(ModeEnforce)
	r := s.CheckUnhashed(exe, "a.example:443", nil, t0.Add(time.Minute))
	want(t, r, Known, false)
	if !r.HashPending || r.Changed || r.Violation() {
		t.Fatalf("known, hash pending: %+v", r)
	}
	r = s.CheckUnhashed(exe, "b.example:443", nil, t0.Add(time.Minute))
	want(t, r, UnseenDestination, false)
	if !r.Violation() || r.Changed || r.UnseenDest != "b.example:443" {
		t.Fatalf("unseen, hash pending: %+v", r)
	}
	// A path never seen: its first sight learns (FirstLearn), unrecorded.
	r = s.CheckUnhashed("exe:/opt/other", "b.example:443", nil, t0)
	if r.Violation() || !r.NoBaseline {
		t.Fatalf("new path, hash pending: %+v", r)
	}
	if st := s.Stats(); st.Packages != 1 || st.Builds != 1 || st.Entries != 1 {
		t.Fatalf("CheckUnhashed recorded: %+v", st)
	}
	// Once hashed, the other content is a rug pull.
	want(t, s.Observe(Key{Package: exe, Hash: hashB}, "b.example:443", nil, t0.Add(time.Hour)), RugPull, false)
}
