package probe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
	"github.com/aarsm/aarsm/bpf/ssl"
)

// BenchmarkWriteCost prints, from one run, what the sensor adds to a 1 KiB
// SSL_write of a C client on libssl and of node, and to a 1 KiB
// crypto/tls (*Conn).Write of a Go client and gnutls_record_send of a C
// client on libgnutls, beside the same writes
// with no probe at all and with a probe that does nothing at the same
// sites (the kernel's floor). Modes are interleaved over several rounds and
// the median of each is kept: the machines are noisy, the ratios are what
// to read. docs/performance.md explains the method.
func BenchmarkWriteCost(b *testing.B) {
	testenv.RequireRoot(b)
	const rounds, size = 9, 1024
	writes := map[string]int{"libssl": 20000, "node": 5000, "go": 20000, "gnutls": 20000}
	libssl := systemLibssl(b)
	libgnutls := systemLibgnutls(b)
	writer := testenv.CWriter(b)
	gnutlsWriter := testenv.GnuTLSWriter(b)
	node, err := exec.LookPath("node")
	if err != nil {
		b.Fatalf("node: %v (apt-get install -y nodejs)", err)
	}
	gowriter := testenv.GoWriter(b)
	port := testenv.NewDiscardServer(b, testenv.NewCA(b))
	scoped := testenv.NewCgroup(b)
	other := testenv.NewCgroup(b)

	clients := []string{"libssl", "node", "go", "gnutls"}
	run := func(client string, cg *testenv.Cgroup) float64 {
		var cmd *exec.Cmd
		switch client {
		case "libssl":
			cmd = exec.Command(writer, port, strconv.Itoa(writes[client]), strconv.Itoa(size), "0")
		case "go":
			cmd = exec.Command(gowriter, port, strconv.Itoa(writes[client]), strconv.Itoa(size))
		case "gnutls":
			cmd = exec.Command(gnutlsWriter, port, strconv.Itoa(writes[client]), strconv.Itoa(size), "0")
		default:
			cmd = exec.Command(node, "testdata/writer.js", port, strconv.Itoa(writes[client]), strconv.Itoa(size))
		}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cg.Start(cmd); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("%s writer: %v: %s", client, err, errb.String())
		}
		ns, err := strconv.ParseFloat(strings.TrimSpace(out.String()), 64)
		if err != nil {
			b.Fatalf("%s writer printed %q", client, out.String())
		}
		return ns
	}

	// trace: "aarsm trace", every write copied, nothing held; in scope:
	// "aarsm run" (fail-open), a write of a process in scope that starts
	// no mail; fail-closed: the same with the write guard attached.
	modes := []string{"off", "entry floor", "floor", "trace", "out of scope", "in scope", "fail-closed"}
	results := map[string]map[string][]float64{}
	for _, c := range clients {
		results[c] = map[string][]float64{}
	}
	var lost uint64
	for r := 0; r < rounds; r++ {
		for _, mode := range modes {
			var cleanup func()
			cg := scoped
			switch mode {
			case "floor":
				cleanup = attachFloor(b, false, libssl, node, gowriter, libgnutls)
			case "entry floor":
				cleanup = attachFloor(b, true, libssl, node, gowriter, libgnutls)
			case "trace":
				s := traceSensor(b)
				// A new executable is probed while it runs when nothing
				// holds it: the Go writer's before it runs.
				preExamine(b, s.Sensor, gowriter)
				cleanup = func() {
					st, _ := s.stop()
					lost += st.Lost
				}
			case "out of scope", "in scope", "fail-closed":
				s := benchSensor(b, scoped, mode == "fail-closed")
				preExamine(b, s.Sensor, gowriter)
				cleanup = func() {
					st, _ := s.stop()
					lost += st.Lost
				}
				if mode == "out of scope" {
					cg = other
				}
			}
			for _, c := range clients {
				results[c][mode] = append(results[c][mode], run(c, cg))
			}
			if cleanup != nil {
				cleanup()
			}
		}
	}

	fmt.Printf("\nadded cost per %d B SSL_write (median of %d rounds; ns per write, and added to \"off\")\n", size, rounds)
	fmt.Printf("%-8s %10s", "client", "off")
	for _, mode := range modes[1:] {
		fmt.Printf(" %18s", mode)
	}
	fmt.Println()
	for _, c := range clients {
		off := median(results[c]["off"])
		fmt.Printf("%-8s %10.0f", c, off)
		for _, mode := range modes[1:] {
			m := median(results[c][mode])
			fmt.Printf(" %9.0f (%+6.0f)", m, m-off)
			b.ReportMetric(m-off, c+"-"+strings.ReplaceAll(mode, " ", "-")+"-added-ns")
		}
		fmt.Println()
	}
	for _, c := range clients {
		d := median(results[c]["in scope"]) - median(results[c]["trace"])
		fmt.Printf("%s: aarsm run (in scope, fail-open) %+.0f ns per write beside aarsm trace\n", c, d)
		b.ReportMetric(d, c+"-run-minus-trace-ns")
	}
	fmt.Printf("events lost: %d\n", lost)
	b.ReportMetric(float64(lost), "lost-events")
}

