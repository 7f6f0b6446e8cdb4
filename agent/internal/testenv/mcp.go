package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	// MCPDefaultSender is the DEFAULT_SENDER_EMAIL of the fixture servers.
	MCPDefaultSender = "assistant@company.example"
	// MCPDefaultToken is their POSTMARK_SERVER_TOKEN.
	MCPDefaultToken = "aarsm-test-server-token"

	mcpDefaultTimeout = 2 * time.Minute
)

// MCPOptions configures an MCP session: a node MCP client (an "AI app" on
// the official SDK) driving one postmark-mcp server.
type MCPOptions struct {
	// Calls are the arguments of each send_email call, made in order on
	// one session (e.g. {"to": "a@b.example", "subject": "s",
	// "textBody": "t"}; optional "cc", "bcc", "from", "htmlBody", "tag").
	Calls []map[string]any
	// Tool is the tool called; empty means send_email.
	Tool string
	// Wait makes the client wait, once it has initialized the session and
	// listed the tools (the server is running and known), for MCPSession.Go
	// before the first call.
	Wait bool
	// Start starts each process of the session (the client; in HTTP mode
	// the server first), e.g. a Cgroup's Start to put them in a test
	// cgroup. nil means (*exec.Cmd).Start. A stdio server is the client's
	// child and so starts where the client is.
	Start func(*exec.Cmd) error
	// Sender and Token are the server's DEFAULT_SENDER_EMAIL and
	// POSTMARK_SERVER_TOKEN; empty means MCPDefaultSender, MCPDefaultToken.
	Sender, Token string
	// Timeout bounds the client's whole run (it exits 124 past it); zero
	// means two minutes.
	Timeout time.Duration
	// HTTP2 makes the Python server's httpx offer h2 (MailAPI prefers it).
	// The node server's postmark client (axios on node's https) speaks
	// HTTP/1.1 only.
	HTTP2 bool
}

// MCPSession is a running MCP client and its server. Every process it
// started is killed by PID when the test ends.
type MCPSession struct {
	// Client is the node MCP client.
	Client *exec.Cmd
	// Server is the server process in HTTP mode (nil for stdio, where the
	// client spawns the server: see MCPReady.ServerPID).
	Server *exec.Cmd
	// URL is the server's MCP endpoint in HTTP mode, e.g.
	// http://127.0.0.1:PORT/mcp.
	URL string

	pkg    *MCPPackage
	stdinW *os.File
	out    *lineLog
	stderr *lineLog
	exited chan struct{}
	srvOut *lineLog
	srvErr *lineLog
}

// MCPReady is what the client reports once the session is initialized.
type MCPReady struct {
	ClientPID int
	// ServerPID is the server process: the client's child over stdio, the
	// HTTP server's process otherwise.
	ServerPID       int
	ServerName      string // serverInfo.name of initialize
	ServerVersion   string // serverInfo.version
	ProtocolVersion string // negotiated
	Tools           []string
}

// MCPToolResult is the result of one tools/call.
type MCPToolResult struct {
	// IsError is the result's isError: the tool failed (e.g. the API
	// request failed or was cut).
	IsError bool
	// Text is the text content, joined with newlines.
	Text string
	// Raw is the CallToolResult as received.
	Raw json.RawMessage
}

// MCPOutcome is how a client run ended.
type MCPOutcome struct {
	// Results holds one entry per call that got a result, in order.
	Results []MCPToolResult
	// Error is the client's error line when the session failed (the
	// server died, say), "" otherwise.
	Error string
	// ExitCode is the client's exit status (124: it timed out; -1: killed
	// by a signal).
	ExitCode int
	// Stderr is what the client and a stdio server wrote on stderr.
	Stderr string
}

