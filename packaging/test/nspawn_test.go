package packagetest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The Debian root the tests install into: minbase plus systemd, built once
// with mmdebstrap (~20 s). With AARSM_TEST_CACHE set it is kept there and
// reused; bump rootfsName when the package list changes.
const (
	rootfsName     = "rootfs-bookworm-systemd-v3"
	rootfsPackages = "systemd,systemd-sysv,dbus,procps,curl,openssl,python3,ca-certificates"
)

var (
	rootfsOnce sync.Once
	rootfsDir  string
	rootfsErr  error
)

func debianRoot(t *testing.T) string {
	t.Helper()
	requireRoot(t)
	requireTool(t, "mmdebstrap", "mmdebstrap")
	rootfsOnce.Do(func() {
		base := workDir
		if c := os.Getenv("AARSM_TEST_CACHE"); c != "" {
			base = c
		}
		rootfsDir = filepath.Join(base, rootfsName)
		if _, err := os.Stat(filepath.Join(rootfsDir, "usr/lib/systemd/systemd")); err == nil {
			return
		}
		if err := os.MkdirAll(base, 0o755); err != nil {
			rootfsErr = err
			return
		}
		tmp := rootfsDir + ".tmp"
		os.RemoveAll(tmp)
		out, err := tryRun(base, nil, "mmdebstrap", "--mode=root", "--variant=minbase", "--include="+rootfsPackages, "bookworm", tmp)
		if err != nil {
			os.RemoveAll(tmp)
			rootfsErr = fmt.Errorf("mmdebstrap: %w\n%s", err, out)
			return
		}
		rootfsErr = os.Rename(tmp, rootfsDir)
	})
	if rootfsErr != nil {
		t.Fatal(rootfsErr)
	}
	return rootfsDir
}

// container is a booted systemd-nspawn machine over a throw-away overlay of
// the Debian root.
type container struct {
	name    string
	cmd     *exec.Cmd
	log     *bytes.Buffer
	leader  int // host pid of the container's systemd
	done    chan struct{}
	waitErr error
}

// bootContainer boots systemd in a container (never on the host's root) and
// waits until it has finished booting. pkgDir is visible inside as /pkgs.
// The container runs in a cgroup of its own, made for it: its cgroup
// namespace's root is that cgroup, never the host's root cgroup.
func bootContainer(t *testing.T, pkgDir string, extraArgs ...string) *container {
	t.Helper()
	requireTool(t, "systemd-nspawn", "systemd-container")
	root := debianRoot(t)
	cg := newCgroup(t)
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	c := &container{name: "aarsm-test-" + hex.EncodeToString(suffix), log: &bytes.Buffer{}, done: make(chan struct{})}
	args := append([]string{
		"--quiet", "--directory=" + root, "--volatile=overlay", "--boot",
		"--register=no", "--keep-unit", "--private-network",
		"--machine=" + c.name, "--bind-ro=" + pkgDir + ":/pkgs",
	}, extraArgs...)
	c.cmd = exec.Command("systemd-nspawn", args...)
	c.cmd.Env = append(os.Environ(), "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1")
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, UseCgroupFD: true, CgroupFD: cg.fd}
	err := c.cmd.Start()
	cg.closeFD()
	if err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { c.waitErr = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(func() { c.stop(t) })

	deadline := time.Now().Add(60 * time.Second)
	eventually(t, 60*time.Second, "the systemd of container "+c.name, func() (bool, string) {
		select {
		case <-c.done:
			t.Fatalf("systemd-nspawn exited before booting: %v", c.waitErr)
		default:
		}
		pid := findLeader(c.cmd.Process.Pid)
		if pid == 0 {
			return false, "no pid 1 below systemd-nspawn yet"
		}
		// Until nspawn has exec'ed it, the leader is not systemd yet.
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if strings.TrimSpace(string(comm)) != "systemd" {
			return false, fmt.Sprintf("its pid 1 (host pid %d) runs %q", pid, strings.TrimSpace(string(comm)))
		}
		c.leader = pid
		return true, ""
	})
	// "is-system-running --wait" fails at once while systemd's private
	// socket is not there yet.
	eventually(t, time.Until(deadline), "container "+c.name+" to boot", func() (bool, string) {
		state, _ := c.try("systemctl is-system-running --wait")
		s := strings.TrimSpace(state)
		if s == "running" || s == "degraded" {
			return true, ""
		}
		return false, fmt.Sprintf("is-system-running: %q; failed units:\n%s", s, c.try0("systemctl --failed --no-pager"))
	})
	return c
}

