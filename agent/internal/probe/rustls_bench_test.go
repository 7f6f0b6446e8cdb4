package probe

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// What the rustls probe (rustls_encrypt, on the call of the record
// layer's encrypter) adds to a Deno fetch POST of 1 KiB on loopback: no
// probe, a probe that does nothing at the same sites (the kernel's
// floor), and the sensor as "aarsm trace" loads it. Modes are interleaved
// over rounds, the median kept; read the ratios. Measured here: ~47 ms per
// request with or without a probe (Deno's fetch against the Go test
// server on loopback waits on TCP timers, which hide a probe's
// microseconds): the added time is noise of that, the benchmark shows
// that the probe does not change the order of the cost.
func BenchmarkDenoWriteCost(b *testing.B) {
	testenv.RequireRoot(b)
	const rounds, size, writes = 5, 1024, 50
	deno := testenv.NPMExecutable(b, testenv.DenoPackage)
	script, err := filepath.Abs("testdata/denofetch.js")
	if err != nil {
		b.Fatal(err)
	}
	ca := testenv.NewCA(b)
	srv := testenv.NewServer(b, ca)
	cg := testenv.NewCgroup(b)
	dir := b.TempDir()
	run := func() float64 {
		cmd := exec.Command(deno, "run", "--allow-all", "--no-config", "--no-lock", script, srv.URL()+"/bench", strconv.Itoa(writes), strconv.Itoa(size))
		cmd.Env = append(os.Environ(), "DENO_CERT="+ca.CAFile, "DENO_DIR="+filepath.Join(dir, "deno-dir"), "DENO_NO_UPDATE_CHECK=1", "NO_COLOR=1")
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cg.Start(cmd); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("deno writer: %v: %s", err, errb.String())
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(out.String()), 64)
		if err != nil {
			b.Fatalf("deno writer printed %q", out.String())
		}
		return ns
	}
	modes := []string{"off", "floor", "trace"}
	results := map[string][]float64{}
	for range rounds {
		for _, mode := range modes {
			cleanup := func() {}
			switch mode {
			case "floor":
				cleanup = attachFloor(b, false, deno)
			case "trace":
				s := traceSensor(b)
				preExamine(b, s.Sensor, deno)
				cleanup = func() { _, _ = s.stop() }
			}
			results[mode] = append(results[mode], run())
			cleanup()
		}
	}
	off := median(results["off"])
	fmt.Printf("\ndeno (rustls, no symbols): fetch POST of %d B, median of %d rounds, ns per request\n", size, rounds)
	for _, mode := range modes {
		m := median(results[mode])
		fmt.Printf("%-6s %9.0f (%+6.0f, x%.3f)\n", mode, m, m-off, m/off)
		if mode != "off" {
			b.ReportMetric(m-off, "deno-"+mode+"-added-ns")
			b.ReportMetric(m/off, "deno-"+mode+"-x-off")
		}
	}
}
