package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mcpFixtures holds the MCP fixtures: the pinned npm dependencies
// (package.json and its lock file, which names no registry host: npm
// fetches from the one it is configured with and checks each tarball's
// integrity), the node MCP client, the postmark-mcp package's index.js
// and the Python MCP server. Only these files: a node_modules left in
// testdata by hand is not embedded.
//
//go:embed testdata/mcp/package.json testdata/mcp/package-lock.json testdata/mcp/client.mjs testdata/mcp/postmark-mcp/index.js testdata/mcp/python/server.py
var mcpFixtures embed.FS

const (
	npmHint = "apt-get install -y npm (Debian's nodejs package has no npm)"
	// npmCompleteMarker is written into node_modules once npm ci has
	// succeeded, before the directory is renamed into place.
	npmCompleteMarker = ".aarsm-complete"
	npmInstallTimeout = 10 * time.Minute
)

// NPMDeps returns a node_modules directory holding the pinned npm
// dependencies of the MCP fixtures (testdata/mcp/package-lock.json:
// @modelcontextprotocol/sdk, postmark, zod and theirs). They are installed
// once per machine and lock file, with "npm ci --ignore-scripts", into
// <user cache dir>/aarsm-test/npm/<hash of package.json and lock file>/;
// later calls, from any process, only check that it is there. Concurrent
// test processes take a file lock, and npm installs into a temporary
// directory that is renamed into place once complete, so a crash leaves
// nothing half-installed behind the name. Treat the directory as read-only.
//
// npm missing or the registry unreachable fails the test (it does not
// skip). A cold install downloads about 110 packages (34 MB unpacked).
func NPMDeps(t testing.TB) string {
	t.Helper()
	requireBinary(t, "npm", npmHint)
	pkg, lock, err := npmManifest()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	root, err := npmCacheRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	nm, took, err := installNPMDeps(root, pkg, lock)
	if err != nil {
		t.Fatalf("testenv: install the MCP fixtures' npm dependencies: %v", err)
	}
	if took > 0 {
		t.Logf("testenv: npm ci of the MCP fixtures into %s took %v", nm, took.Round(time.Millisecond))
	}
	return nm
}

func npmManifest() (pkg, lock []byte, err error) {
	pkg, err = mcpFixtures.ReadFile("testdata/mcp/package.json")
	if err != nil {
		return nil, nil, fmt.Errorf("read embedded package.json: %w", err)
	}
	lock, err = mcpFixtures.ReadFile("testdata/mcp/package-lock.json")
	if err != nil {
		return nil, nil, fmt.Errorf("read embedded package-lock.json: %w", err)
	}
	return pkg, lock, nil
}

// npmCacheRoot is <user cache dir>/aarsm-test/npm ($XDG_CACHE_HOME or
// ~/.cache), or a per-user directory under the temporary directory when
// there is no home.
func npmCacheRoot() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = filepath.Join(os.TempDir(), fmt.Sprintf("aarsm-test-cache-%d", os.Getuid()))
	}
	root := filepath.Join(base, "aarsm-test", "npm")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("create npm cache directory: %w", err)
	}
	return root, nil
}

// npmKey names an installation: the hash of package.json and the lock.
func npmKey(pkg, lock []byte) string {
	h := sha256.New()
	h.Write(pkg)
	h.Write([]byte{0})
	h.Write(lock)
	return hex.EncodeToString(h.Sum(nil))[:24]
}

// installNPMDeps returns root/<key>/node_modules, running npm ci first
// when it is not complete yet; took is how long npm ci ran (0 when the
// installation was there).
func installNPMDeps(root string, pkg, lock []byte) (nm string, took time.Duration, err error) {
	key := npmKey(pkg, lock)
	final := filepath.Join(root, key)
	nm = filepath.Join(final, "node_modules")
	if npmComplete(nm) {
		return nm, 0, nil
	}

	// One installer at a time, across processes (flock locks belong to the
	// open file, so two tests of one process exclude each other too).
	lf, err := os.OpenFile(filepath.Join(root, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", 0, fmt.Errorf("open lock file: %w", err)
	}
	defer lf.Close()
	if err := flockRetry(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return "", 0, fmt.Errorf("lock %s: %w", lf.Name(), err)
	}
	defer func() { _ = unix.Flock(int(lf.Fd()), unix.LOCK_UN) }()
	if npmComplete(nm) {
		return nm, 0, nil
	}

	// Whatever else is there under our key was left by an installer that
	// died: we hold the lock.
	stale, err := filepath.Glob(filepath.Join(root, key+".tmp-*"))
	if err != nil {
		return "", 0, fmt.Errorf("list stale installs: %w", err)
	}
	for _, d := range append(stale, final) {
		if err := os.RemoveAll(d); err != nil {
			return "", 0, fmt.Errorf("remove stale install: %w", err)
		}
	}

	tmp, err := os.MkdirTemp(root, key+".tmp-")
	if err != nil {
		return "", 0, fmt.Errorf("create install directory: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // a no-op once renamed
	if err := writeFile(filepath.Join(tmp, "package.json"), pkg); err != nil {
		return "", 0, err
	}
	if err := writeFile(filepath.Join(tmp, "package-lock.json"), lock); err != nil {
		return "", 0, err
	}
	start := time.Now()
	if err := runNPMCI(tmp); err != nil {
		return "", 0, err
	}
	took = time.Since(start)
	if err := writeFile(filepath.Join(tmp, "node_modules", npmCompleteMarker), []byte(key+"\n")); err != nil {
		return "", 0, err
	}
	// A temporary directory is created 0700; the installation is read by
	// whoever runs the fixtures.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", 0, fmt.Errorf("chmod install directory: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return "", 0, fmt.Errorf("move the installation into place: %w", err)
	}
	return nm, took, nil
}

func npmComplete(nm string) bool {
	_, err := os.Stat(filepath.Join(nm, npmCompleteMarker))
	return err == nil
}

func flockRetry(fd, how int) error {
	for {
		err := unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// runNPMCI runs npm ci in dir, with a bounded time and npm's own cache.
func runNPMCI(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), npmInstallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund",
		"--no-update-notifier", "--loglevel=warn")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "npm_config_update_notifier=false", "npm_config_fund=false", "npm_config_audit=false")
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if ctx.Err() != nil {
		return fmt.Errorf("npm ci did not finish within %v (is the npm registry reachable?): %w\n%s", npmInstallTimeout, ctx.Err(), tail(out.Bytes(), 4096))
	}
	if err != nil {
		return fmt.Errorf("npm ci failed (is the npm registry reachable? see npm's output): %w\n%s", err, tail(out.Bytes(), 4096))
	}
	return nil
}

// tail returns the last n bytes of b as a string.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimSpace(string(b))
}

// linkNodeModules fills dir (a node_modules directory) with one symbolic
// link per package of the shared installation nm, the layout npm's hoisting
// gives: a script anywhere below dir's parent, or a package installed in
// dir, resolves its imports there (ESM ignores NODE_PATH).
func linkNodeModules(nm, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create node_modules: %w", err)
	}
	ents, err := os.ReadDir(nm)
	if err != nil {
		return fmt.Errorf("read shared node_modules: %w", err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := os.Symlink(filepath.Join(nm, e.Name()), filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("link %s: %w", e.Name(), err)
		}
	}
	return nil
}
