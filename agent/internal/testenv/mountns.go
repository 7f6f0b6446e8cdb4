package testenv

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// LibCopy describes the libssl copy that PythonInMountNS bind-mounts over
// the system libssl inside the client's private mount namespace.
type LibCopy struct {
	// HostPath is the resolved path of the system libssl, e.g.
	// /usr/lib/x86_64-linux-gnu/libssl.so.3; inside the namespace the copy
	// is mounted there, so /proc/<pid>/maps shows this path.
	HostPath string
	// HostDev and HostInode identify the host's file.
	HostDev, HostInode uint64
	// CopyPath is the copy under t.TempDir().
	CopyPath string
	// CopyDev and CopyInode identify the copy; this is what the client
	// maps (and what /proc/<pid>/maps of the client shows).
	CopyDev, CopyInode uint64
}

const unshareHint = "apt-get install -y util-linux mount"

// mountNSScript bind-mounts $1 over $2 in the (already private) mount
// namespace created by unshare and execs the rest, keeping the PID.
const mountNSScript = `mount --bind "$1" "$2" || { echo "testenv: bind mount of $1 on $2 failed" >&2; exit 125; }
shift 2
exec "$@"
`

// PythonInMountNS is Python run inside a new private mount namespace
// ("unshare --mount --propagation private") in which the system libssl
// that python's ssl module links is replaced by a bind mount of a copy of
// that file in t.TempDir(), so the process maps a file with a different
// inode than the host's. unshare and the shell exec, so the started
// process's PID is python's. Before doing anything else, the python client
// checks that /proc/self/maps shows the copy's inode for libssl and exits
// with status 3 if not. Needs root.
func PythonInMountNS(t testing.TB, ca *CA, url string, req Request) (*exec.Cmd, LibCopy) {
	t.Helper()
	RequireRoot(t)
	unshare := requireBinary(t, "unshare", unshareHint)
	requireBinary(t, "mount", unshareHint)
	sh := requireBinary(t, "sh", shHint)
	py := findPython(t)

	hostLib, err := findLinkedLibssl(t, py.SSLModule)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir := stateDir(t, "python-mntns-")
	lc, err := copyLib(hostLib, filepath.Join(dir, filepath.Base(hostLib)))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}

	cfg := newScriptConfig(t, ca, url, req, dir)
	cfg.ExpectLibPath = lc.HostPath
	cfg.ExpectLibInode = lc.CopyInode
	script, cfgPath := writeScript(t, dir, "client.py", pythonClient, cfg)

	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--",
		sh, "-c", mountNSScript, "testenv-mntns", lc.CopyPath, lc.HostPath,
		py.Executable, script, cfgPath)
	killOnCleanup(t, cmd)
	return cmd, lc
}

// findLinkedLibssl returns the resolved path of the libssl that module
// links, using ldd and falling back to ldconfig -p.
func findLinkedLibssl(t testing.TB, module string) (string, error) {
	t.Helper()
	if ldd, err := exec.LookPath("ldd"); err == nil {
		out, err := exec.Command(ldd, module).Output()
		if err == nil {
			if p := parseLddLibssl(out); p != "" {
				return resolveLib(p)
			}
		}
	}
	ldconfig, err := exec.LookPath("ldconfig")
	if err != nil {
		if _, statErr := os.Stat("/sbin/ldconfig"); statErr != nil {
			return "", fmt.Errorf("find libssl of %s: neither ldd nor ldconfig found (apt-get install -y libc-bin)", module)
		}
		ldconfig = "/sbin/ldconfig"
	}
	out, err := exec.Command(ldconfig, "-p").Output()
	if err != nil {
		return "", fmt.Errorf("run ldconfig -p: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "	libssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3"
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "libssl.so.") && strings.Contains(line, "x86-64") {
			if _, p, ok := strings.Cut(line, "=> "); ok {
				return resolveLib(strings.TrimSpace(p))
			}
		}
	}
	return "", fmt.Errorf("find libssl of %s: not in ldd output nor ldconfig -p", module)
}

func parseLddLibssl(out []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "	libssl.so.3 => /lib/x86_64-linux-gnu/libssl.so.3 (0x7f...)"
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && strings.HasPrefix(fields[0], "libssl.so") && fields[1] == "=>" {
			return fields[2]
		}
	}
	return ""
}

func resolveLib(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", p, err)
	}
	return r, nil
}

// copyLib copies the library at src to dst and returns both identities.
func copyLib(src, dst string) (LibCopy, error) {
	in, err := os.Open(src)
	if err != nil {
		return LibCopy{}, fmt.Errorf("open library: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return LibCopy{}, fmt.Errorf("create library copy: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close() // the copy failed already
		return LibCopy{}, fmt.Errorf("copy library: %w", err)
	}
	if err := out.Close(); err != nil {
		return LibCopy{}, fmt.Errorf("close library copy: %w", err)
	}
	var hs, cs unix.Stat_t
	if err := unix.Stat(src, &hs); err != nil {
		return LibCopy{}, fmt.Errorf("stat %s: %w", src, err)
	}
	if err := unix.Stat(dst, &cs); err != nil {
		return LibCopy{}, fmt.Errorf("stat %s: %w", dst, err)
	}
	lc := LibCopy{
		HostPath: src, HostDev: hs.Dev, HostInode: hs.Ino,
		CopyPath: dst, CopyDev: cs.Dev, CopyInode: cs.Ino,
	}
	if lc.HostDev == lc.CopyDev && lc.HostInode == lc.CopyInode {
		return LibCopy{}, fmt.Errorf("library copy %s has the host's inode %d", dst, lc.HostInode)
	}
	return lc, nil
}
