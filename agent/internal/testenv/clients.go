package testenv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	curlHint    = "apt-get install -y curl"
	pythonHint  = "apt-get install -y python3 (or put a python3 with the ssl module on PATH)"
	nodeHint    = "apt-get install -y nodejs"
	opensslHint = "apt-get install -y openssl"
	shHint      = "apt-get install -y dash"
)

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// wrapWait turns argv into a command that prints READY, waits for a line
// on stdin and then execs argv (with stdin from stdinFile when not "").
func wrapWait(t testing.TB, stdinFile string, argv []string) *exec.Cmd {
	t.Helper()
	sh := requireBinary(t, "sh", shHint)
	args := append([]string{"-c", waitWrapper, "testenv-wait", stdinFile}, argv...)
	return exec.Command(sh, args...)
}

// Curl returns an unstarted curl command that sends req to url+req.Path
// with --http1.1, verifying the server with ca. The body goes with
// --data-binary @file; Chunked adds "Transfer-Encoding: chunked", Gzip
// compresses the file and adds "Content-Encoding: gzip". curl prints the
// response body on stdout and exits non-zero on HTTP errors (--fail).
// curl (7.88) writes request line, headers and body with one SSL_write
// for bodies up to 64 KiB; for bodies over 1 MiB it sends
// "Expect: 100-continue" (the Server answers it), writes the head alone and
// then the body in 64 KiB SSL_writes.
func Curl(t testing.TB, ca *CA, url string, req Request) *exec.Cmd {
	t.Helper()
	bin := requireBinary(t, "curl", curlHint)
	dir := stateDir(t, "curl-")
	args := []string{bin, "-q", "--silent", "--show-error", "--fail", "--http1.1",
		"--noproxy", "*", "--max-time", "60", "--cacert", ca.CAFile}
	if m := req.method(); m == "HEAD" {
		args = append(args, "--head")
	} else {
		args = append(args, "-X", m)
	}
	for _, h := range req.sortedHeaders() {
		// "Name:" removes a header curl adds itself; "Name;" would send it empty.
		hdr := h[0] + ": " + h[1]
		if h[1] == "" {
			hdr = h[0] + ":"
		}
		args = append(args, "-H", hdr)
	}
	if req.Chunked {
		args = append(args, "-H", "Transfer-Encoding: chunked")
	}
	if req.Gzip && len(req.Body) > 0 {
		args = append(args, "-H", "Content-Encoding: gzip")
	}
	if f := req.writeBodyFile(t, dir); f != "" {
		args = append(args, "--data-binary", "@"+f)
	}
	args = append(args, "--url", joinURL(url, req.path()))

	var cmd *exec.Cmd
	if req.WaitForStdinLine {
		cmd = wrapWait(t, "", args)
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	killOnCleanup(t, cmd)
	return cmd
}

// scriptConfig is the JSON config of the python and node clients.
type scriptConfig struct {
	URL       string      `json:"url"`
	Method    string      `json:"method"`
	Headers   [][2]string `json:"headers"`
	BodyFile  string      `json:"body_file"`
	Chunked   bool        `json:"chunked"`
	ChunkSize int         `json:"chunk_size"`
	CAFile    string      `json:"cafile"`
	Wait      bool        `json:"wait"`
	// Set only for PythonInMountNS.
	ExpectLibPath  string `json:"expect_lib_path,omitempty"`
	ExpectLibInode uint64 `json:"expect_lib_inode,omitempty"`
}

func newScriptConfig(t testing.TB, ca *CA, url string, req Request, dir string) scriptConfig {
	t.Helper()
	headers := req.sortedHeaders()
	if req.Gzip && len(req.Body) > 0 {
		headers = append(headers, [2]string{"Content-Encoding", "gzip"})
	}
	return scriptConfig{
		URL:       joinURL(url, req.path()),
		Method:    req.method(),
		Headers:   headers,
		BodyFile:  req.writeBodyFile(t, dir),
		Chunked:   req.Chunked,
		ChunkSize: req.chunkSize(),
		CAFile:    ca.CAFile,
		Wait:      req.WaitForStdinLine,
	}
}

func writeScript(t testing.TB, dir, name, script string, cfg scriptConfig) (scriptPath, cfgPath string) {
	t.Helper()
	scriptPath = filepath.Join(dir, name)
	cfgPath = filepath.Join(dir, "config.json")
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("testenv: marshal client config: %v", err)
	}
	if err := writeFile(scriptPath, []byte(script)); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := writeFile(cfgPath, js); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return scriptPath, cfgPath
}

