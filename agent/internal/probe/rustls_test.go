package probe

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// A stripped executable that carries rustls (its panic locations' source
// paths in read-only data) is reported unprobed with the version, not
// passed over: Codex and Deno from npm are (rustls 0.23.46 and 0.23.40).
func TestRustlsReportedUnprobed(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "x.c")
	prog := `const char *p = "/home/runner/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/rustls-0.23.46/src/conn.rs";
int main(void) { return p[0]; }`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "x")
	if out, err := exec.Command("cc", "-O2", "-s", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	info, err := examineELF(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if info.writes() || info.unprobed == nil || !strings.Contains(info.unprobed.Error(), "rustls 0.23.46") {
		t.Errorf("writes=%v unprobed=%v, want rustls 0.23.46", info.writes(), info.unprobed)
	}
	// A plain program names no rustls.
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Fatal(err)
	}
	f, err = os.Open(ls)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if info, err := examineELF(f); err != nil || info.unprobed != nil {
		t.Errorf("ls: unprobed=%v err=%v", info.unprobed, err)
	}
}

// Deno and Codex from npm: their rustls is located and probed (the
// encrypt calls), not reported; a rustls release whose record layer was
// not read is reported unprobed, never probed at a guess.
func TestRustlsProbed(t *testing.T) {
	for _, c := range []struct {
		p     testenv.NPMTarball
		sites int
	}{{testenv.DenoPackage, 1}, {testenv.CodexPackage, 4}} {
		f, err := os.Open(testenv.NPMExecutable(t, c.p))
		if err != nil {
			t.Fatal(err)
		}
		info, err := examineELF(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !info.writes() || len(info.rustls) != c.sites || info.unprobed != nil || info.stack != "" {
			t.Errorf("%s: writes=%v sites=%d unprobed=%v stack=%q, want %d sites probed", c.p.Spec, info.writes(), len(info.rustls), info.unprobed, info.stack, c.sites)
		}
		t.Logf("%s: %s", c.p.Spec, info.build)
	}

	dir := t.TempDir()
	src := filepath.Join(dir, "x.c")
	prog := `const char *p = "/home/runner/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/rustls-0.23.99/src/record_layer.rs";
int main(void) { return p[0]; }`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "x")
	if out, err := exec.Command("cc", "-O2", "-s", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	f, err := os.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := examineELF(f)
	if err != nil {
		t.Fatal(err)
	}
	if info.writes() || info.unprobed == nil || !strings.Contains(info.unprobed.Error(), "rustls 0.23.99") || !strings.Contains(info.unprobed.Error(), "not recognised") || info.stack != StackRustls {
		t.Errorf("unknown release: writes=%v unprobed=%v stack=%q", info.writes(), info.unprobed, info.stack)
	}
}
