package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// NPMTarball is one pinned npm package tarball: a real program the tests
// run (an executable inside the package), checked against the integrity
// the registry recorded when it was pinned.
type NPMTarball struct {
	Spec      string // name@version
	Integrity string // sha512-… as npm prints it
	Bin       string // the executable, relative to the package directory
}

// Real programs the tests fetch from npm. Bun links BoringSSL statically
// and is stripped; Claude Code's native package is a single-file
// executable built by Bun (a newer Bun than the one here: 1.4.6).
var (
	BunPackage = NPMTarball{
		Spec:      "@oven/bun-linux-x64@1.4.5",
		Integrity: "sha512-IWX9BELoGHAUtMonkeSaNaZwXzRk+oDw6Mk+HBFXd3KHYIBNBsIGRupMZPcgNoDbJpLu6gAJjIoIVPZtt1aJ1g==",
		Bin:       "bin/bun",
	}
	ClaudeCodePackage = NPMTarball{
		Spec:      "@anthropic-ai/claude-code-linux-x64@2.1.337",
		Integrity: "sha512-Wce/AADPVSsX4txVsbtajQ8dHgqUZo5JP6DskT91BUHEMsnzlO4oodZMXpc8skllMfIdj6s3sd6ClGQ6ebnOAg==",
		Bin:       "claude",
	}
	// Deno and Codex link rustls 0.23 statically (stripped; Codex is
	// a static-pie musl executable).
	DenoPackage = NPMTarball{
		Spec:      "@deno/linux-x64-glibc@2.9.6",
		Integrity: "sha512-3md4TKLCuzsLDmfOoC5KN7NAZaxSVkMgm64vg6foD00JBADCpYS2/5QqXfzgnP5ZQz3iLP9vBQJtEgc116OAoQ==",
		Bin:       "deno",
	}
	CodexPackage = NPMTarball{
		Spec:      "@openai/codex@0.171.0-linux-x64",
		Integrity: "sha512-l66NZkQgdk2C3pbcfULDz42yEUB581MVA6I+Y43Wp4OIqEy73HCdmZ0GTjeAHY2ycuH4N00d9VsLrwT1jxshTw==",
		Bin:       "vendor/x86_64-unknown-linux-musl/bin/codex",
	}
)

// NPMExecutable returns the path of p's executable, fetching the package
// with "npm pack" (npm checks the tarball against the registry's
// integrity; it is checked against the pinned one too) and unpacking it
// once per machine under <user cache dir>/aarsm-test/npm/pack/. Like
// NPMDeps: a file lock between test processes, a temporary directory
// renamed into place when complete. npm missing or the registry
// unreachable fails the test. Treat the directory as read-only.
func NPMExecutable(t testing.TB, p NPMTarball) string {
	t.Helper()
	requireBinary(t, "npm", npmHint)
	root, err := npmCacheRoot()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	dir, took, err := fetchTarball(filepath.Join(root, "pack"), p)
	if err != nil {
		t.Fatalf("testenv: fetch %s: %v", p.Spec, err)
	}
	if took > 0 {
		t.Logf("testenv: npm pack %s into %s took %v", p.Spec, dir, took.Round(time.Millisecond))
	}
	return filepath.Join(dir, "package", filepath.FromSlash(p.Bin))
}

