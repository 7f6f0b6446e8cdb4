package enforce

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The company policy of the case study, verbatim.
func companyPolicy(t *testing.T) string {
	t.Helper()
	return shippedPolicy(t, "company.hcl")
}

// shippedPolicy copies one of the policies in hcl/policies into a fresh
// directory.
func shippedPolicy(t *testing.T, name string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "hcl", "policies", name))
	if err != nil {
		t.Fatal(err)
	}
	return policyDir(t, map[string]string{name: string(src)})
}

type env struct {
	agent *Agent
	jd    *testenv.Journald
	cg    *testenv.Cgroup
	ca    *testenv.CA
	srv   *testenv.Server
}

// start runs the agent on the company policy, holding only the writes of
// processes in a cgroup of the test's own, with verdicts going to a
// private journald.
func start(t *testing.T) *env {
	t.Helper()
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	return startWith(t, companyPolicy(t), cg, nil)
}

// startWith runs the agent on the policies of dir, holding the writes of
// the cgroup scope (and below), with executor (nil: the default one).
func startWith(t *testing.T, dir string, cg *testenv.Cgroup, executor *act.Executor) *env {
	t.Helper()
	return startOpts(t, dir, cg, Options{Executor: executor})
}

// startOpts starts an agent with opts (policies from dir, holds narrowed
// to cg, verdicts to a private journald).
func startOpts(t *testing.T, dir string, cg *testenv.Cgroup, opts Options) *env {
	t.Helper()
	testenv.RequireRoot(t)
	scopePolicies(t, dir, cg)
	e := &env{jd: testenv.NewJournald(t), cg: cg, ca: testenv.NewCA(t)}
	e.srv = testenv.NewServer(t, e.ca)
	// Allows too: a test that wants no block waits for the mail's verdict.
	logger, err := journal.New(journal.Options{Format: journal.FormatJournal, SocketPath: e.jd.SocketPath, LogAllows: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logger.Close() })
	opts.PolicyDir, opts.Verdicts, opts.HoldCgroups = dir, logger, []string{cg.Path()}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	a, err := New(opts)
	if err != nil {
		t.Fatalf("start agent: %v", err)
	}
	e.agent = a
	runAgent(t, a)
	return e
}

var policyHead = regexp.MustCompile(`(?m)^\s*email_security_policy\s+"[^"]*"\s*\{`)

// scopePolicies limits every policy in dir to the processes of cg. The
// agent judges every process on the host and acts on a block even when
// the write was not held: unscoped, an enforcing policy killed the clients
// of tests running beside it in other packages (the probe and trace tests
// post the same hidden-Bcc mails).
func scopePolicies(t testing.TB, dir string, cg *testenv.Cgroup) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	scope := fmt.Sprintf("\n  scope {\n    cgroups = [%q]\n  }\n", cg.Name())
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out := policyHead.ReplaceAllStringFunc(string(src), func(head string) string { return head + scope })
		if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// policyDir writes policy files into a fresh directory.
func policyDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func postmark(marker, bcc string) testenv.Request {
	body := fmt.Sprintf(`{"From":"ops@company.com","To":"ceo@company.com","Subject":"Q3 %s","TextBody":"numbers"%s}`, marker, bcc)
	return testenv.Request{
		Method: "POST",
		Path:   "/email?m=" + marker,
		Header: map[string]string{"Content-Type": "application/json", "X-Postmark-Server-Token": "server-token"},
		Body:   []byte(body),
	}
}

func marker(t *testing.T) string {
	return fmt.Sprintf("m%d", time.Now().UnixNano())
}

