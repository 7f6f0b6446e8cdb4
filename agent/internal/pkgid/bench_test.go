package pkgid

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

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

// BenchmarkExeHash is what a verdict pays for an executable's hash: a
// file hashed before (open, fstat, a map lookup), beside a bare open and
// close of the same file and the sha256 of the whole file that it saves
// (curl's size, 280 KB, and a 64 MiB one), with their ratios.
func BenchmarkExeHash(b *testing.B) {
	for _, size := range []int{280 << 10, 64 << 20} {
		p := filepath.Join(b.TempDir(), "exe")
		if err := os.WriteFile(p, bytes.Repeat([]byte{0x90}, size), 0o755); err != nil {
			b.Fatal(err)
		}
		var open, hit, full time.Duration
		b.Run(fmt.Sprintf("%dKiB/open", size>>10), func(b *testing.B) {
			for b.Loop() {
				f, err := os.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
			open = b.Elapsed() / time.Duration(b.N)
		})
		b.Run(fmt.Sprintf("%dKiB/known", size>>10), func(b *testing.B) {
			h := NewExeHasher(ExeHashOptions{})
			defer h.Close()
			if _, err := h.Sum(p, time.Minute, nil); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := h.Sum(p, 0, nil); err != nil {
					b.Fatal(err)
				}
			}
			hit = b.Elapsed() / time.Duration(b.N)
		})
		b.Run(fmt.Sprintf("%dKiB/sha256", size>>10), func(b *testing.B) {
			for b.Loop() {
				if _, err := hashFile(p, 1<<30); err != nil {
					b.Fatal(err)
				}
			}
			full = b.Elapsed() / time.Duration(b.N)
		})
		if open > 0 && hit > 0 {
			b.Logf("%d KiB: known sum %v (%.2fx a bare open+close, %v); hashing it %v (%.0fx the known sum)",
				size>>10, hit, float64(hit)/float64(open), open, full, float64(full)/float64(hit))
		}
	}
}
