package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// startAgentWith starts an agent on s as startAgent does, with extra
// options, and returns once its status socket answers.
func (s *quarantineSetup) startAgentWith(t *testing.T, extra ...string) *runningAgent {
	t.Helper()
	a := &runningAgent{stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan error, 1)}
	args := append([]string{"run", "--policy-dir", s.policies, "--log-format", "json", "--hold-cgroup", s.clients.Path(),
		"--pin-dir", s.pins, "--state-dir", s.state, "--status-socket", s.socket, "--purge-interval", "1s"}, extra...)
	a.cmd = exec.Command(s.bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.stdout, a.stderr
	if err := s.agentCg.Start(a.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { a.exited <- a.cmd.Wait() }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		if <-a.exited; t.Failed() {
			t.Logf("agent %d stderr:\n%s", a.cmd.Process.Pid, a.stderr.String())
		}
	})
	testenv.Eventually(t, 60*time.Second, "the agent's status socket answering", func() (bool, string) {
		select {
		case err := <-a.exited:
			a.exited <- err
			t.Fatalf("agent exited at start: %v\n%s", err, a.stderr.String())
		default:
		}
		r, err := status.Query(s.socket, time.Second)
		return err == nil && r.PID == a.cmd.Process.Pid, fmt.Sprint(err)
	})
	return a
}

// unprivileged returns a copy of this test binary that uid 65534 may run
// (in a directory everyone may enter): the child of helperAs.
func unprivileged(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// helperAs runs TestHardenHelper as uid/gid 65534 with AARSM_HELPER=what
// in cg, and returns its output.
func helperAs(t *testing.T, bin string, cg *testenv.Cgroup, what string) string {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^TestHardenHelper$", "-test.v")
	cmd.Env = append(os.Environ(), "AARSM_HELPER="+what)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper %s as uid 65534: %v\n%s", what, err, out.String())
	}
	return out.String()
}

// TestHardenHelper is the unprivileged child of helperAs; without
// AARSM_HELPER it does nothing. "connect:PATH" reads a unix socket and
// prints how many bytes came; "mmap:P1,P2" maps each file executable.
func TestHardenHelper(t *testing.T) {
	what, arg, _ := strings.Cut(os.Getenv("AARSM_HELPER"), ":")
	switch what {
	case "":
		return
	case "connect":
		c, err := net.Dial("unix", arg)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(c)
		_ = c.Close()
		fmt.Printf("uid %d read %d bytes\n", os.Getuid(), len(data))
	case "mmap":
		// Mapped until stdin closes: the agent reads the mapping's file
		// through this process.
		for _, p := range strings.Split(arg, ",") {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := f.Stat()
			if _, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ|syscall.PROT_EXEC, syscall.MAP_PRIVATE); err != nil {
				t.Fatalf("mmap %s: %v", p, err)
			}
			fmt.Printf("mapped %s executable\n", p)
		}
		_, _ = io.Copy(io.Discard, os.Stdin)
	default:
		t.Fatalf("unknown helper %q", what)
	}
}

// inetSockets returns the TCP, UDP and raw sockets (IPv4 and IPv6) that
// pid holds, one line each from /proc/net/*.
func inetSockets(t *testing.T, pid int) []string {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if ino, ok := strings.CutPrefix(l, "socket:["); err == nil && ok {
			inodes[strings.TrimSuffix(ino, "]")] = true
		}
	}
	var out []string
	for _, table := range []string{"tcp", "tcp6", "udp", "udp6", "raw", "raw6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) > 9 && inodes[fs[9]] {
				out = append(out, table+" "+sc.Text())
			}
		}
		_ = f.Close()
	}
	return out
}

