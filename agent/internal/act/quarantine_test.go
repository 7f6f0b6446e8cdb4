package act

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// testPinDir returns a fresh pin directory under the bpffs for one test.
func testPinDir(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "/sys/fs/bpf/aarsm-test-" + hex.EncodeToString(b)
}

func openTestQuarantine(t *testing.T, opts QuarantineOptions) *Quarantine {
	t.Helper()
	q, err := OpenQuarantine(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := q.Unpin(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(opts.PinDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pin directory %s left behind: %v", opts.PinDir, err)
		}
	})
	return q
}

type loopbackServers struct{ v4, v6 string }

func newLoopbackServers(t *testing.T) loopbackServers {
	var s loopbackServers
	for _, x := range []struct {
		network, addr string
		out           *string
	}{{"tcp4", "127.0.0.1:0", &s.v4}, {"tcp6", "[::1]:0", &s.v6}} {
		ln, err := net.Listen(x.network, x.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		*x.out = ln.Addr().String()
	}
	return s
}

// egress runs helpers in cg that connect (TCP, v4 and v6) and send (UDP
// v4) to the servers and returns what they print.
func egress(t *testing.T, cg *testenv.Cgroup, s loopbackServers) [3]string {
	t.Helper()
	var out [3]string
	for i, x := range []struct{ mode, network, addr string }{
		{"connect", "tcp4", s.v4}, {"connect", "tcp6", s.v6}, {"udp", "udp4", s.v4},
	} {
		cmd, lines := helperCmd(t, x.mode, x.network, x.addr)
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		out[i] = nextLine(t, lines, 10*time.Second)
		_ = cmd.Wait()
	}
	return out
}

// ownEgress checks that the test process itself (another cgroup) can connect.
func ownEgress(t *testing.T, s loopbackServers) {
	t.Helper()
	for _, a := range []string{s.v4, s.v6} {
		c, err := net.DialTimeout("tcp", a, 3*time.Second)
		if err != nil {
			t.Fatalf("test process (not quarantined) cannot connect to %s: %v", a, err)
		}
		c.Close()
	}
}

func TestQuarantine(t *testing.T) {
	testenv.RequireRoot(t)
	opts := QuarantineOptions{PinDir: testPinDir(t), StateDir: t.TempDir()}
	q := openTestQuarantine(t, opts)
	srv := newLoopbackServers(t)
	cg := testenv.NewCgroup(t)
	other := testenv.NewCgroup(t)

	if got := egress(t, cg, srv); got != [3]string{"ok", "ok", "ok"} {
		t.Fatalf("before the quarantine: %v", got)
	}
	const d = 2 * time.Second
	until := time.Now().Add(d)
	if err := q.Add(cg.ID(), cg.Name(), until); err != nil {
		t.Fatal(err)
	}
	if got := egress(t, cg, srv); got != [3]string{"EPERM", "EPERM", "EPERM"} {
		t.Fatalf("quarantined: %v, want EPERM for tcp4, tcp6, udp4", got)
	}
	ownEgress(t, srv)
	if got := egress(t, other, srv); got != [3]string{"ok", "ok", "ok"} {
		t.Fatalf("another cgroup: %v", got)
	}
	ents, err := q.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].CgroupID != cg.ID() || ents[0].Cgroup != cg.Name() || ents[0].Until.Sub(until).Abs() > time.Millisecond {
		t.Fatalf("List: %+v, want cgroup %d (%s) until %v", ents, cg.ID(), cg.Name(), until)
	}

	// The agent restarts: the pins keep the quarantine in force.
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if got := egress(t, cg, srv); got[0] != "EPERM" {
		t.Fatalf("with the agent gone: %v", got)
	}
	q2, err := OpenQuarantine(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q2.Close() })
	if q2.Restored() {
		t.Error("reopened from the pins, but reports a restore from the state file")
	}
	if ents, err := q2.List(); err != nil || len(ents) != 1 || ents[0].CgroupID != cg.ID() {
		t.Fatalf("List after the restart: %+v, %v", ents, err)
	}
	if got := egress(t, cg, srv); got[0] != "EPERM" || got[1] != "EPERM" {
		t.Fatalf("after the restart: %v", got)
	}

	// Expiry: connections work again, without Expire being called.
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	if got := egress(t, cg, srv); got != [3]string{"ok", "ok", "ok"} {
		t.Fatalf("after expiry: %v", got)
	}
	expired, err := q2.Expire(time.Now())
	if err != nil || len(expired) != 1 || expired[0] != cg.ID() {
		t.Fatalf("Expire: %v, %v", expired, err)
	}
	if ents, err := q2.List(); err != nil || len(ents) != 0 {
		t.Fatalf("List after Expire: %+v, %v", ents, err)
	}
	ownEgress(t, srv)
}

func TestQuarantineRestoreAndRemove(t *testing.T) {
	testenv.RequireRoot(t)
	opts := QuarantineOptions{PinDir: testPinDir(t), StateDir: t.TempDir()}
	q := openTestQuarantine(t, opts)
	srv := newLoopbackServers(t)
	cg := testenv.NewCgroup(t)

	if err := q.Add(cg.ID(), cg.Name(), time.Time{}); err != nil { // no end
		t.Fatal(err)
	}
	// The root cgroup and the agent's own cgroup are refused.
	mnt, err := CgroupMount()
	if err != nil {
		t.Fatal(err)
	}
	rootID, err := CgroupID(mnt, "/")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Add(rootID, "/", time.Now().Add(time.Minute)); !errors.Is(err, ErrProtectedCgroup) {
		t.Fatalf("Add(root cgroup): %v, want ErrProtectedCgroup", err)
	}

	// Reboot: the pins are lost, the state file remains.
	if err := q.Unpin(); err != nil {
		t.Fatal(err)
	}
	if got := egress(t, cg, srv); got[0] != "ok" {
		t.Fatalf("with the pins gone: %v", got)
	}
	if _, err := os.Stat(filepath.Join(opts.StateDir, "quarantine.json")); err != nil {
		t.Fatal(err)
	}
	q2 := openTestQuarantine(t, opts)
	if !q2.Restored() {
		t.Error("not restored from the state file")
	}
	if got := egress(t, cg, srv); got != [3]string{"EPERM", "EPERM", "EPERM"} {
		t.Fatalf("after the restore: %v", got)
	}
	if err := q2.Remove(cg.ID()); err != nil {
		t.Fatal(err)
	}
	if got := egress(t, cg, srv); got != [3]string{"ok", "ok", "ok"} {
		t.Fatalf("after Remove: %v", got)
	}
}

// BenchmarkConnect measures a loopback connect+close from the benchmark's
// own (not quarantined) cgroup. Run it with and without
// AARSM_BENCH_QUARANTINE=1 (programs attached) to see their cost.
func BenchmarkConnect(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if os.Getenv("AARSM_BENCH_QUARANTINE") == "1" {
		q, err := OpenQuarantine(QuarantineOptions{PinDir: "/sys/fs/bpf/aarsm-bench-" + hex.EncodeToString([]byte{byte(os.Getpid()), byte(os.Getpid() >> 8)})})
		if err != nil {
			b.Fatal(err)
		}
		defer q.Unpin()
	}
	for b.Loop() {
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