type benchSensorHandle struct {
	*Sensor
	cancel context.CancelFunc
	done   chan struct{}
}

// traceSensor loads the sensor as "aarsm trace" does: every write
// copied, nothing held.
func traceSensor(b testing.TB) *benchSensorHandle {
	s, err := Load(Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatalf("load sensor: %v", err)
	}
	return runBenchSensor(s)
}

// benchSensor loads the enforcing agent's sensor: holding on, scoped to
// cg (fail-closed: with the write guard), every event drained by a reader
// that hands it to handle (if set).
func benchSensor(b testing.TB, cg *testenv.Cgroup, failClosed bool, handle ...func(*Event)) *benchSensorHandle {
	s, err := Load(Options{Holds: true, WriteGuard: failClosed, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatalf("load sensor: %v", err)
	}
	pol := testHoldPolicy
	pol.FailClosed = failClosed
	if err := s.SetScope(map[uint64]HoldPolicy{cg.ID(): pol}); err != nil {
		b.Fatal(err)
	}
	if err := s.SetHolds(HoldConfig{Enabled: true}); err != nil {
		b.Fatal(err)
	}
	return runBenchSensor(s, handle...)
}

func runBenchSensor(s *Sensor, handle ...func(*Event)) *benchSensorHandle {
	ctx, cancel := context.WithCancel(context.Background())
	h := &benchSensorHandle{Sensor: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(h.done)
		_ = s.Run(ctx, func(ev *Event) {
			if ev.Held {
				// As the agent does: a connection's first write is held
				// until it is classified; these write no HTTP.
				if ev.Kind == KindWrite {
					_ = s.SetConnMode(ev.PID, ev.SSL, ConnOther)
				}
				_, _ = s.Release(ev.PID, ev.TID)
			}
			for _, h := range handle {
				h(ev)
			}
		})
	}()
	return h
}

func (h *benchSensorHandle) stop() (Stats, error) {
	st, err := h.Stats()
	h.cancel()
	<-h.done
	// Nothing stays stopped: what is held now, nobody will release.
	_ = h.SetHolds(HoldConfig{})
	if holds, herr := h.Holds(); herr == nil {
		for _, hd := range holds {
			_, _ = h.Release(hd.PID, hd.TID)
		}
	}
	h.Close()
	return st, err
}

// attachFloor puts a program that does nothing on the write probes' sites
// and their guards in the given files, or (entry) on the functions' first
// instructions, where the probes were before placeWrite.
func attachFloor(b *testing.B, entry bool, paths ...string) func() {
	spec, err := ssl.LoadSensor()
	if err != nil {
		b.Fatal(err)
	}
	prog, err := ebpf.NewProgram(spec.Programs["probe_floor"])
	if err != nil {
		b.Fatalf("load floor program: %v", err)
	}
	var links []link.Link
	for _, path := range paths {
		info, err := readELF(path)
		if err != nil {
			b.Fatal(err)
		}
		ex, err := link.OpenExecutable(path)
		if err != nil {
			b.Fatal(err)
		}
		if g := info.gotls; g != nil {
			offs := append([]uint64{g.write.Body}, g.guards...)
			if entry {
				offs = []uint64{g.write.Offset}
			}
			for _, off := range offs {
				l, err := ex.Uprobe("go", prog, &link.UprobeOptions{Address: off})
				if err != nil {
					b.Fatalf("attach floor to %s: %v", path, err)
				}
				links = append(links, l)
			}
		}
		for _, off := range info.rustls {
			l, err := ex.Uprobe(symRustls, prog, &link.UprobeOptions{Address: off})
			if err != nil {
				b.Fatalf("attach floor to %s rustls: %v", path, err)
			}
			links = append(links, l)
		}
		for sym, p := range info.places {
			offs := append([]uint64{p.site}, p.guards...)
			if entry {
				offs = []uint64{info.symbols[sym]}
			}
			for _, off := range offs {
				l, err := ex.Uprobe(sym, prog, &link.UprobeOptions{Address: off})
				if err != nil {
					b.Fatalf("attach floor to %s %s: %v", path, sym, err)
				}
				links = append(links, l)
			}
		}
	}
	return func() {
		_ = closeLinks(links)
		prog.Close()
	}
}

// preExamine has the sensor examine (and probe) the executable at path
// now.
func preExamine(b testing.TB, s *Sensor, path string) {
	id, _, err := proc.StatID(path)
	if err != nil {
		b.Fatal(err)
	}
	if !s.examine(path, id) {
		b.Fatalf("examine %s: could not open it", path)
	}
	s.mu.Lock()
	tg := s.files[id]
	s.mu.Unlock()
	if tg == nil || !tg.Probed() {
		b.Fatalf("%s not probed: %+v", path, tg)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

// BenchmarkEventRate drives the enforcing sensor (in scope, copy of every
// write) with a C client writing 1 KiB records at 50,000 per second and
// then as fast as it can, and prints the events delivered per second and
// the events lost (ring buffer full) in each run.
func BenchmarkEventRate(b *testing.B) {
	testenv.RequireRoot(b)
	writer := testenv.CWriter(b)
	port := testenv.NewDiscardServer(b, testenv.NewCA(b))
	cg := testenv.NewCgroup(b)
	fmt.Printf("\nevents of 1 KiB writes through the ring buffer (4 MiB, drained every 5 ms)\n")
	fmt.Printf("%-14s %10s %14s %10s\n", "offered", "writes", "events/s", "lost")
	for _, rate := range []int{50000, 0} {
		const count = 100000
		var events int
		var first, last time.Time
		s := benchSensor(b, cg, false, func(ev *Event) {
			if ev.Kind != KindWrite || ev.Len != 1024 {
				return
			}
			if events == 0 {
				first = time.Now()
			}
			events++
			last = time.Now()
		})
		cmd := exec.Command(writer, port, strconv.Itoa(count), "1024", strconv.Itoa(rate))
		var errb strings.Builder
		cmd.Stderr = &errb
		if err := cg.Start(cmd); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("writer: %v: %s", err, errb.String())
		}
		time.Sleep(100 * time.Millisecond) // the last batch
		st, err := s.stop()
		if err != nil {
			b.Fatal(err)
		}
		offered := "max"
		if rate > 0 {
			offered = strconv.Itoa(rate) + "/s"
		}
		perSec := float64(events) / last.Sub(first).Seconds()
		fmt.Printf("%-14s %10d %14.0f %10d\n", offered, events, perSec, st.Lost)
		b.ReportMetric(float64(st.Lost), "lost-at-"+strings.TrimSuffix(offered, "/s"))
		b.ReportMetric(perSec, "events/s-at-"+strings.TrimSuffix(offered, "/s"))
	}
}