// The postmark-mcp backdoor: a hidden Bcc to an outside domain. Not one
// byte reaches the API, the process is killed, and the journal names the
// address.
func TestHiddenBccIsBlocked(t *testing.T) {
	e := start(t)
	for _, client := range []string{"node", "curl", "python"} {
		t.Run(client, func(t *testing.T) {
			m := marker(t)
			req := postmark(m, `,"Bcc":"phan@giftshop.club"`)
			var cmd *exec.Cmd
			switch client {
			case "node":
				cmd = testenv.Node(t, e.ca, e.srv.URL(), req)
			case "curl":
				cmd = testenv.Curl(t, e.ca, e.srv.URL(), req)
			default:
				cmd = testenv.Python(t, e.ca, e.srv.URL(), req)
			}
			if err := e.cg.Start(cmd); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Errorf("%s not killed: %v", client, err)
			}
			entries := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(cmd.Process.Pid))
			v := entries[0]
			if !strings.Contains(fmt.Sprint(v["AARSM_VIOLATIONS"]), "phan@giftshop.club") || v["AARSM_POLICY"] != "company" ||
				!strings.Contains(fmt.Sprint(v["AARSM_RULES"]), "unauthorized_bcc_recipients") ||
				!strings.Contains(fmt.Sprint(v["AARSM_ACTIONS"]), "terminate") || v["MESSAGE_ID"] != journal.MessageID {
				t.Errorf("verdict %v", v)
			}
			for _, f := range []string{"MESSAGE", "PRIORITY", "AARSM_ACTIONS", "AARSM_COMM", "AARSM_EXE", "AARSM_CGROUP", "AARSM_CGROUP_ID", "AARSM_DEST", "AARSM_PEER", "AARSM_RECIPIENTS", "AARSM_LATENCY_US"} {
				if v[f] == nil || v[f] == "" {
					t.Errorf("verdict lacks %s: %v", f, v)
				}
			}
			for _, r := range e.srv.Requests() {
				if strings.Contains(r.Path, m) {
					t.Fatalf("the mail reached the API: %s %s", r.Method, r.Path)
				}
			}
		})
	}
}

// Benign mail is delivered and no block verdict is written.
func TestBenignMailIsDelivered(t *testing.T) {
	e := start(t)
	for _, client := range []string{"node", "python"} {
		m := marker(t)
		req := postmark(m, `,"Cc":"cfo@subsidiaries.com"`)
		cmd := testenv.Node(t, e.ca, e.srv.URL(), req)
		if client == "python" {
			cmd = testenv.Python(t, e.ca, e.srv.URL(), req)
		}
		if err := e.cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%s: benign mail failed: %v", client, err)
		}
		e.srv.WaitFor(t, func(r testenv.Recorded) bool { return strings.Contains(r.Path, m) }, 10*time.Second)
		// Its verdict in the journal: a block would be there by now.
		e.jd.WaitFor(t, 1, "AARSM_PID="+fmt.Sprint(cmd.Process.Pid))
	}
	if got := e.jd.Query(t, "AARSM_VERDICT=block"); len(got) != 0 {
		t.Fatalf("block verdicts for benign mail: %v", got)
	}
	if st := e.agent.Sensor(); st == nil {
		t.Fatal("no sensor")
	}
}

// A SendGrid-shaped request from python with an AWS access key in the body.
func TestAPIKeyInMailIsBlocked(t *testing.T) {
	e := start(t)
	body := `{"personalizations":[{"to":[{"email":"dev@company.com"}]}],"from":{"email":"ops@company.com"},"subject":"creds","content":[{"type":"text/plain","value":"aws_access_key_id = AKIAQYLPMN5HHHFPZAM2"}]}`
	req := testenv.Request{Method: "POST", Path: "/v3/mail/send", Header: map[string]string{"Content-Type": "application/json"}, Body: []byte(body)}
	cmd := testenv.Python(t, e.ca, e.srv.URL(), req)
	if err := e.cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil {
		t.Fatal("python with an AWS key in a mail was not stopped")
	}
	v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(cmd.Process.Pid))[0]
	if !strings.Contains(fmt.Sprint(v["AARSM_RULES"]), "block_api_keys_in_emails") {
		t.Errorf("verdict %v", v)
	}
	if n := len(e.srv.Requests()); n != 0 {
		t.Fatalf("the API got %d requests", n)
	}
}

