package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// "aarsm run --tls-ports" reports a TLS client it cannot probe (linked
// statically against OpenSSL, stripped) in its verdict stream
// (AARSM_UNMONITORED=1) and "aarsm status" lists it, in JSON and in text.
func TestStatusListsUnmonitored(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	client := testenv.StaticOpenSSLClient(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	_, port, _ := net.SplitHostPort(srv.Addr())
	portNum, err := strconv.Atoi(port)
	if err != nil {
		t.Fatal(err)
	}
	clients := testenv.NewCgroup(t)
	agentCg := testenv.NewCgroup(t)
	socket := filepath.Join(t.TempDir(), "status.sock")
	notifications := newNotifySocket(t)

	var stdout, stderr syncBuffer
	agent, _ := agentCommand(t, bin, shippedPolicy(t, "company.hcl"), clients, socket)
	agent.Args = append(agent.Args, "--tls-ports", "443,"+port)
	agent.Env = append(agent.Environ(), "NOTIFY_SOCKET="+notifications.path)
	agent.Stdout, agent.Stderr = &stdout, &stderr
	if err := agentCg.Start(agent); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("agent stderr:\n%s", stderr.String())
		}
	})
	if ready := fields(notifications.next(t, "READY=1")); ready["READY"] != "1" {
		t.Fatalf("first notification %v, want READY=1", ready)
	}

	cmd := testenv.StaticOpenSSLCommand(t, client, ca, portNum, []byte("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := clients.Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = in.Close(); _ = cmd.Wait() }()

	var got status.Unmonitored
	testenv.Eventually(t, 15*time.Second, "the static client in aarsm status", func() bool {
		for _, u := range queryStatus(t, bin, socket).Unmonitored {
			if u.PID == cmd.Process.Pid {
				got = u
				return true
			}
		}
		return false
	})
	if got.Exe != client || got.Stack != probe.StackOpenSSLStatic || got.FirstSeen.IsZero() || got.Reason == "" {
		t.Errorf("status lists %+v", got)
	}
	human, err := exec.Command(bin, "status", "--status-socket", socket).CombinedOutput()
	line := fmt.Sprintf("  pid %d %s: %s (", cmd.Process.Pid, client, probe.StackOpenSSLStatic)
	if err != nil || !strings.Contains(string(human), "unmonitored: ") || !strings.Contains(string(human), line) {
		t.Errorf("aarsm status: %v\n%s", err, human)
	}
	// The report in the verdict stream (JSON lines), once.
	n := 0
	for _, line := range strings.Split(stdout.String(), "\n") {
		var v map[string]string
		if json.Unmarshal([]byte(line), &v) == nil && v["AARSM_UNMONITORED"] == "1" && v["AARSM_EXE"] == client {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d reports of the static client in the verdict stream, want 1:\n%s", n, stdout.String())
	}

	// A bad port is refused before anything is loaded (no agent lock
	// taken: nothing else of the host is touched).
	out, err := exec.Command(bin, "run", "--tls-ports", "443,https").CombinedOutput()
	if err == nil || !strings.Contains(string(out), `--tls-ports: "https" is not a TCP port`) {
		t.Errorf("aarsm run --tls-ports 443,https: %v\n%s", err, out)
	}
}