// findLeader returns the host pid of the process that is pid 1 in a pid
// namespace below nspawnPid, or 0.
func findLeader(nspawnPid int) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var nspid []string
		ppidOK := false
		for _, l := range strings.Split(string(status), "\n") {
			if f, ok := strings.CutPrefix(l, "NSpid:"); ok {
				nspid = strings.Fields(f)
			}
			if f, ok := strings.CutPrefix(l, "PPid:"); ok {
				ppid := strings.TrimSpace(f)
				// nspawn forks once; the container's init is its grandchild.
				ppidOK = ppid == fmt.Sprint(nspawnPid) || parentOf(ppid) == fmt.Sprint(nspawnPid)
			}
		}
		if ppidOK && len(nspid) == 2 && nspid[1] == "1" {
			var pid int
			fmt.Sscan(e.Name(), &pid)
			return pid
		}
	}
	return 0
}

func parentOf(pid string) string {
	status, err := os.ReadFile(filepath.Join("/proc", pid, "status"))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f, ok := strings.CutPrefix(l, "PPid:"); ok {
			return strings.TrimSpace(f)
		}
	}
	return ""
}

// try runs a shell script inside the container (all its namespaces, its
// root) and returns the combined output.
func (c *container) try(script string) (string, error) {
	cmd := exec.Command("nsenter", "--target", fmt.Sprint(c.leader), "--mount", "--uts", "--ipc", "--net", "--pid", "--cgroup", "--root", "--wd",
		"--", "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// try0 is try for diagnostics: the output, errors included.
func (c *container) try0(script string) string {
	out, err := c.try(script)
	if err != nil {
		out += "(" + err.Error() + ")"
	}
	return out
}

// sh runs script in the container and fails the test if it fails.
func (c *container) sh(t *testing.T, script string) string {
	t.Helper()
	out, err := c.try(script)
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", c.name, script, err, out)
	}
	return strings.TrimSpace(out)
}

// stop powers the container off, kills it if it does not stop, and removes
// what nspawn leaves under /run/systemd/nspawn for this machine.
func (c *container) stop(t *testing.T) {
	select {
	case <-c.done:
	default:
		if _, err := c.try("systemctl poweroff --no-block"); c.leader == 0 || err != nil {
			// nspawn asks the container's systemd to halt on SIGTERM.
			c.cmd.Process.Signal(syscall.SIGTERM)
		}
		select {
		case <-c.done:
		case <-time.After(20 * time.Second):
			t.Errorf("container %s did not power off in 20 s; killing it", c.name)
			syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.done
		}
	}
	// If nspawn itself died (killed above, or crashed), the container's
	// systemd is reparented and lives on: end it by its host PID, which
	// ends its whole PID namespace.
	if c.leader > 0 {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c.leader)); err == nil && strings.TrimSpace(string(comm)) == "systemd" {
			syscall.Kill(c.leader, syscall.SIGKILL)
		}
	}
	for _, d := range []string{"propagate", "unix-export", "incoming"} {
		os.RemoveAll(filepath.Join("/run/systemd/nspawn", d, c.name))
	}
	if t.Failed() {
		t.Logf("container %s console:\n%s", c.name, c.log)
	}
}

// unitProp returns one property of aarsm.service.
func (c *container) unitProp(t *testing.T, prop string) string {
	t.Helper()
	return c.sh(t, "systemctl show --value -p "+prop+" aarsm.service")
}

// waitProp waits until a property of aarsm.service has the value want.
func (c *container) waitProp(t *testing.T, prop, want string) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("%s = %q", prop, want), func() (bool, string) {
		got := c.unitProp(t, prop)
		return got == want, fmt.Sprintf("%s = %q", prop, got)
	})
}

func (c *container) isActive() string {
	out, _ := c.try("systemctl is-active aarsm.service")
	return strings.TrimSpace(out)
}

func (c *container) isEnabled() string {
	out, _ := c.try("systemctl is-enabled aarsm.service")
	return strings.TrimSpace(out)
}

func (c *container) exists(path string) bool {
	_, err := c.try("test -e " + path)
	return err == nil
}

