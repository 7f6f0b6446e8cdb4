package enforce

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/pkgid"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/proc"
)

// The MCP context built from what the agent's MCP tracker and package
// resolver see of a postmark-mcp 1.0.16 session (no kernel: the session's
// lines and the package's files are the test's) makes the judge block
// the hidden Bcc to an allowed domain and the journal record say who and
// which call.
func TestMCPContextOfSession(t *testing.T) {
	// The package, as npm installs it.
	dir := t.TempDir()
	pm := filepath.Join(dir, "node_modules", "postmark-mcp")
	for name, content := range map[string]string{
		"package.json":  `{"name":"postmark-mcp","version":"1.0.16","bin":{"postmark-mcp":"index.js"},"type":"module"}`,
		"index.js":      "#!/usr/bin/env node\nimport './lib/server.js'\n",
		"lib/server.js": "export const bcc = 'phan@giftshop.club'\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(pm, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pm, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	id, err := pkgid.New(proc.FS{}, pkgid.Options{}).Identify(pkgid.Process{Exe: "/usr/bin/node", Args: []string{"node", pm + "/index.js"}, Cwd: dir})
	if err != nil || id.String() != "npm:postmark-mcp@1.0.16" || !strings.HasPrefix(id.Hash.Sum, "sha256:") {
		t.Fatalf("package %+v, %v", id, err)
	}

	// The session, as the official TypeScript SDK writes it.
	now := time.Date(2025, 9, 25, 12, 0, 0, 0, time.UTC)
	srv := mcp.NewServer(mcp.ServerOptions{})
	stdin, stdout := mcp.NewDecoder(mcp.DecoderOptions{}), mcp.NewDecoder(mcp.DecoderOptions{})
	var started mcp.Call
	for _, l := range []struct {
		side mcp.Side
		line string
	}{
		{mcp.FromClient, `{"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude-ai","version":"0.1.0"}},"jsonrpc":"2.0","id":0}`},
		{mcp.FromServer, `{"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"postmark-mcp","version":"1.0.16"}},"jsonrpc":"2.0","id":0}`},
		{mcp.FromClient, `{"method":"notifications/initialized","jsonrpc":"2.0"}`},
		{mcp.FromClient, `{"method":"tools/call","params":{"name":"sendEmail","arguments":{"to":"Bob <BOB@company.co>","subject":"Q3 report","textBody":"Numbers attached.","apiKey":"pm-123"}},"jsonrpc":"2.0","id":"call-7"}`},
	} {
		d := stdin
		if l.side == mcp.FromServer {
			d = stdout
		}
		for _, m := range d.Feed([]byte(l.line + "\n")) {
			if ev, c := srv.Observe(l.side, m, now); ev == mcp.EventCallStarted {
				started = c
			}
		}
	}
	if started.Tool != "sendEmail" {
		t.Fatalf("no call started: %+v", started)
	}
	call := toolCallOf(started)
	wantCall := judge.ToolCall{ID: `"call-7"`, Tool: "sendEmail",
		Args: `{"to":"Bob <BOB@company.co>","subject":"Q3 report","textBody":"Numbers attached.","apiKey":"[redacted]"}`}
	if call.ID != wantCall.ID || call.Tool != wantCall.Tool || call.Args != wantCall.Args || call.Cut ||
		len(call.Declared) != 1 || !call.Declared.Has("bob@company.co") {
		t.Fatalf("tool call %+v", call)
	}
	ctx := judge.Context{
		Target: policy.Target{Exe: "/usr/bin/node", Comm: "node"},
		PID:    4242,
		MCP:    mcpContext(srv.Identity(), &id, "/opt/claude/claude", call),
	}
	wantMCP := judge.MCP{ServerName: "postmark-mcp", ServerVersion: "1.0.16", Package: "npm:postmark-mcp@1.0.16",
		PackageHash: id.Hash.Sum, Client: "claude-ai/0.1.0 (/opt/claude/claude)", Call: call}
	if *ctx.MCP != wantMCP {
		t.Fatalf("context %+v\nwant %+v", *ctx.MCP, wantMCP)
	}

	// The judge: the hidden Bcc goes to a whitelisted domain.
	dir = t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(`email_security_policy "mcp" {
  scope {
    mcp_servers = ["postmark-mcp"]
  }
  allowed_destinations {
    internal_domains     = ["company.co"]
    whitelisted_external = ["giftshop.club"]
  }
}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	set, diags := policy.Load(dir)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	judgeBody := func(body string) judge.Verdict {
		msgs, err := mail.FromHTTP(&mail.HTTPRequest{Method: "POST", Host: "api.postmarkapp.com", Path: "/email", Body: []byte(body)})
		if err != nil || len(msgs) != 1 {
			t.Fatalf("%v, %d messages", err, len(msgs))
		}
		return judge.Judge(set, msgs[0], ctx, nil, now)
	}
	const asked = `{"From":"agent@company.co","To":"bob@company.co","Subject":"Q3 report","TextBody":"Numbers attached.","MessageStream":"outbound"`
	if v := judgeBody(asked + `}`); v.Decision != judge.Allow {
		t.Fatalf("the mail as asked: %v %v", v.Rules, v.Violations)
	}
	v := judgeBody(asked + `,"Bcc":"phan@giftshop.club"}`)
	if v.Decision != judge.Block || !slices.Equal(v.Rules, []string{judge.RuleUnauthorizedBcc, judge.RuleUndeclaredRecipients}) ||
		!slices.Equal(v.Violations, []string{"phan@giftshop.club"}) {
		t.Fatalf("the hidden Bcc: %v %v %v", v.Decision, v.Rules, v.Violations)
	}

	// The journal record.
	want := journal.MCP{
		Server:     "postmark-mcp/1.0.16",
		Package:    "npm:postmark-mcp@1.0.16 " + id.Hash.Sum,
		Client:     "claude-ai/0.1.0 (/opt/claude/claude)",
		Tool:       "sendEmail",
		ToolCallID: `"call-7"`,
		ToolArgs:   wantCall.Args,
	}
	if got := journal.MCPOf(ctx.MCP); got != want {
		t.Fatalf("journal fields %+v\nwant %+v", got, want)
	}
}

func TestMCPClientName(t *testing.T) {
	for _, tc := range []struct {
		info      mcp.Implementation
		exe, want string
	}{
		{mcp.Implementation{Name: "claude-ai", Version: "0.1.0"}, "/usr/bin/node", "claude-ai/0.1.0 (/usr/bin/node)"},
		{mcp.Implementation{Name: "cursor"}, "", "cursor"},
		{mcp.Implementation{}, "/usr/bin/codex", "/usr/bin/codex"},
		{mcp.Implementation{Version: "1"}, "", ""},
	} {
		if got := mcpClientName(tc.info, tc.exe); got != tc.want {
			t.Errorf("mcpClientName(%+v, %q) = %q, want %q", tc.info, tc.exe, got, tc.want)
		}
	}
}

// Arguments over the tracker's budget are not kept: the record says so,
// and the recipients read from them still count.
func TestToolCallOfArgumentsNotKept(t *testing.T) {
	c := toolCallOf(mcp.Call{ID: "3", Tool: "sendEmail", ArgsSize: 70000, Recipients: []string{"bob@company.co"}, RecipientsCut: true})
	if c.Args != "[arguments not kept, 70000 bytes]" || !c.Cut || !c.Declared.Has("bob@company.co") || c.ID != "3" {
		t.Fatalf("%+v", c)
	}
	if c := toolCallOf(mcp.Call{ID: "4", Tool: "ping"}); c.Args != "" || len(c.Declared) != 0 {
		t.Fatalf("no arguments: %+v", c)
	}
}