// rootOnlyTree fails the test if anything under dir can be read or written
// by group or others, or is not owned by root.
func rootOnlyTree(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		n++
		if fi.Mode().Perm()&0o077 != 0 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
			t.Errorf("%s: mode %v uid %d, want root-only", p, fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Uid)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Garbage that must not crash the ELF reader: a truncated copy of a real
// library, ELF magic and noise, and a header whose tables point far past
// the end of the file with absurd counts.
func craftedELFs(t *testing.T, dir string) []string {
	t.Helper()
	lib, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	hdr := make([]byte, 64)
	copy(hdr, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(hdr[16:], 3)          // ET_DYN
	binary.LittleEndian.PutUint16(hdr[18:], 62)         // x86-64
	binary.LittleEndian.PutUint32(hdr[20:], 1)          // version
	binary.LittleEndian.PutUint64(hdr[32:], 1<<40)      // e_phoff
	binary.LittleEndian.PutUint64(hdr[40:], 0xfffffff0) // e_shoff
	binary.LittleEndian.PutUint16(hdr[52:], 64)
	binary.LittleEndian.PutUint16(hdr[54:], 56)
	binary.LittleEndian.PutUint16(hdr[56:], 0xffff) // e_phnum
	binary.LittleEndian.PutUint16(hdr[58:], 64)
	binary.LittleEndian.PutUint16(hdr[60:], 0xffff) // e_shnum
	binary.LittleEndian.PutUint16(hdr[62:], 0xfffe) // e_shstrndx
	noise := bytes.Repeat([]byte{0xff, 0x00, 0x41}, 2000)
	files := map[string][]byte{
		"truncated.so": lib[:4096],
		"magic.so":     append([]byte("\x7fELF\x02\x01\x01"), noise...),
		"tables.so":    append(hdr, noise...),
	}
	var paths []string
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// The agent's own attack surface, on the real system: no TCP or UDP
// socket; a status socket that answers root only even when its mode is
// widened (SO_PEERCRED); root-only pins and state; a process that calls
// itself "aarsm" is judged all the same (scope is by cgroup, never by
// name); crafted ELF files mapped executable by an unprivileged process
// are logged and crash nothing; and the metrics textfile follows.
func TestAgentOwnSecurity(t *testing.T) {
	s := newQuarantineSetup(t, "1h")
	// Terminate rather than quarantine: the clients' cgroup must stay on
	// the network for the second mail.
	if err := os.WriteFile(filepath.Join(s.policies, "policy.hcl"), scopePolicy(t, shippedPolicy(t, "company.hcl"), s.clients), 0o644); err != nil {
		t.Fatal(err)
	}
	metricsDir := t.TempDir()
	prom := filepath.Join(metricsDir, "aarsm.prom")
	a := s.startAgentWith(t, "--metrics-textfile", prom, "--metrics-interval", "1s")
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	helper := unprivileged(t)
	others := testenv.NewCgroup(t)

	t.Run("no inet socket", func(t *testing.T) {
		// The check finds a socket when there is one: this process's.
		probe, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		found := inetSockets(t, os.Getpid())
		_ = probe.Close()
		if len(found) == 0 {
			t.Fatal("inetSockets does not see this test's own UDP socket")
		}
		pids, err := s.agentCg.PIDs()
		if err != nil || len(pids) < 2 {
			t.Fatalf("agent cgroup pids %v %v, want the agent and its guard", pids, err)
		}
		for _, pid := range pids {
			if socks := inetSockets(t, pid); len(socks) > 0 {
				t.Errorf("pid %d holds inet sockets:\n%s", pid, strings.Join(socks, "\n"))
			}
		}
	})

	t.Run("status socket checks credentials", func(t *testing.T) {
		st, err := os.Stat(s.socket)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("socket %v %v, want 0600", st, err)
		}
		before := queryStatus(t, s.bin, s.socket).StatusRefused
		// Widen everything the file system would check: what is left
		// is the agent's check of the peer.
		for d := filepath.Dir(s.socket); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(s.socket, 0o777); err != nil {
			t.Fatal(err)
		}
		out := helperAs(t, helper, others, "connect:"+s.socket)
		if !strings.Contains(out, "uid 65534 read 0 bytes") {
			t.Errorf("uid 65534 on a widened socket: %s, want nothing read", out)
		}
		if r := queryStatus(t, s.bin, s.socket); r.StatusRefused != before+1 {
			t.Errorf("status_refused %d, want %d", r.StatusRefused, before+1)
		}
	})

	t.Run("pins and state root-only", func(t *testing.T) {
		if n := rootOnlyTree(t, s.pins); n < 3 {
			t.Errorf("%d entries under the pin directory, want the directory, the maps and links", n)
		}
		if n := rootOnlyTree(t, s.state); n < 3 {
			t.Errorf("%d entries under the state directory", n)
		}
	})

	t.Run("a process named aarsm is judged", func(t *testing.T) {
		req := testenv.Request{Method: "POST", Path: "/email", Header: map[string]string{"Content-Type": "application/json"},
			Body: []byte(`{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club","Subject":"renamed","TextBody":"disguised"}`)}
		client := testenv.Python(t, ca, srv.URL(), req)
		// comm (prctl PR_SET_NAME) and argv[0] both "aarsm", then the
		// client as usual.
		script, cfg := client.Args[1], client.Args[2]
		client.Args = []string{"aarsm", "-c", `import ctypes, runpy, sys
ctypes.CDLL(None).prctl(15, b"aarsm", 0, 0, 0)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")`, script, cfg}
		client.Stdout, client.Stderr = io.Discard, io.Discard
		if err := s.clients.Start(client); err != nil {
			t.Fatal(err)
		}
		if err := client.Wait(); err == nil {
			t.Error("the renamed client's mail was not blocked")
		}
		waitOutput(t, "verdicts", a.stdout, `"AARSM_COMM":"aarsm"`)
		for _, r := range srv.Requests() {
			if strings.Contains(string(r.Body), "disguised") {
				t.Error("the mail reached the API")
			}
		}
		if !strings.Contains(a.stdout.String(), `"AARSM_VERDICT":"block"`) {
			t.Errorf("no block verdict:\n%s", a.stdout.String())
		}
	})

	t.Run("crafted ELF files", func(t *testing.T) {
		dir := filepath.Dir(helper)
		files := craftedELFs(t, dir)
		cmd := exec.Command(helper, "-test.run=^TestHardenHelper$", "-test.v")
		cmd.Env = append(os.Environ(), "AARSM_HELPER=mmap:"+strings.Join(files, ","))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := others.Start(cmd); err != nil {
			t.Fatal(err)
		}
		waitOutput(t, "helper output", out, "mapped "+files[len(files)-1])
		// The two with a plausible header are reported; magic.so is not
		// taken for an ELF file of this machine (and skipped silently).
		for _, f := range files {
			if !strings.HasSuffix(f, "magic.so") {
				waitOutput(t, "agent log", a.stderr, filepath.Base(f)+" ")
			}
		}
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v\n%s", err, out.String())
		}
		r := queryStatus(t, s.bin, s.socket)
		if r.PID != a.cmd.Process.Pid {
			t.Fatalf("another agent answers: %d", r.PID)
		}
		for _, p := range r.Probes {
			// Only the crafted files: the helper beside them is a Go
			// executable with crypto/tls, rightly probed.
			if slices.Contains(files, p.Path) && p.Error == "" {
				t.Errorf("a crafted file was probed: %+v", p)
			}
		}
		t.Logf("agent log on the crafted files:\n%s", grepLines(a.stderr.String(), dir))
	})

	t.Run("metrics textfile", func(t *testing.T) {
		st, err := os.Stat(prom)
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Fatalf("%s: %v %v, want mode 0644", prom, st, err)
		}
		// Counters of the blocked mail above, in a later write.
		var e *testenv.Exposition
		testenv.Eventually(t, 15*time.Second, "the blocked mail in the metrics file", func() (bool, string) {
			data, err := os.ReadFile(prom)
			if err != nil {
				return false, err.Error()
			}
			e, err = testenv.ParseExposition(string(data))
			if err != nil {
				t.Fatalf("metrics file: %v\n%s", err, data)
			}
			b, _ := e.Value(`aarsm_verdicts_total{decision="block"}`)
			return b >= 1, string(data)
		})
		for _, series := range []string{"aarsm_holds_total", "aarsm_tls_writes_total", "aarsm_events_seen_total", "aarsm_messages_judged_total",
			`aarsm_probed_files{state="attached"}`, "aarsm_status_refused_total"} {
			if v, ok := e.Value(series); !ok || v < 1 {
				t.Errorf("%s = %v (present %v), want >= 1", series, v, ok)
			}
		}
		if _, ok := e.Value("aarsm_events_lost_total"); !ok {
			t.Error("no aarsm_events_lost_total")
		}
		if _, ok := e.Value(`aarsm_program_missed_total{program="ssl_write"}`); !ok {
			t.Error("no per-program missed runs")
		}
		if left, _ := filepath.Glob(filepath.Join(metricsDir, ".*")); len(left) != 0 {
			t.Errorf("temporary files left: %v", left)
		}
		// aarsm status --prometheus prints the same families.
		out, err := exec.Command(s.bin, "status", "--prometheus", "--status-socket", s.socket).Output()
		if err != nil {
			t.Fatal(err)
		}
		pe, err := testenv.ParseExposition(string(out))
		if err != nil {
			t.Fatalf("aarsm status --prometheus: %v\n%s", err, out)
		}
		if len(pe.Types) != len(e.Types) {
			t.Errorf("status --prometheus has %d families, the file %d", len(pe.Types), len(e.Types))
		}
		// At exit, the last counters are written.
		if err := os.Remove(prom); err != nil {
			t.Fatal(err)
		}
		a.stop(t)
		data, err := os.ReadFile(prom)
		if err != nil {
			t.Fatalf("no metrics file written at exit: %v", err)
		}
		if _, err := testenv.ParseExposition(string(data)); err != nil {
			t.Fatalf("metrics at exit: %v", err)
		}
	})
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// keep the linter quiet about helpers used by other tests in this file.
var _ = tls.VersionTLS12
var _ atomic.Int64