// debLifecycle installs v1, runs installed against it, upgrades to v2 (a
// handover in place, under mail: mailDuringUpgrade), removes, installs
// again and purges.
func debLifecycle(t *testing.T, c *container, installed func()) {
	t.Log(c.sh(t, "dpkg -i /pkgs/v1.deb 2>&1"))

	// Installed, enabled per preset, started.
	for _, f := range []string{"/lib/systemd/system/aarsm.service", "/usr/bin/aarsm", "/usr/lib/tmpfiles.d/aarsm.conf", "/etc/aarsm/policy.d/default.hcl"} {
		if !c.exists(f) {
			t.Errorf("after install: no %s", f)
		}
	}
	if out := c.try0("systemd-analyze verify aarsm.service 2>&1"); strings.Contains(out, "aarsm.service:") {
		t.Errorf("systemd-analyze verify aarsm.service:\n%s", out)
	}
	if e := c.isEnabled(); e != "enabled" {
		t.Errorf("after install: is-enabled = %q, want enabled", e)
	}
	if a := c.isActive(); a != "active" {
		t.Fatalf("after install: is-active = %q, want active\n%s", a, c.try0("journalctl -b -u aarsm --no-pager | tail -30"))
	}
	if !strings.Contains(c.sh(t, "journalctl --list-catalog"), messageID) {
		t.Errorf("after install: the journal catalog has no %s", messageID)
	}
	if got := c.unitProp(t, "WatchdogUSec"); got != "30s" {
		t.Errorf("WatchdogUSec = %q, want 30s", got)
	}
	installed()

	// Upgrade over an administrator's edit: the edit stays, the new file is
	// put beside it, the agent is replaced in place (the fake one restarted).
	c.sh(t, "echo '# edited by the administrator' >> /etc/aarsm/policy.d/default.hcl")
	upgraded := mailDuringUpgrade(t, c)
	pidBefore := c.unitProp(t, "MainPID") // the scenario may have restarted it
	t.Log(c.sh(t, "dpkg -i --force-confold /pkgs/v2.deb 2>&1"))
	upgraded()
	if v := c.sh(t, "dpkg-query -W -f '${Version}' aarsm"); v != "1.1.0-1" {
		t.Errorf("after upgrade: version %q, want 1.1.0-1", v)
	}
	if !strings.Contains(c.sh(t, "cat /etc/aarsm/policy.d/default.hcl"), "# edited by the administrator") {
		t.Errorf("the upgrade replaced the edited default.hcl")
	}
	if !strings.Contains(c.try0("cat /etc/aarsm/policy.d/default.hcl.dpkg-dist"), "# changed in version 1.1.0") {
		t.Errorf("the upgrade did not put the new default.hcl beside the edited one")
	}
	if e := c.isEnabled(); e != "enabled" {
		t.Errorf("after upgrade: is-enabled = %q, want enabled", e)
	}
	if a := c.isActive(); a != "active" {
		t.Errorf("after upgrade: is-active = %q, want active", a)
	}
	if pid2 := c.unitProp(t, "MainPID"); pid2 != pidBefore {
		t.Errorf("after upgrade: MainPID %s, was %s: restarted, not handed over in place", pid2, pidBefore)
	} else if st := c.sh(t, "aarsm status --json"); !strings.Contains(st, `"handovers": 1,`) {
		t.Errorf("after upgrade: status does not count the handover:\n%s", st)
	}

	// Removal: stopped, disabled, configuration and state kept.
	t.Log(c.sh(t, "dpkg -r aarsm 2>&1"))
	if a := c.isActive(); a == "active" {
		t.Errorf("after remove: still active")
	}
	if c.exists("/etc/systemd/system/multi-user.target.wants/aarsm.service") {
		t.Errorf("after remove: still enabled")
	}
	if c.exists("/lib/systemd/system/aarsm.service") || c.exists("/usr/bin/aarsm") {
		t.Errorf("after remove: files left")
	}
	if !c.exists("/etc/aarsm/policy.d/default.hcl") || !c.exists("/var/lib/aarsm") {
		t.Errorf("remove (not purge) deleted configuration or state")
	}
	c.noAgentLeft(t, "after remove")

	// Installing again after a removal enables again.
	c.sh(t, "dpkg -i --force-confold /pkgs/v2.deb 2>&1")
	if e := c.isEnabled(); e != "enabled" {
		t.Errorf("install after remove: is-enabled = %q, want enabled", e)
	}
	if a := c.isActive(); a != "active" {
		t.Errorf("install after remove: is-active = %q, want active", a)
	}

	// Purge: everything goes.
	t.Log(c.sh(t, "dpkg -P aarsm 2>&1"))
	for _, f := range []string{"/var/lib/aarsm", "/etc/aarsm", "/run/aarsm", "/etc/systemd/system/multi-user.target.wants/aarsm.service"} {
		if c.exists(f) {
			t.Errorf("after purge: %s is left", f)
		}
	}
	if a := c.isActive(); a == "active" {
		t.Errorf("after purge: still active")
	}
	c.noAgentLeft(t, "after purge")
}

// noAgentLeft checks that no agent process runs and nothing is pinned in
// the agent's bpffs directory: no probe or quarantine outlives the package.
func (c *container) noAgentLeft(t *testing.T, when string) {
	t.Helper()
	if out, err := c.try("pgrep -a aarsm"); err == nil {
		t.Errorf("%s: aarsm processes left:\n%s", when, out)
	}
	if out, err := c.try("ls -A /sys/fs/bpf/aarsm"); err == nil && strings.TrimSpace(out) != "" {
		t.Errorf("%s: pinned objects left in /sys/fs/bpf/aarsm: %s", when, out)
	}
}

