package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// A Go client's crypto/tls: its request is seen at (*Conn).Write, its
// response at the RETs of (*Conn).Read, its end at (*Conn).Close, all on
// one connection (the *tls.Conn).
func TestGoTLSEvents(t *testing.T) {
	testenv.RequireRoot(t)
	var mu sync.Mutex
	var evs []Event
	s, err := Load(Options{Reads: true, LibraryDirs: []string{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("load sensor: %v", err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Run(ctx, func(ev *Event) {
			e := *ev
			e.Data = bytes.Clone(ev.Data)
			mu.Lock()
			evs = append(evs, e)
			mu.Unlock()
		})
	}()
	defer func() { cancel(); <-done }()

	ca := testenv.NewCA(t)
	api := testenv.NewMailAPI(t, ca)
	bin := testenv.BuildGoClient(t, true)
	cg := testenv.NewCgroup(t)
	marker := fmt.Sprintf("gotls-%d", time.Now().UnixNano())
	req := testenv.Request{Method: "POST", Path: "/email?m=" + marker, Body: []byte(`{"To":"a@b.example"}`), WaitForStdinLine: true}
	cmd := testenv.GoClient(t, bin, ca, api.URL(), req, "h1")
	var out bytes.Buffer
	cmd.Stderr = &out
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	gate.Ready(t, 10*time.Second)
	// Not holding, the sensor probes a new executable while it runs:
	// the client waits until it is probed.
	waitProbed(t, s, bin)
	gate.Go(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go client: %v\n%s", err, out.Bytes())
	}
	pid := uint32(cmd.Process.Pid)
	var write, read, free *Event
	testenv.Eventually(t, 10*time.Second, "the Go client's write, read and exit", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		write, read, free = nil, nil, nil
		exited := false
		var seen []string
		for i := range evs {
			e := &evs[i]
			if e.PID != pid {
				continue
			}
			seen = append(seen, fmt.Sprintf("%v(%d)", e.Kind, e.Len))
			switch {
			case e.Kind == KindWrite && bytes.Contains(e.Data, []byte(marker)) && write == nil:
				write = e
			case e.Kind == KindRead && bytes.HasPrefix(e.Data, []byte("HTTP/1.1 200")) && read == nil:
				read = e
			case e.Kind == KindFree:
				free = e
			case e.Kind == KindExit:
				exited = true
			}
		}
		return write != nil && read != nil && exited, fmt.Sprint(seen)
	})
	if write.SSL == 0 || read.SSL != write.SSL {
		t.Errorf("write on conn %#x, read on %#x: want the same *tls.Conn", write.SSL, read.SSL)
	}
	if free != nil && free.SSL != write.SSL {
		t.Errorf("close of conn %#x, want %#x", free.SSL, write.SSL)
	}
	if !bytes.Contains(write.Data, req.Body) || write.Len != uint32(len(write.Data)) {
		t.Errorf("write %d bytes %q", write.Len, write.Data)
	}

	// (*Conn).Close ends the connection: the Go writer closes its own.
	gw := testenv.GoWriter(t)
	gid, _, err := proc.StatID(gw)
	if err != nil {
		t.Fatal(err)
	}
	if !s.examine(gw, gid) {
		t.Fatal("cannot open the Go writer")
	}
	port := testenv.NewDiscardServer(t, ca)
	wcmd := exec.Command(gw, port, "3", "100")
	if err := cg.Start(wcmd); err != nil {
		t.Fatal(err)
	}
	if err := wcmd.Wait(); err != nil {
		t.Fatalf("go writer: %v", err)
	}
	wpid := uint32(wcmd.Process.Pid)
	testenv.Eventually(t, 10*time.Second, "the Go writer's 1,003 writes and its close, on one connection", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		conns := map[uint64]int{}
		var closed []uint64
		for _, e := range evs {
			switch {
			case e.PID != wpid:
			case e.Kind == KindWrite && e.Len == 100:
				conns[e.SSL]++
			case e.Kind == KindFree:
				closed = append(closed, e.SSL)
			}
		}
		for c, n := range conns {
			if n == 1003 && len(closed) > 0 && closed[0] == c {
				return true, ""
			}
		}
		return false, fmt.Sprintf("writes by connection %v, closed %#x", conns, closed)
	})
}

// waitProbed waits until the sensor has probed the executable bin.
func waitProbed(t *testing.T, s *Sensor, bin string) Target {
	t.Helper()
	id, _, err := proc.StatID(bin)
	if err != nil {
		t.Fatal(err)
	}
	var tg Target
	testenv.Eventually(t, 10*time.Second, "the Go client probed", func() (bool, string) {
		for _, x := range s.Targets() {
			if x.ID == id {
				tg = x
				return true, ""
			}
		}
		return false, fmt.Sprintf("targets %+v", s.Targets())
	})
	if !tg.Probed() {
		t.Fatalf("%s examined, not probed: %v", bin, tg.Err)
	}
	return tg
}

// A Go executable the register table does not cover (its build info says
// go1.99) is examined once, logged, left unprobed, and Target.Err says
// why (ErrGoUnmonitored: what the unmonitored-process report reads); the
// process runs on.
func TestGoUnsupportedRelease(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testenv.BuildGoClient(t, true)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	v := []byte(runtime.Version()) // the local toolchain built it: go1.26.8
	if !bytes.HasPrefix(v, []byte("go1.")) || len(v) < 6 || !bytes.Contains(data, v) {
		t.Fatalf("the client does not carry %q", v)
	}
	future := append([]byte("go1.99"), bytes.Repeat([]byte(".9"), 8)...)[:len(v)]
	if future[len(future)-1] == '.' {
		future[len(future)-1] = '9'
	}
	odd := filepath.Join(t.TempDir(), "goclient-future")
	if err := os.WriteFile(odd, bytes.ReplaceAll(data, v, future), 0o755); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	s, err := Load(Options{LibraryDirs: []string{}, Logger: slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &mu}, nil))})
	if err != nil {
		t.Fatalf("load sensor: %v", err)
	}
	defer s.Close()
	id, _, err := proc.StatID(odd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if !s.examine(odd, id) {
			t.Fatal("could not open the file")
		}
	}
	var tg *Target
	for _, x := range s.Targets() {
		if x.ID == id {
			tg = &x
		}
	}
	switch {
	case tg == nil:
		t.Fatalf("no target for %s: %+v", odd, s.Targets())
	case tg.Probed() || !errors.Is(tg.Err, ErrGoUnmonitored) || !strings.Contains(tg.Err.Error(), string(future)):
		t.Errorf("target %+v: want unprobed, ErrGoUnmonitored naming %s", tg, future)
	}
	mu.Lock()
	n := strings.Count(logs.String(), "cannot probe Go crypto/tls")
	mu.Unlock()
	if n != 1 {
		t.Errorf("logged %d times, want once:\n%s", n, logs.String())
	}
	// And it runs (to its error: no config).
	out, err := exec.Command(odd, filepath.Join(t.TempDir(), "none.json"), "h1").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("the binary with a patched version: %v\n%s", err, out)
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
