package probe

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// A watched process's stdin reads and stdout writes come as stdio events
// with their bytes; once unwatched, none; a process not watched never.
func TestStdioWatch(t *testing.T) {
	testenv.RequireRoot(t)
	var got bytes.Buffer
	kinds := map[Kind]int{}
	var cmdPID uint32
	done := make(chan struct{})
	s := stdioBenchSensor(t, func(ev *Event) {
		if ev.PID != cmdPID || (ev.Kind != KindStdin && ev.Kind != KindStdout) {
			return
		}
		kinds[ev.Kind]++
		if ev.Kind == KindStdout {
			got.Write(ev.Data)
			if strings.Contains(got.String(), "last\n") {
				close(done)
			}
		}
	})
	t.Cleanup(func() { _, _ = s.stop() })
	// cat copies its stdin to its stdout: both pipes here.
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// Not watched yet: nothing (cat has echoed the line when it is read
	// back).
	fmt.Fprintln(in, "before")
	r := bufio.NewReader(out)
	if l, err := r.ReadString('\n'); err != nil || l != "before\n" {
		t.Fatalf("cat echoed %q, %v", l, err)
	}
	go func() { _, _ = io.Copy(io.Discard, r) }()
	cmdPID = uint32(cmd.Process.Pid) // set before watching: the handler reads it after
	if err := s.WatchStdio(cmdPID, StdioAll); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(in, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`)
	fmt.Fprintln(in, "last")
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("no stdout event with the last line; got %q", got.String())
	}
	if strings.Contains(got.String(), "before") || !strings.Contains(got.String(), `"tools/list"`) {
		t.Errorf("stdout events carried %q", got.String())
	}
	if kinds[KindStdin] == 0 {
		t.Errorf("no stdin event (kinds %v)", kinds)
	}
	if st, err := s.Stats(); err != nil || st.Stdio == 0 {
		t.Errorf("stdio counter %d (%v)", st.Stdio, err)
	}
	if err := s.UnwatchStdio(cmdPID); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkStdioCost prints what the stdio tracepoints add to a 1 KiB
// read from stdin and write to stdout (dd through pipes): with no sensor,
// with the sensor loaded for a process it does not watch (every process on
// the host pays that; also without the loopback-socket branch, NoHTTP,
// the program as it was before it), and for a watched one (an MCP server: every call
// copied into the ring). Modes interleaved, median of the rounds.
func BenchmarkStdioCost(b *testing.B) {
	testenv.RequireRoot(b)
	const rounds, blocks = 7, 100000
	modes := []string{"off", "sensor, no stdio", "not watched, no http", "not watched", "watched"}
	results := map[string][]float64{}
	run := func(s *benchSensorHandle) float64 {
		cmd := exec.Command("dd", "bs=1024", "count="+strconv.Itoa(blocks), "status=none")
		cmd.Stdin = bytes.NewReader(make([]byte, 1024*blocks))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		if s != nil {
			if err := s.WatchStdio(uint32(cmd.Process.Pid), StdioAll); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := io.Copy(io.Discard, stdout); err != nil {
			b.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatal(err)
		}
		return float64(time.Since(start).Nanoseconds()) / blocks
	}
	for r := 0; r < rounds; r++ {
		for _, mode := range modes {
			var s *benchSensorHandle
			switch mode {
			case "sensor, no stdio":
				s = traceSensor(b)
			case "not watched", "watched":
				s = stdioSensor(b)
			case "not watched, no http":
				s = stdioSensorOpts(b, Options{Stdio: true, NoHTTP: true})
			}
			var watch *benchSensorHandle
			if mode == "watched" {
				watch = s
			}
			results[mode] = append(results[mode], run(watch))
			if s != nil {
				_, _ = s.stop()
			}
		}
	}
	off := median(results["off"])
	fmt.Printf("\nadded cost of the stdio program per 1 KiB read(0)+write(1) pair (dd through pipes, median of %d rounds)\n", rounds)
	for _, mode := range modes {
		m := median(results[mode])
		fmt.Printf("%-22s %8.0f ns  (%+6.0f ns, ratio %.2f)\n", mode, m, m-off, m/off)
		b.ReportMetric(m/off, "ratio-"+strings.NewReplacer(" ", "-", ",", "").Replace(mode))
	}
}

// stdioSensor is the tracing sensor with the stdio program attached.
func stdioSensor(b testing.TB) *benchSensorHandle {
	return stdioSensorOpts(b, Options{Stdio: true})
}

// stdioSensorOpts is a tracing sensor loaded with opts.
func stdioSensorOpts(b testing.TB, opts Options) *benchSensorHandle {
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := Load(opts)
	if err != nil {
		b.Fatalf("load sensor: %v", err)
	}
	return runBenchSensor(s)
}

// stdioBenchSensor is a tracing sensor with the stdio program, its events
// handed to handle.
func stdioBenchSensor(t testing.TB, handle func(*Event)) *benchSensorHandle {
	s, err := Load(Options{Stdio: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("load sensor: %v", err)
	}
	return runBenchSensor(s, handle)
}
