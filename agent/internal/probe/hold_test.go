package probe

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// testHoldPolicy: deadlines far beyond any test (no guard runs in these
// tests unless they start one), failing open.
var testHoldPolicy = HoldPolicy{ExecMax: time.Minute, WriteMax: time.Minute}

type heldWrite struct {
	pid, tid uint32
	data     string
}

// holdingSensor loads a sensor that holds candidate writes of processes in
// cg only, and reports held writes.
func holdingSensor(t *testing.T, cg *testenv.Cgroup, opts ...func(*Options)) (*Sensor, chan heldWrite) {
	t.Helper()
	testenv.RequireRoot(t)
	o := Options{Holds: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, f := range opts {
		f(&o)
	}
	s, err := Load(o)
	if err != nil {
		t.Fatalf("load sensor: %v", err)
	}
	if err := s.SetScope(map[uint64]HoldPolicy{cg.ID(): testHoldPolicy}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetHolds(HoldConfig{Enabled: true}); err != nil {
		t.Fatal(err)
	}
	held := make(chan heldWrite, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx, func(ev *Event) {
			if o.onEvent != nil {
				o.onEvent(ev)
			}
			if ev.Kind == KindWrite && ev.Held {
				held <- heldWrite{ev.PID, ev.TID, string(ev.Data)}
			}
		})
	}()
	t.Cleanup(func() {
		// Never leave a process stopped: release whatever is still held.
		if hs, err := s.Holds(); err == nil {
			for _, h := range hs {
				_, _ = s.Release(h.PID, h.TID)
			}
		}
		cancel()
		<-done
		s.Close()
	})
	return s, held
}

func processState(t *testing.T, pid uint32) byte {
	t.Helper()
	b, err := os.ReadFile(proc.FS{}.Path(pid, "stat"))
	if err != nil {
		t.Fatalf("read state of pid %d: %v", pid, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	return b[i+2]
}

// heldCurl starts curl in cg posting a small mail to a fresh server, and
// waits until the sensor holds its write; it returns the client, the
// server and the held write.
func heldCurl(t *testing.T, cg *testenv.Cgroup, held chan heldWrite) (*exec.Cmd, *testenv.Server, heldWrite) {
	t.Helper()
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	req := testenv.Request{Method: "POST", Path: "/email", Body: []byte(`{"To":"a@b.example"}`), WaitForStdinLine: true}
	cmd := testenv.Curl(t, ca, srv.URL(), req)
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	pid := gate.Ready(t, 10*time.Second)
	gate.Go(t)
	return cmd, srv, waitHeld(t, held, pid)
}

func waitHeld(t *testing.T, held chan heldWrite, pid int) heldWrite {
	t.Helper()
	select {
	case h := <-held:
		if h.pid != uint32(pid) {
			t.Fatalf("held pid %d, want %d", h.pid, pid)
		}
		return h
	case <-time.After(10 * time.Second):
		t.Fatal("the write was not held")
	}
	return heldWrite{}
}

func TestHoldThenRelease(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s, held := holdingSensor(t, cg)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)

	cmd := testenv.Python(t, ca, srv.URL(), testenv.Request{Method: "POST", Path: "/email", Body: []byte(`{"To":"a@b.example"}`), WaitForStdinLine: true})
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	pid := gate.Ready(t, 10*time.Second)
	gate.Go(t)

	h := waitHeld(t, held, pid)
	if !strings.HasPrefix(h.data, "POST /email HTTP/1.1") {
		t.Fatalf("held write %q", h.data)
	}
	// Stopped before the write ran: the server, once it has handled all
	// that reached it, has nothing.
	testenv.Eventually(t, 2*time.Second, fmt.Sprintf("pid %d stopped", pid), func() (bool, string) {
		st := processState(t, uint32(pid))
		return st == 'T', fmt.Sprintf("state %c", st)
	})
	srv.WaitDrained(t, 10*time.Second)
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("server got %d requests while the write was held", n)
	}
	if _, err := s.Release(h.pid, h.tid); err != nil {
		t.Fatal(err)
	}
	// python writes the body separately: on a connection user space has
	// not classified (SetConnMode), every write is held.
	body := waitHeld(t, held, pid)
	if body.data != `{"To":"a@b.example"}` {
		t.Fatalf("second held write %q, want the body", body.data)
	}
	if _, err := s.Release(body.pid, body.tid); err != nil {
		t.Fatal(err)
	}
	srv.WaitFor(t, nil, 10*time.Second)
	if err := cmd.Wait(); err != nil {
		st, _ := s.Stats()
		t.Fatalf("client after release: %v (sensor %+v)", err, st)
	}
	st, err := s.Stats()
	if err != nil || st.Holds == 0 || st.GuardKills != 0 {
		t.Fatalf("stats %+v, %v", st, err)
	}
}

// A SIGCONT from anyone but the agent does not let a held write of a
// fail-closed policy through: the write guard one instruction later kills
// the thread.
func TestRogueContinueIsKilled(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s, held := holdingSensor(t, cg, func(o *Options) { o.WriteGuard = true })
	closed := testHoldPolicy
	closed.FailClosed = true
	if err := s.SetScope(map[uint64]HoldPolicy{cg.ID(): closed}); err != nil {
		t.Fatal(err)
	}
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	// Go: the guard after go_tls_write, by thread as for OpenSSL.
	goClient := testenv.BuildGoClient(t, false)
	clients := []string{"curl", "node", "go"}
	for _, client := range clients {
		t.Run(client, func(t *testing.T) {
			req := testenv.Request{Method: "POST", Path: "/email", Body: []byte(`{"Bcc":"phan@giftshop.club"}`), WaitForStdinLine: true}
			cmd := testenv.Curl(t, ca, srv.URL(), req)
			switch client {
			case "node":
				cmd = testenv.Node(t, ca, srv.URL(), req)
			case "go":
				cmd = testenv.GoClient(t, goClient, ca, srv.URL(), req, "h1")
			}
			gate := testenv.NewGate(t, cmd)
			if err := cg.Start(cmd); err != nil {
				t.Fatal(err)
			}
			pid := gate.Ready(t, 10*time.Second)
			gate.Go(t)
			waitHeld(t, held, pid)
			// A helper spamming SIGCONT at the held process.
			stop := make(chan struct{})
			go func() {
				for {
					select {
					case <-stop:
						return
					default:
						_ = syscall.Kill(pid, syscall.SIGCONT)
						time.Sleep(100 * time.Microsecond)
					}
				}
			}()
			err := cmd.Wait()
			close(stop)
			ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if err == nil || !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("client resumed by a rogue SIGCONT: %v", err)
			}
			// Killed, its connection closed: the server has handled
			// whatever it sent.
			srv.WaitDrained(t, 10*time.Second)
			if n := len(srv.Requests()); n != 0 {
				t.Fatalf("server got %d requests", n)
			}
		})
	}
	if st, _ := s.Stats(); st.GuardKills < uint64(len(clients)) {
		t.Fatalf("guard kills %d, want %d", st.GuardKills, len(clients))
	}
}