// curl over SMTPS with an external RCPT TO: the RCPT TO naming it never
// leaves (judged while held), nor anything after it.
func TestSMTPExternalRecipientIsBlocked(t *testing.T) {
	e := start(t)
	smtp := testenv.NewSMTPServer(t, e.ca)
	data := []byte("From: ops@company.com\r\nTo: ceo@company.com\r\nSubject: numbers\r\n\r\nQ3 numbers attached.\r\n")

	// Internal recipients: delivered.
	ok := testenv.CurlSMTP(t, e.ca, smtp.URL(), "ops@company.com", []string{"ceo@company.com"}, data)
	if err := e.cg.Start(ok); err != nil {
		t.Fatal(err)
	}
	if err := ok.Wait(); err != nil {
		t.Fatalf("internal mail over SMTP failed: %v", err)
	}
	smtp.WaitFor(t, nil, 10*time.Second)

	bad := testenv.CurlSMTP(t, e.ca, smtp.URL(), "ops@company.com", []string{"ceo@company.com", "partner@outside.example"}, data)
	if err := e.cg.Start(bad); err != nil {
		t.Fatal(err)
	}
	if err := bad.Wait(); err == nil {
		t.Fatal("curl sent mail to an outside recipient")
	}
	v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(bad.Process.Pid))[0]
	if !strings.Contains(fmt.Sprint(v["AARSM_VIOLATIONS"]), "partner@outside.example") {
		t.Errorf("verdict %v", v)
	}
	// SMTP names no server: the destination is the connection's peer.
	if v["AARSM_DEST"] != smtp.Addr() || v["AARSM_PEER"] != smtp.Addr() {
		t.Errorf("AARSM_DEST %v, AARSM_PEER %v, want the server %s", v["AARSM_DEST"], v["AARSM_PEER"], smtp.Addr())
	}
	if n := len(smtp.Mails()); n != 1 {
		t.Fatalf("SMTP server got %d mails, want only the internal one", n)
	}
	// Both sessions read to their end: whatever curl sent is in.
	smtp.WaitClosed(t, 2, 10*time.Second)
	for _, r := range smtp.Recipients() {
		if r == "partner@outside.example" {
			t.Errorf("the server received RCPT TO:<%s>", r)
		}
	}
}

// mcpClient drives an MCP server over stdio with JSON-RPC, as an AI agent's
// host does.
type mcpClient struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	id  int
}

func startMCP(t *testing.T, e *env, backdoor bool) *mcpClient {
	t.Helper()
	cmd := exec.Command("node", filepath.Join("testdata", "postmark-mcp.js"))
	cmd.Env = append(os.Environ(), "POSTMARK_API_URL="+e.srv.URL(), "POSTMARK_CA_FILE="+e.ca.CAFile, "POSTMARK_MCP_BACKDOOR=0")
	if backdoor {
		cmd.Env[len(cmd.Env)-1] = "POSTMARK_MCP_BACKDOOR=1"
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = testWriter{t}
	if err := e.cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	c := &mcpClient{t: t, cmd: cmd, in: in, out: bufio.NewScanner(out)}
	c.call("initialize", map[string]any{"protocolVersion": "2024-11-05", "capabilities": map[string]any{}, "clientInfo": map[string]any{"name": "aarsm-test", "version": "1"}})
	c.notify("notifications/initialized")
	if tools := c.call("tools/list", map[string]any{}); !strings.Contains(fmt.Sprint(tools), "send_email") {
		t.Fatalf("tools/list: %v", tools)
	}
	return c
}

func (c *mcpClient) notify(method string) {
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method})
	_, _ = c.in.Write(append(b, '\n'))
}

// call sends a request and returns its result, or nil if the server died.
func (c *mcpClient) call(method string, params any) map[string]any {
	c.t.Helper()
	c.id++
	b, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": c.id, "method": method, "params": params})
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		return nil
	}
	for c.out.Scan() {
		var resp struct {
			ID     int            `json:"id"`
			Result map[string]any `json:"result"`
			Error  any            `json:"error"`
		}
		if json.Unmarshal(c.out.Bytes(), &resp) == nil && resp.ID == c.id {
			if resp.Error != nil {
				c.t.Fatalf("%s: %v", method, resp.Error)
			}
			return resp.Result
		}
	}
	return nil
}

func (c *mcpClient) send(to, subject string) map[string]any {
	return c.call("tools/call", map[string]any{"name": "send_email", "arguments": map[string]any{
		"from": "assistant@company.com", "to": to, "subject": subject, "body": "Hello from the AI assistant."}})
}

