package probe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// BenchmarkExamineGo: what examining an executable costs the discovery
// goroutine (a process in scope is held meanwhile): the agent's own binary
// built here, plain and stripped (-s -w; it links no crypto/tls), and the
// Go test client (net/http), plain and stripped, through examineELF (the
// dynamic symbols, then gosym's function table and code), beside the
// system libssl (the OpenSSL path) and node (not Go) in the same run. It prints time and
// memory per examination and their ratio to libssl's.
func BenchmarkExamineGo(b *testing.B) {
	testenv.SkipShort(b, "builds the agent")
	dir := b.TempDir()
	gocmd, err := exec.LookPath("go")
	if err != nil {
		gocmd = "/usr/local/go/bin/go"
	}
	files := []struct{ name, path string }{{"libssl", systemLibssl(b)}}
	for _, v := range []struct {
		name  string
		flags []string
	}{{"aarsm", nil}, {"aarsm-stripped", []string{"-ldflags=-s -w"}}} {
		out := filepath.Join(dir, v.name)
		args := append(append([]string{"build", "-o", out}, v.flags...), "github.com/aarsm/aarsm/agent/cmd/aarsm")
		cmd := exec.Command(gocmd, args...)
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("build %s: %v\n%s", v.name, err, msg)
		}
		files = append(files, struct{ name, path string }{v.name, out})
	}
	// The agent links no crypto/tls (its whole function table is searched
	// for nothing); a net/http client does.
	files = append(files, struct{ name, path string }{"goclient", testenv.BuildGoClient(b, false)},
		struct{ name, path string }{"goclient-stripped", testenv.BuildGoClient(b, true)})
	if node, err := exec.LookPath("node"); err == nil {
		files = append(files, struct{ name, path string }{"node", node})
	}
	type result struct {
		ns, bytes float64
		size      int64
	}
	res := map[string]result{}
	for _, f := range files {
		b.Run(f.name, func(b *testing.B) {
			fh, err := os.Open(f.path)
			if err != nil {
				b.Fatal(err)
			}
			defer fh.Close()
			st, _ := fh.Stat()
			b.ReportAllocs()
			var ms0, ms1 runtimeMem
			ms0.read()
			start := time.Now()
			n := 0
			for b.Loop() {
				info, err := examineELF(fh)
				if err != nil {
					b.Fatal(err)
				}
				if strings.HasPrefix(f.name, "goclient") && info.gotls == nil {
					b.Fatalf("%s: no Go crypto/tls (%v)", f.name, info.goErr)
				}
				n++
			}
			el := time.Since(start)
			ms1.read()
			res[f.name] = result{float64(el.Nanoseconds()) / float64(n), float64(ms1.alloc-ms0.alloc) / float64(n), st.Size()}
		})
	}
	base := res["libssl"]
	if base.ns == 0 {
		return
	}
	fmt.Printf("\nexamining an executable (examineELF, same run)\n%-16s %8s %12s %12s %10s %10s\n", "file", "MiB", "µs", "KiB alloc", "x libssl", "x mem")
	for _, f := range files {
		r := res[f.name]
		fmt.Printf("%-16s %8.1f %12.1f %12.1f %10.1f %10.1f\n", f.name, float64(r.size)/(1<<20), r.ns/1e3, r.bytes/1024, r.ns/base.ns, r.bytes/base.bytes)
	}
}

// runtimeMem is the bytes allocated so far (runtime.MemStats.TotalAlloc).
type runtimeMem struct{ alloc uint64 }

func (m *runtimeMem) read() {
	var s runtime.MemStats
	runtime.ReadMemStats(&s)
	m.alloc = s.TotalAlloc
}
