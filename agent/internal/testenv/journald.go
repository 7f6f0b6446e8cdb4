package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Journald is a real systemd-journald private to one test. It runs inside
// its own mount namespace ("unshare --mount --propagation private") where
// directories under the test's temporary directory are bind-mounted over
// /run/systemd, /run/log and /var/log/journal, so it never sees (nor writes
// to) the host's. Its configuration comes from a drop-in in the private
// /run/systemd/journald.conf.d: persistent storage straight away, no rate
// limit, no kernel log, no forwarding (no wall messages to the host's
// terminals); it runs without the audit capabilities, so it cannot switch
// kernel auditing on, and logs about itself to its stderr instead of the
// kernel log. It is killed by PID when the test ends.
type Journald struct {
	// Root holds the private trees: Root/run/systemd, Root/run/log and
	// Root/var/log/journal.
	Root string
	// RunDir is the private /run/systemd (Root/run/systemd).
	RunDir string
	// SocketPath is the native-protocol socket as reached from the host
	// (RunDir/journal/socket); inside the namespace it is
	// /run/systemd/journal/socket.
	SocketPath string
	// JournalDir is the private /var/log/journal, where the journal files
	// are written (Root/var/log/journal/<machine-id>/system.journal).
	JournalDir string
	// PID is journald's PID (unshare, sh and setpriv exec into it).
	PID int

	journalctl string
	cmd        *exec.Cmd
	done       chan struct{}
	stderr     lockedBuffer
}

const (
	journaldBinary = "/lib/systemd/systemd-journald"
	journaldHint   = "apt-get install -y systemd"
	setprivHint    = "apt-get install -y util-linux"
	// maxSocketPath is sizeof(sun_path) less the terminating NUL.
	maxSocketPath = 107
)

// journaldConf is the drop-in the private journald reads from its
// /run/systemd/journald.conf.d.
const journaldConf = `[Journal]
Storage=persistent
RateLimitIntervalSec=0
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
`

// journaldScript bind-mounts the private trees under $1 in the (already
// private) mount namespace and execs journald without the audit
// capabilities, keeping the PID.
const journaldScript = `set -e
mount --bind "$1/run/systemd" /run/systemd
mount --bind "$1/run/log" /run/log
mount --bind "$1/var/log/journal" /var/log/journal
exec setpriv --bounding-set -audit_control,-audit_read,-audit_write -- "$2"
`

// NewJournald starts a private systemd-journald and waits until its socket
// answers (typically ~20 ms). Needs root; a missing binary fails the test
// with an install hint.
func NewJournald(t testing.TB) *Journald {
	t.Helper()
	RequireRoot(t)
	unshare := requireBinary(t, "unshare", unshareHint)
	requireBinary(t, "mount", unshareHint)
	requireBinary(t, "setpriv", setprivHint)
	sh := requireBinary(t, "sh", shHint)
	journalctl := requireBinary(t, "journalctl", journaldHint)
	if _, err := os.Stat(journaldBinary); err != nil {
		t.Fatalf("testenv: %s is missing (%v); install it with: %s", journaldBinary, err, journaldHint)
	}
	for _, p := range []string{"/run/systemd", "/run/log", "/var/log/journal"} {
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			t.Fatalf("testenv: mount point %s of the private journald is missing (%v); it comes with: %s", p, err, journaldHint)
		}
	}

	root := journaldRoot(t)
	j := &Journald{
		Root:       root,
		RunDir:     filepath.Join(root, "run", "systemd"),
		JournalDir: filepath.Join(root, "var", "log", "journal"),
		journalctl: journalctl,
		done:       make(chan struct{}),
	}
	j.SocketPath = filepath.Join(j.RunDir, "journal", "socket")
	for _, d := range []string{filepath.Join(j.RunDir, "journal"), filepath.Join(j.RunDir, "journald.conf.d"), filepath.Join(root, "run", "log"), j.JournalDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("testenv: create journald directory: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(j.RunDir, "journald.conf.d", "testenv.conf"), []byte(journaldConf), 0o644); err != nil {
		t.Fatalf("testenv: write journald drop-in: %v", err)
	}
	// The "flushed" flag makes journald write to /var/log/journal at once
	// instead of waiting for "journalctl --flush" in /run/log/journal.
	if err := os.WriteFile(filepath.Join(j.RunDir, "journal", "flushed"), nil, 0o644); err != nil {
		t.Fatalf("testenv: write journald flushed flag: %v", err)
	}

	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--",
		sh, "-c", journaldScript, "testenv-journald", root, journaldBinary)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_TARGET=console", "SYSTEMD_LOG_COLOR=0")
	cmd.Stdout = &j.stderr
	cmd.Stderr = &j.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("testenv: start journald: %v", err)
	}
	j.cmd = cmd
	j.PID = cmd.Process.Pid
	go func() {
		_ = cmd.Wait()
		close(j.done)
	}()
	t.Cleanup(j.stop)

	j.waitReady(t)
	return j
}

