package enforce

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/baseline"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// mcpPolicy allows the company's and a partner's domains: the hidden Bcc
// of these tests goes to an allowed domain, which no rule but
// undeclared_recipients can tell from a legitimate one.
const mcpPolicy = `email_security_policy "mcp" {
  allowed_destinations {
    internal_domains     = ["@company.example"]
    whitelisted_external = ["@partner.example"]
  }
  blocked_actions {
    unauthorized_bcc_recipients = true
  }
  response {
    violation_action = "block_and_alert"
    alert_priority   = "high"
  }
}
`

// sentBcc returns the Bcc of each mail the fake Postmark API received.
func sentBcc(t *testing.T, api *testenv.MailAPI) []string {
	t.Helper()
	var out []string
	for _, r := range api.Requests() {
		var m struct{ Bcc string }
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatalf("request body %q: %v", r.Body, err)
		}
		out = append(out, m.Bcc)
	}
	return out
}

// The postmark-mcp backdoor with its Bcc to an *allowed* domain, on the
// official TypeScript SDK (stdio) and the official postmark client: the
// tool call named alice only, so archive@ is undeclared and the mail is
// blocked; when the call names archive@ as its Bcc, the same mail is
// delivered.
func TestMCPUndeclaredRecipient(t *testing.T) {
	cg := testenv.NewCgroup(t)
	e := startWith(t, policyDir(t, map[string]string{"mcp.hcl": mcpPolicy}), cg, nil)
	api := testenv.NewMailAPI(t, e.ca)
	for _, runtime := range []string{"node", "python"} {
		t.Run(runtime, func(t *testing.T) {
			v := testenv.BackdooredMCP("archive@partner.example")
			pkg := testenv.InstallNodeMCP(t, v)
			if runtime == "python" {
				pkg = testenv.InstallPythonMCP(t, v)
			}
			before := len(api.Requests())
			call := map[string]any{"to": "alice@partner.example", "subject": "Q3 " + runtime, "textBody": "The numbers."}
			s := testenv.MCPStdio(t, e.ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call}, Start: cg.Start})
			ready := s.Ready(t, time.Minute)
			out := s.Wait(t, time.Minute)
			if len(out.Results) == 1 && !out.Results[0].IsError {
				t.Errorf("the undeclared Bcc went through: %+v", out)
			}
			rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", ready.ServerPID))[0]
			if rules := fmt.Sprint(rec["AARSM_RULES"]); !strings.Contains(rules, "undeclared_recipients") {
				t.Errorf("rules %q, want undeclared_recipients", rules)
			}
			if v := fmt.Sprint(rec["AARSM_VIOLATIONS"]); !strings.Contains(v, "archive@partner.example") || strings.Contains(v, "alice@") {
				t.Errorf("violations %q, want archive@partner.example alone", v)
			}
			for _, f := range []string{"AARSM_MCP_SERVER", "AARSM_MCP_PACKAGE", "AARSM_TOOL", "AARSM_TOOL_CALL_ID"} {
				if rec[f] == nil {
					t.Errorf("verdict lacks %s: %v", f, rec)
				}
			}
			if got := fmt.Sprint(rec["AARSM_TOOL"]); got != "send_email" {
				t.Errorf("AARSM_TOOL %q", got)
			}
			if got := fmt.Sprint(rec["AARSM_MCP_PACKAGE"]); !strings.Contains(got, "postmark-mcp@1.0.16") && !strings.Contains(got, "postmark_mcp@1.0.16") {
				t.Errorf("AARSM_MCP_PACKAGE %q", got)
			}
			// The server's connection to the API cut (a stdio server
			// accepts none: nothing kept) before the write: nothing of
			// the mail at the API.
			if d := fmt.Sprint(rec["AARSM_ACTION_DETAILS"]); !strings.Contains(d, "block sockets=") || strings.Contains(d, "sockets=0") || strings.Contains(d, "kept") {
				t.Errorf("AARSM_ACTION_DETAILS %q, want the API's socket destroyed", d)
			}
			if got := sentBcc(t, api)[before:]; len(got) != 0 {
				t.Errorf("the API received %q", got)
			}

			// Declared: the same Bcc named by the call is delivered.
			call = map[string]any{"to": "alice@partner.example", "bcc": "Archive <ARCHIVE@partner.example>", "subject": "Q3 declared " + runtime, "textBody": "The numbers."}
			s = testenv.MCPStdio(t, e.ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call}, Start: cg.Start})
			s.Wait(t, time.Minute).Succeeded(t, 1)
			if got := sentBcc(t, api)[before:]; len(got) != 1 || got[0] != "archive@partner.example" {
				t.Errorf("the declared mail reached the API with Bcc %q, want archive@partner.example once", got)
			}
		})
	}
}