// TestDebLifecycleRealAgent installs, reloads, upgrades over an edited
// configuration (a handover in place under mail), removes, installs again
// and purges the .deb with the real agent under a real systemd.
//
// The container gets what BPF needs (see systemd/README.md) and is kept
// apart from the host: a bpffs of its own as /sys/fs/bpf (the pins go with
// it), a cgroup of its own, and a drop-in that scopes holding to the
// container's cgroup tree. The agent itself, in the container's pid
// namespace, sees only the container's processes (the sensor translates
// ids to its namespace and ignores threads of others).
func TestDebLifecycleRealAgent(t *testing.T) {
	requireRoot(t)
	p := releasePackages(t)
	help, _ := tryRun(workDir, nil, p.binary, "run", "-h")
	if !strings.Contains(strings.ToLower(help), "notify") {
		t.Fatalf(`"aarsm run -h" does not mention sd_notify: the unit starts it as Type=notify:\n%s`, help)
	}
	v2 := releasePackagesV2(t)
	pkgs := t.TempDir()
	copyFile(t, p.deb, filepath.Join(pkgs, "v1.deb"))
	copyFile(t, v2.deb, filepath.Join(pkgs, "v2.deb"))
	copyFile(t, filepath.Join(repoRoot, "hcl", "policies", "company.hcl"), filepath.Join(pkgs, "company.hcl"))
	bpffs := privateBPFFS(t)
	// tracefs: a --bind-ro=/sys/kernel/tracing is hidden under the sysfs
	// nspawn mounts on /sys/kernel afterwards (with --private-network);
	// with CAP_SYS_RAWIO the container's systemd mounts it itself
	// (sys-kernel-tracing.mount, which aarsm.service wants).
	c := bootContainer(t, pkgs,
		"--capability=CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN,CAP_SYS_RAWIO",
		"--system-call-filter=bpf perf_event_open",
		"--bind="+bpffs+":/sys/fs/bpf")
	// Before the package starts the agent: hold only in the container's
	// cgroup namespace root, which is the cgroup nspawn runs it in.
	c.sh(t, `mkdir -p /etc/systemd/system/aarsm.service.d && cat > /etc/systemd/system/aarsm.service.d/test.conf <<'EOF'
[Service]
ExecStart=
ExecStart=/usr/bin/aarsm run --policy-dir /etc/aarsm/policy.d --log-format journal --hold-cgroup /sys/fs/cgroup
EOF`)
	debLifecycle(t, c, func() { realAgentScenario(t, c) })
}

// mailServer is a python3 HTTPS server on 127.0.0.1:8443 in the container
// (a transient unit) that answers every POST with 200 and logs its body
// (the journal of the unit: what reached the API).
const mailServer = `import http.server, ssl, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print("body:", body.decode(errors="replace"), file=sys.stderr, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")
s = http.server.HTTPServer(("127.0.0.1", 8443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/root/tls/cert.pem", "/root/tls/key.pem")
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
`

// postmarkMail is the postmark-mcp request: a hidden Bcc.
const postmarkMail = `{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club","Subject":"Invoice","TextBody":"see attached"}`

// sendMail posts postmarkMail with curl (libssl) and reports whether curl
// succeeded. curl runs in a scope unit: inside the container's cgroup tree,
// where the agent holds writes (nsenter alone leaves it in the test's).
func (c *container) sendMail(t *testing.T) (string, bool) {
	out, err := c.try(`systemd-run --quiet --scope --property=DefaultDependencies=no ` + curlMail(postmarkMail) + ` 2>&1`)
	return out, err == nil
}

// journalVerdicts returns the agent's journal entries (JSON) with
// AARSM_VERDICT=decision that contain needle.
func (c *container) journalVerdicts(decision, needle string) []string {
	out, _ := c.try("journalctl -u aarsm AARSM_VERDICT=" + decision + " -o json --no-pager")
	var hits []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, needle) {
			hits = append(hits, l)
		}
	}
	return hits
}

// verdicts waits until the agent's journal has n entries with
// AARSM_VERDICT=decision that name phan@giftshop.club, and returns them.
func (c *container) verdicts(t *testing.T, decision string, n int) []string {
	t.Helper()
	return c.waitVerdicts(t, decision, "phan@giftshop.club", n)
}

func (c *container) waitVerdicts(t *testing.T, decision, needle string, n int) []string {
	t.Helper()
	var hits []string
	eventually(t, 30*time.Second, fmt.Sprintf("%d %s verdicts naming %s in the journal", n, decision, needle), func() (bool, string) {
		hits = c.journalVerdicts(decision, needle)
		return len(hits) >= n, fmt.Sprintf("%d; the agent's journal:\n%s", len(hits), c.try0("journalctl -u aarsm --no-pager | tail -30"))
	})
	return hits
}

// readyAfter matches the agent's "enforcing" log line, which says how long
// after its start it sent READY=1.
var readyAfter = regexp.MustCompile(`msg=enforcing .*ready_after=(\S+)`)