// MCPStdio starts a session in which the node MCP client spawns the
// server of pkg over stdio ("node <pkg>/index.js" or "python3
// <pkg>/server.py") with the API of the server pointed at api (trusting ca),
// initializes it, lists the tools and calls the tool with each of
// opts.Calls.
//
// For example, a server known to the agent before its tool call:
//
//	ca := testenv.NewCA(t)
//	api := testenv.NewMailAPI(t, ca)
//	cg := testenv.NewCgroup(t)
//	pkg := testenv.InstallNodeMCP(t, testenv.BackdooredMCP("archive@partner.example"))
//	s := testenv.MCPStdio(t, ca, api, pkg, testenv.MCPOptions{
//		Calls: []map[string]any{{"to": "alice@partner.example", "subject": "Hi", "textBody": "Hello"}},
//		Wait:  true, Start: cg.Start,
//	})
//	ready := s.Ready(t, time.Minute) // initialized, tools listed; ready.ServerPID runs pkg.Script
//	// ... start the agent ...
//	s.Go(t)                         // tools/call now
//	out := s.Wait(t, time.Minute)   // out.Results[0].IsError when the mail was blocked
//	_ = api.Requests()              // what reached the fake Postmark API
func MCPStdio(t testing.TB, ca *CA, api *MailAPI, pkg *MCPPackage, opts MCPOptions) *MCPSession {
	t.Helper()
	cfg := pkg.clientConfig(opts)
	cfg.Transport = "stdio"
	cfg.Command = pkg.Interpreter
	cfg.Args = []string{pkg.Script}
	if pkg.Runtime == MCPGo {
		cfg.Args = nil // the server is the executable
	}
	cfg.Env = pkg.serverEnv(ca, api, opts)
	return startMCPClient(t, pkg, cfg, opts, nil)
}