// The case study end to end: an AI agent's MCP e-mail server in node,
// talking to a (loopback) Postmark API over HTTPS.
func TestPostmarkMCP(t *testing.T) {
	e := start(t)
	t.Run("benign", func(t *testing.T) {
		c := startMCP(t, e, false)
		for i := range 3 {
			subject := fmt.Sprintf("benign-%d-%s", i, marker(t))
			if res := c.send("ceo@company.com", subject); res == nil || res["isError"] == true {
				t.Fatalf("send_email: %v", res)
			}
			e.srv.WaitFor(t, func(r testenv.Recorded) bool { return strings.Contains(string(r.Body), subject) }, 10*time.Second)
		}
		// The three verdicts in the journal: a block would be there by now.
		e.jd.WaitFor(t, 3, "AARSM_PID="+fmt.Sprint(c.cmd.Process.Pid))
		if got := e.jd.Query(t, "AARSM_VERDICT=block"); len(got) != 0 {
			t.Fatalf("block verdicts for benign mail: %v", got)
		}
	})
	t.Run("backdoor", func(t *testing.T) {
		before := len(e.srv.Requests())
		c := startMCP(t, e, true)
		subject := "backdoor-" + marker(t)
		if res := c.send("ceo@company.com", subject); res != nil {
			t.Errorf("the backdoored server answered: %v", res)
		}
		err := c.cmd.Wait()
		ws, _ := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
		if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			t.Errorf("MCP server not stopped: %v", err)
		}
		v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(c.cmd.Process.Pid))[0]
		if !strings.Contains(fmt.Sprint(v["AARSM_VIOLATIONS"]), "phan@giftshop.club") || v["AARSM_COMM"] != "node" {
			t.Errorf("verdict %v", v)
		}
		// Killed, its connections closed: the server has handled
		// whatever it sent.
		e.srv.WaitDrained(t, 10*time.Second)
		if n := len(e.srv.Requests()) - before; n != 0 {
			t.Fatalf("%d mails reached the API", n)
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// violation_action = "quarantine" with a short duration: the message is
// blocked and the sender's cgroup gets EPERM on every new connection until
// the quarantine expires.
func TestQuarantine(t *testing.T) {
	testenv.RequireRoot(t)
	pins := fmt.Sprintf("/sys/fs/bpf/aarsm-test-%d", time.Now().UnixNano())
	q, err := act.OpenQuarantine(act.QuarantineOptions{PinDir: pins, StateDir: t.TempDir()})
	if err != nil {
		t.Fatalf("open quarantine: %v", err)
	}
	t.Cleanup(func() { _ = q.Unpin() })
	dir := policyDir(t, map[string]string{"q.hcl": `email_security_policy "quarantine" {
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  response {
    violation_action    = "quarantine"
    quarantine_duration = "3s"
  }
}
`})
	cg := testenv.NewCgroup(t)
	e := startWith(t, dir, cg, &act.Executor{Quarantine: q})
	ca, srv, jd := e.ca, e.srv, e.jd

	bad := testenv.Curl(t, ca, srv.URL(), postmark(marker(t), `,"Bcc":"phan@giftshop.club"`))
	if err := cg.Start(bad); err != nil {
		t.Fatal(err)
	}
	if err := bad.Wait(); err == nil {
		t.Fatal("the mail went through")
	}
	v := jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+fmt.Sprint(bad.Process.Pid))[0]
	if !strings.Contains(fmt.Sprint(v["AARSM_ACTIONS"]), "quarantine") ||
		!strings.Contains(fmt.Sprint(v["AARSM_ACTION_DETAILS"]), fmt.Sprintf("quarantine cgroup=%d until=", cg.ID())) {
		t.Fatalf("verdict actions %v, details %v", v["AARSM_ACTIONS"], v["AARSM_ACTION_DETAILS"])
	}
	// Any new connection of the cgroup, even a plain GET, is refused...
	probe := func() (string, error) {
		var out strings.Builder
		cmd := testenv.Curl(t, ca, srv.URL(), testenv.Request{Path: "/ping"})
		cmd.Stderr = &out
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		return out.String(), err
	}
	if msg, err := probe(); err == nil || !strings.Contains(msg, "(7)") {
		t.Fatalf("quarantined cgroup connected: %v %s", err, msg)
	}
	// ...while the test itself, outside the cgroup, is not affected.
	if _, err := (&net.Dialer{Timeout: time.Second}).Dial("tcp", srv.Addr()); err != nil {
		t.Fatalf("the quarantine reached another cgroup: %v", err)
	}
	// After expiry the cgroup connects again.
	testenv.Eventually(t, 10*time.Second, "the quarantine to expire", func() (bool, string) {
		msg, err := probe()
		return err == nil, fmt.Sprintf("curl: %v %s", err, msg)
	})
}

// The offending process runs as a transient unit of a real systemd: the
// agent finds the unit from the process's cgroup and stops it.
func TestUnitIsStopped(t *testing.T) {
	testenv.RequireRoot(t)
	sd := testenv.NewUserSystemd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := act.DialSystemd(ctx, sd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	e := startWith(t, companyPolicy(t), sd.Cgroup, &act.Executor{Systemd: conn})
	ca, srv, jd := e.ca, e.srv, e.jd

	// A mail server that sends one backdoored mail a second, forever, as
	// a service would.
	req := postmark(marker(t), `,"Bcc":"phan@giftshop.club"`)
	client := testenv.Node(t, ca, srv.URL(), req)
	loop := fmt.Sprintf("while true; do %s; sleep 1; done", strings.Join(quoteAll(client.Args), " "))
	unit := fmt.Sprintf("postmark-mcp-%d.service", time.Now().UnixNano())
	ch := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, unit, "replace", []sdbus.Property{
		sdbus.PropExecStart([]string{"/bin/sh", "-c", loop}, false),
		{Name: "DefaultDependencies", Value: dbus.MakeVariant(false)},
	}, ch); err != nil {
		t.Fatal(err)
	}
	if res := <-ch; res != "done" {
		t.Fatalf("start %s: %s", unit, res)
	}
	v := jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_UNIT="+unit)[0]
	if !strings.Contains(fmt.Sprint(v["AARSM_ACTION_DETAILS"]), "terminate stop-unit="+unit) {
		t.Errorf("action details %v", v["AARSM_ACTION_DETAILS"])
	}
	for _, f := range []string{"MESSAGE", "MESSAGE_ID", "PRIORITY", "AARSM_VERDICT", "AARSM_ACTIONS", "AARSM_ACTION_DETAILS", "AARSM_POLICY", "AARSM_RULES",
		"AARSM_VIOLATIONS", "AARSM_PID", "AARSM_COMM", "AARSM_EXE", "AARSM_UNIT", "AARSM_CGROUP", "AARSM_CGROUP_ID", "AARSM_DEST", "AARSM_PEER",
		"AARSM_RECIPIENTS", "AARSM_LATENCY_US"} {
		if v[f] == nil || v[f] == "" {
			t.Errorf("verdict lacks %s: %v", f, v)
		}
	}
	waitUnitStopped(ctx, t, conn, unit)
	if n := len(srv.Requests()); n != 0 {
		t.Fatalf("%d mails reached the API", n)
	}
}

// waitUnitStopped waits until the manager reports unit inactive (or
// failed); an error asking for its state fails the test.
func waitUnitStopped(ctx context.Context, t *testing.T, conn *sdbus.Conn, unit string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, unit+" stopped", func() (bool, string) {
		p, err := conn.GetUnitPropertyContext(ctx, unit, "ActiveState")
		if err != nil {
			t.Fatalf("ActiveState of %s: %v", unit, err)
		}
		state, ok := p.Value.Value().(string)
		if !ok {
			t.Fatalf("ActiveState of %s: %v, not a string", unit, p.Value)
		}
		return state == "inactive" || state == "failed", "ActiveState=" + state
	})
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return out
}

// A policy in monitor mode reports and does nothing else: the mail goes,
// the process lives, the journal has an alert.
func TestMonitorModeOnlyAlerts(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	e := startWith(t, shippedPolicy(t, "default.hcl"), cg, nil)
	ca, srv, jd := e.ca, e.srv, e.jd

	m := marker(t)
	cmd := testenv.Node(t, ca, srv.URL(), postmark(m, `,"Bcc":"phan@giftshop.club"`))
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("monitor mode stopped the client: %v", err)
	}
	srv.WaitFor(t, func(r testenv.Recorded) bool { return strings.Contains(r.Path, m) }, 10*time.Second)
	v := jd.WaitFor(t, 1, "AARSM_VERDICT=alert", "AARSM_PID="+fmt.Sprint(cmd.Process.Pid))[0]
	if v["AARSM_ACTIONS"] != "alert" || !strings.Contains(fmt.Sprint(v["AARSM_VIOLATIONS"]), "phan@giftshop.club") {
		t.Errorf("verdict %v", v)
	}
	if got := jd.Query(t, "AARSM_VERDICT=block"); len(got) != 0 {
		t.Fatalf("monitor mode blocked: %v", got)
	}
}
