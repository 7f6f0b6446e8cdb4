package egress

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

const benchChildEnv = "AARSM_EGRESS_BENCH_CHILD"

// TestBenchChild is the connect loop BenchmarkConnect4 runs in a child
// process (the programs judge a process by its cgroup, and the benchmark's
// own process cannot move its threads alone): nothing unless the
// benchmark started it.
func TestBenchChild(t *testing.T) {
	spec := os.Getenv(benchChildEnv)
	if spec == "" {
		return
	}
	addr, nStr, _ := strings.Cut(spec, ",")
	n, err := strconv.Atoi(nStr)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	// One UDP socket connected again and again: each connect(2) runs the
	// connect4 hook, and nothing else of the socket's life is measured.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	// The thread's CPU time (user and system: the programs run in the
	// system call), not the wall clock: the machine is shared, and time
	// spent preempted is not the connect's.
	runtime.LockOSThread()
	start := threadCPU(t)
	for range n {
		if err := unix.Connect(fd, sa); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Printf("ns=%d\n", (threadCPU(t)-start).Nanoseconds()/int64(n))
}

func threadCPU(t *testing.T) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchChild runs n connects to addr in cg and returns ns per connect.
func benchChild(b *testing.B, cg *testenv.Cgroup, addr string, n int) float64 {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d", benchChildEnv, addr, n))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cg.Start(cmd); err != nil {
		b.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		b.Fatalf("child: %v: %s", err, out.String())
	}
	for _, l := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "ns="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return f
		}
	}
	b.Fatalf("child printed no result: %s", out.String())
	return 0
}

// BenchmarkConnect4 measures what the egress programs add to a connect(2)
// (one UDP socket connected again and again: no handshake, no TIME_WAIT,
// nothing but the connect), in the same run: no program; the programs
// attached and the process in an egress policy's scope with the
// destination allowed (scope walk and two trie lookups); attached with the
// process out of every scope (what every other process of the host pays);
// the process in scope by its executable (the task's file read and looked
// up too).
// ns/connect-* are the connecting thread's CPU time per connect; x-* are
// ratios to no program.
func BenchmarkConnect4(b *testing.B) {
	testenv.RequireRoot(b)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	addr := pc.LocalAddr().String()
	scoped, unscoped := testenv.NewCgroup(b), testenv.NewCgroup(b)
	set, diags := policy.ParseSource("bench.hcl", []byte(fmt.Sprintf(`egress_policy "bench" {
  scope {
    cgroups = [%q]
  }
  allow {
    cidrs = ["127.0.0.0/8", "10.0.0.0/8", "192.168.0.0/16"]
  }
  allow {
    cidrs = ["::1/128"]
    ports = [443]
  }
}
`, scoped.Name())))
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	byExe, diags := policy.ParseSource("bench-exe.hcl", []byte(fmt.Sprintf(`egress_policy "bench-exe" {
  scope {
    executables = [%q]
  }
  allow {
    cidrs = ["127.0.0.0/8"]
  }
}
`, self)))
	if diags.HasErrors() {
		b.Fatal(diags)
	}
	// Rounds, each variant once per round, the programs attached and
	// detached each time: the median of each variant is reported, so that
	// a burst of load from the rest of the machine falls on one round.
	const rounds = 5
	n := max(b.N/rounds, 2000)
	var none, in, out, exe []float64
	b.ResetTimer()
	for range rounds {
		none = append(none, benchChild(b, scoped, addr, n))
		e, err := Open(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		if err := e.Apply(set); err != nil {
			e.Close()
			b.Fatal(err)
		}
		in = append(in, benchChild(b, scoped, addr, n))
		out = append(out, benchChild(b, unscoped, addr, n))
		c, err := e.Status()
		if err != nil || c.Counters[0].Allowed != uint64(n) {
			e.Close()
			b.Fatalf("the scoped child's connects were not all checked: %+v %v", c.Counters, err)
		}
		if err := e.Apply(byExe); err != nil {
			e.Close()
			b.Fatal(err)
		}
		exe = append(exe, benchChild(b, unscoped, addr, n))
		c, err = e.Status()
		e.Close()
		if err != nil || c.Counters[0].Allowed != 2*uint64(n) {
			b.Fatalf("the child's connects were not all checked by executable: %+v %v", c.Counters, err)
		}
	}
	b.StopTimer()
	med := func(v []float64) float64 { slices.Sort(v); return v[len(v)/2] }
	mNone, mIn, mOut, mExe := med(none), med(in), med(out), med(exe)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(mNone, "ns/connect-none")
	b.ReportMetric(mIn, "ns/connect-scoped")
	b.ReportMetric(mOut, "ns/connect-unscoped")
	b.ReportMetric(mIn/mNone, "x-scoped")
	b.ReportMetric(mOut/mNone, "x-unscoped")
	b.ReportMetric(mExe, "ns/connect-exe")
	b.ReportMetric(mExe/mNone, "x-exe")
}