// realAgentScenario runs against the freshly installed v1: the agent sees
// a mail sent inside the container, status answers, a reload to an
// enforcing policy blocks (a mail of another user's process too), a broken
// reload changes nothing.
func realAgentScenario(t *testing.T, c *container) {
	start, ready := c.unitProp(t, "ExecMainStartTimestampMonotonic"), c.unitProp(t, "ActiveEnterTimestampMonotonic")
	var s, r int64
	fmt.Sscan(start, &s)
	fmt.Sscan(ready, &r)
	t.Logf("the agent was ready (READY=1) %.0f ms after its start", float64(r-s)/1000)
	// STATUS= came with READY=1 over the notify socket.
	if got := c.unitProp(t, "StatusText"); got != "enforcing 1 policies" {
		t.Errorf("StatusText %q, want the agent's \"enforcing 1 policies\"", got)
	}
	journal := c.sh(t, "journalctl -u aarsm --no-pager -o cat")
	if !strings.Contains(journal, "msg=enforcing") {
		t.Errorf("no 'enforcing' in the agent's log:\n%s", journal)
	}
	// Type=notify: the unit became active only at READY=1, which the
	// agent sent ready_after its own start (itself after the exec).
	if m := readyAfter.FindStringSubmatch(journal); m == nil {
		t.Errorf("the agent's 'enforcing' line has no ready_after:\n%s", journal)
	} else if d, err := time.ParseDuration(m[1]); err != nil {
		t.Errorf("ready_after=%s: %v", m[1], err)
	} else if active := time.Duration(r-s) * time.Microsecond; active < d-time.Millisecond {
		t.Errorf("the unit was active %v after the agent's start, before its READY=1 (sent %v after it)", active, d)
	} else {
		t.Logf("the agent sent READY=1 %v after it started", d)
	}
	if strings.Contains(journal, "pid namespace") {
		t.Logf("the agent noticed its pid namespace")
	}
	st := c.sh(t, "aarsm status")
	t.Logf("aarsm status:\n%s", st)
	for _, want := range []string{"policies:    1", "default", "monitor", "libssl.so", "holding:     nothing (no enforcing policy)"} {
		if !strings.Contains(st, want) {
			t.Errorf("aarsm status has no %q", want)
		}
	}
	// The runtime directory is writable from the unit's sandbox.
	if mode := c.sh(t, "stat -c %a /run/aarsm/aarsm.sock"); mode != "600" {
		t.Errorf("status socket mode %s, want 600", mode)
	}

	c.sh(t, `mkdir -p /root/tls && cd /root/tls && openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 `+
		`-addext subjectAltName=IP:127.0.0.1 -keyout key.pem -out cert.pem 2>/dev/null`)
	c.sh(t, "cat > /root/server.py <<'EOF'\n"+mailServer+"EOF")
	c.sh(t, "systemd-run --unit=mailapi --property=DefaultDependencies=no python3 /root/server.py")
	// 127.0.0.1:8443 (0x20FB) listening (0A) in /proc/net/tcp.
	eventually(t, 30*time.Second, "the mail API server to listen on 127.0.0.1:8443", func() (bool, string) {
		return strings.Contains(c.try0("cat /proc/net/tcp"), "0100007F:20FB 00000000:0000 0A"), c.try0("journalctl -u mailapi --no-pager")
	})

	// Monitor mode (the shipped default policy): the mail leaves, the
	// verdict is an alert naming the hidden Bcc.
	if out, ok := c.sendMail(t); !ok {
		t.Errorf("monitor mode: curl failed: %s", out)
	}
	t.Logf("verdict: %s", c.verdicts(t, "alert", 1)[0])
	// One mail, one verdict: the container's root is a stack of overlays,
	// and libssl has two identities in it (stat's device and the one of
	// its mappings); probed under both, each write was judged twice. The
	// verdict of a later mail (a hidden Bcc to another domain, posted
	// elsewhere) in the journal: a second one of the first would be too.
	barrier := strings.NewReplacer("phan@giftshop.club", "later@barrier.example", "/email", "/barrier").Replace(curlMail(postmarkMail))
	if out, err := c.try("systemd-run --quiet --scope --property=DefaultDependencies=no " + barrier + " 2>&1"); err != nil {
		t.Errorf("monitor mode: the later mail failed: %v\n%s", err, out)
	}
	c.waitVerdicts(t, "alert", "later@barrier.example", 1)
	if v := c.journalVerdicts("alert", "phan@giftshop.club"); len(v) != 1 {
		t.Errorf("one mail, %d verdicts; status:\n%s", len(v), c.try0("aarsm status"))
	}
	if st := c.sh(t, "aarsm status"); strings.Count(st, "/libssl.so") != 1 {
		t.Errorf("libssl probed more than once:\n%s", st)
	}

	// An enforcing policy, reloaded: the same mail is blocked.
	c.sh(t, "sed 's/email_security_policy \"company\"/email_security_policy \"enforce\"/' /pkgs/company.hcl > /etc/aarsm/policy.d/zz-enforce.hcl")
	c.sh(t, "systemctl reload aarsm")
	// ExecReload=aarsm reload returns once the agent has reloaded: the new
	// policy is in force now. Its READY=1 (with the new status) came over
	// the notify socket just before.
	c.waitProp(t, "StatusText", "enforcing 2 policies")
	if st := c.sh(t, "aarsm status"); !strings.Contains(st, "policies:    2") {
		t.Errorf("right after systemctl reload, status:\n%s", st)
	}
	// The state directory is writable from the unit's sandbox: the agent
	// keeps the policies that loaded there, for a restart.
	if got := c.try0("ls /var/lib/aarsm/policy-last-good"); !strings.Contains(got, "zz-enforce.hcl") {
		t.Errorf("no copy of the policies in force in /var/lib/aarsm/policy-last-good: %s\n%s", got, c.try0("journalctl -u aarsm --no-pager | tail -30"))
	}
	if out, ok := c.sendMail(t); ok {
		t.Errorf("enforce mode: curl succeeded: %s", out)
	}
	c.verdicts(t, "block", 1)
	if got := c.try0("journalctl -u mailapi --no-pager -o cat"); strings.Count(got, "POST /email") != 1 {
		t.Errorf("the server should have seen exactly the first (monitored) mail:\n%s", got)
	}
	// Another user's process: the sandbox (ProtectProc=invisible, with
	// CAP_SYS_PTRACE kept) lets the agent read its /proc, so the verdict
	// names its executable.
	c.sh(t, "install -m 0644 /root/tls/cert.pem /usr/local/share/aarsm-test-ca.pem")
	blocks := len(c.journalVerdicts("block", "phan@giftshop.club"))
	asNobody := strings.Replace(curlMail(postmarkMail), "/root/tls/cert.pem", "/usr/local/share/aarsm-test-ca.pem", 1)
	if out, err := c.try("systemd-run --quiet --scope --uid=nobody --property=DefaultDependencies=no " + asNobody + " 2>&1"); err == nil {
		t.Errorf("enforce mode: curl as nobody succeeded: %s", out)
	}
	v := c.verdicts(t, "block", blocks+1)
	var e struct {
		Exe string `json:"AARSM_EXE"`
	}
	if err := json.Unmarshal([]byte(v[len(v)-1]), &e); err != nil || e.Exe != "/usr/bin/curl" {
		t.Errorf("the verdict on nobody's curl names executable %q (%v), want /usr/bin/curl: %s", e.Exe, err, v[len(v)-1])
	}

	unitCgroupKilled(t, c)

	// A broken policy: the reload fails, the agent keeps running with the
	// policies it has, and keeps judging.
	pid := c.unitProp(t, "MainPID")
	c.sh(t, "printf 'email_security_policy \"broken\" {\\n  mode = \\n' > /etc/aarsm/policy.d/zz-broken.hcl")
	if out, err := c.try("systemctl reload aarsm 2>&1"); err == nil {
		t.Errorf("systemctl reload with a broken policy succeeded:\n%s", out)
	}
	if a := c.isActive(); a != "active" {
		t.Errorf("after a failed reload: is-active = %q", a)
	}
	if p := c.unitProp(t, "MainPID"); p != pid {
		t.Errorf("after a failed reload: MainPID %s, was %s", p, pid)
	}
	// The agent itself rejects it too (SIGHUP without the check first).
	c.sh(t, "kill -HUP "+pid)
	eventually(t, 30*time.Second, "aarsm status to show a failed reload", func() (bool, string) {
		st := c.try0("aarsm status")
		return strings.Contains(st, "last reload: FAILED"), st
	})
	c.waitProp(t, "StatusText", "reload failed; the previous policies stay in force (see the log)")
	if a := c.isActive(); a != "active" {
		t.Errorf("after SIGHUP with a broken policy: is-active = %q", a)
	}
	st = c.sh(t, "aarsm status")
	if !strings.Contains(st, "policies:    2") || !strings.Contains(st, "enforce") {
		t.Errorf("after a broken reload, status:\n%s", st)
	}
	blocks = len(c.journalVerdicts("block", "phan@giftshop.club"))
	if _, ok := c.sendMail(t); ok {
		t.Errorf("after a broken reload: the mail was not blocked")
	}
	c.verdicts(t, "block", blocks+1) // its own
	if !strings.Contains(c.try0("journalctl -u aarsm --no-pager -o cat"), "zz-broken.hcl:") {
		t.Errorf("the agent did not log the broken policy's diagnostics")
	}
	// The mail API stays up, and the enforcing policy in force, for the
	// upgrade (mailDuringUpgrade).
	c.sh(t, "rm /etc/aarsm/policy.d/zz-broken.hcl && systemctl reload aarsm")
}

