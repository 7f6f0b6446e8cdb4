package probe

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
	"github.com/aarsm/aarsm/bpf/ssl"
)

// startGuard runs the guard of s in this process until cleanup; closing
// the returned pipe end tells it the agent is gone.
func startGuard(t *testing.T, s *Sensor, report func(Hold, Outcome, string)) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- RunGuard(GuardOptions{
			Resolver: Resolver{Holds: s.objs.Holds, Counts: s.objs.Resolved},
			Settings: s.objs.Settings,
			Agent:    r,
			Report:   report,
		})
	}()
	t.Cleanup(func() {
		w.Close()
		if err := <-done; err != nil {
			t.Errorf("guard: %v", err)
		}
		r.Close()
	})
	return w
}

// A hold nobody judges ends by its deadline, by its fail mode, with the
// agent's loop running or not: fail-open resumes the client (its mail goes
// out, unjudged), fail-closed kills it (nothing reaches the server).
func TestGuardResolvesByDeadline(t *testing.T) {
	forFailModes(t, func(t *testing.T, closed bool, name string) {
		cg := testenv.NewCgroup(t)
		s, held := holdingSensor(t, cg)
		pol := HoldPolicy{FailClosed: closed, ExecMax: time.Minute, WriteMax: 300 * time.Millisecond}
		if err := s.SetScope(map[uint64]HoldPolicy{cg.ID(): pol}); err != nil {
			t.Fatal(err)
		}
		outcomes := make(chan Outcome, 4)
		startGuard(t, s, func(h Hold, o Outcome, why string) {
			if why != "deadline" {
				t.Errorf("resolved for %q", why)
			}
			outcomes <- o
		})
		cmd, srv, _ := heldCurl(t, cg, held) // and never released by this "agent"
		hs, err := s.Holds()
		if err != nil || len(hs) != 1 {
			t.Fatalf("holds %+v, %v", hs, err)
		}
		h := hs[0]
		if h.FailClosed != closed || h.Kind != HoldWrite || h.Deadline-h.Mono != uint64(300*time.Millisecond) {
			t.Fatalf("hold %+v", h)
		}
		var o Outcome
		select {
		case o = <-outcomes:
		case <-time.After(10 * time.Second):
			t.Fatal("the guard never resolved the hold")
		}
		resolved := MonoNow()
		if resolved < h.Deadline {
			t.Fatalf("resolved %s before the deadline", time.Duration(h.Deadline-resolved))
		}
		t.Logf("%s: resolved %s after the deadline", name, time.Duration(resolved-h.Deadline))
		err = cmd.Wait()
		if !closed {
			if o != Resumed || err != nil {
				t.Fatalf("outcome %s, client %v", o, err)
			}
			srv.WaitFor(t, nil, 10*time.Second)
			return
		}
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if o != Killed || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("outcome %s, client %v", o, err)
		}
		if n := len(srv.Requests()); n != 0 {
			t.Fatalf("fail-closed: the server got %d requests", n)
		}
		if res, err := s.Resolved(); err != nil || res.Killed != 1 {
			t.Fatalf("resolved %+v, %v", res, err)
		}
	})
}

// The agent gone (the guard's pipe at end of file): holding goes off and
// every hold is resolved at once, whatever its deadline.
func TestGuardResolvesWhenAgentGone(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s, held := holdingSensor(t, cg)
	gone := startGuard(t, s, nil)
	cmd, srv, _ := heldCurl(t, cg, held)
	gone.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client: %v", err)
	}
	srv.WaitFor(t, nil, 10*time.Second)
	var cfg ssl.SensorConfig
	if err := s.objs.Settings.Lookup(uint32(0), &cfg); err != nil || cfg.Holds != 0 {
		t.Fatalf("holding still on after the agent left: %+v, %v", cfg, err)
	}
}

// A hold record whose thread is not the one held any more (it exited and
// its id was reused, by a process that was never stopped) is dropped: the
// guard never stops, resumes or kills an unrelated process.
func TestGuardDropsReusedThreadID(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s, _ := holdingSensor(t, cg)
	sleeper := exec.Command("sleep", "60")
	if err := cg.Start(sleeper); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	pid := uint32(sleeper.Process.Pid)
	testenv.Eventually(t, 5*time.Second, "sleep running", func() bool { return testenv.ProcessState(int(pid)) == 'S' })
	// A record as the kernel would have written it for an earlier thread
	// with this id: started a second before this one, fail-closed.
	start, err := threadStart(pid)
	if err != nil {
		t.Fatal(err)
	}
	rec := ssl.SensorHold{Pid: pid, Kind: uint8(HoldWrite), FailClosed: 1, Ts: MonoNow(), Deadline: MonoNow(), Start: start - uint64(time.Second)}
	if err := s.objs.Holds.Put(pid, &rec); err != nil {
		t.Fatal(err)
	}
	r := Resolver{Holds: s.objs.Holds, Counts: s.objs.Resolved}
	o, err := r.Resolve(holdOf(pid, rec))
	if err != nil || o != Gone {
		t.Fatalf("outcome %s, %v", o, err)
	}
	if st := testenv.ProcessState(int(pid)); st != 'S' {
		t.Fatalf("unrelated process in state %c", st)
	}
	if hs, _ := s.Holds(); len(hs) != 0 {
		t.Fatalf("record kept: %+v", hs)
	}
	// The same record with the right start: it is that thread.
	rec.Start, rec.FailClosed = start, 0
	if err := s.objs.Holds.Put(pid, &rec); err != nil {
		t.Fatal(err)
	}
	if o, err := r.Resolve(holdOf(pid, rec)); err != nil || o != Resumed {
		t.Fatalf("outcome %s, %v", o, err)
	}
}

