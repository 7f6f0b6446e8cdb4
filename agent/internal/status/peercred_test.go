package status

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// peerRead connects to the socket as uid/gid (a child with those
// credentials: this test binary, copied where that user may run it) and
// returns how many bytes the server wrote.
func peerRead(t *testing.T, path string, uid, gid uint32) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for d := filepath.Dir(dir); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "client")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestPeerClient$")
	cmd.Env = append(os.Environ(), "AARSM_PEER_SOCKET="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("connect as uid %d: %v\n%s", uid, err, out)
	}
	n, _, ok := strings.Cut(string(out), " bytes read")
	if !ok {
		t.Fatalf("client as uid %d: %s", uid, out)
	}
	return n[strings.LastIndexByte(n, '\n')+1:]
}

// TestPeerClient is the child of peerRead: it connects to
// AARSM_PEER_SOCKET and prints how many bytes it read (nothing to do
// without it).
func TestPeerClient(t *testing.T) {
	path := os.Getenv("AARSM_PEER_SOCKET")
	if path == "" {
		return
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%d bytes read\n", len(data))
}

// widen lets anyone reach and connect to the socket: what is left is the
// server's check of the peer's credentials.
func widen(t *testing.T, path string) {
	t.Helper()
	for d := filepath.Dir(path); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
}

// SO_PEERCRED: an unprivileged user (nobody, 65534) who can connect
// because the socket's mode was widened gets nothing, and the refusal is
// counted; root gets the report; with a group configured, a member of it
// gets it and the socket is 0660 of that group.
func TestPeerCredentials(t *testing.T) {
	testenv.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "run", "aarsm.sock")
	srv, err := Listen(path, sample)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	widen(t, path)
	if n := peerRead(t, path, 65534, 65534); n != "0" {
		t.Errorf("uid 65534 read %s bytes, want 0 (refused)", n)
	}
	if srv.Refused() != 1 {
		t.Errorf("refused %d, want 1", srv.Refused())
	}
	if n := peerRead(t, path, 0, 0); n == "0" {
		t.Errorf("root read nothing")
	}
	_ = srv.Close()

	const gid = 4242
	grp, err := ListenWith(path, Options{Group: gid}, sample)
	if err != nil {
		t.Fatal(err)
	}
	defer grp.Close()
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o660 || st.Sys().(*syscall.Stat_t).Gid != gid {
		t.Fatalf("socket with a group: %v %v, want 0660 of gid %d", st, err, gid)
	}
	widen(t, path)
	if n := peerRead(t, path, 65534, gid); n == "0" {
		t.Errorf("a member of the group read nothing")
	}
	if n := peerRead(t, path, 65534, 65534); n != "0" {
		t.Errorf("uid 65534 outside the group read %s bytes", n)
	}
}

// A socket directory that others may write is refused.
func TestSocketDirectoryChecked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if srv, err := Listen(filepath.Join(dir, "aarsm.sock"), sample); err == nil || !strings.Contains(err.Error(), "0777") {
		if srv != nil {
			_ = srv.Close()
		}
		t.Fatalf("listen in a world-writable directory: %v, want refused naming its mode", err)
	}
}
