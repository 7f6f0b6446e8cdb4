// Package packagetest tests the aarsm packages: nfpm.yaml, the install
// scripts in packaging/scripts, systemd/aarsm.service and the journal
// catalog. The tests run as root with real tools (lintian, rpm, mmdebstrap,
// systemd-nspawn) and boot systemd only inside systemd-nspawn containers,
// never on the host's root. See systemd/README.md.
package packagetest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// messageID is the MESSAGE_ID of verdict entries (systemd/aarsm.catalog).
const messageID = "1e6d0debf976458f86720059eece6864"

var (
	repoRoot string // the module's root directory
	workDir  string // removed when the tests end
)

func TestMain(m *testing.M) {
	code := func() int {
		var err error
		repoRoot, err = findRepoRoot()
		if err != nil {
			fmt.Fprintln(os.Stderr, "packagetest:", err)
			return 1
		}
		workDir, err = os.MkdirTemp("", "aarsm-packaging-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "packagetest:", err)
			return 1
		}
		defer os.RemoveAll(workDir)
		return m.Run()
	}()
	os.Exit(code)
}

func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "nfpm.yaml")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no nfpm.yaml in any parent of the working directory")
		}
		dir = parent
	}
}

// requireRoot fails the test when not running as root (as
// testenv.RequireRoot does in the agent's packages, which this package
// cannot import); under -short it skips it: -short runs the tests that
// need no privileges.
func requireRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipped under -short: needs root (installs packages into scratch roots, boots containers)")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("this test must run as root (euid is %d): it installs packages into scratch roots and boots containers; go test -short runs the tests that need no root", os.Geteuid())
	}
}

// eventually polls cond until it holds and returns when it first did;
// after timeout it fails the test with what it waited for and the last
// thing cond saw. It is testenv.Eventually (agent/internal/testenv, which
// this package cannot import) for a func() (bool, string): polls 1 ms
// apart, or as far apart as cond takes to run, at most 50 ms.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		start := time.Now()
		ok, state := cond()
		if ok {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s; last seen: %s", timeout, what, state)
		}
		time.Sleep(min(max(time.Since(start), time.Millisecond), 50*time.Millisecond))
	}
}

// requireTool fails (it does not skip: CI must have it) when a command is
// missing, naming the Debian package that provides it.
func requireTool(t *testing.T, command, debianPackage string) {
	t.Helper()
	if _, err := exec.LookPath(command); err != nil {
		t.Fatalf("%s is not installed: apt-get install %s", command, debianPackage)
	}
}

// run runs a command in dir and returns its combined output; it fails the
// test, with the output, when the command fails.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	out, err := tryRun(dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

func tryRun(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.Stdin = nil
	err := cmd.Run()
	return out.String(), err
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// pkgSet is one build of the packages.
type pkgSet struct {
	deb, rpm, binary string
}

// makePackages runs "make -f packaging/packaging.mk packages" in tree with
// the given variables and returns what it built.
func makePackages(t *testing.T, tree, dist string, vars ...string) pkgSet {
	t.Helper()
	requireTool(t, "make", "make")
	args := append([]string{"-s", "-C", tree, "-f", "packaging/packaging.mk", "packages", "PKG_DIST=" + dist}, vars...)
	run(t, tree, nil, "make", args...)
	var p pkgSet
	debs, _ := filepath.Glob(filepath.Join(dist, "aarsm_*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(dist, "aarsm-*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("%s: want one .deb and one .rpm, have %v %v", dist, debs, rpms)
	}
	p.deb, p.rpm = debs[0], rpms[0]
	p.binary = filepath.Join(dist, "build", "aarsm")
	for _, v := range vars {
		if b, ok := strings.CutPrefix(v, "PKG_BINARY="); ok {
			p.binary = b
		}
	}
	return p
}

// once runs a build at most once per test binary; a failed build fails every
// test that needs it.
type once struct {
	sync.Mutex
	done bool
	err  string
	val  pkgSet
}

func (o *once) get(t *testing.T, build func(t *testing.T) pkgSet) pkgSet {
	t.Helper()
	o.Lock()
	defer o.Unlock()
	if !o.done {
		o.done = true
		// Run the build in a subtest so its failure is reported here and
		// remembered for the other callers.
		var val pkgSet
		ok := t.Run("build", func(t *testing.T) { val = build(t) })
		if !ok {
			o.err = "the package build failed (see the first test that needed it)"
		}
		o.val = val
	}
	if o.err != "" {
		t.Fatal(o.err)
	}
	return o.val
}

// Sources of the commit, at a fixed time: the version and epoch are set so
// every build of the test is comparable.
var (
	releaseOnce   once
	releaseV2Once once
)

const sourceDateEpoch = "SOURCE_DATE_EPOCH=1767225600" // 2026-01-01

// releasePackages are built from the checkout with the real agent, version
// 1.0.0.
func releasePackages(t *testing.T) pkgSet {
	return releaseOnce.get(t, func(t *testing.T) pkgSet {
		return makePackages(t, repoRoot, filepath.Join(workDir, "release"), "PKG_VERSION=1.0.0", sourceDateEpoch)
	})
}

// releasePackagesV2 are version 1.1.0 with the same agent and a changed
// default policy (see packagesV2): what an upgrade installs.
func releasePackagesV2(t *testing.T) pkgSet {
	bin := releasePackages(t).binary
	return releaseV2Once.get(t, func(t *testing.T) pkgSet {
		return packagesV2(t, bin, filepath.Join(workDir, "release-v2"))
	})
}

// packagesV2 builds version 1.1.0 of the packages with binary from a copy
// of the tree whose default policy changed, so that an upgrade meets an
// administrator's edit of the same configuration file.
func packagesV2(t *testing.T, binary, dist string) pkgSet {
	t.Helper()
	tree := dist + ".tree"
	for _, p := range []string{"nfpm.yaml", "packaging", "systemd", "hcl"} {
		run(t, repoRoot, nil, "mkdir", "-p", filepath.Dir(filepath.Join(tree, p)))
		run(t, repoRoot, nil, "cp", "-a", filepath.Join(repoRoot, p), filepath.Join(tree, p))
	}
	appendLine(t, filepath.Join(tree, "hcl", "policies", "default.hcl"), "# changed in version 1.1.0")
	return makePackages(t, tree, dist, "PKG_VERSION=1.1.0", "PKG_BINARY="+binary, sourceDateEpoch)
}

// copyFile copies src to dst, creating dst's directory.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