// curlMail is a curl command that posts body to the container's mail API.
func curlMail(body string) string {
	return `curl -sS --fail --max-time 30 --cacert /root/tls/cert.pem https://127.0.0.1:8443/email ` +
		`-H 'Content-Type: application/json' -H 'X-Postmark-Server-Token: test' -d '` + body + `'`
}

// stoppedProcesses lists the processes of the container in state T.
func (c *container) stoppedProcesses() string {
	out, _ := c.try("ps -eo pid=,stat=,comm= | awk '$2 ~ /^T/'")
	return strings.TrimSpace(out)
}

// unitCgroupKilled kills the agent's whole unit cgroup (agent and hold
// guard at once) while a mail is held under a fail-closed policy: the
// unit's ExecStopPost resolves the hold (the client is killed, the mail
// never reaches the API), and Restart=on-failure brings the agent back.
func unitCgroupKilled(t *testing.T, c *container) {
	c.sh(t, `printf 'agent {\n  fail_mode = "closed"\n  write_hold_timeout = "20s"\n}\n' > /etc/aarsm/policy.d/00-agent.hcl && systemctl reload aarsm`)
	pid := c.unitProp(t, "MainPID")
	// The agent cannot answer: the next mail stays held in the kernel.
	c.sh(t, "kill -STOP "+pid)
	c.sh(t, "systemd-run --quiet --unit=heldmail --property=DefaultDependencies=no "+curlMail(`{"From":"a@company.com","To":"b@company.com","Subject":"held"}`))
	eventually(t, 20*time.Second, "the mail held (curl stopped)", func() (bool, string) {
		p := c.stoppedProcesses()
		return strings.Contains(p, "curl"), fmt.Sprintf("stopped: %q; %s", p, c.try0("journalctl -u heldmail --no-pager"))
	})
	t0 := time.Now()
	c.sh(t, "systemctl kill -s KILL aarsm")
	// Polled with ps alone: the time it returns is reported.
	resolved := eventually(t, 15*time.Second, "the held client resolved after the unit was killed", func() (bool, string) {
		p := c.stoppedProcesses()
		return !strings.Contains(p, "curl"), fmt.Sprintf("stopped: %q", p)
	})
	t.Logf("unit cgroup SIGKILL: the held client resolved %s after the kill", resolved.Sub(t0).Round(time.Millisecond))
	// ExecStopPost resolves it, or the guard does if it outlived the agent
	// by a moment (systemd kills the main process first). Who did is only
	// reported: a guard killed right after it acted cannot log it; the
	// outcome (client killed, nothing at the API) is what is checked.
	for logged := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got := c.try0("journalctl -u aarsm --no-pager -o cat")
		if strings.Contains(got, "1 hold(s) resolved") {
			t.Logf("resolved by ExecStopPost (aarsm release-holds)")
			break
		}
		if strings.Contains(got, "held process killed unjudged") {
			t.Logf("resolved by the hold guard")
			break
		}
		if time.Now().After(logged) {
			t.Logf("resolved by the hold guard, killed before it could log it")
			break
		}
	}
	if got := c.try0("systemctl show -p ExecMainCode,ExecMainStatus heldmail"); !strings.Contains(got, "ExecMainStatus=9") {
		t.Errorf("fail-closed: the held client was not killed: %s", got)
	}
	if got := c.try0("journalctl -u mailapi --no-pager -o cat"); strings.Contains(got, `"held"`) || strings.Count(got, "POST /email") != 1 {
		t.Errorf("fail-closed: the held mail reached the API:\n%s", got)
	}
	// Restart=on-failure (RestartSec=2s): a new agent, enforcing again.
	eventually(t, 30*time.Second, "a new agent (Restart=on-failure)", func() (bool, string) {
		a, p := c.isActive(), c.unitProp(t, "MainPID")
		return a == "active" && p != pid, fmt.Sprintf("is-active %s, MainPID %s (was %s); the agent's journal:\n%s", a, p, pid, c.try0("journalctl -u aarsm --no-pager | tail -20"))
	})
	if p := c.stoppedProcesses(); p != "" {
		t.Errorf("processes left stopped: %s", p)
	}
	if _, ok := c.sendMail(t); ok {
		t.Errorf("after the restart: the backdoored mail was not blocked")
	}
	c.sh(t, "rm /etc/aarsm/policy.d/00-agent.hcl && systemctl reload aarsm")
	_, _ = c.try("systemctl reset-failed heldmail")
}

