package act

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

func TestParseUnit(t *testing.T) {
	for _, tc := range []struct {
		cgroup string
		want   Unit
		ok     bool
	}{
		{"/system.slice/postfix.service", Unit{Name: "postfix.service", Cgroup: "/system.slice/postfix.service"}, true},
		{"/system.slice/docker-abc.scope/sub", Unit{Name: "docker-abc.scope", Cgroup: "/system.slice/docker-abc.scope"}, true},
		{"/user.slice/user-1000.slice/session-3.scope", Unit{Name: "session-3.scope", Cgroup: "/user.slice/user-1000.slice/session-3.scope"}, true},
		{"/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-12.scope",
			Unit{Name: "app-firefox-12.scope", Manager: "user@1000.service", Cgroup: "/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-12.scope"}, true},
		{"/user.slice/user-1000.slice/user@1000.service/init.scope",
			Unit{Name: "init.scope", Manager: "user@1000.service", Cgroup: "/user.slice/user-1000.slice/user@1000.service/init.scope"}, true},
		{"/", Unit{}, false},
		{"/aarsm-test-0a1b", Unit{}, false},
		{"/system.slice", Unit{}, false},
		{"/x/.service", Unit{}, false},
	} {
		got, ok := ParseUnit(tc.cgroup)
		if ok != tc.ok || got != tc.want {
			t.Errorf("ParseUnit(%q) = %+v, %v; want %+v, %v", tc.cgroup, got, ok, tc.want, tc.ok)
		}
	}
}

func startSleepUnit(ctx context.Context, t *testing.T, conn *sdbus.Conn) (string, uint32) {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	unit := "aarsm-test-sleep-" + hex.EncodeToString(b) + ".service"
	ch := make(chan string, 1)
	start := time.Now()
	if _, err := conn.StartTransientUnitContext(ctx, unit, "replace", []sdbus.Property{
		sdbus.PropExecStart([]string{"/bin/sleep", "300"}, false),
		{Name: "DefaultDependencies", Value: dbus.MakeVariant(false)},
	}, ch); err != nil {
		t.Fatal(err)
	}
	if res := <-ch; res != "done" {
		t.Fatalf("start %s: %s", unit, res)
	}
	t.Logf("StartTransientUnit: %v", time.Since(start))
	p, err := conn.GetServicePropertyContext(ctx, unit, "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := p.Value.Value().(uint32)
	if pid == 0 {
		t.Fatalf("%s has no MainPID (%v)", unit, p.Value)
	}
	return unit, pid
}

func waitGone(t *testing.T, pid uint32, st uint64) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, fmt.Sprintf("pid %d gone", pid), func() (bool, string) {
		got, err := proc.FS{}.StartTime(pid)
		return proc.Gone(errors.Unwrap(err)) || (err == nil && got != st), fmt.Sprintf("start time %d (was %d), %v", got, st, err)
	})
}

// activeState returns the ActiveState of unit as its manager reports it
// ("inactive" for a unit it has unloaded); an error fails the test.
func activeState(ctx context.Context, t *testing.T, conn *sdbus.Conn, unit string) string {
	t.Helper()
	p, err := conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
	if err != nil {
		t.Fatalf("ActiveState of %s: %v", unit, err)
	}
	s, ok := p.Value.Value().(string)
	if !ok {
		t.Fatalf("ActiveState of %s: %v, not a string", unit, p.Value)
	}
	return s
}

// TestStopUnit runs a real systemd manager ("systemd --user" in a private
// mount namespace), starts a transient service running sleep, finds the
// unit from the process's /proc/PID/cgroup and stops it.
func TestStopUnit(t *testing.T) {
	testenv.RequireRoot(t)
	sock := testenv.NewUserSystemd(t).Socket
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := DialSystemd(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	unit, pid := startSleepUnit(ctx, t, conn)
	st, err := proc.FS{}.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	got, err := UnitOf(pid)
	if err != nil || got != unit {
		t.Fatalf("UnitOf(%d) = %q, %v; want %q", pid, got, err, unit)
	}
	start := time.Now()
	if err := StopUnit(ctx, conn, unit); err != nil {
		t.Fatal(err)
	}
	t.Logf("StopUnit: %v", time.Since(start))
	waitGone(t, pid, st)
	if err := StopUnit(ctx, conn, "aarsm-test-no-such.service"); err == nil || !strings.Contains(err.Error(), "aarsm-test-no-such.service") {
		t.Fatalf("StopUnit of a missing unit: %v", err)
	}

	// The executor: terminate + stop the unit + alert.
	unit, pid = startSleepUnit(ctx, t, conn)
	st, err = proc.FS{}.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	e := &Executor{Systemd: conn}
	done, err := e.Execute(ctx, Plan{Actions: []policy.Effect{policy.EffectAlert, policy.EffectTerminate, policy.EffectBlock}, StopUnit: true}, Target{PID: pid, StartTime: st})
	if err != nil {
		t.Fatal(err)
	}
	want := []Done{{policy.EffectBlock, "sockets=0"}, {policy.EffectTerminate, "pid=" + itoa(pid)}, {policy.EffectTerminate, "stop-unit=" + unit}, {Effect: policy.EffectAlert}}
	if !slices.Equal(done, want) {
		t.Fatalf("Execute: %q, want %q", done, want)
	}
	waitGone(t, pid, st)
	testenv.Eventually(t, 5*time.Second, unit+" stopped", func() (bool, string) {
		s := activeState(ctx, t, conn, unit)
		return s == "inactive" || s == "failed", "ActiveState=" + s
	})
}
