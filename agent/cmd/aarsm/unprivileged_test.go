package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// attackerAs runs TestAttackHelper as uid/gid 65534 with AARSM_ATTACK=ops
// (";"-separated) in cg, in a session of its own when setsid, and returns
// its output: one "op target: result" line per op.
func attackerAs(t *testing.T, bin string, cg *testenv.Cgroup, setsid bool, ops ...string) string {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^TestAttackHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "AARSM_ATTACK="+strings.Join(ops, ";"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: setsid, Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("attacker as uid 65534: %v\n%s", err, out.String())
	}
	return out.String()
}

// errName names the outcome of a system call: "ok" or the errno's name.
func errName(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		switch errno {
		case syscall.EPERM:
			return "EPERM"
		case syscall.EACCES:
			return "EACCES"
		case syscall.ESRCH:
			return "ESRCH"
		case syscall.ENOENT:
			return "ENOENT"
		}
		return errno.Error()
	}
	return err.Error()
}

// TestAttackHelper is the unprivileged child of attackerAs; without
// AARSM_ATTACK it does nothing. Ops: "kill:PID:SIGNUM", "create:DIR"
// (a new file in DIR), "write:FILE" (open for writing), "unlink:PATH",
// "connect:SOCKET".
func TestAttackHelper(t *testing.T) {
	ops := os.Getenv("AARSM_ATTACK")
	if ops == "" {
		return
	}
	for _, op := range strings.Split(ops, ";") {
		kind, arg, _ := strings.Cut(op, ":")
		var err error
		switch kind {
		case "kill":
			p, s, _ := strings.Cut(arg, ":")
			pid, _ := strconv.Atoi(p)
			sig, _ := strconv.Atoi(s)
			err = syscall.Kill(pid, syscall.Signal(sig))
		case "create":
			var f *os.File
			if f, err = os.OpenFile(filepath.Join(arg, "planted"), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644); err == nil {
				_ = f.Close()
			}
		case "write":
			var f *os.File
			if f, err = os.OpenFile(arg, os.O_WRONLY, 0); err == nil {
				_ = f.Close()
			}
		case "unlink":
			err = syscall.Unlink(arg)
		case "connect":
			var c net.Conn
			if c, err = net.Dial("unix", arg); err == nil {
				_ = c.Close()
			}
		default:
			t.Fatalf("unknown op %q", op)
		}
		fmt.Printf("%s %s: %s\n", kind, arg, errName(err))
	}
}

// A local unprivileged user (uid 65534) trying to mislead an enforcing
// agent: it cannot write, plant or remove anything in the agent's state
// and pin directories nor connect to or remove its status socket (with
// every parent directory opened to it, so that the agent's own modes are
// what refuse); it cannot signal the agent or its guard; and it cannot
// resume (SIGCONT) a root process held for judgement from a session of
// its own. From the held process's own session the kernel does let
// SIGCONT through (signal(7): SIGCONT within a session): the agent's
// guard probe then kills the resumed thread before the write runs, and
// nothing reaches the API. (Connection tracking exhaustion by uid 65534:
// TestBadInputToEnforcingAgent.)
func TestUnprivilegedUserCannotMisleadAgent(t *testing.T) {
	bin := buildAarsm(t)
	// A wedged event loop keeps the next held write held (fail closed,
	// 30 s) while the attacker tries.
	e := newFaultEnv(t, bin, "closed", 30*time.Second)
	e.startAgent(t, "AARSM_TEST_FAULT=wedge")
	e.warmUp(t)
	helper := unprivileged(t)
	attackers := testenv.NewCgroup(t)
	for _, d := range []string{e.state, filepath.Dir(e.socket)} {
		for ; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The state and pin directories hold files by now.
	var files []string
	for _, dir := range []string{e.state, e.pins} {
		_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err == nil && !fi.IsDir() {
				files = append(files, p)
			}
			return nil
		})
	}
	if len(files) < 2 {
		t.Fatalf("state and pin files %v, want some", files)
	}
	ops := []string{"create:" + e.state, "create:" + e.pins, "connect:" + e.socket, "unlink:" + e.socket}
	for _, f := range files {
		ops = append(ops, "write:"+f, "unlink:"+f)
	}
	agent, guard := e.agent.Process.Pid, e.guardPID(t)
	for _, pid := range []int{agent, guard} {
		for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGSTOP, syscall.SIGTERM, syscall.SIGHUP} {
			ops = append(ops, fmt.Sprintf("kill:%d:%d", pid, sig))
		}
	}

	h := e.heldMail(t)
	held := h.cmd.Process.Pid
	ops = append(ops, fmt.Sprintf("kill:%d:%d", held, syscall.SIGCONT), fmt.Sprintf("kill:%d:%d", held, syscall.SIGKILL))
	out := attackerAs(t, helper, attackers, true, ops...)
	t.Logf("uid 65534, its own session:\n%s", out)
	for _, op := range ops {
		line := ""
		kind, arg, _ := strings.Cut(op, ":")
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, kind+" "+arg+": ") {
				line = l
			}
		}
		res := strings.TrimPrefix(line, kind+" "+arg+": ")
		if res != "EPERM" && res != "EACCES" {
			t.Errorf("%s as uid 65534: %q, want EPERM or EACCES", op, res)
		}
	}
	if testenv.ProcessState(held) != 'T' {
		t.Fatalf("the held client is no longer stopped (state %q)", testenv.ProcessState(held))
	}

	// Same session as the held process: SIGCONT is the kernel's to allow.
	out = attackerAs(t, helper, attackers, false, fmt.Sprintf("kill:%d:%d", held, syscall.SIGCONT))
	t.Logf("uid 65534, the held process's session:\n%s", out)
	err := <-h.done
	ws, _ := h.cmd.ProcessState.Sys().(syscall.WaitStatus)
	t.Logf("held client after the foreign SIGCONT: %v (signaled %v, %v)", err, ws.Signaled(), ws.Signal())
	if strings.Contains(out, ": ok") {
		if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("resumed by uid 65534 and not killed: %v", err)
		}
	}
	if n := len(e.srv.Requests()); n != 1 {
		t.Errorf("the API got %d requests, want only the warm-up", n)
	}
	if r, err := status.Query(e.socket, 5*time.Second); err == nil {
		t.Logf("foreign SIGCONTs %d, guard kills %d", r.Events.ForeignConts, r.Events.GuardKills)
	} else {
		t.Logf("status of the wedged agent: %v", err)
	}
}