// waitJournald bounds the start of journald and the wait for entries.
const waitJournald = 10 * time.Second

// journaldRoot returns a directory under t.TempDir(), or a shorter one
// under the system temporary directory (removed at cleanup) when the
// socket path would not fit in sun_path.
func journaldRoot(t testing.TB) string {
	t.Helper()
	root := stateDir(t, "journald-")
	if len(filepath.Join(root, "run", "systemd", "journal", "socket")) <= maxSocketPath {
		return root
	}
	short, err := os.MkdirTemp("", "jd-")
	if err != nil {
		t.Fatalf("testenv: create journald directory: %v", err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(short) })
	return short
}

// waitReady waits until journald's socket takes a connection; it fails
// the test if journald exits first or does not answer in time.
func (j *Journald) waitReady(t testing.TB) {
	t.Helper()
	addr := &net.UnixAddr{Name: j.SocketPath, Net: "unixgram"}
	Eventually(t, waitJournald, "the private journald's socket "+j.SocketPath+" to answer", func() (bool, string) {
		c, err := net.DialUnix("unixgram", nil, addr)
		if err == nil {
			_ = c.Close() // only the connection mattered
			return true, ""
		}
		select {
		case <-j.done:
			t.Fatalf("testenv: private journald exited before its socket answered (%v); its output:\n%s", j.cmd.ProcessState, j.stderr.String())
		default:
		}
		return false, fmt.Sprintf("%v; journald's output:\n%s", err, j.stderr.String())
	})
}

// stop kills journald by PID and waits for it; its mount namespace goes
// with it.
func (j *Journald) stop() {
	_ = j.cmd.Process.Kill()
	select {
	case <-j.done:
	case <-time.After(waitJournald):
	}
}

// Output returns what journald printed about itself so far.
func (j *Journald) Output() string { return j.stderr.String() }

// Query runs "journalctl --directory=JournalDir -o json --all ARGS..." (for
// example "AARSM_VERDICT=block") and returns its entries. Values are
// strings, or arrays for repeated fields and binary values. No entry gives
// an empty slice.
func (j *Journald) Query(t testing.TB, args ...string) []map[string]any {
	t.Helper()
	entries, err := j.query(args...)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return entries
}

func (j *Journald) query(args ...string) ([]map[string]any, error) {
	full := append([]string{"--directory=" + j.JournalDir, "--no-pager", "-o", "json", "--all"}, args...)
	cmd := exec.Command(j.journalctl, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		// Tolerate the non-zero exit some versions give when nothing matches.
		if stdout.Len() > 0 || !strings.Contains(stderr.String(), "No entries") {
			return nil, fmt.Errorf("journalctl %s: %w: %s", strings.Join(full, " "), err, stderr.String())
		}
	}
	var entries []map[string]any
	dec := json.NewDecoder(&stdout)
	for dec.More() {
		var e map[string]any
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("parse journalctl output: %w", err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

// WaitFor runs Query until it returns at least n entries (journald writes
// an entry a moment after the send returns) and returns them; it fails the
// test after a timeout.
func (j *Journald) WaitFor(t testing.TB, n int, args ...string) []map[string]any {
	t.Helper()
	var entries []map[string]any
	Eventually(t, waitJournald, fmt.Sprintf("%d journal entries matching %v", n, args), func() (bool, string) {
		var err error
		if entries, err = j.query(args...); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		return len(entries) >= n, fmt.Sprintf("%d entries; journald's output:\n%s", len(entries), j.stderr.String())
	})
	return entries
}

// InNamespace runs fn on a dedicated OS thread that has joined journald's
// mount namespace, where /run/systemd/journal/socket is this journald's:
// code with the socket path built in (go-systemd's journal package) talks
// to it there. Only fn's goroutine is in the namespace, and its thread is
// discarded afterwards. Goroutines fn starts are not in it.
func (j *Journald) InNamespace(fn func()) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine instead of
		// going back to the scheduler in the wrong namespace.
		runtime.LockOSThread()
		ns, err := os.Open(fmt.Sprintf("/proc/%d/ns/mnt", j.PID))
		if err != nil {
			errc <- fmt.Errorf("open mount namespace of journald: %w", err)
			return
		}
		defer ns.Close()
		// setns(CLONE_NEWNS) refuses a thread that shares its fs_struct
		// with the other threads of the process.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare fs attributes: %w", err)
			return
		}
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("join mount namespace of journald: %w", err)
			return
		}
		// Deferred, so a runtime.Goexit in fn (t.Fatal) still reports.
		finished := false
		defer func() {
			if !finished {
				errc <- errors.New("run in mount namespace of journald: function did not return")
			}
		}()
		fn()
		finished = true
		errc <- nil
	}()
	return <-errc
}

// lockedBuffer is a bytes.Buffer safe for the writes of a child process's
// copier goroutine and concurrent reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
