package packagetest

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// maxExposure is the highest "systemd-analyze security" exposure accepted
// for aarsm.service (systemd/README.md explains the figure).
const maxExposure = 2.5

func TestUnitExposure(t *testing.T) {
	requireTool(t, "systemd-analyze", "systemd")
	unit := filepath.Join(repoRoot, "systemd", "aarsm.service")
	out, _ := tryRun(repoRoot, nil, "systemd-analyze", "security", "--offline=true", "--no-pager", unit)
	m := regexp.MustCompile(`Overall exposure level for aarsm\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security printed no overall exposure:\n%s", out)
	}
	exposure, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("exposure %.1f (at most %.1f)", exposure, maxExposure)
	if exposure > maxExposure {
		t.Errorf("aarsm.service exposure %.1f > %.1f:\n%s", exposure, maxExposure, out)
	}
}

// TestUnitDirectives pins what the agent and issue 6 rely on.
func TestUnitDirectives(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot, "systemd", "aarsm.service"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(data), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{
		"Type=notify",
		"NotifyAccess=main",
		"WatchdogSec=30s",
		"ExecStart=/usr/bin/aarsm run --policy-dir /etc/aarsm/policy.d --log-format journal",
		"ExecReload=/usr/bin/aarsm reload --pid $MAINPID",
		"Restart=on-failure",
		"StateDirectory=aarsm",
		"RuntimeDirectory=aarsm",
		"ProtectSystem=strict",
		"ReadWritePaths=-/sys/fs/bpf/aarsm",
		"ProtectHome=read-only",
		"NoNewPrivileges=yes",
		"SystemCallFilter=@system-service bpf perf_event_open",
		"WantedBy=multi-user.target",
	} {
		if !lines[want] {
			t.Errorf("systemd/aarsm.service has no line %q", want)
		}
	}
}

func TestCatalog(t *testing.T) {
	requireTool(t, "journalctl", "systemd")
	root := t.TempDir()
	copyFile(t, filepath.Join(repoRoot, "systemd", "aarsm.catalog"), filepath.Join(root, "usr/lib/systemd/catalog/aarsm.catalog"))
	if err := os.MkdirAll(filepath.Join(root, "var/lib/systemd/catalog"), 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, root, nil, "journalctl", "--root="+root, "--update-catalog")
	list := run(t, root, nil, "journalctl", "--root="+root, "--list-catalog")
	if !strings.Contains(list, messageID+" aarsm: AARSM verdict") {
		t.Errorf("catalog has no entry for %s:\n%s", messageID, list)
	}
	text := run(t, root, nil, "journalctl", "--root="+root, "--dump-catalog", messageID)
	for _, field := range []string{
		"PRIORITY", "AARSM_VERDICT", "AARSM_ACTIONS", "AARSM_ACTION_DETAILS", "AARSM_POLICY", "AARSM_RULES",
		"AARSM_VIOLATIONS", "AARSM_PID", "AARSM_COMM", "AARSM_EXE", "AARSM_UNIT", "AARSM_CGROUP",
		"AARSM_CGROUP_ID", "AARSM_DEST", "AARSM_PEER", "AARSM_RECIPIENTS", "AARSM_LATENCY_US",
	} {
		if !regexp.MustCompile(`(?m)^  ` + field + ` `).MatchString(text) {
			t.Errorf("catalog entry does not explain %s", field)
		}
	}
}

// TestReproducible builds everything twice, binary included, and wants the
// same bytes.
func TestReproducible(t *testing.T) {
	requireRoot(t)
	first := releasePackages(t)
	second := makePackages(t, repoRoot, filepath.Join(workDir, "release-again"), "PKG_VERSION=1.0.0", sourceDateEpoch)
	for _, pair := range [][2]string{{first.binary, second.binary}, {first.deb, second.deb}, {first.rpm, second.rpm}} {
		a, b := sha256File(t, pair[0]), sha256File(t, pair[1])
		if a != b {
			t.Errorf("%s differs between two builds: %s %s", filepath.Base(pair[0]), a, b)
		} else {
			t.Logf("%s sha256 %s", filepath.Base(pair[0]), a)
		}
	}
}

func TestLintian(t *testing.T) {
	requireRoot(t)
	requireTool(t, "lintian", "lintian")
	p := releasePackages(t)
	out, err := tryRun(workDir, nil, "lintian", "--info", "--display-experimental", p.deb)
	t.Logf("lintian:\n%s", out)
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "E: ") {
			t.Errorf("lintian error: %s", l)
		}
	}
	if err != nil && !t.Failed() {
		t.Errorf("lintian: %v", err)
	}
}

func TestRPM(t *testing.T) {
	requireRoot(t)
	requireTool(t, "rpm", "rpm")
	p := releasePackages(t)

	list := run(t, workDir, nil, "rpm", "-qpil", p.rpm)
	for _, f := range []string{
		"/usr/bin/aarsm", "/usr/lib/systemd/system/aarsm.service", "/usr/lib/systemd/catalog/aarsm.catalog",
		"/usr/lib/tmpfiles.d/aarsm.conf", "/etc/aarsm/policy.d/default.hcl", "/usr/share/doc/aarsm/copyright",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(f) + `$`).MatchString(list) {
			t.Errorf("rpm -qpil: %s missing:\n%s", f, list)
		}
	}
	scripts := run(t, workDir, nil, "rpm", "-qp", "--scripts", p.rpm)
	for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"} {
		if !strings.Contains(scripts, s) {
			t.Errorf("rpm -qp --scripts: no %s:\n%s", s, scripts)
		}
	}
	flags := run(t, workDir, nil, "rpm", "-qp", "--qf", `[%{FILEFLAGS:fflags} %{FILENAMES}\n]`, p.rpm)
	if !regexp.MustCompile(`(?m)^c\S*n\S* /etc/aarsm/policy\.d/default\.hcl$`).MatchString(flags) {
		t.Errorf("default.hcl is not %%config(noreplace):\n%s", flags)
	}

	// Install, upgrade (over an edited configuration) and remove, in a copy
	// of a Debian root where systemd does not run: the scriptlets must cope.
	root := scratchRoot(t)
	rpmIn := func(args ...string) string {
		return run(t, workDir, nil, "rpm", append([]string{"--root", root, "--dbpath", "/var/lib/rpm"}, args...)...)
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants/aarsm.service")
	policy := filepath.Join(root, "etc/aarsm/policy.d/default.hcl")

	t.Log(rpmIn("-i", "--nodeps", p.rpm))
	for _, f := range []string{"usr/bin/aarsm", "usr/lib/systemd/system/aarsm.service", "usr/lib/systemd/catalog/aarsm.catalog", "etc/aarsm/policy.d/default.hcl"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("after rpm -i: %v", err)
		}
	}
	if _, err := os.Lstat(wants); err != nil {
		t.Errorf("after rpm -i the unit is not enabled (Debian's presets enable it): %v", err)
	}
	if cat := run(t, workDir, nil, "journalctl", "--root="+root, "--list-catalog"); !strings.Contains(cat, messageID) {
		t.Errorf("after rpm -i the catalog database has no %s", messageID)
	}

	appendLine(t, policy, "# edited by the administrator")
	v2 := releasePackagesV2(t)
	t.Log(rpmIn("-U", "--nodeps", v2.rpm))
	if data, _ := os.ReadFile(policy); !strings.Contains(string(data), "# edited by the administrator") {
		t.Errorf("rpm -U replaced the edited %s", policy)
	}
	if _, err := os.Stat(policy + ".rpmnew"); err != nil {
		t.Errorf("rpm -U kept the edit but wrote no .rpmnew: %v", err)
	}
	if _, err := os.Lstat(wants); err != nil {
		t.Errorf("rpm -U disabled the unit: %v", err)
	}

	t.Log(rpmIn("-e", "aarsm"))
	if _, err := os.Lstat(wants); err == nil {
		t.Errorf("rpm -e left the unit enabled")
	}
	if _, err := os.Stat(filepath.Join(root, "usr/bin/aarsm")); err == nil {
		t.Errorf("rpm -e left /usr/bin/aarsm")
	}
}

// TestDebOffline installs and purges the .deb with dpkg in a chroot, where
// systemd does not run (an image build): enabling must work, starting must
// not be tried.
func TestDebOffline(t *testing.T) {
	requireRoot(t)
	p := releasePackages(t)
	root := scratchRoot(t)
	copyFile(t, p.deb, filepath.Join(root, "tmp/aarsm.deb"))
	run(t, workDir, nil, "chroot", root, "dpkg", "-i", "/tmp/aarsm.deb")
	if _, err := os.Lstat(filepath.Join(root, "etc/systemd/system/multi-user.target.wants/aarsm.service")); err != nil {
		t.Errorf("dpkg -i in a chroot did not enable the unit: %v", err)
	}
	run(t, workDir, nil, "chroot", root, "dpkg", "--purge", "aarsm")
	for _, f := range []string{"etc/systemd/system/multi-user.target.wants/aarsm.service", "etc/aarsm", "usr/bin/aarsm"} {
		if _, err := os.Lstat(filepath.Join(root, f)); err == nil {
			t.Errorf("dpkg --purge left /%s", f)
		}
	}
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// scratchRoot returns a writable copy of the cached Debian root: an overlay
// mount, removed when the test ends, so the cache stays untouched.
func scratchRoot(t *testing.T) string {
	t.Helper()
	lower := debianRoot(t)
	dir := t.TempDir()
	upper, work, merged := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "root")
	for _, d := range []string{upper, work, merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := syscall.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay on %s: %v", merged, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(merged, 0); err != nil {
			t.Errorf("umount %s: %v", merged, err)
		}
	})
	return merged
}