func fetchTarball(root string, p NPMTarball) (dir string, took time.Duration, err error) {
	key := strings.NewReplacer("@", "", "/", "-").Replace(p.Spec)
	dir = filepath.Join(root, key)
	if npmComplete(dir) {
		return dir, 0, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", 0, fmt.Errorf("create cache directory: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(root, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", 0, fmt.Errorf("open lock file: %w", err)
	}
	defer lf.Close()
	if err := flockRetry(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return "", 0, fmt.Errorf("lock %s: %w", lf.Name(), err)
	}
	defer func() { _ = unix.Flock(int(lf.Fd()), unix.LOCK_UN) }()
	if npmComplete(dir) {
		return dir, 0, nil
	}
	stale, err := filepath.Glob(filepath.Join(root, key+".tmp-*"))
	if err != nil {
		return "", 0, fmt.Errorf("list stale downloads: %w", err)
	}
	for _, d := range append(stale, dir) {
		if err := os.RemoveAll(d); err != nil {
			return "", 0, fmt.Errorf("remove stale download: %w", err)
		}
	}
	tmp, err := os.MkdirTemp(root, key+".tmp-")
	if err != nil {
		return "", 0, fmt.Errorf("create download directory: %w", err)
	}
	defer func() { _ = os.RemoveAll(tmp) }() // a no-op once renamed
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), npmInstallTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "npm", "pack", "--json", "--pack-destination", tmp, "--no-update-notifier", "--loglevel=warn", p.Spec)
	cmd.Dir = tmp
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", 0, fmt.Errorf("npm pack: %w\n%s", err, stderr.Bytes())
	}
	var packed []struct {
		Filename  string `json:"filename"`
		Integrity string `json:"integrity"`
	}
	if err := json.Unmarshal(out.Bytes(), &packed); err != nil || len(packed) != 1 {
		return "", 0, fmt.Errorf("npm pack printed %q: %w", out.Bytes(), err)
	}
	if packed[0].Integrity != p.Integrity {
		return "", 0, fmt.Errorf("npm pack: integrity %s, pinned %s", packed[0].Integrity, p.Integrity)
	}
	tgz := filepath.Join(tmp, filepath.Base(packed[0].Filename))
	if out, err := exec.CommandContext(ctx, "tar", "-xzf", tgz, "-C", tmp).CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("unpack %s: %w\n%s", tgz, err, out)
	}
	if err := os.Remove(tgz); err != nil {
		return "", 0, fmt.Errorf("remove tarball: %w", err)
	}
	if err := writeFile(filepath.Join(tmp, npmCompleteMarker), []byte(p.Spec+"\n")); err != nil {
		return "", 0, err
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", 0, fmt.Errorf("chmod download directory: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", 0, fmt.Errorf("move the package into place: %w", err)
	}
	return dir, time.Since(start), nil
}

// bunClient is the Bun client: fetch() with the config of the other
// clients (scriptConfig); the CA comes through NODE_EXTRA_CA_CERTS, which
// Bun honours. With wait set it first prints "READY <pid>" and reads a
// line from stdin (NewGate).
const bunClient = `const cfg = JSON.parse(await Bun.file(process.argv[2]).text());
if (cfg.wait) {
  process.stdout.write("READY " + process.pid + "\n");
  const reader = Bun.stdin.stream().getReader();
  let seen = "";
  while (!seen.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) { console.error("testenv: stdin closed before the go line"); process.exit(2); }
    seen += new TextDecoder().decode(value);
  }
}
const headers = {};
for (const [k, v] of cfg.headers) headers[k] = v;
const body = cfg.body_file ? await Bun.file(cfg.body_file).bytes() : undefined;
const res = await fetch(cfg.url, { method: cfg.method, headers, body });
process.stdout.write(new Uint8Array(await res.arrayBuffer()));
if (res.status < 200 || res.status > 299) {
  console.error("testenv: HTTP status " + res.status);
  process.exit(22);
}
`

// Bun returns an unstarted command that sends req to url with Bun's
// fetch, from the real Bun fetched from npm (BunPackage), trusting ca.
// It prints the response body and exits 22 on HTTP errors.
func Bun(t testing.TB, ca *CA, url string, req Request) *exec.Cmd {
	t.Helper()
	bin := NPMExecutable(t, BunPackage)
	dir := stateDir(t, "bun-")
	script, cfg := writeScript(t, dir, "client.mjs", bunClient, newScriptConfig(t, ca, url, req, dir))
	cmd := exec.Command(bin, script, cfg)
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+ca.CAFile, "BUN_RUNTIME_TRANSPILER_CACHE_PATH=0", "DO_NOT_TRACK=1")
	killOnCleanup(t, cmd)
	return cmd
}

