// Package testenv is the end-to-end test harness for AARSM: it runs real
// TLS servers on loopback (an HTTPS server and an SMTPS sink, both recording
// what they receive) and builds commands for real TLS clients (curl, python3,
// node, openssl s_client) that talk to them while verifying the server with
// a per-test CA. It also creates cgroup v2 directories to put those clients
// in, and can run python in a private mount namespace where libssl is a copy
// with a different inode.
//
// Every helper takes a testing.TB, keeps its files under t.TempDir() and
// undoes what it did with t.Cleanup: listeners are closed, processes started
// from returned commands are killed by PID, cgroups are emptied (by PID) and
// removed. Missing binaries are a setup error and fail the test with an
// install hint, and so does a test that needs root run without it.
//
// Under -short (go test -short, make test-short) every test that needs
// root, the kernel's eBPF or a real client is skipped instead, saying why
// (RequireRoot, SkipShort, and the client commands): what runs is the
// pure tests, without privileges.
package testenv

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Request describes the single HTTP/1.1 request a client command sends.
type Request struct {
	// Method is the HTTP method; empty means GET without a body and POST
	// with one.
	Method string
	// Path is the request target including the query, e.g. "/v1/x?a=b";
	// empty means "/".
	Path string
	// Header holds extra request headers. For curl an empty value removes a
	// header curl would add by itself (curl's "-H 'Name:'" syntax), e.g.
	// {"Expect": ""} suppresses "Expect: 100-continue".
	Header map[string]string
	// Body is the uncompressed request body; empty means no body.
	Body []byte
	// Chunked sends the body with "Transfer-Encoding: chunked".
	Chunked bool
	// ChunkSize is the size of the chunks python and node write when
	// Chunked is set (default 4096). curl and openssl ignore it: curl
	// chunks by its own upload buffer.
	ChunkSize int
	// Gzip compresses Body with gzip before sending it and adds
	// "Content-Encoding: gzip". The server's Recorded.Body is then Body
	// again and Recorded.RawBody the compressed bytes (plus chunk framing).
	Gzip bool
	// WaitForStdinLine makes the client print "READY <pid>\n" on stdout
	// once it has loaded its TLS library and then wait for one line on
	// stdin before connecting. Use NewGate to drive it.
	WaitForStdinLine bool
}

const defaultChunkSize = 4096

func (r Request) method() string {
	if r.Method != "" {
		return r.Method
	}
	if len(r.Body) > 0 {
		return "POST"
	}
	return "GET"
}

func (r Request) path() string {
	if r.Path == "" {
		return "/"
	}
	return r.Path
}

func (r Request) chunkSize() int {
	if r.ChunkSize > 0 {
		return r.ChunkSize
	}
	return defaultChunkSize
}

// sortedHeaders returns the request headers in a deterministic order.
func (r Request) sortedHeaders() [][2]string {
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([][2]string, 0, len(keys))
	for _, k := range keys {
		out = append(out, [2]string{k, r.Header[k]})
	}
	return out
}

// WireBody returns the body bytes as the client puts them on the wire
// before any chunk framing: Body, gzip-compressed when Gzip is set.
// The compression is deterministic, so a test can compare it with
// Recorded.RawBody of a non-chunked request.
func (r Request) WireBody() ([]byte, error) {
	if !r.Gzip || len(r.Body) == 0 {
		return r.Body, nil
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(r.Body); err != nil {
		return nil, fmt.Errorf("gzip request body: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip request body: %w", err)
	}
	return buf.Bytes(), nil
}

// writeBodyFile writes the wire body into dir and returns its path, or ""
// when the request has no body.
func (r Request) writeBodyFile(t testing.TB, dir string) string {
	t.Helper()
	if len(r.Body) == 0 {
		return ""
	}
	body, err := r.WireBody()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p := filepath.Join(dir, "body")
	if err := os.WriteFile(p, body, 0o600); err != nil {
		t.Fatalf("testenv: write request body: %v", err)
	}
	return p
}

// joinURL appends the request path to a base URL such as
// "https://127.0.0.1:1234".
func joinURL(base, path string) string {
	return strings.TrimSuffix(base, "/") + path
}

// RequireRoot fails the test when not running as root: the end-to-end
// tests need root for eBPF, cgroups and mount namespaces. Under -short it
// skips the test instead, whoever runs it.
func RequireRoot(t testing.TB) {
	t.Helper()
	SkipShort(t, "needs root (eBPF, cgroups, namespaces)")
	if os.Geteuid() != 0 {
		t.Fatalf("testenv: this test must run as root (euid is %d); run it with sudo on the prepared test machine, or run the tests that need no root with go test -short", os.Geteuid())
	}
}

// SkipShort skips the test under -short, saying why: -short runs only the
// tests that need neither root nor the kernel's eBPF nor a real client.
func SkipShort(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("skipped under -short: %s", why)
	}
}

// requireBinary resolves name in PATH and fails the test with an install
// hint when it is missing. Under -short it skips the test: it runs a real
// program.
func requireBinary(t testing.TB, name, hint string) string {
	t.Helper()
	SkipShort(t, "runs "+name)
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("testenv: %s is missing (%v); install it with: %s", name, err, hint)
	}
	return p
}

// killOnCleanup kills the command's process by PID when the test ends, if it
// was started. os.Process uses a pidfd on Linux, so a process that was
// already reaped is never confused with a reused PID.
func killOnCleanup(t testing.TB, cmd *exec.Cmd) {
	t.Cleanup(func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
		}
	})
}

// stateDir returns a fresh directory for one helper's files.
func stateDir(t testing.TB, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp(t.TempDir(), prefix)
	if err != nil {
		t.Fatalf("testenv: create temp dir: %v", err)
	}
	return d
}

// Eventually polls cond until it holds and returns when it first did.
// cond is a func() bool, or a func() (bool, string) that also says what it
// saw ("2 entries, want 3", "state T"). After timeout Eventually fails the
// test with what it waited for and the last thing cond saw.
//
// Polls are 1 ms apart, or as far apart as cond takes to run (at most
// 50 ms): a condition that runs a command is not run back to back.
func Eventually[C func() bool | func() (bool, string)](t testing.TB, timeout time.Duration, what string, cond C) time.Time {
	t.Helper()
	var poll func() (bool, string)
	switch c := any(cond).(type) {
	case func() bool:
		poll = func() (bool, string) { return c(), "" }
	case func() (bool, string):
		poll = c
	}
	deadline := time.Now().Add(timeout)
	for {
		start := time.Now()
		ok, state := poll()
		if ok {
			return time.Now()
		}
		if time.Now().After(deadline) {
			if state == "" {
				t.Fatalf("testenv: waited %v for %s", timeout, what)
			}
			t.Fatalf("testenv: waited %v for %s; last seen: %s", timeout, what, state)
		}
		time.Sleep(min(max(time.Since(start), time.Millisecond), 50*time.Millisecond))
	}
}

// ProcessState returns the state letter of pid in /proc (R, S, T, Z...),
// 0 when the process is gone.
func ProcessState(pid int) byte {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}
