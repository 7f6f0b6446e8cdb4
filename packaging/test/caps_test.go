package packagetest

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// unitCapabilities returns the CapabilityBoundingSet of aarsm.service.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "systemd", "aarsm.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "CapabilityBoundingSet="); ok {
			return strings.Fields(v)
		}
	}
	t.Fatal("aarsm.service has no CapabilityBoundingSet=")
	return nil
}

// The unit's capabilities, and only those, are enough to attach the
// probes: "aarsm trace" as root with the unit's bounding set (the
// capabilities a root process gets when it execs) probes libssl on the
// host. Since CVE-2025-38466 was fixed, a uprobe takes CAP_SYS_ADMIN;
// without it every attach fails with EACCES.
func TestUnitCapabilitiesAttachProbes(t *testing.T) {
	requireRoot(t)
	requireTool(t, "setpriv", "util-linux")
	p := releasePackages(t)
	set := "-all"
	for _, c := range unitCapabilities(t) {
		set += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	cmd := exec.Command("setpriv", "--bounding-set="+set, "--", p.binary, "trace")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		for range lines {
		}
		_ = cmd.Wait()
	}()
	var log []string
	probed := false
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("aarsm trace (bounding set %s) exited:\n%s", set, strings.Join(log, "\n"))
			}
			log = append(log, l)
			if strings.Contains(l, "cannot probe TLS library") {
				t.Errorf("with the unit's capabilities (%s): %s", set, l)
			}
			if strings.Contains(l, "probing TLS library") && strings.Contains(l, "libssl") {
				probed = true
			}
			if strings.Contains(l, "tracing TLS writes") {
				if !probed {
					t.Errorf("with the unit's capabilities (%s) no libssl was probed:\n%s", set, strings.Join(log, "\n"))
				}
				return
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("aarsm trace did not start within 60s:\n%s", strings.Join(log, "\n"))
		}
	}
}
