package act

import (
	"context"
	"crypto/tls"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// TestExecuteQuarantineBlock: a client blocked on a TLS read in a test
// cgroup (no systemd unit) gets its cgroup quarantined and its connection
// destroyed; an unknown action is reported without stopping the others.
func TestExecuteQuarantineBlock(t *testing.T) {
	testenv.RequireRoot(t)
	q := openTestQuarantine(t, QuarantineOptions{PinDir: testPinDir(t), StateDir: t.TempDir()})
	srv := newLoopbackServers(t)
	ca := testenv.NewCA(t)
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", ca.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = c.Read(make([]byte, 1))
	}()
	cg := testenv.NewCgroup(t)
	cmd, lines := helperCmd(t, "hold", "tcp4", ln.Addr().String()+","+ca.CAFile)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	killAtCleanup(t, cmd)
	if l := nextLine(t, lines, 10*time.Second); l != "ready" {
		t.Fatalf("helper: %q", l)
	}
	pid := uint32(cmd.Process.Pid)
	st, err := proc.FS{}.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	e := &Executor{Quarantine: q, Now: func() time.Time { return now }}
	done, err := e.Execute(context.Background(), Plan{
		Actions:       []policy.Effect{policy.EffectBlock, policy.EffectQuarantine, "bogus"},
		QuarantineFor: time.Hour,
	}, Target{PID: pid, StartTime: st, CgroupID: cg.ID()})
	if err == nil || !strings.Contains(err.Error(), `unknown action "bogus"`) {
		t.Fatalf("Execute error: %v, want the unknown action", err)
	}
	want := []Done{{policy.EffectQuarantine, fmt.Sprintf("cgroup=%d until=2030-01-02T04:04:05Z", cg.ID())}, {policy.EffectBlock, "sockets=1"}}
	if !slices.Equal(done, want) {
		t.Fatalf("Execute: %q, want %q", done, want)
	}
	if l := nextLine(t, lines, 5*time.Second); l != "read ECONNABORTED" {
		t.Fatalf("client: %q", l)
	}
	if got := egress(t, cg, srv); got != [3]string{"EPERM", "EPERM", "EPERM"} {
		t.Fatalf("after Execute: %v", got)
	}
	ownEgress(t, srv)
}
