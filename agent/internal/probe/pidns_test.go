package probe

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

const pidnsHelperEnv = "AARSM_PROBE_PIDNS_HELPER"

// A sensor loaded in a pid namespace of its own (a container) reports the
// processes of that namespace, with the ids it sees them by, and nothing
// of the processes outside: it would signal and look up the wrong ones.
func TestSensorInPIDNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatal("unshare not found: apt-get install util-linux")
	}
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	helper := exec.Command("unshare", "--pid", "--fork", "--mount-proc", "--", self, "-test.run=^TestPIDNamespaceHelper$")
	helper.Env = append(os.Environ(), pidnsHelperEnv+"=1")
	stdin, err := helper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := helper.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuf
	helper.Stderr = &stderr
	if err := helper.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer func() {
		stdin.Close() // the helper exits, and with it its namespace
		for range lines {
		}
		_ = helper.Wait()
		if t.Failed() {
			t.Logf("helper stderr:\n%s", stderr.String())
		}
	}()
	next := func(what string) string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("waiting for %s: the helper exited:\n%s", what, stderr.String())
			}
			return l
		case <-time.After(60 * time.Second):
			t.Fatalf("no %s from the helper within 60s:\n%s", what, stderr.String())
		}
		return ""
	}
	if l := next("ready"); l != "ready" {
		t.Fatalf("helper said %q, want ready", l)
	}

	// A mail from outside the namespace first, to the end: had the sensor
	// reported it, its events would come before those of the mail sent
	// inside.
	host := testenv.Curl(t, ca, srv.URL(), testenv.Request{Method: "POST", Path: "/host", Body: []byte("from the host")})
	host.Stdout, host.Stderr = io.Discard, io.Discard
	if err := host.Run(); err != nil {
		t.Fatalf("curl outside: %v", err)
	}
	if _, err := fmt.Fprintf(stdin, "go %s %s\n", srv.URL(), ca.CAFile); err != nil {
		t.Fatal(err)
	}
	var childPID string
	for {
		l := next("events")
		if pid, ok := strings.CutPrefix(l, "curl "); ok {
			childPID = pid
			continue
		}
		pid, ok := strings.CutPrefix(l, "write ")
		if !ok {
			continue
		}
		if childPID == "" || pid != childPID {
			t.Fatalf("the sensor in the namespace reported a write of pid %s (curl inside is %q): a process outside", pid, childPID)
		}
		break // the write of curl inside, by the pid it has there
	}
	srv.WaitFor(t, func(r testenv.Recorded) bool { return r.Path == "/inside" }, 30*time.Second)
}

// TestPIDNamespaceHelper is the sensor side of TestSensorInPIDNamespace,
// started in a new pid namespace. It loads the sensor, says "ready", prints
// "write PID" for every TLS write seen, and on "go URL CAFILE" posts with
// curl ("curl PID" first).
func TestPIDNamespaceHelper(t *testing.T) {
	if os.Getenv(pidnsHelperEnv) != "1" {
		t.Skip("helper of TestSensorInPIDNamespace")
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Printf(format+"\n", args...)
	}
	s, err := Load(Options{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		t.Fatalf("load sensor: %v", err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_ = s.Run(ctx, func(ev *Event) {
			if ev.Kind == KindWrite {
				say("write %d", ev.PID)
			}
		})
	}()
	say("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "go" {
			continue
		}
		cmd := exec.Command("curl", "-sS", "--http1.1", "--noproxy", "*", "--cacert", f[2], "-d", "from inside", f[1]+"/inside")
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		out.Lock() // "curl PID" before any of its writes
		if err := cmd.Start(); err != nil {
			out.Unlock()
			t.Fatalf("curl: %v", err)
		}
		fmt.Printf("curl %d\n", cmd.Process.Pid)
		out.Unlock()
		_ = cmd.Wait()
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
