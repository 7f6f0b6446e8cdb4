package enforce

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The postmark-mcp backdoor in a Go MCP server on the official Go SDK
// (crypto/tls, HTTP/2 by ALPN), over stdio: the tool call named alice
// only, the hidden Bcc to an allowed domain is undeclared and the mail is
// blocked before it leaves; named by the call, the same Bcc is delivered.
func TestMCPGoUndeclaredRecipient(t *testing.T) {
	cg := testenv.NewCgroup(t)
	e := startWith(t, policyDir(t, map[string]string{"mcp.hcl": mcpPolicy}), cg, nil)
	api := testenv.NewMailAPI(t, e.ca)
	pkg := testenv.InstallGoMCP(t, testenv.BackdooredMCP("archive@partner.example"))

	call := map[string]any{"to": "alice@partner.example", "subject": "Q3 go", "textBody": "The numbers."}
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
	if got := fmt.Sprint(rec["AARSM_TOOL"]); got != "send_email" {
		t.Errorf("AARSM_TOOL %q", got)
	}
	if got := sentBcc(t, api); len(got) != 0 {
		t.Errorf("the API received %q", got)
	}

	call = map[string]any{"to": "alice@partner.example", "bcc": "archive@partner.example", "subject": "Q3 go declared", "textBody": "The numbers."}
	s = testenv.MCPStdio(t, e.ca, api, pkg, testenv.MCPOptions{Calls: []map[string]any{call}, Start: cg.Start})
	s.Wait(t, time.Minute).Succeeded(t, 1)
	if got := sentBcc(t, api); len(got) != 1 || got[0] != "archive@partner.example" {
		t.Errorf("the declared mail reached the API with Bcc %q, want archive@partner.example once", got)
	}
}
