package baseline

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// sampleFile is a file as the store writes it.
func sampleFile(t testing.TB) []byte {
	t.Helper()
	s, err := Open(t.TempDir(), Options{Mode: ModeLearn, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Observe(postmark("1.0.15", hashA), "API.postmarkapp.com", []string{"company.com", "xn--bcher-kva.example"}, t0)
	s.Observe(postmark("1.0.16", hashB), "[::1]:8443", []string{"[192.0.2.1]"}, t0)
	s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashC}, "192.0.2.1:25", nil, t0)
	f := s.Snapshot()
	f.LearnUntil = t0
	f.Packages[0].LearnUntil = t0
	data, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestDecode(t *testing.T) {
	data := sampleFile(t)
	f, err := Decode(data)
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if out, err := f.Encode(); err != nil || string(out) != string(data) {
		t.Fatalf("not written back as read: %v\n%s\n%s", err, data, out)
	}
	for _, bad := range []string{
		``,
		`[]`,
		`{"format":"aarsm-baseline","version":1,"packages":[]} {}`,
		`{"format":"other","version":1}`,
		`{"format":"aarsm-baseline","version":3}`,
		`{"format":"aarsm-baseline","version":0}`,
		`{"format":"aarsm-baseline","version":1,"mode":"off"}`,
		`{"format":"aarsm-baseline","version":1,"packages":[null]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a"},{"package":"npm:a"}]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"deb:a"}]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{},{}]}]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{"domains":[{"value":"a.b"},{"value":"a.b"}]}]}]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{"domains":[{"value":"a.b","given":["A.B"]}]}]}]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{"destinations":[{"value":"a.b:443","given":["1","2","3","4","5"]}]}]}]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{"destinations":[{"value":"a.b:0443"}]}]}]}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{"destinations":[{"value":"a.b:443","count":-1}]}]}]}`,
		`{"format":"aarsm-baseline","version":1,"updated":"0000-01-01T00:30:00+01:00"}`,
		`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{"version":"` + strings.Repeat("1", 300) + `"}]}]}`,
	} {
		if _, err := Decode([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%.80s): %v", bad, err)
		}
	}
	f, err = Decode([]byte(`{"format":"aarsm-baseline","version":1,"future":true}`))
	if err != nil || f.Packages == nil {
		t.Fatalf("unknown member or no packages: %+v %v", f, err)
	}
}

// A file of version 1 (agents that kept MCP servers' packages only) loads:
// its packages are MCP servers', and it is written back as version 2,
// where an executable is no MCP server.
func TestDecodeVersion1(t *testing.T) {
	v1 := `{"format":"aarsm-baseline","version":1,"mode":"learn","packages":[{"package":"npm:postmark-mcp",` +
		`"builds":[{"version":"1.0.15","hash":"` + hashA + `","destinations":[{"value":"api.postmarkapp.com:443","count":2}],"domains":[]}]}]}`
	f, err := Decode([]byte(v1))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != FileVersion || len(f.Packages) != 1 || !f.Packages[0].MCP || f.Packages[0].Kind() != KindMCP {
		t.Fatalf("version 1 read as %+v", f)
	}
	dir := t.TempDir()
	if err := os.WriteFile(Path(dir), []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	s := openStore(t, dir, Options{Mode: ModeEnforce})
	want(t, s.Observe(postmark("1.0.15", hashA), api, nil, t0), Known, false)
	s.SetMode(ModeLearn)
	s.Observe(Key{Package: "exe:/usr/bin/curl", Hash: hashB}, "example.org:443", nil, t0)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	out := readBack(t, dir)
	if out.Version != FileVersion {
		t.Fatalf("written as version %d", out.Version)
	}
	for name, kind := range map[string]string{"npm:postmark-mcp": KindMCP, "exe:/usr/bin/curl": KindExe} {
		if k := pkgOf(t, out, name).Kind(); k != kind {
			t.Errorf("%s: kind %s, want %s", name, k, kind)
		}
	}
}

// FuzzBaselineFile feeds the file decoder anything: it must not panic, a
// file it accepts must be written back as read, and the store must load
// it, keep its bounds and write what reads back.
func FuzzBaselineFile(f *testing.F) {
	f.Add(sampleFile(f))
	f.Add([]byte(`{"format":"aarsm-baseline","version":1,"packages":[]}`))
	f.Add([]byte("api.postmarkapp.com:443"))
	f.Add([]byte(`{"format":"aarsm-baseline","version":1,"learn_until":"2025-09-01T10:00:00+02:00","packages":[{"package":"script:\u0000","builds":[{"destinations":[{"value":"[fe80::1%eth0]:1"}],"domains":[{"value":"[x]"}]}]}]}`))
	f.Add([]byte(`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","last_used":"9999-12-31T23:59:59-01:00"}]}`))
	f.Add([]byte(`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:a","builds":[{"destinations":[{"value":"a.b:1","count":18446744073709551615}]}]}]}`))
	opts := Options{MaxPackages: 3, MaxBuilds: 2, MaxDestinations: 2, MaxDomains: 2, MaxEntries: 5}.withDefaults()
	f.Fuzz(func(t *testing.T, data []byte) {
		// The fast paths of the normalisation agree with the slow ones.
		if in := string(data); plainHost(in) {
			if n, ok := mail.NormalizeDomain(in); !ok || n != in {
				t.Fatalf("plainHost(%q), but NormalizeDomain gives %q, %v", in, n, ok)
			}
		}
		if in := string(data); plainDest(in) {
			if n, ok := normalizeDestOnce(in); !ok || n != in {
				t.Fatalf("plainDest(%q), but the slow path gives %q, %v", in, n, ok)
			}
		}
		bf, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not wrapping ErrCorrupt: %v", err)
			}
			return
		}
		out, err := bf.Encode()
		if err != nil {
			t.Fatalf("accepted but not written: %v", err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("written but not read back: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(bf, again) {
			t.Fatalf("not read back as written:\n%+v\n%+v", bf, again)
		}
		st := fromFile(bf)
		st.trim(opts)
		n := 0
		for _, p := range st.pkgs {
			if len(p.builds) > opts.MaxBuilds {
				t.Fatalf("%d builds", len(p.builds))
			}
			for _, b := range p.builds {
				if len(b.dests) > opts.MaxDestinations || len(b.domains) > opts.MaxDomains {
					t.Fatalf("%d destinations, %d domains", len(b.dests), len(b.domains))
				}
			}
			n += p.entries()
		}
		if len(st.pkgs) > opts.MaxPackages || n != st.entries || n > opts.MaxEntries {
			t.Fatalf("%d packages, %d entries (counted %d)", len(st.pkgs), n, st.entries)
		}
		w, err := st.toFile().Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Decode(w); err != nil {
			t.Fatalf("the store's file does not read back: %v\n%s", err, w)
		}
	})
}
