package testenv

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostJournalPaths are the host paths the private journald must leave
// alone.
var hostJournalPaths = []string{"/run/systemd/journal", "/run/log/journal", "/var/log/journal"}

// hostState records which of hostJournalPaths exist and the names below
// them (two levels), so a test can tell that nothing was created there.
func hostState(t *testing.T) map[string]bool {
	t.Helper()
	state := map[string]bool{}
	for _, p := range hostJournalPaths {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		state[p] = true
		for _, pat := range []string{"*", "*/*"} {
			names, err := filepath.Glob(filepath.Join(p, pat))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range names {
				state[n] = true
			}
		}
	}
	return state
}

func sendNative(t *testing.T, socket, payload string) {
	t.Helper()
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		t.Fatalf("dial journald: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		t.Fatalf("send to journald: %v", err)
	}
}

func randomToken(t *testing.T) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// mountedAt reports the mount points in a mountinfo file that are one of
// paths.
func mountedAt(t *testing.T, mountinfo string, paths ...string) map[string]string {
	t.Helper()
	f, err := os.Open(mountinfo)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	found := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "65 44 254:0 /tmp/x/run/systemd /run/systemd rw,relatime - ext4 ..."
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		for _, p := range paths {
			if fields[4] == p {
				found[p] = fields[3]
			}
		}
	}
	return found
}

func TestJournaldHarness(t *testing.T) {
	before := hostState(t)
	start := time.Now()
	j := NewJournald(t)
	t.Logf("journald ready in %v (pid %d, socket %s)", time.Since(start), j.PID, j.SocketPath)

	token := randomToken(t)
	sendNative(t, j.SocketPath, "MESSAGE=harness test\nPRIORITY=4\nTESTENV_TOKEN="+token+"\nTESTENV_MULTI\n"+
		string([]byte{10, 0, 0, 0, 0, 0, 0, 0})+"two\nlines.\n\n")
	got := j.WaitFor(t, 1, "TESTENV_TOKEN="+token)
	if len(got) != 1 {
		t.Fatalf("want 1 entry, got %d: %v", len(got), got)
	}
	e := got[0]
	for k, want := range map[string]string{"MESSAGE": "harness test", "PRIORITY": "4", "TESTENV_TOKEN": token, "TESTENV_MULTI": "two\nlines."} {
		if e[k] != want {
			t.Errorf("%s = %#v, want %q", k, e[k], want)
		}
	}
	if none := j.Query(t, "TESTENV_TOKEN=nothing"); len(none) != 0 {
		t.Errorf("query for an absent value returned %d entries", len(none))
	}

	// The files are in the private journal directory.
	files, _ := filepath.Glob(filepath.Join(j.JournalDir, "*", "*.journal"))
	if len(files) == 0 {
		t.Errorf("no journal file under %s", j.JournalDir)
	}
	// journald's namespace has the private trees over the host paths.
	inNS := mountedAt(t, "/proc/"+strconv.Itoa(j.PID)+"/mountinfo", "/run/systemd", "/run/log", "/var/log/journal")
	for _, p := range []string{"/run/systemd", "/run/log", "/var/log/journal"} {
		if root := inNS[p]; !strings.HasSuffix(root, p) || !strings.Contains(root, filepath.Base(j.Root)) {
			t.Errorf("in journald's namespace %s is mounted from %q, want the private %s", p, root, filepath.Join(j.Root, p))
		}
	}
	// The host's namespace has none of those mounts, and its journal paths
	// are as they were.
	if host := mountedAt(t, "/proc/self/mountinfo", "/run/systemd", "/run/log", "/var/log/journal"); len(host) != 0 {
		for p, root := range host {
			if strings.Contains(root, filepath.Base(j.Root)) {
				t.Errorf("host has the private %s mounted at %s", root, p)
			}
		}
	}
	after := hostState(t)
	for p := range after {
		if !before[p] {
			t.Errorf("host path %s appeared while the private journald ran", p)
		}
	}
	// The entry is not in the host's journal (if the host has one).
	if jc, err := exec.LookPath("journalctl"); err == nil {
		out, _ := exec.Command(jc, "--no-pager", "-o", "json", "TESTENV_TOKEN="+token).Output()
		if strings.Contains(string(out), token) {
			t.Errorf("host journal has the private entry: %s", out)
		}
	}
}

func TestJournaldCleanup(t *testing.T) {
	RequireRoot(t)
	var pid int
	var socket string
	t.Run("run", func(t *testing.T) {
		j := NewJournald(t)
		pid, socket = j.PID, j.SocketPath
	})
	if err := unix.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("journald pid %d still exists after cleanup (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(socket); !os.IsNotExist(err) {
		t.Errorf("private tree %s still exists after cleanup (%v)", socket, err)
	}
}

func TestJournaldInNamespace(t *testing.T) {
	j := NewJournald(t)
	var host, inside unix.Stat_t
	if err := unix.Stat(j.SocketPath, &host); err != nil {
		t.Fatal(err)
	}
	var statErr error
	if err := j.InNamespace(func() { statErr = unix.Stat("/run/systemd/journal/socket", &inside) }); err != nil {
		t.Fatal(err)
	}
	if statErr != nil {
		t.Fatalf("stat socket in journald's namespace: %v", statErr)
	}
	if host.Dev != inside.Dev || host.Ino != inside.Ino {
		t.Fatalf("socket in the namespace is %d:%d, the private socket %d:%d", inside.Dev, inside.Ino, host.Dev, host.Ino)
	}
	// The caller's own namespace is unchanged.
	var again unix.Stat_t
	if err := unix.Stat("/run/systemd/journal/socket", &again); err == nil && again.Ino == host.Ino && again.Dev == host.Dev {
		t.Fatal("the private socket is visible outside InNamespace")
	}
}
