package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// "aarsm run" with an egress policy beside the default policy: a client in
// its scope is refused an unlisted destination (curl exit 7), the refusal
// is journaled (JSON on stdout) and "aarsm status" shows the policy, its
// cgroup and the counters.
func TestRunEgressPolicy(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	clients := testenv.NewCgroup(t)
	agentCg := testenv.NewCgroup(t)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	dest := ln.Addr().String()

	socket := filepath.Join(t.TempDir(), "status.sock")
	agent, policies := agentCommand(t, bin, shippedPolicy(t, "default.hcl"), clients, socket)
	egressSrc := fmt.Sprintf(`egress_policy "clients-egress" {
  scope {
    cgroups = [%q]
  }
  allow {
    cidrs = ["192.0.2.0/24"]
    ports = [443]
  }
}
`, clients.Name())
	if err := os.WriteFile(filepath.Join(policies, "egress.hcl"), []byte(egressSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr syncBuffer
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
	testenv.Eventually(t, 60*time.Second, "the status socket", func() bool {
		_, err := status.Query(socket, time.Second)
		return err == nil
	})

	curl := exec.Command("curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", "http://"+dest+"/")
	if err := clients.Start(curl); err != nil {
		t.Fatal(err)
	}
	_ = curl.Wait()
	if code := curl.ProcessState.ExitCode(); code != 7 {
		t.Fatalf("curl exit %d, want 7", code)
	}
	waitOutput(t, "journal", &stdout, `"AARSM_DEST":"`+dest+`"`)

	r := queryStatus(t, bin, socket)
	if r.Egress == nil || len(r.Egress.Policies) != 1 || !r.Egress.Attached {
		t.Fatalf("status egress %+v (error %q)", r.Egress, r.EgressError)
	}
	if p := r.Egress.Policies[0]; p.Name != "clients-egress" || p.Mode != "enforce" || len(p.Cgroups) != 1 || p.Cgroups[0] != clients.Name() {
		t.Errorf("status egress policy %+v", p)
	}
	if c := r.Egress.Counters[0]; c.Hook != "connect4" || c.Blocked != 1 {
		t.Errorf("status connect4 counters %+v, want 1 blocked", c)
	}
	out, err := exec.Command(bin, "status", "--status-socket", socket).Output()
	if err != nil {
		t.Fatalf("aarsm status: %v", err)
	}
	for _, want := range []string{"egress:      1 policies", "clients-egress       enforce  " + clients.Name(), "connect4 0/1/0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("aarsm status lacks %q:\n%s", want, out)
		}
	}
}