// Fail-open, a SIGCONT from someone else lets the held write go on
// unjudged (no second probe hit per write is paid for it), and the kernel
// counts it and marks the hold.
func TestRogueContinueFailOpen(t *testing.T) {
	cg := testenv.NewCgroup(t)
	s, held := holdingSensor(t, cg)
	if s.WriteGuarded() {
		t.Fatal("write guard attached without Options.WriteGuard")
	}
	cmd, srv, h := heldCurl(t, cg, held)
	pid := int(h.pid)
	hs, err := s.Holds()
	if err != nil || len(hs) != 1 || hs[0].TID != h.tid || hs[0].Foreign || hs[0].Kind != HoldWrite {
		t.Fatalf("holds before the SIGCONT: %+v, %v", hs, err)
	}
	// From another process: the test process is the agent here.
	if out, err := exec.Command("kill", "-CONT", strconv.Itoa(pid)).CombinedOutput(); err != nil {
		t.Fatalf("kill -CONT: %v: %s", err, out)
	}
	srv.WaitFor(t, nil, 10*time.Second)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client resumed fail-open: %v", err)
	}
	st, err := s.Stats()
	if err != nil || st.ForeignConts == 0 || st.GuardKills != 0 {
		t.Fatalf("stats %+v, %v", st, err)
	}
}

