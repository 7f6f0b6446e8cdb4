package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// UserSystemd is a real systemd service manager ("systemd --user") for a
// test, started in a cgroup of the test's own and in a private mount
// namespace where /run/systemd/system exists (so it believes it runs under
// systemd) — the host's own /run/systemd is not touched, and no boot units
// run: a user manager has none that clean up the system.
type UserSystemd struct {
	// Socket is the manager's private D-Bus socket (act.DialSystemd takes it).
	Socket string
	// Cgroup holds the manager and every unit it starts.
	Cgroup *Cgroup
}

// NewUserSystemd starts the manager and waits for its socket. At cleanup
// every process of its cgroup, units included, is killed by PID.
func NewUserSystemd(t testing.TB) *UserSystemd {
	t.Helper()
	RequireRoot(t)
	sd := ""
	for _, p := range []string{"/lib/systemd/systemd", "/usr/lib/systemd/systemd"} {
		if _, err := os.Stat(p); err == nil {
			sd = p
			break
		}
	}
	if sd == "" {
		t.Fatal("testenv: systemd not found: apt-get install -y systemd")
	}
	cg := NewCgroup(t)
	rt := t.TempDir()
	script := `set -e
mount -t tmpfs tmpfs /run/systemd
mkdir /run/systemd/system
export XDG_RUNTIME_DIR="$1"
exec "$2" --user`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", rt, sd)
	var log lockedBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cg.Start(cmd); err != nil {
		t.Fatalf("testenv: start systemd --user: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sock := filepath.Join(rt, "systemd", "private")
	// The socket file exists once bound, a little before the manager
	// listens on it: wait until a connection is accepted.
	Eventually(t, 10*time.Second, "systemd --user to listen on "+sock, func() (bool, string) {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return false, fmt.Sprintf("%v; its output: %s", err, log.String())
		}
		_ = c.Close() // only the connection mattered
		return true, ""
	})
	return &UserSystemd{Socket: sock, Cgroup: cg}
}