// A server started before the agent (its initialize unseen) is known from
// its next message: its tool call, and the request it makes for it, are
// tied together and judged with MCP context.
func TestMCPServerStartedBeforeAgent(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	ca := testenv.NewCA(t)
	pkg := testenv.InstallNodeMCP(t, testenv.BackdooredMCP("archive@partner.example"))
	api := testenv.NewMailAPI(t, ca)
	call := map[string]any{"to": "alice@partner.example", "subject": "Q3 early", "textBody": "The numbers."}
	s := testenv.MCPStdio(t, ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call}, Wait: true, Start: cg.Start})
	ready := s.Ready(t, time.Minute)
	e := startWith(t, policyDir(t, map[string]string{"mcp.hcl": mcpPolicy}), cg, nil)
	s.Go(t)
	out := s.Wait(t, time.Minute)
	if len(out.Results) == 1 && !out.Results[0].IsError {
		t.Errorf("the undeclared Bcc went through: %+v", out)
	}
	rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", ready.ServerPID))[0]
	if rules := fmt.Sprint(rec["AARSM_RULES"]); !strings.Contains(rules, "undeclared_recipients") {
		t.Errorf("rules %q, want undeclared_recipients", rules)
	}
	if got := fmt.Sprint(rec["AARSM_MCP_PACKAGE"]); !strings.HasPrefix(got, "npm:postmark-mcp@1.0.16 sha256:") {
		t.Errorf("AARSM_MCP_PACKAGE %q", got)
	}
	if rec["AARSM_MCP_SERVER"] != nil {
		t.Errorf("AARSM_MCP_SERVER %v: its initialize came before the agent", rec["AARSM_MCP_SERVER"])
	}
	if got := sentBcc(t, api); len(got) != 0 {
		t.Errorf("the API received %q", got)
	}
}

