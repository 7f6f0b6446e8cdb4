package probe

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
