package pkgid

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// start runs cmd and stops it when the test ends.
func start(t testing.TB, cmd *exec.Cmd) uint32 {
	t.Helper()
	if _, err := os.Stat(cmd.Path); err != nil {
		t.Skipf("%s: %v", cmd.Path, err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	// The exec is done when the kernel shows the new argv: until then
	// /proc/PID/cmdline is the parent's, or empty while execve replaces
	// the image (exe already the new one).
	want := strings.Join(cmd.Args, "\x00") + "\x00"
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("pid %d's new argv", cmd.Process.Pid), func() (bool, string) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", cmd.Process.Pid))
		return string(b) == want, fmt.Sprintf("cmdline %q", b)
	})
	return uint32(cmd.Process.Pid)
}

func realDir(t *testing.T, dir string) string {
	t.Helper()
	d, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// A live node process run through node_modules/.bin, identified from
// /proc; then its package upgraded in place as npm does it.
func TestLiveNode(t *testing.T) {
	dir := realDir(t, t.TempDir())
	npmProject(t, dir, "1.0.15")
	// The server keeps running.
	tree(t, dir, map[string]string{"node_modules/postmark-mcp/lib/run.js": "setInterval(() => {}, 1000)\n"})
	if err := os.WriteFile(filepath.Join(dir, "node_modules/postmark-mcp/index.js"), []byte("#!/usr/bin/env node\nimport './lib/run.js'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/node", "node_modules/.bin/postmark-mcp")
	cmd.Dir = dir
	pid := start(t, cmd)

	r := New(proc.FS{}, Options{})
	id, err := r.Lookup(pid)
	if err != nil {
		t.Fatal(err)
	}
	pkg := filepath.Join(dir, "node_modules/postmark-mcp")
	if id.String() != "npm:postmark-mcp@1.0.15" || id.Dir != pkg || id.Entry != pkg+"/index.js" || id.Interpreter != "/usr/bin/node" ||
		id.Hash.Files != 4 || id.Problem != "" {
		t.Fatalf("%s dir %s entry %s interpreter %s hash %+v problem %q", id, id.Dir, id.Entry, id.Interpreter, id.Hash, id.Problem)
	}
	again, err := r.Lookup(pid)
	if err != nil || again != id || r.Stats().ProcHits != 1 || r.Stats().Hashes != 1 {
		t.Fatalf("second lookup: %v %v, stats %+v", again, err, r.Stats())
	}

	// Another process of the same package: its hash comes from the
	// cache.
	cmd2 := exec.Command("/usr/bin/node", pkg+"/index.js")
	cmd2.Dir = "/"
	other, err := r.Lookup(start(t, cmd2))
	if err != nil || other != id || r.Stats().Hashes != 1 {
		t.Fatalf("second process: %v %v, stats %+v", other, err, r.Stats())
	}

	// Upgraded in place: same path, same size, npm's fixed mtime.
	pj := filepath.Join(pkg, "package.json")
	fi, _ := os.Stat(pj)
	data, _ := os.ReadFile(pj)
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(pj, []byte(strings.Replace(string(data), "1.0.15", "1.0.16", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(pj, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	up, err := r.Lookup(pid)
	if err != nil || up.String() != "npm:postmark-mcp@1.0.16" || up.Hash.Sum == id.Hash.Sum || r.Stats().Hashes != 2 {
		t.Fatalf("after the upgrade: %s %+v %v, stats %+v", up, up.Hash, err, r.Stats())
	}

	// Gone.
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, err := r.Lookup(pid); !proc.Gone(err) {
		t.Fatalf("lookup of an exited process: %v", err)
	}
}

// A live "python3 -m module" whose module is in a dist-info layout on
// PYTHONPATH.
func TestLivePython(t *testing.T) {
	dir := realDir(t, t.TempDir())
	tree(t, dir, wheel("site", "mailtools", "mail-tools", "1.9.4", map[string]string{
		"site/mailtools/__main__.py": "import time\ntime.sleep(120)\n",
	}))
	cmd := exec.Command("/usr/bin/python3", "-m", "mailtools")
	cmd.Dir = dir
	cmd.Env = []string{"PYTHONPATH=" + filepath.Join(dir, "site"), "PATH=/usr/bin:/bin", "HOME=" + dir}
	pid := start(t, cmd)

	r := New(proc.FS{}, Options{})
	id, err := r.Lookup(pid)
	if err != nil {
		t.Fatal(err)
	}
	site := filepath.Join(dir, "site")
	exe, _ := filepath.EvalSymlinks("/usr/bin/python3")
	if id.String() != "python:mail-tools@1.9.4" || id.Dir != site || id.Module != "mailtools" || id.Entry != site+"/mailtools/__main__.py" ||
		id.Interpreter != exe || id.Hash.Files != 4 || id.Problem != "" {
		t.Fatalf("%s dir %s module %s entry %s interpreter %s hash %+v problem %q", id, id.Dir, id.Module, id.Entry, id.Interpreter, id.Hash, id.Problem)
	}
}