// threadStart returns a thread's start, boot-time ns, as far as /proc
// tells it (clock ticks).
func threadStart(tid uint32) (uint64, error) {
	ticks, err := threadStartTicks("/proc", tid, tid)
	return ticks * nsPerTick, err
}

// With the event loop not going round (stopped, wedged), no new hold is
// taken: fail-open the write goes on unjudged, fail-closed the process is
// killed before it runs. Nothing waits for a judge that is not there.
func TestStaleLoopTakesNoHold(t *testing.T) {
	forFailModes(t, func(t *testing.T, closed bool, name string) {
		cg := testenv.NewCgroup(t)
		s, err := Load(Options{Holds: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		pol := HoldPolicy{FailClosed: closed, ExecMax: time.Minute, WriteMax: time.Minute}
		if err := s.SetScope(map[uint64]HoldPolicy{cg.ID(): pol}); err != nil {
			t.Fatal(err)
		}
		if err := s.SetHolds(HoldConfig{Enabled: true, Stale: 100 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		// The loop runs once (a heartbeat), then stops.
		ctx, cancel := context.WithCancel(context.Background())
		ran := make(chan struct{})
		go func() { _ = s.Run(ctx, func(*Event) {}); close(ran) }()
		testenv.Eventually(t, 5*time.Second, "a heartbeat", func() bool {
			var v uint64
			return s.objs.Heartbeat.Lookup(uint32(0), &v) == nil && v != 0
		})
		cancel()
		<-ran
		var beat uint64
		_ = s.objs.Heartbeat.Lookup(uint32(0), &beat)
		testenv.Eventually(t, 5*time.Second, "a stale heartbeat", func() bool { return MonoNow()-beat > uint64(150*time.Millisecond) })

		ca := testenv.NewCA(t)
		srv := testenv.NewServer(t, ca)
		cmd := testenv.Curl(t, ca, srv.URL(), testenv.Request{Method: "POST", Path: "/email", Body: []byte(`{"To":"a@b.example"}`)})
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		err = cmd.Wait()
		st, _ := s.Stats()
		if st.Stale == 0 || st.Holds != 0 {
			t.Fatalf("stats %+v", st)
		}
		if !closed {
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			srv.WaitFor(t, nil, 10*time.Second)
			return
		}
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL || st.FailKills == 0 {
			t.Fatalf("client %v, stats %+v", err, st)
		}
		if n := len(srv.Requests()); n != 0 {
			t.Fatalf("fail-closed: the server got %d requests", n)
		}
	})
}

// A full hold map: the hold cannot be recorded, so it is not taken, and
// the fail mode applies at once.
func TestFullHoldMap(t *testing.T) {
	forFailModes(t, func(t *testing.T, closed bool, name string) {
		cg := testenv.NewCgroup(t)
		s, _ := holdingSensor(t, cg)
		pol := testHoldPolicy
		pol.FailClosed = closed
		if err := s.SetScope(map[uint64]HoldPolicy{cg.ID(): pol}); err != nil {
			t.Fatal(err)
		}
		// Thread ids no process has (above pid_max).
		for i := uint32(0); i < s.objs.Holds.MaxEntries(); i++ {
			if err := s.objs.Holds.Put(1<<30+i, &ssl.SensorHold{Pid: 1<<30 + i}); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() {
			for i := uint32(0); i < s.objs.Holds.MaxEntries(); i++ {
				_ = s.objs.Holds.Delete(1<<30 + i)
			}
		})
		ca := testenv.NewCA(t)
		srv := testenv.NewServer(t, ca)
		cmd := testenv.Curl(t, ca, srv.URL(), testenv.Request{Method: "POST", Path: "/email", Body: []byte(`{"To":"a@b.example"}`)})
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		st, _ := s.Stats()
		if st.HoldMapFull == 0 {
			t.Fatalf("stats %+v", st)
		}
		if !closed {
			if err != nil {
				t.Fatalf("client: %v", err)
			}
			return
		}
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("client %v", err)
		}
		if n := len(srv.Requests()); n != 0 {
			t.Fatalf("fail-closed: the server got %d requests", n)
		}
	})
}

// forFailModes runs f as a subtest for fail-open, then fail-closed.
func forFailModes(t *testing.T, f func(t *testing.T, closed bool, name string)) {
	testenv.RequireRoot(t)
	for _, closed := range []bool{false, true} {
		name := map[bool]string{false: "fail-open", true: "fail-closed"}[closed]
		t.Run(name, func(t *testing.T) { f(t, closed, name) })
	}
}
