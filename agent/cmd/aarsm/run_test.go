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

// shippedPolicy reads a policy of hcl/policies.
func shippedPolicy(t testing.TB, name string) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("../../../hcl/policies", name))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// agentCommand returns an unstarted "aarsm run" on the one policy given
// (scoped to clients' processes: see scopePolicy), verdicts as JSON on
// stdout, holding the writes of clients' processes only, with pins, state and a status socket of its own (socket: "" for
// one in a temporary directory). The pins go at cleanup. It also returns
// the policy directory.
func agentCommand(t testing.TB, bin string, policy []byte, clients *testenv.Cgroup, socket string) (*exec.Cmd, string) {
	t.Helper()
	policies := t.TempDir()
	policy = scopePolicy(t, policy, clients)
	if err := os.WriteFile(filepath.Join(policies, "policy.hcl"), policy, 0o644); err != nil {
		t.Fatal(err)
	}
	if socket == "" {
		socket = filepath.Join(t.TempDir(), "status.sock")
	}
	pins := fmt.Sprintf("/sys/fs/bpf/aarsm-test-%d", time.Now().UnixNano())
	t.Cleanup(func() { _ = os.RemoveAll(pins) })
	return exec.Command(bin, "run", "--policy-dir", policies, "--log-format", "json", "--hold-cgroup", clients.Path(),
		"--pin-dir", pins, "--state-dir", t.TempDir(), "--status-socket", socket), policies
}

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
	var stderr syncBuffer
	agent, _ := agentCommand(t, bin, shippedPolicy(t, "company.hcl"), clients, "")
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
