package rustls

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

func open(t testing.TB, path string) (*elf.File, *os.File) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	f, err := elf.NewFile(fh)
	if err != nil {
		t.Fatal(err)
	}
	return f, fh
}

// The real Codex and Deno: the encrypt calls are found, each a call
// through the vtable's encrypt slot.
func TestFindRealBuilds(t *testing.T) {
	for _, c := range []struct {
		p       testenv.NPMTarball
		version string
		sites   int
	}{
		{testenv.DenoPackage, "0.23.40", 1},
		{testenv.CodexPackage, "0.23.46", 4},
	} {
		t.Run(c.p.Spec, func(t *testing.T) {
			f, fh := open(t, testenv.NPMExecutable(t, c.p))
			start := time.Now()
			res, err := Find(f, fh)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			t.Logf("%s in %v: %+v", res, time.Since(start).Round(time.Millisecond), res.Sites)
			if res.Version != c.version || len(res.Sites) != c.sites {
				t.Fatalf("found %s, want rustls %s with %d calls", res, c.version, c.sites)
			}
			for _, s := range res.Sites {
				b := make([]byte, 4)
				if _, err := fh.ReadAt(b, int64(s.Offset)); err != nil {
					t.Fatal(err)
				}
				if !(b[0] == 0xff && b[2] == 0x18) && !(b[0] == 0x41 && b[1] == 0xff && b[3] == 0x18) {
					t.Errorf("site %#x: % x is not call *0x18(reg)", s.Addr, b)
				}
			}
		})
	}
}

// A file without rustls is told apart; one whose rustls release was not
// read is refused, never guessed.
func TestNotRustls(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, fh := open(t, self)
	if _, err := Find(f, fh); !errors.Is(err, ErrNotRustls) {
		t.Fatalf("Find(test binary) = %v, want ErrNotRustls", err)
	}
	if v := crateVersion(fmt.Sprintf("/x/rustls-%s/src/%s", "0.23.99", "record_layer.rs")); v != "0.23.99" {
		t.Fatalf("crateVersion = %q", v)
	}
	if _, ok := unwrapLine["0.23.99"]; ok {
		t.Fatal("0.23.99 must be unknown")
	}
}
