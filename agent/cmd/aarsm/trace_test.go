package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
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
	testenv.Eventually(t, 15*time.Second, fmt.Sprintf("%q in the %s", want, what), func() (bool, string) {
		out := b.String()
		return strings.Contains(out, want), "\n" + out
	})
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
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("unprivileged trace: %v, want exit 1; stderr:\n%s", err, stderr.String())
	}
	if !strings.HasPrefix(stderr.String(), "aarsm trace: ") || strings.Contains(stderr.String(), "panic") {
		t.Fatalf("unclear error:\n%s", stderr.String())
	}
}

// Without CAP_DAC_READ_SEARCH (the unit does not grant it), root cannot
// search a home directory of mode 0700 that another user owns: a node
// installed there (nvm, npm prefixes) is still probed, through
// /proc/PID/exe, and its plaintext seen.
func TestTraceProbesBinaryInPrivateHome(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v (apt-get install -y nodejs)", err)
	}
	const nobody = 65534
	// Not t.TempDir(): its directories are 0700, and the client runs as
	// nobody.
	base, err := os.MkdirTemp("", "aarsm-home-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(base, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(node)
	if err != nil {
		t.Fatal(err)
	}
	private := filepath.Join(home, "node")
	if err := os.WriteFile(private, data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{home, private} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)

	var stdout, stderr syncBuffer
	trace := exec.Command("setpriv", "--bounding-set=-dac_read_search,-dac_override", "--", bin, "trace", "-v", "--comm", "node")
	trace.Stdout, trace.Stderr = &stdout, &stderr
	if err := trace.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = trace.Process.Kill(); _ = trace.Wait() }()
	waitOutput(t, "trace stderr", &stderr, "tracing TLS writes")

	// The client waits for go before it connects: the trace must have
	// probed its executable first (trace never holds a process).
	gate := filepath.Join(base, "go")
	script := fmt.Sprintf(`const fs = require('fs'), https = require('https');
const wait = () => fs.existsSync(%q) ? send() : setTimeout(wait, 10);
const send = () => { const r = https.request(%q, {method: 'POST', rejectUnauthorized: false, agent: false}, (res) => { res.resume(); res.on('end', () => process.exit(0)); });
  r.on('error', (e) => { console.error(e.message); process.exit(1); }); r.end('private-home-marker'); };
wait();`, gate, srv.URL()+"/email?private-home")
	client := exec.Command("setpriv", "--reuid", fmt.Sprint(nobody), "--regid", fmt.Sprint(nobody), "--clear-groups", "--", private, "-e", script)
	var clientErr syncBuffer
	client.Stderr = &clientErr
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Process.Kill(); _ = client.Wait() }()
	waitOutput(t, "trace stderr", &stderr, fmt.Sprintf("path=/proc/%d/exe", client.Process.Pid))
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := client.Wait(); err != nil {
		t.Fatalf("node in the private home: %v: %s", err, clientErr.String())
	}
	waitOutput(t, "trace stdout", &stdout, "private-home-marker")
}

// trace -v hides credentials unless --show-secrets: a real curl request
// carrying an Authorization header, a Postmark token header and a body
// with a fake AWS key and Postmark token, seen by two tracers at once.
func TestTraceRedactsSecrets(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	const (
		bearer   = "tok_9fQ2xLrT7vKp3ZmW8nYb4HsJd6GcA1e"
		postmark = "5f1c8e2a-93b4-4d7e-a1c6-0b2f9e8d7c34"
		aws      = "AKIAQ3EGRTYPLMZK7VWD"
	)
	secrets := []string{bearer, postmark, aws}
	type tracer struct {
		cmd            *exec.Cmd
		stdout, stderr syncBuffer
	}
	start := func(extra ...string) *tracer {
		tr := &tracer{}
		tr.cmd = exec.Command(bin, append([]string{"trace", "-v", "--comm", "curl"}, extra...)...)
		tr.cmd.Stdout, tr.cmd.Stderr = &tr.stdout, &tr.stderr
		if err := tr.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tr.cmd.Process.Kill(); _ = tr.cmd.Wait() })
		waitOutput(t, "trace stderr", &tr.stderr, "tracing TLS writes")
		return tr
	}
	hidden, shown := start(), start("--show-secrets")

	cg := testenv.NewCgroup(t)
	req := testenv.Request{Method: "POST", Path: "/email?redact-test", Header: map[string]string{
		"Authorization": "Bearer " + bearer, "X-Postmark-Server-Token": postmark, "Content-Type": "application/json"},
		Body: []byte(`{"ServerToken":"` + postmark + `","TextBody":"our key is ` + aws + `","Subject":"redact-marker"}`)}
	curl := testenv.Curl(t, ca, srv.URL(), req)
	if err := cg.Start(curl); err != nil {
		t.Fatal(err)
	}
	if err := curl.Wait(); err != nil {
		t.Fatalf("curl: %v", err)
	}
	// Each record is written whole: once the marker is there, so is the
	// rest of the request.
	waitOutput(t, "trace stdout", &hidden.stdout, "redact-marker")
	waitOutput(t, "trace --show-secrets stdout", &shown.stdout, "redact-marker")
	out, outShown := hidden.stdout.String(), shown.stdout.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("trace -v shows %q:\n%s", s, out)
		}
		if !strings.Contains(outShown, s) {
			t.Errorf("trace -v --show-secrets does not show %q:\n%s", s, outShown)
		}
	}
	for _, want := range []string{"Authorization: Bearer [redacted:credential 35B]", "X-Postmark-Server-Token: [redacted:header 36B]",
		"[redacted:aws_access_key_id 20B]", `"ServerToken":"[redacted:secret_field 36B]"`} {
		if !strings.Contains(out, want) {
			t.Errorf("trace -v lacks %q:\n%s", want, out)
		}
	}
	t.Logf("trace -v:\n%s", grepLines(out, "redact"))
}
