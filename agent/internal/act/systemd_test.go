package act

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

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

// userManager starts "systemd --user" in a test cgroup inside a private
// mount namespace in which /run/systemd is a tmpfs with a "system"
// directory (so systemd believes it runs on a systemd system); nothing
// changes on the host. It returns the path of the manager's private
// socket. At cleanup every process of the cgroup tree is killed by PID
// and the child cgroups the manager made are removed.
func userManager(t *testing.T) string {
	t.Helper()
	sd, err := exec.LookPath("systemd")
	if err != nil {
		for _, p := range []string{"/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
			if _, err := os.Stat(p); err == nil {
				sd = p
			}
		}
	}
	if sd == "" {
		t.Fatal("systemd not found: apt-get install systemd")
	}
	cg := testenv.NewCgroup(t)
	rt := t.TempDir()
	script := `set -e
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/system
export XDG_RUNTIME_DIR="$1"
exec "$2" --user`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", rt, sd)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killTree(t, cg.Path())
		_ = cmd.Wait()
		removeChildren(t, cg.Path())
	})
	sock := filepath.Join(rt, "systemd", "private")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd --user did not create %s: %s", sock, log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// killTree kills, by PID, every process in the cgroup dir and below.
func killTree(t *testing.T, dir string) {
	for range 50 {
		n := 0
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmtSscan(f, &pid); err == nil && pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGKILL)
					n++
				}
			}
			return nil
		})
		if n == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("processes left in %s", dir)
}

// removeChildren removes the cgroups below dir, deepest first.
func removeChildren(t *testing.T, dir string) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() && p != dir {
			dirs = append(dirs, p)
		}
		return nil
	})
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := os.Remove(d); err != nil {
			t.Errorf("remove cgroup: %v", err)
		}
	}
}

func startSleepUnit(t *testing.T, ctx context.Context, conn *sdbus.Conn) (string, uint32) {
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
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got, err := proc.FS{}.StartTime(pid)
		if proc.Gone(errors.Unwrap(err)) || (err == nil && got != st) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d still exists", pid)
}

// TestStopUnit runs a real systemd manager ("systemd --user" in a private
// mount namespace), starts a transient service running sleep, finds the
// unit from the process's /proc/PID/cgroup and stops it.
func TestStopUnit(t *testing.T) {
	testenv.RequireRoot(t)
	sock := userManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := DialSystemd(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	unit, pid := startSleepUnit(t, ctx, conn)
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
	unit, pid = startSleepUnit(t, ctx, conn)
	st, err = proc.FS{}.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	e := &Executor{Systemd: conn}
	done, err := e.Execute(ctx, Plan{Actions: []string{"alert", "terminate", "block"}, StopUnit: true}, Target{PID: pid, StartTime: st})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"block sockets=0", "terminate pid=" + itoa(pid), "stop-unit " + unit, "alert"}
	if !slices.Equal(done, want) {
		t.Fatalf("Execute: %q, want %q", done, want)
	}
	waitGone(t, pid, st)
	if p, err := conn.GetUnitPropertyContext(ctx, unit, "ActiveState"); err == nil && p.Value.Value() == "active" {
		t.Fatalf("%s still active", unit)
	}
}
