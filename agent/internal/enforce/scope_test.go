package enforce

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

func killed(cmd *exec.Cmd, err error) bool {
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	return err != nil && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// The kernel holds what the enforcing policies' scopes name, nothing else:
// no --hold-cgroup here. A cgroups scope is its cgroup; a systemd_units
// scope is the unit's cgroup, found when it is created (a unit started
// after the agent); a reload narrows the scope again.
func TestHoldScopeFollowsPolicies(t *testing.T) {
	testenv.RequireRoot(t)
	scoped := testenv.NewCgroup(t)
	other := testenv.NewCgroup(t)
	parent := testenv.NewCgroup(t)
	unit := fmt.Sprintf("aarsm-test-%d.service", time.Now().UnixNano())
	company, err := os.ReadFile(filepath.Join("..", "..", "..", "hcl", "policies", "company.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	withScope := func(name, scope, extra string) string {
		head := policyHead.FindString(string(company))
		return strings.Replace(string(company), head, fmt.Sprintf("email_security_policy %q {\n  scope {\n    %s\n  }\n%s", name, scope, extra), 1)
	}
	dir := policyDir(t, map[string]string{
		"a.hcl": withScope("bycgroup", fmt.Sprintf("cgroups = [%q]", scoped.Name()), "  fail_mode = \"closed\"\n"),
		"b.hcl": withScope("byunit", fmt.Sprintf("systemd_units = [%q]", strings.TrimSuffix(unit, ".service")), ""),
	})
	a, err := New(Options{PolicyDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a)
	hs := a.HoldScope()
	if hs.All || !slices.Equal(hs.Cgroups, []string{scoped.Name()}) || !hs.NewCgroups || !slices.Equal(hs.FailClosed, []string{"bycgroup"}) || hs.Enforcing != 2 {
		t.Fatalf("hold scope %+v", hs)
	}
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	bcc := func(m string) testenv.Request { return postmark(m, `,"Bcc":"phan@giftshop.club"`) }

	// Out of every scope: neither held nor judged.
	before, _ := a.Sensor().Stats()
	cmd := testenv.Curl(t, ca, srv.URL(), bcc("out"))
	if err := other.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("out of scope: %v", err)
	}
	if after, _ := a.Sensor().Stats(); after.Holds != before.Holds {
		t.Fatalf("a write out of scope was held: %+v", after)
	}

	// The unit starts after the agent: its new cgroup is in scope at once.
	unitDir := filepath.Join(parent.Path(), unit)
	if err := os.Mkdir(unitDir, 0o755); err != nil {
		t.Fatal(err)
	}
	unitPath := parent.Name() + "/" + unit
	testenv.Eventually(t, 5*time.Second, "the unit's cgroup in the hold scope", func() bool { return slices.Contains(a.HoldScope().Cgroups, unitPath) })
	cmd = testenv.Curl(t, ca, srv.URL(), bcc("unit"))
	if err := testenv.StartIn(unitDir, cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); !killed(cmd, err) {
		t.Fatalf("client of the unit: %v, want killed", err)
	}
	// Another new cgroup is let go once matched against nothing.
	if err := os.Mkdir(filepath.Join(parent.Path(), "other.service"), 0o755); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "no new cgroup left pending", func() bool {
		n, pending, err := a.Sensor().ScopeSize()
		return err == nil && pending == 0 && n == 2
	})

	// Reloaded without the cgroup policy: its cgroup is out of scope.
	if err := os.Remove(filepath.Join(dir, "a.hcl")); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	if hs := a.HoldScope(); !slices.Equal(hs.Cgroups, []string{unitPath}) || len(hs.FailClosed) != 0 {
		t.Fatalf("hold scope after the reload %+v", hs)
	}
	for _, r := range srv.Requests() {
		if strings.Contains(r.Path, "unit") {
			t.Fatal("the unit's mail reached the server")
		}
	}
}

// runAgent runs a until the test ends.
func runAgent(t *testing.T, a *Agent) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent run: %v", err)
		}
		a.Close()
	})
}

// The agent never holds its own cgroup (its hold guard, the unit's
// ExecStopPost run there), even when a policy's scope covers it.
func TestOwnCgroupNeverHeld(t *testing.T) {
	testenv.RequireRoot(t)
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var own string
	for _, l := range strings.Split(string(self), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			own = p
		}
	}
	// The test process is the agent here: into a cgroup of its own for
	// the test, back where it was after.
	cg := testenv.NewCgroup(t)
	if err := cg.Add(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	mount := strings.TrimSuffix(cg.Path(), cg.Name())
	t.Cleanup(func() {
		if err := os.WriteFile(filepath.Join(mount, own, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0o644); err != nil {
			t.Errorf("move the test back to %s: %v", own, err)
		}
	})
	own = cg.Name()
	company, err := os.ReadFile(filepath.Join("..", "..", "..", "hcl", "policies", "company.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	head := policyHead.FindString(string(company))
	dir := policyDir(t, map[string]string{"a.hcl": strings.Replace(string(company), head,
		fmt.Sprintf("email_security_policy \"own\" {\n  scope {\n    cgroups = [%q]\n  }\n", own), 1)})
	a, err := New(Options{PolicyDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	runAgent(t, a)
	if hs := a.HoldScope(); !slices.Equal(hs.Cgroups, []string{own}) {
		t.Fatalf("hold scope %+v", hs)
	}
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cmd := testenv.Curl(t, ca, srv.URL(), postmark("own", ""))
	if err := cmd.Start(); err != nil { // in the test's (the agent's) cgroup
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if st, _ := a.Sensor().Stats(); st.Holds != 0 || st.FileHolds != 0 {
		t.Fatalf("the agent held a process of its own cgroup: %+v", st)
	}
}
