package rustls

import (
	"fmt"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// Examining Codex and Deno: Find against the floor of reading their code
// once (.text, 1 MiB at a time, no work), in the same run; allocated bytes
// per Find too. Read the ratios.
func BenchmarkFind(b *testing.B) {
	for _, p := range []testenv.NPMTarball{testenv.DenoPackage, testenv.CodexPackage} {
		b.Run(p.Spec, func(b *testing.B) {
			path := testenv.NPMExecutable(b, p)
			f, fh := open(b, path)
			text := f.Section(".text")
			floor := func() {
				buf := make([]byte, chunk)
				r := io.NewSectionReader(text, 0, int64(text.Size))
				for {
					if _, err := io.ReadFull(r, buf); err != nil {
						return
					}
				}
			}
			var tFind, tFloor time.Duration
			var alloc uint64
			var ms runtime.MemStats
			b.ResetTimer()
			for range b.N {
				t0 := time.Now()
				floor()
				tFloor += time.Since(t0)
				runtime.ReadMemStats(&ms)
				before := ms.TotalAlloc
				t0 = time.Now()
				if _, err := Find(f, fh); err != nil {
					b.Fatal(err)
				}
				tFind += time.Since(t0)
				runtime.ReadMemStats(&ms)
				alloc += ms.TotalAlloc - before
			}
			n := time.Duration(b.N)
			fmt.Printf("\n%s: .text %d MiB; Find %v (x%.2f the floor, a read of .text: %v), %.1f MiB allocated\n",
				p.Spec, text.Size>>20, (tFind / n).Round(time.Millisecond), float64(tFind)/float64(tFloor), (tFloor / n).Round(time.Millisecond), float64(alloc)/float64(b.N)/(1<<20))
			b.ReportMetric(float64(tFind)/float64(tFloor), "x-floor")
			b.ReportMetric(float64(alloc)/float64(b.N), "alloc-B/op")
		})
	}
}
