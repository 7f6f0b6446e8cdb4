package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
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
