package egress

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// lockedBuffer collects the JSON journal lines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// entries returns the journal entries whose fields have the given values.
func (l *lockedBuffer) entries(t *testing.T, match map[string]string) []map[string]string {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(l.b.String()), "\n") {
		if line == "" {
			continue
		}
		var e map[string]string
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("journal line %q: %v", line, err)
		}
		ok := true
		for k, v := range match {
			if e[k] != v {
				ok = false
			}
		}
		if ok {
			out = append(out, e)
		}
	}
	return out
}

type kenv struct {
	enf *Enforcer
	log *lockedBuffer
	cg  *testenv.Cgroup
}

// startEnforcer opens an Enforcer logging JSON lines to a buffer and runs
// it until the test ends.
func startEnforcer(t *testing.T, opts Options) *kenv {
	t.Helper()
	testenv.RequireRoot(t)
	buf := &lockedBuffer{}
	jl, err := journal.New(journal.Options{Format: journal.FormatJSON, Out: buf})
	if err != nil {
		t.Fatal(err)
	}
	opts.Journal = jl
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e, err := Open(opts)
	if err != nil {
		t.Fatalf("open egress: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return &kenv{enf: e, log: buf, cg: testenv.NewCgroup(t)}
}

func (k *kenv) apply(t *testing.T, src string) {
	t.Helper()
	set, diags := policy.ParseSource("egress.hcl", []byte(src))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	if err := k.enf.Apply(set); err != nil {
		t.Fatal(err)
	}
}

// httpServer serves "ok" on addr (host:0) and returns its address.
func httpServer(t *testing.T, host string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// curl fetches http://dest/ from cgroup cg (nil: the test's own) and
// returns its exit code and pid.
func curl(t *testing.T, cg *testenv.Cgroup, dest netip.AddrPort) (int, int) {
	t.Helper()
	cmd := exec.Command("curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", "http://"+dest.String()+"/")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	var err error
	if cg != nil {
		err = cg.Start(cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		t.Fatalf("start curl: %v", err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("curl: %v", err)
	}
	t.Logf("curl %s: exit %d %s", dest, cmd.ProcessState.ExitCode(), strings.TrimSpace(stderr.String()))
	return cmd.ProcessState.ExitCode(), cmd.Process.Pid
}

// python runs a python3 script in cg and returns its exit code, output and
// pid.
func python(t *testing.T, cg *testenv.Cgroup, script string) (int, string, int) {
	t.Helper()
	cmd := exec.Command("python3", "-c", script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cg.Start(cmd); err != nil {
		t.Fatalf("start python3: %v", err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("python3: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), cmd.Process.Pid
}

func (k *kenv) counters(t *testing.T, hook string) Counters {
	t.Helper()
	st, err := k.enf.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range st.Counters {
		if c.Hook == hook {
			return c
		}
	}
	t.Fatalf("no counters for %s", hook)
	return Counters{}
}

// The policy in force: a process in the scoped cgroup reaches what is
// allowed and nothing else (EPERM), TCP and UDP, IPv4 and IPv6; each
// refusal is counted and journaled once per process and destination; a
// process outside the scope is not affected; monitor mode lets the
// connection through and reports it.
func TestEgressEnforce(t *testing.T) {
	k := startEnforcer(t, Options{})
	allowed := httpServer(t, "127.0.0.1")
	unlisted := httpServer(t, "127.0.0.2")
	unlisted6 := httpServer(t, "::1")
	policySrc := func(mode string) string {
		return fmt.Sprintf(`egress_policy "test-egress" {
  mode = %q
  scope {
    cgroups = [%q]
  }
  allow {
    cidrs = ["127.0.0.1/32"]
    ports = [%d]
  }
}
`, mode, k.cg.Name(), allowed.Port())
	}
	k.apply(t, policySrc("enforce"))

	if code, _ := curl(t, k.cg, allowed); code != 0 {
		t.Fatalf("allowed destination: curl exit %d", code)
	}
	before := k.counters(t, "connect4")
	code, pid := curl(t, k.cg, unlisted)
	if code != 7 {
		t.Fatalf("unlisted destination: curl exit %d, want 7 (could not connect)", code)
	}
	if c := k.counters(t, "connect4"); c.Blocked != before.Blocked+1 {
		t.Errorf("connect4 blocked %d, was %d", c.Blocked, before.Blocked)
	}
	testenv.Eventually(t, 5*time.Second, "the journal entry of the refused connect", func() bool {
		return len(k.log.entries(t, map[string]string{"AARSM_PID": strconv.Itoa(pid)})) > 0
	})
	e := k.log.entries(t, map[string]string{"AARSM_PID": strconv.Itoa(pid)})[0]
	for f, want := range map[string]string{
		"MESSAGE_ID": journal.EgressMessageID, "AARSM_VERDICT": "block", "AARSM_POLICY": "test-egress",
		"AARSM_EGRESS_HOOK": "connect4", "AARSM_DEST": unlisted.String(), "AARSM_COMM": "curl", "AARSM_CGROUP": k.cg.Name(),
		"AARSM_CGROUP_ID": strconv.FormatUint(k.cg.ID(), 10),
	} {
		if e[f] != want {
			t.Errorf("%s = %q, want %q", f, e[f], want)
		}
	}
	// curl may be gone before the entry is written: "?" then, as the
	// catalog says (the python3 below stays until its entries are read).
	if exe := e["AARSM_EXE"]; exe != "?" && !strings.HasSuffix(exe, "/curl") {
		t.Errorf("AARSM_EXE %q", exe)
	}

	// The same destination twice, then another: one entry each (the
	// second destination's entry is the barrier for the first's absence).
	// It stays until its entries are read (stdin closed), so that its
	// executable and cgroup are read from /proc.
	py := exec.Command("python3", "-c", fmt.Sprintf(`
import socket, sys
for dest in [(%[1]q, %[2]d), (%[1]q, %[2]d), (%[1]q, %[3]d)]:
    s = socket.socket()
    try:
        s.connect(dest)
        sys.exit("connected to %%s:%%d" %% dest)
    except PermissionError:
        pass
    s.close()
print("refused", flush=True)
sys.stdin.read()
`, "127.0.0.2", unlisted.Port(), unlisted.Port()+1))
	stdin, err := py.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var pyOut bytes.Buffer
	py.Stdout, py.Stderr = &pyOut, &pyOut
	if err := k.cg.Start(py); err != nil {
		t.Fatal(err)
	}
	pid = py.Process.Pid
	second := map[string]string{"AARSM_PID": strconv.Itoa(pid), "AARSM_DEST": fmt.Sprintf("127.0.0.2:%d", unlisted.Port()+1)}
	testenv.Eventually(t, 5*time.Second, "the entry of the second destination", func() bool {
		return len(k.log.entries(t, second)) == 1
	})
	pyExe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)) // python3 may be a wrapper that execs another file
	if err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := py.Wait(); err != nil || !strings.Contains(pyOut.String(), "refused") {
		t.Fatalf("python3 connects: %v: %s", err, pyOut.String())
	}
	if n := len(k.log.entries(t, map[string]string{"AARSM_PID": strconv.Itoa(pid), "AARSM_DEST": unlisted.String()})); n != 1 {
		t.Errorf("%d entries for a destination refused twice to one process, want 1", n)
	}
	if e := k.log.entries(t, second)[0]; e["AARSM_EXE"] != pyExe || e["AARSM_CGROUP"] != k.cg.Name() || e["AARSM_COMM"] != "python3" {
		t.Errorf("entry of a live process: exe %q cgroup %q comm %q, want %q %q python3", e["AARSM_EXE"], e["AARSM_CGROUP"], e["AARSM_COMM"], pyExe, k.cg.Name())
	}

	// UDP sendmsg, and IPv6.
	before4, before6 := k.counters(t, "sendmsg4"), k.counters(t, "connect6")
	code, out, pid := python(t, k.cg, fmt.Sprintf(`
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b"leak", ("127.0.0.2", %d))
    print("sent")
except PermissionError as e:
    print("udp refused", e)
s6 = socket.socket(socket.AF_INET6)
try:
    s6.connect(("::1", %d))
    print("connected6")
except PermissionError as e:
    print("tcp6 refused", e)
`, unlisted.Port(), unlisted6.Port()))
	if code != 0 || !strings.Contains(out, "udp refused") || !strings.Contains(out, "tcp6 refused") {
		t.Fatalf("python3 UDP and IPv6: exit %d: %s", code, out)
	}
	testenv.Eventually(t, 5*time.Second, "the entries of the UDP datagram and the IPv6 connect", func() bool {
		return len(k.log.entries(t, map[string]string{"AARSM_PID": strconv.Itoa(pid), "AARSM_EGRESS_HOOK": "sendmsg4", "AARSM_EGRESS_PROTOCOL": "udp"})) == 1 &&
			len(k.log.entries(t, map[string]string{"AARSM_PID": strconv.Itoa(pid), "AARSM_EGRESS_HOOK": "connect6", "AARSM_DEST": unlisted6.String()})) == 1
	})
	if c := k.counters(t, "sendmsg4"); c.Blocked != before4.Blocked+1 {
		t.Errorf("sendmsg4 blocked %d, was %d", c.Blocked, before4.Blocked)
	}
	if c := k.counters(t, "connect6"); c.Blocked != before6.Blocked+1 {
		t.Errorf("connect6 blocked %d, was %d", c.Blocked, before6.Blocked)
	}

	// Outside the scope: not affected, not counted.
	other := testenv.NewCgroup(t)
	before = k.counters(t, "connect4")
	if code, _ := curl(t, other, unlisted); code != 0 {
		t.Errorf("a process outside the scope: curl exit %d", code)
	}
	if c := k.counters(t, "connect4"); c != before {
		t.Errorf("counters moved for a process outside the scope: %+v -> %+v", before, c)
	}

	// Monitor mode: through, reported.
	k.apply(t, policySrc("monitor"))
	before = k.counters(t, "connect4")
	code, pid = curl(t, k.cg, unlisted)
	if code != 0 {
		t.Fatalf("monitor mode: curl exit %d", code)
	}
	if c := k.counters(t, "connect4"); c.Reported != before.Reported+1 || c.Blocked != before.Blocked {
		t.Errorf("monitor mode counters %+v, were %+v", c, before)
	}
	testenv.Eventually(t, 5*time.Second, "the monitor-mode entry", func() bool {
		return len(k.log.entries(t, map[string]string{"AARSM_PID": strconv.Itoa(pid), "AARSM_VERDICT": "alert"})) == 1
	})

	// No egress policy: the programs are detached, nothing is checked.
	k.apply(t, "")
	if st, err := k.enf.Status(); err != nil || st.Attached {
		t.Errorf("no policy: attached %v (%v)", st.Attached, err)
	}
	if code, _ := curl(t, k.cg, unlisted); code != 0 {
		t.Errorf("no policy: curl exit %d", code)
	}
}

// Allowed host names follow DNS: the agent resolves them through a real
// DNS server (here one on loopback that the test controls, given as the
// resolver: the machine's own resolver is not the test's to change), at
// their TTL; when the name moves, the new address is allowed at the next
// refresh and the old one stays allowed for the grace period, then is
// refused.
func TestEgressHostnames(t *testing.T) {
	dns := newDNSServer(t)
	first := httpServer(t, "127.0.0.3")
	// Both servers on one port: the allow block names one port.
	ln, err := net.Listen("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.4"), first.Port()).String())
	if err != nil {
		t.Fatalf("the port of 127.0.0.3 on 127.0.0.4: %v", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	firstDest, secondDest := first, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.4"), first.Port())

	dns.set("mail.test", Answer{firstDest.Addr(), time.Second})
	const grace = 2 * time.Second
	k := startEnforcer(t, Options{Resolver: &DNSClient{Servers: []string{dns.addr}, Timeout: time.Second},
		Grace: grace, MinRefresh: 200 * time.Millisecond})
	k.apply(t, fmt.Sprintf(`egress_policy "by-name" {
  scope {
    cgroups = [%q]
  }
  allow {
    hosts = ["mail.test"]
    ports = [%d]
  }
}
`, k.cg.Name(), first.Port()))
	// Apply resolved the name before it returned.
	if code, _ := curl(t, k.cg, firstDest); code != 0 {
		t.Fatalf("resolved address: curl exit %d", code)
	}
	if code, _ := curl(t, k.cg, secondDest); code != 7 {
		t.Fatalf("address the name does not have: curl exit %d, want 7", code)
	}
	hostAddrs := func() []netip.Addr {
		st, err := k.enf.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Policies[0].Hosts[0].Addrs
	}
	// The name moves.
	queries := dns.queries.Load()
	dns.set("mail.test", Answer{secondDest.Addr(), time.Second})
	moved := testenv.Eventually(t, 10*time.Second, "the new address", func() (bool, string) {
		a := hostAddrs()
		return len(a) == 2, fmt.Sprint(a)
	})
	if dns.queries.Load() == queries {
		t.Error("no DNS query after the TTL")
	}
	if code, _ := curl(t, k.cg, secondDest); code != 0 {
		t.Errorf("new address: curl exit %d", code)
	}
	// Within the grace period the old address still works (the check
	// runs at once; the old address cannot have expired before
	// first TTL + grace after the move).
	if time.Since(moved) < grace/2 {
		if code, _ := curl(t, k.cg, firstDest); code != 0 {
			t.Errorf("old address within the grace period: curl exit %d", code)
		}
	}
	testenv.Eventually(t, 15*time.Second, "the old address dropped", func() (bool, string) {
		a := hostAddrs()
		return len(a) == 1 && a[0] == secondDest.Addr(), fmt.Sprint(a)
	})
	if code, _ := curl(t, k.cg, firstDest); code != 7 {
		t.Errorf("old address after the grace period: curl exit %d, want 7", code)
	}
}

// A scope by systemd unit covers the unit's cgroup (and below) once the
// cgroup exists: one created after the policy was applied is found by the
// next rescan.
func TestEgressUnitScope(t *testing.T) {
	k := startEnforcer(t, Options{Rescan: 100 * time.Millisecond})
	unlisted := httpServer(t, "127.0.0.2")
	k.apply(t, `egress_policy "unit" {
  scope {
    systemd_units = ["aarsm-egress-test-*"]
  }
  allow {
    cidrs = ["192.0.2.0/24"]
  }
}
`)
	unit := k.cg.Path() + "/aarsm-egress-test-1.service"
	if err := os.Mkdir(unit, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(unit) })
	testenv.Eventually(t, 5*time.Second, "the unit's cgroup in scope", func() (bool, string) {
		st, err := k.enf.Status()
		if err != nil {
			return false, err.Error()
		}
		c := st.Policies[0].Cgroups
		return len(c) == 1 && c[0] == k.cg.Name()+"/aarsm-egress-test-1.service", fmt.Sprint(c)
	})
	cmd := exec.Command("curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", "http://"+unlisted.String()+"/")
	if err := testenv.StartIn(unit, cmd); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Errorf("in the unit: curl exit %d, want 7", code)
	}
	// The unit's parent is not in scope.
	if code, _ := curl(t, k.cg, unlisted); code != 0 {
		t.Errorf("beside the unit: curl exit %d", code)
	}
}

// A scope by executable: the kernel compares the file a process runs with
// the files the scope names, whatever its cgroup. A copy of curl is in
// scope; the system's curl, in the same cgroup, is not.
func TestEgressExecutableScope(t *testing.T) {
	k := startEnforcer(t, Options{})
	unlisted := httpServer(t, "127.0.0.2")
	sys, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(sys)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	scoped := dir + "/bin/curl"
	if err := os.MkdirAll(dir+"/bin", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(scoped, src, 0o755); err != nil {
		t.Fatal(err)
	}
	k.apply(t, fmt.Sprintf(`egress_policy "exe" {
  scope {
    executables = ["%s/**"]
  }
  allow {
    cidrs = ["192.0.2.0/24"]
  }
}
`, dir))
	st, err := k.enf.Status()
	if err != nil || len(st.Policies) != 1 || len(st.Policies[0].Executables) != 1 || st.Policies[0].Executables[0] != scoped {
		t.Fatalf("status %+v %v", st.Policies, err)
	}
	run := func(bin string) int {
		cmd := exec.Command(bin, "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", "http://"+unlisted.String()+"/")
		if err := k.cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		return cmd.ProcessState.ExitCode()
	}
	if code := run(scoped); code != 7 {
		t.Errorf("the executable in scope: curl exit %d, want 7", code)
	}
	if code := run(sys); code != 0 {
		t.Errorf("another executable: curl exit %d", code)
	}
}