// mails returns how many mails the mail loop of mailDuringUpgrade has done.
func (c *container) mails() int {
	out, _ := c.try("cat /root/mailloop.rc")
	return strings.Count(out, "\n")
}

// waitMails waits until the mail loop has done n mails.
func (c *container) waitMails(t *testing.T, n int, what string) {
	t.Helper()
	eventually(t, 60*time.Second, what, func() (bool, string) {
		got := c.mails()
		return got >= n, fmt.Sprintf("%d mails done (want %d); curl errors: %s", got, n, c.try0("tail -5 /root/mailloop.err"))
	})
}

// mailDuringUpgrade starts a client that, under the enforcing policy,
// mails without pause a clean message and the hidden-Bcc one in turn, and
// returns a function that stops it and checks the upgrade lost nothing:
// every clean mail delivered, every backdoored one blocked (its curl
// killed, one block verdict each, nothing of it at the API), no process
// ever left stopped.
func mailDuringUpgrade(t *testing.T, c *container) func() {
	since := c.sh(t, "date +%s.%N")
	clean := strings.Replace(postmarkMail, `"Bcc":"phan@giftshop.club",`, "", 1)
	// Each curl in a scope of its own: the policy stops the unit of a
	// blocked client.
	scope := "systemd-run --quiet --scope --property=DefaultDependencies=no "
	loop := "i=0\nwhile :; do\n  i=$((i+1))\n" +
		"  " + scope + curlMail(strings.Replace(clean, `"Invoice"`, `"clean-'$i'"`, 1)) + " >/dev/null 2>>/root/mailloop.err\n  echo clean $i $? >> /root/mailloop.rc\n" +
		"  " + scope + curlMail(strings.Replace(postmarkMail, `"Invoice"`, `"bad-'$i'"`, 1)) + " >/dev/null 2>>/root/mailloop.err\n  echo bad $i $? >> /root/mailloop.rc\n" +
		"  sleep 0.05\ndone\n"
	c.sh(t, "cat > /root/mailloop.sh <<'EOF'\n"+loop+"EOF")
	c.sh(t, "systemd-run --quiet --unit=mailloop --property=DefaultDependencies=no /bin/sh /root/mailloop.sh")
	stop := make(chan struct{})
	stopped := make(chan []string)
	go func() {
		var seen []string
		for {
			select {
			case <-stop:
				stopped <- seen
				return
			default:
			}
			if p := c.stoppedProcesses(); p != "" {
				seen = append(seen, p)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	// Both kinds of mail done before the upgrade, and more on the way.
	c.waitMails(t, 2, "a clean and a backdoored mail done before the upgrade")
	return func() {
		// The new agent enforcing alone: the mail in flight when dpkg
		// returned, then a clean and a backdoored one started after it.
		c.waitMails(t, c.mails()+3, "a clean and a backdoored mail started after the upgrade, done")
		c.sh(t, "systemctl stop mailloop")
		close(stop)
		seen := <-stopped
		// A last clean mail in the API's log: the server answers one
		// request at a time, so whatever came before it is logged too.
		c.sh(t, scope+curlMail(strings.Replace(clean, `"Invoice"`, `"last"`, 1))+" >/dev/null")
		var api string
		eventually(t, 30*time.Second, "the last mail in the API's log", func() (bool, string) {
			api = c.try0("journalctl -u mailapi --no-pager -o cat --since=@" + since)
			return strings.Contains(api, `"last"`), fmt.Sprintf("%d lines", strings.Count(api, "\n"))
		})
		// And a last blocked one (another domain) in the agent's journal:
		// the verdicts on the loop's mails, one or two each, came before.
		_, _ = c.try(scope + strings.Replace(curlMail(postmarkMail), "phan@giftshop.club", "last@barrier.example", 1))
		c.waitVerdicts(t, "block", "last@barrier.example", 1)
		c.sh(t, "systemctl stop mailapi")
		blocks := map[string]int{} // by curl pid
		out, _ := c.try("journalctl -u aarsm AARSM_VERDICT=block -o json --no-pager --since=@" + since)
		for _, l := range strings.Split(out, "\n") {
			var e struct {
				PID        string `json:"AARSM_PID"`
				Recipients string `json:"AARSM_RECIPIENTS"`
			}
			if json.Unmarshal([]byte(l), &e) == nil && strings.Contains(e.Recipients, "phan@giftshop.club") {
				blocks[e.PID]++
			}
		}
		nclean, nbad, verdicts := 0, 0, 0
		for _, n := range blocks {
			verdicts += n
		}
		for _, l := range strings.Split(strings.TrimSpace(c.try0("cat /root/mailloop.rc")), "\n") {
			f := strings.Fields(l)
			if len(f) != 3 {
				continue
			}
			switch kind, i, rc := f[0], f[1], f[2]; kind {
			case "clean":
				nclean++
				if rc != "0" || !strings.Contains(api, `"clean-`+i+`"`) {
					t.Errorf("clean mail %s: curl exit %s, at the API: %v", i, rc, strings.Contains(api, `"clean-`+i+`"`))
				}
			case "bad":
				nbad++
				if rc == "0" || strings.Contains(api, `"bad-`+i+`"`) {
					t.Errorf("backdoored mail %s: curl exit %s, at the API: %v", i, rc, strings.Contains(api, `"bad-`+i+`"`))
				}
			}
		}
		t.Logf("upgrade under mail: %d clean mails delivered, %d backdoored blocked (%d block verdicts by %d clients); stopped processes sampled: %v",
			nclean, nbad, verdicts, len(blocks), seen)
		// A mail cut short by the loop's stop has no rc line but may
		// have been judged.
		if len(blocks) < nbad || verdicts != len(blocks) {
			t.Errorf("%d backdoored mails, %d clients blocked, %d verdicts: want one verdict per mail", nbad, len(blocks), verdicts)
		}
		if nclean == 0 || nbad == 0 {
			t.Errorf("no mail sent around the upgrade")
		}
		if p := c.stoppedProcesses(); p != "" {
			t.Errorf("after the upgrade, processes stopped: %s", p)
		}
	}
}
