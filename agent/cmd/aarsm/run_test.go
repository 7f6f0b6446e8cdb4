package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

func processState(pid int) byte {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	return b[i+2]
}

// If the agent dies while it holds a write, the held process must not stay
// stopped forever: the guard resumes it.
func TestAgentKilledMidHold(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	clients := testenv.NewCgroup(t)
	agentCg := testenv.NewCgroup(t)
	policies := t.TempDir()
	src, err := os.ReadFile("../../../hcl/policies/company.hcl")
	if err != nil {
		t.Fatal(err)
	}
	src = scopePolicy(t, src, clients)
	if err := os.WriteFile(filepath.Join(policies, "company.hcl"), src, 0o644); err != nil {
		t.Fatal(err)
	}

	var stderr syncBuffer
	pins := fmt.Sprintf("/sys/fs/bpf/aarsm-test-%d", time.Now().UnixNano())
	t.Cleanup(func() { _ = os.RemoveAll(pins) })
	agent := exec.Command(bin, "run", "--policy-dir", policies, "--log-format", "json", "--hold-cgroup", clients.Path(),
		"--pin-dir", pins, "--state-dir", t.TempDir(), "--status-socket", filepath.Join(t.TempDir(), "status.sock"))
	agent.Stderr = &stderr
	if err := agentCg.Start(agent); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, "agent stderr", &stderr, "msg=enforcing")

	// The agent cannot answer; the client's mail is held in the kernel.
	if err := agent.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	req := testenv.Request{Method: "POST", Path: "/email", Body: []byte(`{"From":"a@company.com","To":"b@company.com","Subject":"benign"}`)}
	client := testenv.Curl(t, ca, srv.URL(), req)
	if err := clients.Start(client); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for processState(client.Process.Pid) != 'T' {
		if time.Now().After(deadline) {
			t.Fatalf("client never held (state %c)", processState(client.Process.Pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("server got %d requests during the hold", n)
	}

	if err := agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()
	done := make(chan error, 1)
	go func() { done <- client.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("client after the agent died: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("client still stopped (state %c) 10s after the agent died; agent stderr:\n%s", processState(client.Process.Pid), stderr.String())
	}
	srv.WaitFor(t, nil, 5*time.Second)
	if !strings.Contains(stderr.String(), "resumed 1 held process") {
		t.Errorf("guard did not report the release:\n%s", stderr.String())
	}
	// The guard is gone too.
	deadline = time.Now().Add(5 * time.Second)
	for {
		pids, err := agentCg.PIDs()
		if err == nil && len(pids) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left in the agent's cgroup: %v", pids)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
