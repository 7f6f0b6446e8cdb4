package probe

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
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