// pythonInfo describes the python3 found in PATH.
type pythonInfo struct {
	// Executable is sys.executable: the real interpreter, not a pyenv
	// shim, so the started process is python itself.
	Executable string
	// SSLModule is the file that links libssl: _ssl's extension module,
	// or the interpreter when _ssl is built in.
	SSLModule string
}

func findPython(t testing.TB) pythonInfo {
	t.Helper()
	bin := requireBinary(t, "python3", pythonHint)
	out, err := exec.Command(bin, "-c",
		"import sys, _ssl; print(sys.executable); print(getattr(_ssl, '__file__', sys.executable))").Output()
	if err != nil {
		t.Fatalf("testenv: python3 cannot import its ssl module (%v); install it with: %s", withStderr(err), pythonHint)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[0] == "" {
		t.Fatalf("testenv: unexpected output from python3: %q", out)
	}
	return pythonInfo{Executable: lines[0], SSLModule: lines[1]}
}

func withStderr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(ee.Stderr))
	}
	return err
}

// Python returns an unstarted python3 command (the interpreter behind the
// python3 in PATH, resolved through shims such as pyenv's so that the
// process is python itself) that sends req with urllib.request over an ssl
// context whose only trust anchor is the test CA. Chunked bodies are sent
// as an iterator of ChunkSize pieces, which makes http.client frame them.
// python prints the response body on stdout and exits 22 on HTTP errors.
// python's ssl module calls SSL_write_ex (not SSL_write): one call for the
// head and one for the body; chunked bodies take one call per chunk
// (size line, data and CRLF together) plus one for "0\r\n\r\n".
func Python(t testing.TB, ca *CA, url string, req Request) *exec.Cmd {
	t.Helper()
	py := findPython(t)
	dir := stateDir(t, "python-")
	script, cfg := writeScript(t, dir, "client.py", pythonClient, newScriptConfig(t, ca, url, req, dir))
	cmd := exec.Command(py.Executable, script, cfg)
	killOnCleanup(t, cmd)
	return cmd
}

// Node returns an unstarted node command that sends req with the https
// module (ca option, agent: false). Node links OpenSSL statically: its
// SSL_write lives in the node binary, not in libssl.so. Node prints the
// response body on stdout and exits 22 on HTTP errors.
// Node writes head and body with one SSL_write, but with agent: false it
// calls SSL_write before the handshake has finished: the same buffer is
// passed to SSL_write three times, the first two returning -1, so a probe
// must look at the return value.
func Node(t testing.TB, ca *CA, url string, req Request) *exec.Cmd {
	t.Helper()
	bin := requireBinary(t, "node", nodeHint)
	dir := stateDir(t, "node-")
	script, cfg := writeScript(t, dir, "client.js", nodeClient, newScriptConfig(t, ca, url, req, dir))
	cmd := exec.Command(bin, script, cfg)
	killOnCleanup(t, cmd)
	return cmd
}

// OpenSSL returns an unstarted "openssl s_client -quiet" command that
// connects to addr (host:port), verifies it with ca (chain and IP/host
// name, failing on error), writes raw to the connection and prints what
// the server sends until the server closes the connection, then exits.
// raw is fed on stdin; do not replace cmd.Stdin. s_client writes what it
// reads from stdin with one SSL_write per read, and also calls SSL_write
// with length 0 (returning 0) before and after.
func OpenSSL(t testing.TB, ca *CA, addr string, raw []byte) *exec.Cmd {
	t.Helper()
	argv := openSSLArgv(t, ca, addr)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(raw)
	killOnCleanup(t, cmd)
	return cmd
}

