package act

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

func procState(t *testing.T, pid uint32) string {
	t.Helper()
	b, err := readFile(proc.FS{}.Path(pid, "stat"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return rest[:1]
}

func waitState(t *testing.T, pid uint32, want func(string) bool, what string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, fmt.Sprintf("pid %d %s", pid, what), func() (bool, string) {
		s := procState(t, pid)
		return want(s), "state " + s
	})
}

func TestKillChecksStartTime(t *testing.T) {
	testenv.RequireRoot(t)
	cmd, _ := helperCmd(t, "sleep", "", "")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killAtCleanup(t, cmd)
	pid := uint32(cmd.Process.Pid)
	st, err := proc.FS{}.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}

	// A different start time: the PID names another process now.
	if err := Kill(pid, st+1); !errors.Is(err, ErrReused) {
		t.Fatalf("Kill with a wrong start time: %v, want ErrReused", err)
	}

	// Continue resumes a stopped process. Stopped by the SIGSTOP sent
	// after that Kill, it was not killed: a process with a SIGKILL
	// pending dies instead of stopping.
	if err := syscall.Kill(int(pid), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, func(s string) bool { return s == "T" || s == "Z" || s == "X" }, "stopped (or dead)")
	if s := procState(t, pid); s == "Z" || s == "X" {
		t.Fatalf("process signalled despite the wrong start time (state %s)", s)
	}
	if err := Continue(pid, st+1); !errors.Is(err, ErrReused) {
		t.Fatalf("Continue with a wrong start time: %v, want ErrReused", err)
	}
	if s := procState(t, pid); s != "T" {
		t.Fatalf("resumed despite the wrong start time (state %s)", s)
	}
	if err := Continue(pid, st); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, func(s string) bool { return s != "T" }, "resumed")

	// Kill with the right start time; a stopped process dies too.
	if err := syscall.Kill(int(pid), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	waitState(t, pid, func(s string) bool { return s == "T" }, "stopped")
	if err := Kill(pid, st); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee interface{ Sys() any }
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper ended with %v, want SIGKILL", err)
	}
	if err := Kill(pid, st); !errors.Is(err, ErrGone) {
		t.Fatalf("Kill of a reaped process: %v, want ErrGone", err)
	}
}
