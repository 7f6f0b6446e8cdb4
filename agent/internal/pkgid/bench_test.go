package pkgid

import (
	"os/exec"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/proc"
)

// BenchmarkLookupCached is the cost of identifying a process seen
// before: a read of its stat and cmdline, two stats.
func BenchmarkLookupCached(b *testing.B) {
	dir := b.TempDir()
	tree(b, dir, map[string]string{
		"package.json": `{"name":"srv","version":"1.0.0"}`,
		"index.js":     "setInterval(() => {}, 1000)\n",
	})
	cmd := exec.Command("/usr/bin/node", "index.js")
	cmd.Dir = dir
	pid := start(b, cmd)
	r := New(proc.FS{}, Options{})
	if id, err := r.Lookup(pid); err != nil || id.Kind != KindNPM {
		b.Fatalf("%s: %v", id, err)
	}
	for b.Loop() {
		if _, err := r.Lookup(pid); err != nil {
			b.Fatal(err)
		}
	}
	if r.Stats().Hashes != 1 {
		b.Fatalf("stats %+v", r.Stats())
	}
}
