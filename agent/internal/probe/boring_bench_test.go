package probe

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// BenchmarkBunWriteCost prints what probing Bun's BoringSSL (found without
// symbols) adds to a fetch POST of 1 KiB (one request, and its
// SSL_write, at a time over a keep-alive connection): no probe, a probe that does nothing at the same site (the
// kernel's floor), and the sensor as "aarsm trace" loads it. Modes are
// interleaved over rounds, the median kept; read the ratios.
func BenchmarkBunWriteCost(b *testing.B) {
	testenv.RequireRoot(b)
	const rounds, size, writes = 7, 1024, 500
	bun := testenv.NPMExecutable(b, testenv.BunPackage)
	ca := testenv.NewCA(b)
	srv := testenv.NewServer(b, ca)
	cg := testenv.NewCgroup(b)
	run := func() float64 {
		cmd := exec.Command(bun, "testdata/bunfetch.js", srv.URL()+"/bench", strconv.Itoa(writes), strconv.Itoa(size))
		cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+ca.CAFile)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cg.Start(cmd); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("bun writer: %v: %s", err, errb.String())
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(out.String()), 64)
		if err != nil {
			b.Fatalf("bun writer printed %q", out.String())
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
				cleanup = attachFloor(b, false, bun)
			case "trace":
				s := traceSensor(b)
				waitBunProbed(b, s.Sensor, bun, cg)
				cleanup = func() { _, _ = s.stop() }
			}
			results[mode] = append(results[mode], run())
			cleanup()
		}
	}
	off := median(results["off"])
	fmt.Printf("\nbun (BoringSSL, no symbols): fetch POST of %d B, median of %d rounds, ns per request\n", size, rounds)
	for _, mode := range modes {
		m := median(results[mode])
		fmt.Printf("%-6s %9.0f (%+6.0f, x%.3f)\n", mode, m, m-off, m/off)
		if mode != "off" {
			b.ReportMetric(m-off, "bun-"+mode+"-added-ns")
			b.ReportMetric(m/off, "bun-"+mode+"-x-off")
		}
	}
}

// waitProbed runs bun until the sensor has probed it (the sensor holds
// nothing: examining Bun, ~0.3 s, would run beside the measured requests).
func waitBunProbed(b *testing.B, s *Sensor, bun string, cg *testenv.Cgroup) {
	id, _, err := proc.StatID(bun)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bun, "-e", "await Bun.stdin.text()")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cg.Start(cmd); err != nil {
		b.Fatal(err)
	}
	testenv.Eventually(b, 30*time.Second, "bun probed", func() bool {
		return slices.ContainsFunc(s.Targets(), func(t Target) bool { return t.ID == id && t.Probed() })
	})
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		b.Fatal(err)
	}
}