// ClaudeCode returns an unstarted command running Claude Code (its native
// package from npm: a Bun single-file executable) once, non-interactive
// ("-p"), with the prompt it reads from stdin (until EOF: a test can hold
// it there, once it has written something within 3 s, after which Claude
// Code gives up on stdin), against the Anthropic API at baseURL (a fake one on
// loopback: ANTHROPIC_BASE_URL), with a fake key, trusting ca, in a home
// directory of its own, with telemetry and updates off. It exits non-zero
// when the fake API's answer is not a model's.
func ClaudeCode(t testing.TB, ca *CA, baseURL string) *exec.Cmd {
	t.Helper()
	bin := NPMExecutable(t, ClaudeCodePackage)
	home := stateDir(t, "claude-")
	cmd := exec.Command(bin, "-p")
	cmd.Env = append(os.Environ(), "HOME="+home, "ANTHROPIC_BASE_URL="+baseURL, "ANTHROPIC_API_KEY=sk-ant-aarsm-test-fake",
		"NODE_EXTRA_CA_CERTS="+ca.CAFile, "DISABLE_TELEMETRY=1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", "DISABLE_AUTOUPDATER=1")
	killOnCleanup(t, cmd)
	return cmd
}

// denoClient is bunClient for Deno (Deno's APIs for files, stdin and
// stdout); the CA comes through DENO_CERT.
const denoClient = `const cfg = JSON.parse(await Deno.readTextFile(Deno.args[0]));
const enc = new TextEncoder();
async function out(b) { let n = 0; while (n < b.length) n += await Deno.stdout.write(b.subarray(n)); }
if (cfg.wait) {
  await out(enc.encode("READY " + Deno.pid + "\n"));
  const reader = Deno.stdin.readable.getReader();
  let seen = "";
  while (!seen.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) { console.error("testenv: stdin closed before the go line"); Deno.exit(2); }
    seen += new TextDecoder().decode(value);
  }
}
const headers = {};
for (const [k, v] of cfg.headers) headers[k] = v;
const body = cfg.body_file ? await Deno.readFile(cfg.body_file) : undefined;
const res = await fetch(cfg.url, { method: cfg.method, headers, body });
await out(new Uint8Array(await res.arrayBuffer()));
if (res.status < 200 || res.status > 299) {
  console.error("testenv: HTTP status " + res.status);
  Deno.exit(22);
}
`

// Deno returns an unstarted command that sends req to url with Deno's
// fetch (rustls, linked statically), from the real Deno fetched from npm
// (DenoPackage), trusting ca, with a Deno directory of its own. Like Bun.
func Deno(t testing.TB, ca *CA, url string, req Request) *exec.Cmd {
	t.Helper()
	bin := NPMExecutable(t, DenoPackage)
	dir := stateDir(t, "deno-")
	script, cfg := writeScript(t, dir, "client.mjs", denoClient, newScriptConfig(t, ca, url, req, dir))
	cmd := exec.Command(bin, "run", "--allow-all", "--no-config", "--no-lock", script, cfg)
	cmd.Env = append(os.Environ(), "DENO_CERT="+ca.CAFile, "DENO_DIR="+filepath.Join(dir, "deno-dir"), "DENO_NO_UPDATE_CHECK=1", "NO_COLOR=1")
	killOnCleanup(t, cmd)
	return cmd
}

// Codex returns an unstarted command running OpenAI's Codex CLI (its
// native package from npm: a static Rust executable, rustls) once,
// non-interactive ("exec"), with prompt, against the OpenAI API at
// baseURL (a fake one on loopback, ".../v1": the openai_base_url setting), with a
// fake key, trusting ca (SSL_CERT_FILE), in a home directory of its own.
// It exits non-zero when the fake API's answer is not a model's.
func Codex(t testing.TB, ca *CA, baseURL, prompt string) *exec.Cmd {
	t.Helper()
	bin := NPMExecutable(t, CodexPackage)
	home := stateDir(t, "codex-")
	if err := os.MkdirAll(filepath.Join(home, ".codex"), 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(bin, "exec", "--skip-git-repo-check", "--color", "never", "-c", fmt.Sprintf("openai_base_url=%q", baseURL), prompt)
	cmd.Dir = home
	cmd.Env = append(os.Environ(), "HOME="+home, "CODEX_HOME="+filepath.Join(home, ".codex"),
		"OPENAI_API_KEY=sk-aarsm-test-fake", "SSL_CERT_FILE="+ca.CAFile, "NO_COLOR=1")
	killOnCleanup(t, cmd)
	return cmd
}
