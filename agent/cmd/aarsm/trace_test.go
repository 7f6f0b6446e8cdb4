package main

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// buildAarsm compiles the command into a temporary directory.
func buildAarsm(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "aarsm")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func TestVersionAndUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "aarsm ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "bogus"`) {
		t.Fatalf("unknown command: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"trace", "--pid", "abc"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `--pid "abc"`) {
		t.Fatalf("bad --pid: exit %d, %q", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"run", "--log-format", "xml"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--log-format") {
		t.Fatalf("bad --log-format: exit %d, %q", code, errb.String())
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitOutput(t testing.TB, what string, b *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q within 15s; got:\n%s", what, want, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The command a user runs first: one line per request, with -v the body.
func TestTraceCommand(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)

	var stdout, stderr syncBuffer
	cmd := exec.Command(bin, "trace", "-v", "--comm", "curl")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	waitOutput(t, "trace stderr", &stderr, "tracing TLS writes")

	cg := testenv.NewCgroup(t)
	req := testenv.Request{Method: "POST", Path: "/email/batch?trace-cli", Body: []byte(`{"Bcc":"phan@giftshop.club"}`)}
	curl := testenv.Curl(t, ca, srv.URL(), req)
	if err := cg.Start(curl); err != nil {
		t.Fatal(err)
	}
	if err := curl.Wait(); err != nil {
		t.Fatalf("curl: %v", err)
	}
	waitOutput(t, "trace stdout", &stdout, `{"Bcc":"phan@giftshop.club"}`)

	line := ""
	sc := bufio.NewScanner(strings.NewReader(stdout.String()))
	for sc.Scan() {
		if strings.Contains(sc.Text(), "/email/batch?trace-cli") {
			line = sc.Text()
			break
		}
	}
	for _, want := range []string{"pid=", "comm=curl", "POST", srv.Addr(), "/email/batch?trace-cli", "body=28B"} {
		if !strings.Contains(line, want) {
			t.Errorf("request line %q lacks %q", line, want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("trace exited with %v; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "trace stopped") {
		t.Errorf("no summary on stop:\n%s", stderr.String())
	}
}

func TestTraceFailsClearlyWithoutPrivileges(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	for d := filepath.Dir(bin); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Drop every capability: loading BPF must fail with a message, not a crash.
	cmd := exec.Command(bin, "trace")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("unprivileged trace: %v, want exit 1; stderr:\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(stderr.String(), "aarsm trace: ") || strings.Contains(stderr.String(), "panic") {
		t.Fatalf("unclear error:\n%s", stderr.String())
	}
}