// Processes outside the scope are never held.
func TestOutOfScopeNotHeld(t *testing.T) {
	scoped := testenv.NewCgroup(t)
	other := testenv.NewCgroup(t)
	writers := make(chan uint32, 64)
	exits := make(chan uint32, 64) // of processes in other
	s, held := holdingSensor(t, scoped, func(o *Options) {
		o.onEvent = func(ev *Event) {
			ch := writers
			switch {
			case ev.Kind == KindExit && ev.Cgroup == other.ID():
				ch = exits
			case ev.Kind != KindWrite:
				return
			}
			select {
			case ch <- ev.PID:
			default:
			}
		}
	})
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cmd := testenv.Curl(t, ca, srv.URL(), testenv.Request{Method: "POST", Path: "/email", Body: []byte("x")})
	if err := other.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("curl out of scope: %v", err)
	}
	// Its exit event delivered: the events come in the order the kernel
	// produced them, so any event of its writes has come before.
	pid := uint32(cmd.Process.Pid)
	testenv.Eventually(t, 10*time.Second, fmt.Sprintf("the exit event of curl (pid %d)", pid), func() bool {
		for {
			select {
			case p := <-exits:
				if p == pid {
					return true
				}
			default:
				return false
			}
		}
	})
	select {
	case h := <-held:
		t.Fatalf("write of pid %d held out of scope", h.pid)
	default:
	}
	st, _ := s.Stats()
	if st.Holds != 0 {
		t.Fatalf("holds %d", st.Holds)
	}
	if st.Writes == 0 {
		t.Fatal("the probe never ran")
	}
	// Not even copied: an enforcing agent with a scope has no use for it.
	for len(writers) > 0 {
		if p := <-writers; p == pid {
			t.Fatalf("a write of pid %d out of scope was reported", pid)
		}
	}
}

// A scope names a unit or slice: processes in cgroups below it are in scope.
func TestScopeCoversChildCgroups(t *testing.T) {
	parent := testenv.NewCgroup(t)
	child := filepath.Join(parent.Path(), "app.slice", "mail.service")
	if err := os.MkdirAll(child, 0o755); err != nil {
		t.Fatal(err)
	}
	s, held := holdingSensor(t, parent)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cmd := testenv.Curl(t, ca, srv.URL(), testenv.Request{Method: "POST", Path: "/email", Body: []byte("x")})
	if err := testenv.StartIn(child, cmd); err != nil {
		t.Fatal(err)
	}
	h := waitHeld(t, held, cmd.Process.Pid)
	if _, err := s.Release(h.pid, h.tid); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("curl after release: %v", err)
	}
}

// A process that maps a TLS library nobody has examined yet is stopped
// until the library is probed: its first write cannot slip out while the
// agent is still reading the file. The examination is slowed down to a
// second here; without the hold, curl's POST would leave unseen.
func TestNewLibraryHeldUntilProbed(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	lib := filepath.Join(dir, "libssl.so.3")
	data, err := os.ReadFile(systemLibssl(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lib, data, 0o755); err != nil {
		t.Fatal(err)
	}
	id, _, err := proc.StatID(lib)
	if err != nil {
		t.Fatal(err)
	}
	probed := make(chan Target, 1)
	cg := testenv.NewCgroup(t)
	s, held := holdingSensor(t, cg, func(o *Options) {
		o.beforeExamine = func(path string) {
			if got, _, _ := proc.StatID(path); got == id {
				time.Sleep(time.Second)
			}
		}
		o.OnAttach = func(tg Target) {
			if tg.ID == id {
				probed <- tg
			}
		}
	})
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cmd := testenv.Curl(t, ca, srv.URL(), testenv.Request{Method: "POST", Path: "/email", Body: []byte(`{"To":"a@b.example"}`)})
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+dir)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	select {
	case tg := <-probed:
		if !tg.Probed() {
			t.Fatalf("the copy of libssl was not probed: %v", tg.Err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the copy of libssl was never examined")
	}
	h := waitHeld(t, held, cmd.Process.Pid)
	if !strings.HasPrefix(h.data, "POST /email") {
		t.Fatalf("held write %q", h.data)
	}
	if _, err := s.Release(h.pid, h.tid); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("curl after release: %v", err)
	}
	st, err := s.Stats()
	if err != nil || st.FileHolds == 0 {
		t.Fatalf("no process was held for discovery: %+v, %v", st, err)
	}
}