// OpenSSLWaitForStdinLine is OpenSSL with the go-signal protocol of
// Request.WaitForStdinLine: a shell prints "READY <pid>", waits for a line
// on stdin and then execs openssl (same PID) with raw on stdin. libssl is
// mapped only after the go line.
func OpenSSLWaitForStdinLine(t testing.TB, ca *CA, addr string, raw []byte) *exec.Cmd {
	t.Helper()
	argv := openSSLArgv(t, ca, addr)
	f := filepath.Join(stateDir(t, "openssl-"), "request")
	if err := writeFile(f, raw); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := wrapWait(t, f, argv)
	killOnCleanup(t, cmd)
	return cmd
}

func openSSLArgv(t testing.TB, ca *CA, addr string) []string {
	t.Helper()
	bin := requireBinary(t, "openssl", opensslHint)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("testenv: bad address %q: %v", addr, err)
	}
	argv := []string{bin, "s_client", "-connect", addr, "-CAfile", ca.CAFile,
		"-verify_return_error", "-quiet"}
	if net.ParseIP(host) != nil {
		argv = append(argv, "-verify_ip", host)
	} else {
		argv = append(argv, "-verify_hostname", host, "-servername", host)
	}
	return argv
}

// Gate drives a client started with Request.WaitForStdinLine (or
// OpenSSLWaitForStdinLine): it owns the command's stdin and stdout.
type Gate struct {
	stdinR, stdinW *os.File

	mu     sync.Mutex
	out    bytes.Buffer
	pid    int
	err    error
	readyC chan struct{}
	once   sync.Once
}

// NewGate wires cmd's stdin to a pipe and its stdout to a buffer. Call it
// before the command is started (by cmd.Start or Cgroup.Start).
func NewGate(t testing.TB, cmd *exec.Cmd) *Gate {
	t.Helper()
	if cmd.Process != nil {
		t.Fatalf("testenv: NewGate: command already started")
	}
	if cmd.Stdout != nil || cmd.Stdin != nil {
		t.Fatalf("testenv: NewGate: command stdin or stdout already set (use a WaitForStdinLine client)")
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatalf("testenv: create stdin pipe: %v", err)
	}
	g := &Gate{stdinR: r, stdinW: w, readyC: make(chan struct{})}
	cmd.Stdin = r
	cmd.Stdout = (*gateWriter)(g)
	t.Cleanup(func() {
		_ = r.Close()
		_ = w.Close()
	})
	return g
}

type gateWriter Gate

func (w *gateWriter) Write(p []byte) (int, error) {
	g := (*Gate)(w)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.out.Write(p)
	if g.pid == 0 && g.err == nil {
		b := g.out.Bytes()
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line := string(b[:i])
			pid, err := strconv.Atoi(strings.TrimPrefix(line, "READY "))
			switch {
			case !strings.HasPrefix(line, "READY ") || err != nil || pid <= 0:
				g.err = fmt.Errorf("first stdout line is %q, want \"READY <pid>\"", line)
			default:
				g.pid = pid
			}
			g.once.Do(func() { close(g.readyC) })
		}
	}
	return len(p), nil
}

// Ready waits until the client printed "READY <pid>" and returns the pid;
// it fails the test after timeout or on a malformed line.
func (g *Gate) Ready(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-g.readyC:
	case <-time.After(timeout):
		t.Fatalf("testenv: client not READY within %v; stdout so far: %q", timeout, g.rawOutput())
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		t.Fatalf("testenv: %v", g.err)
	}
	return g.pid
}

// Go sends the go line; the client then connects and sends its request.
func (g *Gate) Go(t testing.TB) {
	t.Helper()
	if _, err := g.stdinW.Write([]byte("go\n")); err != nil {
		t.Fatalf("testenv: send go line: %v", err)
	}
	if err := g.stdinW.Close(); err != nil {
		t.Fatalf("testenv: close stdin pipe: %v", err)
	}
}

// Stdout returns what the client printed after the READY line (the
// response body for curl, python and node; everything the server sent for
// openssl). Complete once cmd.Wait has returned.
func (g *Gate) Stdout() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := g.out.Bytes()
	if g.pid != 0 {
		b = b[bytes.IndexByte(b, '\n')+1:]
	}
	return bytes.Clone(b)
}

func (g *Gate) rawOutput() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return bytes.Clone(g.out.Bytes())
}