// Status lists an MCP server once its initialize was seen: its
// serverInfo, its package and the client that started it.
func TestMCPServersInStatus(t *testing.T) {
	cg := testenv.NewCgroup(t)
	e := startWith(t, policyDir(t, map[string]string{"mcp.hcl": mcpPolicy}), cg, nil)
	api := testenv.NewMailAPI(t, e.ca)
	pkg := testenv.InstallNodeMCP(t, testenv.CleanMCP())
	call := map[string]any{"to": "alice@partner.example", "subject": "Q3 status", "textBody": "The numbers."}
	s := testenv.MCPStdio(t, e.ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call}, Wait: true, Start: cg.Start})
	ready := s.Ready(t, time.Minute)
	readyAt := time.Now()
	var seen MCPServer
	listedAt := testenv.Eventually(t, 10*time.Second, "the server in the agent's list", func() (bool, string) {
		for _, m := range e.agent.MCPServers() {
			if m.PID == uint32(ready.ServerPID) {
				seen = m
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v", e.agent.MCPServers())
	})
	if seen.Name != "postmark-mcp" || seen.Version != "1.0.15" || !strings.HasPrefix(seen.Package, "npm:postmark-mcp@1.0.15") ||
		!strings.HasPrefix(seen.Hash, "sha256:") || !strings.Contains(seen.Client, "node") || seen.Calls != 0 {
		t.Errorf("listed %+v", seen)
	}
	t.Logf("listed %v after the client had the initialize result (upper bound of the time to know a server)", listedAt.Sub(readyAt).Round(time.Microsecond))
	if st := e.agent.StdioStats(); st.Servers == 0 || st.Messages == 0 {
		t.Errorf("stdio stats %+v", st)
	}
	s.Go(t)
	s.Wait(t, time.Minute).Succeeded(t, 1)
}

// "Trust but verify": postmark-mcp 1.0.15 learns where it sends (the
// Postmark API, the company's domains); upgraded in place to a build that
// also posts each mail to another host, its first request there is a rug
// pull, blocked; the request to the known API, and the baseline, go on.
func TestMCPRugPull(t *testing.T) {
	cg := testenv.NewCgroup(t)
	state := t.TempDir()
	dir := policyDir(t, map[string]string{"mcp.hcl": "agent {\n  baseline = \"learn\"\n}\n" + mcpPolicy})
	e := startOpts(t, dir, cg, Options{StateDir: state})
	api := testenv.NewMailAPI(t, e.ca)
	copyTo := testenv.NewMailAPI(t, e.ca) // the new host
	pkg := testenv.InstallNodeMCP(t, testenv.CleanMCP())
	call := func(subject string) map[string]any {
		return map[string]any{"to": "alice@partner.example", "subject": subject, "textBody": "The numbers."}
	}
	// Learning: 1.0.15 sends to the Postmark API.
	s := testenv.MCPStdio(t, e.ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call("learn")}, Start: cg.Start})
	s.Wait(t, time.Minute).Succeeded(t, 1)
	if len(api.Requests()) != 1 {
		t.Fatalf("1.0.15's mail not delivered: %d requests", len(api.Requests()))
	}
	// Then enforcing (the policy changed, the agent reloaded).
	src, err := os.ReadFile(filepath.Join(dir, "mcp.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mcp.hcl"), bytes.Replace(src, []byte(`"learn"`), []byte(`"enforce"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reload(); err != nil {
		t.Fatal(err)
	}

	// Upgraded in place: the same directory, 1.0.17.
	pkg.Upgrade(t, testenv.NewHostMCP(copyTo.Addr()))
	s = testenv.MCPStdio(t, e.ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call("after upgrade")}, Start: cg.Start})
	ready := s.Ready(t, time.Minute)
	out := s.Wait(t, time.Minute)
	rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", ready.ServerPID))[0]
	if got := fmt.Sprint(rec["AARSM_RULES"]); got != "rug_pull" {
		t.Errorf("rules %q, want rug_pull (outcome %+v)", got, out)
	}
	if got := fmt.Sprint(rec["AARSM_VIOLATIONS"]); got != copyTo.Addr() {
		t.Errorf("violations %q, want %s", got, copyTo.Addr())
	}
	if got := fmt.Sprint(rec["AARSM_BASELINE"]); got != "rug_pull" {
		t.Errorf("AARSM_BASELINE %q", got)
	}
	if got := fmt.Sprint(rec["AARSM_BASELINE_PACKAGE"]); !strings.HasPrefix(got, "npm:postmark-mcp@1.0.17 ") {
		t.Errorf("AARSM_BASELINE_PACKAGE %q", got)
	}
	if got := fmt.Sprint(rec["AARSM_BASELINE_PREVIOUS"]); !strings.HasPrefix(got, "npm:postmark-mcp@1.0.15 ") {
		t.Errorf("AARSM_BASELINE_PREVIOUS %q", got)
	}
	if n := len(copyTo.Requests()); n != 0 {
		t.Errorf("the new host received %d requests", n)
	}
	f := e.agent.base.Snapshot()
	if i := f.Find("npm:postmark-mcp"); i < 0 || f.Packages[i].Kind() != baseline.KindMCP {
		t.Errorf("postmark-mcp not kept as an MCP server's package: %+v", f.Packages)
	}
}

// The postmark-mcp backdoor in a server that speaks streamable HTTP on
// loopback (the official SDK's StreamableHTTPServerTransport on node's
// http, driven by the SDK's StreamableHTTPClientTransport): the agent
// knows the server from its loopback connection (initialize over a POST),
// ties the tools/call POSTed to it to the server's mail, and blocks the
// hidden Bcc that no argument named. The block cuts the server's
// connection to the API but keeps the client's connection to the server:
// the client gets the tool's error at once (not its SDK's 60 s timeout),
// and its next call on the same session, naming the Bcc, is delivered.
func TestMCPHTTPUndeclaredRecipient(t *testing.T) {
	cg := testenv.NewCgroup(t)
	e := startWith(t, policyDir(t, map[string]string{"mcp.hcl": mcpPolicy}), cg, nil)
	api := testenv.NewMailAPI(t, e.ca)
	pkg := testenv.InstallNodeMCP(t, testenv.BackdooredMCP("archive@partner.example"))

	const marker = "blocked-7f3e9c" // in the blocked mail only
	blocked := map[string]any{"to": "alice@partner.example", "subject": "Q3 http " + marker, "textBody": "The numbers, " + marker + "."}
	declared := map[string]any{"to": "alice@partner.example", "bcc": "archive@partner.example", "subject": "Q3 http declared", "textBody": "The numbers."}
	// The client's own bound (exit 124) is past the SDK's 60 s request
	// timeout, so that a cut session shows as the SDK's timeout error.
	s := testenv.MCPHTTP(t, e.ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{blocked, declared}, Wait: true, Start: cg.Start, Timeout: 90 * time.Second})
	ready := s.Ready(t, time.Minute)
	readyAt := time.Now()
	var seen MCPServer
	listedAt := testenv.Eventually(t, 10*time.Second, "the HTTP server in the agent's list", func() (bool, string) {
		for _, m := range e.agent.MCPServers() {
			if m.PID == uint32(ready.ServerPID) {
				seen = m
				return true, ""
			}
		}
		return false, fmt.Sprintf("%+v; stats %+v", e.agent.MCPServers(), e.agent.StdioStats().HTTP)
	})
	t.Logf("listed %v after the client had the initialize result; known %v after the server's read of its initialize request",
		listedAt.Sub(readyAt).Round(time.Microsecond), seen.KnownAfter.Round(time.Microsecond))
	if seen.KnownAfter <= 0 {
		t.Errorf("KnownAfter %v", seen.KnownAfter)
	}
	if seen.Transport != "http" || seen.Name != "postmark-mcp" || seen.Version != "1.0.16" || !strings.HasPrefix(seen.Package, "npm:postmark-mcp@1.0.16") {
		t.Errorf("listed %+v", seen)
	}
	goAt := time.Now()
	s.Go(t)
	rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", ready.ServerPID))[0]
	out := s.Wait(t, 2*time.Minute)
	t.Logf("client done %v after its go (both calls)", time.Since(goAt).Round(time.Millisecond))
	// The session outlived the block: the blocked call's result is the
	// tool's error, the next call on the same session went through.
	if out.ExitCode != 0 || out.Error != "" || len(out.Results) != 2 {
		t.Fatalf("the session did not survive the block: exit %d, error %q, %d results %+v\nstderr: %s\nserver stderr: %s",
			out.ExitCode, out.Error, len(out.Results), out.Results, out.Stderr, s.ServerStderr())
	}
	if !out.Results[0].IsError {
		t.Errorf("the undeclared Bcc went through: %+v", out.Results[0])
	}
	if out.Results[1].IsError {
		t.Errorf("the declared call after the block failed: %+v", out.Results[1])
	}
	t.Logf("the blocked call's result: %q", out.Results[0].Text)
	if rules := fmt.Sprint(rec["AARSM_RULES"]); !strings.Contains(rules, "undeclared_recipients") {
		t.Errorf("rules %q, want undeclared_recipients", rules)
	}
	if v := fmt.Sprint(rec["AARSM_VIOLATIONS"]); !strings.Contains(v, "archive@partner.example") || strings.Contains(v, "alice@") {
		t.Errorf("violations %q, want archive@partner.example alone", v)
	}
	if got := fmt.Sprint(rec["AARSM_TOOL"]); got != "send_email" {
		t.Errorf("AARSM_TOOL %q", got)
	}
	if got := fmt.Sprint(rec["AARSM_MCP_SERVER"]); !strings.Contains(got, "postmark-mcp") {
		t.Errorf("AARSM_MCP_SERVER %q", got)
	}
	// The API connection cut, the client's connection kept.
	if d := fmt.Sprint(rec["AARSM_ACTION_DETAILS"]); !strings.Contains(d, "block sockets=") || strings.Contains(d, "sockets=0") || !strings.Contains(d, "kept_accepted=") {
		t.Errorf("AARSM_ACTION_DETAILS %q, want the API's socket destroyed and the client's kept", d)
	}
	// Not a byte of the blocked mail at the API; the declared one, once.
	if got := api.Received(); bytes.Contains(got, []byte(marker)) {
		t.Errorf("the API received bytes of the blocked mail: %q", got)
	}
	if got := sentBcc(t, api); len(got) != 1 || got[0] != "archive@partner.example" {
		t.Errorf("the declared mail reached the API with Bcc %q, want archive@partner.example once", got)
	}
	if st := e.agent.StdioStats().HTTP; st.Servers == 0 || st.Messages < 4 {
		t.Errorf("HTTP stats %+v", st)
	}
}

// A streamable-HTTP server that listened before the agent started is
// found at start (its listening socket in /proc/net/tcp, its fd): its
// tool call, on a connection opened before the agent too, is tied to its
// mail and the undeclared Bcc is blocked.
func TestMCPHTTPServerStartedBeforeAgent(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	ca := testenv.NewCA(t)
	pkg := testenv.InstallNodeMCP(t, testenv.BackdooredMCP("archive@partner.example"))
	api := testenv.NewMailAPI(t, ca)
	call := map[string]any{"to": "alice@partner.example", "subject": "Q3 http early", "textBody": "The numbers."}
	s := testenv.MCPHTTP(t, ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call}, Wait: true, Start: cg.Start, Timeout: 90 * time.Second})
	ready := s.Ready(t, time.Minute)
	e := startWith(t, policyDir(t, map[string]string{"mcp.hcl": mcpPolicy}), cg, nil)
	s.Go(t)
	out := s.Wait(t, 2*time.Minute)
	// The client's connection, opened before the agent, is kept too: it
	// gets the tool's error, not a timeout.
	if len(out.Results) != 1 || !out.Results[0].IsError {
		t.Errorf("want the tool's error as the call's result: %+v (exit %d, error %q)", out.Results, out.ExitCode, out.Error)
	}
	rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", ready.ServerPID))[0]
	if rules := fmt.Sprint(rec["AARSM_RULES"]); !strings.Contains(rules, "undeclared_recipients") {
		t.Errorf("rules %q, want undeclared_recipients", rules)
	}
	if got := fmt.Sprint(rec["AARSM_TOOL"]); got != "send_email" {
		t.Errorf("AARSM_TOOL %q", got)
	}
	if got := sentBcc(t, api); len(got) != 0 {
		t.Errorf("the API received %q", got)
	}
}