// MCPHTTP starts the node server of pkg in streamable-HTTP mode on
// 127.0.0.1 (plain HTTP, "node <pkg>/index.js --http=127.0.0.1:0"), waits
// until it listens, then a session of the node MCP client with it (see
// MCPStdio). The Python server has no HTTP mode.
func MCPHTTP(t testing.TB, ca *CA, api *MailAPI, pkg *MCPPackage, opts MCPOptions) *MCPSession {
	t.Helper()
	if pkg.Runtime != MCPNode {
		t.Fatalf("testenv: MCPHTTP: the %s server has no HTTP mode", pkg.Runtime)
	}
	srv := exec.Command(pkg.Interpreter, pkg.Script, "--http=127.0.0.1:0")
	srv.Env = envList(pkg.serverEnv(ca, api, opts))
	srv.Dir = pkg.Root
	srvOut, srvErr := newLineLog(), newLineLog()
	srv.Stdout, srv.Stderr = srvOut, srvErr
	killOnCleanup(t, srv)
	if err := startWith(opts.Start, srv); err != nil {
		t.Fatalf("testenv: start MCP HTTP server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = srv.Wait()
		close(exited)
	}()
	line, ok := srvOut.waitLine(30*time.Second, exited, func(l string) bool { return strings.Contains(l, `"listening"`) })
	if !ok {
		t.Fatalf("testenv: MCP HTTP server did not listen within 30s; stdout %q, stderr %q", srvOut.String(), srvErr.String())
	}
	var l struct {
		Listening string `json:"listening"`
	}
	if err := json.Unmarshal([]byte(line), &l); err != nil || l.Listening == "" {
		t.Fatalf("testenv: MCP HTTP server printed %q", line)
	}
	cfg := pkg.clientConfig(opts)
	cfg.Transport = "http"
	cfg.URL = "http://" + l.Listening + "/mcp"
	s := startMCPClient(t, pkg, cfg, opts, srv)
	s.URL = cfg.URL
	s.srvOut, s.srvErr = srvOut, srvErr
	return s
}

// mcpClientConfig is client.mjs's config file.
type mcpClientConfig struct {
	Transport string            `json:"transport"`
	Command   string            `json:"command,omitempty"`
	Args      []string          `json:"args,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	Cwd       string            `json:"cwd,omitempty"`
	URL       string            `json:"url,omitempty"`
	Tool      string            `json:"tool"`
	Calls     []map[string]any  `json:"calls"`
	Wait      bool              `json:"wait"`
	TimeoutMS int64             `json:"timeout_ms"`
}

func (p *MCPPackage) clientConfig(opts MCPOptions) mcpClientConfig {
	tool := opts.Tool
	if tool == "" {
		tool = SendEmailTool
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = mcpDefaultTimeout
	}
	calls := opts.Calls
	if calls == nil {
		calls = []map[string]any{}
	}
	return mcpClientConfig{Tool: tool, Calls: calls, Wait: opts.Wait, TimeoutMS: timeout.Milliseconds(), Cwd: p.Root}
}

// serverEnv is the server's whole environment: no proxies, the API at api,
// ca trusted by node (NODE_EXTRA_CA_CERTS) and by the Python server
// (SSL_CERT_FILE), no bytecode written into the package.
func (p *MCPPackage) serverEnv(ca *CA, api *MailAPI, opts MCPOptions) map[string]string {
	sender, token := opts.Sender, opts.Token
	if sender == "" {
		sender = MCPDefaultSender
	}
	if token == "" {
		token = MCPDefaultToken
	}
	env := map[string]string{
		"PATH":                    os.Getenv("PATH"),
		"POSTMARK_SERVER_TOKEN":   token,
		"DEFAULT_SENDER_EMAIL":    sender,
		"DEFAULT_MESSAGE_STREAM":  "outbound",
		"POSTMARK_API_HOST":       api.Addr(),
		"NODE_EXTRA_CA_CERTS":     ca.CAFile,
		"SSL_CERT_FILE":           ca.CAFile,
		"PYTHONDONTWRITEBYTECODE": "1",
	}
	if opts.HTTP2 {
		env["POSTMARK_HTTP2"] = "1"
	}
	for k, v := range passedEnv() {
		env[k] = v
	}
	return env
}

// passedEnv returns the variables of the test's environment that the MCP
// processes get besides PATH (a node or python3 that needs
// LD_LIBRARY_PATH, say).
func passedEnv() map[string]string {
	env := map[string]string{}
	for _, k := range []string{"HOME", "LD_LIBRARY_PATH", "LANG"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	return env
}

func envList(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	return out
}

func startWith(start func(*exec.Cmd) error, cmd *exec.Cmd) error {
	if start != nil {
		return start(cmd)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", filepath.Base(cmd.Path), err)
	}
	return nil
}

func startMCPClient(t testing.TB, pkg *MCPPackage, cfg mcpClientConfig, opts MCPOptions, srv *exec.Cmd) *MCPSession {
	t.Helper()
	dir := stateDir(t, "mcp-client-")
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatalf("testenv: marshal MCP client config: %v", err)
	}
	cfgPath := filepath.Join(dir, "config.json")
	if err := writeFile(cfgPath, js); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(pkg.node, pkg.clientScript, cfgPath)
	cmd.Dir = pkg.Root
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range passedEnv() {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// A stdio server that outlives the client holds its stderr open.
	cmd.WaitDelay = 10 * time.Second
	s := &MCPSession{Client: cmd, Server: srv, pkg: pkg, out: newLineLog(), stderr: newLineLog(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = s.out, s.stderr
	if cfg.Wait {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatalf("testenv: create stdin pipe: %v", err)
		}
		cmd.Stdin = r
		s.stdinW = w
		t.Cleanup(func() {
			_ = r.Close()
			_ = w.Close()
		})
	}
	killOnCleanup(t, cmd)
	if err := startWith(opts.Start, cmd); err != nil {
		t.Fatalf("testenv: start MCP client: %v", err)
	}
	go func() {
		_ = cmd.Wait() // ProcessState tells how it ended
		close(s.exited)
	}()
	return s
}

// Ready waits for the client's ready line (session initialized, tools
// listed) and returns it. It fails the test when the client exits first or
// after timeout. Over stdio, the server process is killed (by pidfd) when
// the test ends, should it outlive the client.
func (s *MCPSession) Ready(t testing.TB, timeout time.Duration) MCPReady {
	t.Helper()
	line, ok := s.out.waitLine(timeout, s.exited, func(l string) bool { return strings.Contains(l, `"event":"ready"`) })
	if !ok {
		t.Fatalf("testenv: MCP client not ready within %v (exited: %v); stdout %q, stderr %q%s",
			timeout, s.hasExited(), s.out.String(), s.stderr.String(), s.serverLogs())
	}
	var r struct {
		ClientPID int  `json:"client_pid"`
		ServerPID *int `json:"server_pid"`
		Server    struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
		ProtocolVersion string   `json:"protocol_version"`
		Tools           []string `json:"tools"`
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("testenv: MCP client ready line %q: %v", line, err)
	}
	ready := MCPReady{ClientPID: r.ClientPID, ServerName: r.Server.Name, ServerVersion: r.Server.Version,
		ProtocolVersion: r.ProtocolVersion, Tools: r.Tools}
	switch {
	case s.Server != nil:
		ready.ServerPID = s.Server.Process.Pid
	case r.ServerPID != nil:
		ready.ServerPID = *r.ServerPID
		// os.FindProcess holds a pidfd: a later Kill cannot hit a reused PID.
		// The server is alive now: the client just listed its tools.
		if p, err := os.FindProcess(ready.ServerPID); err == nil {
			t.Cleanup(func() { _ = p.Kill() })
		}
	}
	return ready
}

// Go lets a client started with Wait make its calls.
func (s *MCPSession) Go(t testing.TB) {
	t.Helper()
	if s.stdinW == nil {
		t.Fatalf("testenv: MCPSession.Go: the session was not started with Wait")
	}
	if _, err := s.stdinW.Write([]byte("go\n")); err != nil {
		t.Fatalf("testenv: send go line: %v", err)
	}
	if err := s.stdinW.Close(); err != nil {
		t.Fatalf("testenv: close stdin pipe: %v", err)
	}
}

// Wait waits for the client to exit and returns how its calls went; it
// fails the test only when the client is still running after timeout.
func (s *MCPSession) Wait(t testing.TB, timeout time.Duration) MCPOutcome {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(timeout):
		t.Fatalf("testenv: MCP client still running after %v; stdout %q, stderr %q%s", timeout, s.out.String(), s.stderr.String(), s.serverLogs())
	}
	o := MCPOutcome{ExitCode: s.Client.ProcessState.ExitCode(), Stderr: s.stderr.String()}
	for _, line := range s.out.lines() {
		var ev struct {
			Event   string          `json:"event"`
			Result  json.RawMessage `json:"result"`
			Message string          `json:"message"`
		}
		if json.Unmarshal([]byte(line), &ev) != nil {
			continue
		}
		switch ev.Event {
		case "result":
			var res struct {
				IsError bool `json:"isError"`
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
			}
			if err := json.Unmarshal(ev.Result, &res); err != nil {
				t.Fatalf("testenv: MCP client result line %q: %v", line, err)
			}
			var texts []string
			for _, c := range res.Content {
				if c.Type == "text" {
					texts = append(texts, c.Text)
				}
			}
			o.Results = append(o.Results, MCPToolResult{IsError: res.IsError, Text: strings.Join(texts, "\n"), Raw: ev.Result})
		case "error":
			o.Error = ev.Message
		}
	}
	return o
}

// Succeeded fails the test unless the client exited 0 and every call got
// a result that is not an error; it returns the results.
func (o MCPOutcome) Succeeded(t testing.TB, calls int) []MCPToolResult {
	t.Helper()
	if o.ExitCode != 0 || o.Error != "" {
		t.Fatalf("testenv: MCP client exited %d: %s\nstderr: %s", o.ExitCode, o.Error, o.Stderr)
	}
	if len(o.Results) != calls {
		t.Fatalf("testenv: MCP client got %d results, want %d\nstderr: %s", len(o.Results), calls, o.Stderr)
	}
	for i, r := range o.Results {
		if r.IsError {
			t.Fatalf("testenv: MCP call %d failed: %s\nstderr: %s", i, r.Text, o.Stderr)
		}
	}
	return o.Results
}

// ServerStderr is what the HTTP-mode server wrote on stderr so far ("" over
// stdio, where it goes to the client's stderr).
func (s *MCPSession) ServerStderr() string {
	if s.srvErr == nil {
		return ""
	}
	return s.srvErr.String()
}

func (s *MCPSession) hasExited() bool {
	select {
	case <-s.exited:
		return true
	default:
		return false
	}
}

func (s *MCPSession) serverLogs() string {
	if s.srvErr == nil {
		return ""
	}
	return fmt.Sprintf("; server stderr %q", s.srvErr.String())
}

// lineLog collects a process's output and wakes waiters on each write.
type lineLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the complete lines so far.
func (l *lineLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// waitLine waits for a complete line for which match holds; it gives up
// after timeout or once exited is closed and no such line came.
func (l *lineLog) waitLine(timeout time.Duration, exited <-chan struct{}, match func(string) bool) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		l.mu.Lock()
		data := l.buf.Bytes()
		if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
			for _, line := range strings.Split(string(data[:i]), "\n") {
				if match(line) {
					l.mu.Unlock()
					return line, true
				}
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-exited:
			// The last write may have raced with the exit: look once more.
			exited = nil
			if l.hasMatch(match) {
				continue
			}
			return "", false
		case <-deadline.C:
			return "", false
		}
	}
}

func (l *lineLog) hasMatch(match func(string) bool) bool {
	for _, line := range l.lines() {
		if match(line) {
			return true
		}
	}
	return false
}
