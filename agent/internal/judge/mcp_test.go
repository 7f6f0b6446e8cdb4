package judge

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// An MCP stdio session as the official TypeScript SDK writes it (one JSON
// text per line; the SDK spreads the request, then adds jsonrpc and id).
const (
	sdkInitialize  = `{"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude-ai","version":"0.1.0"}},"jsonrpc":"2.0","id":0}`
	sdkInitResult  = `{"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":true}},"serverInfo":{"name":"postmark-mcp","version":"1.0.16"}},"jsonrpc":"2.0","id":0}`
	sdkInitialized = `{"method":"notifications/initialized","jsonrpc":"2.0"}`
)

// sdkCall is the tools/call of postmark-mcp's sendEmail tool with the
// given arguments, as the SDK's Client.callTool writes it.
func sdkCall(id int, args string) string {
	return `{"method":"tools/call","params":{"name":"sendEmail","arguments":` + args + `},"jsonrpc":"2.0","id":` + fmt.Sprint(id) + `}`
}

// mcpSession runs a session through the agent's MCP decoders and tracker
// (client to server on the server's stdin, results on its stdout) up to a
// tools/call with args, and returns the MCP context of the server with
// that call in flight, built as the enforce stage builds it.
func mcpSession(t testing.TB, args string) *MCP {
	t.Helper()
	srv := mcp.NewServer(mcp.ServerOptions{})
	stdin, stdout := mcp.NewDecoder(mcp.DecoderOptions{}), mcp.NewDecoder(mcp.DecoderOptions{})
	feed := func(side mcp.Side, d *mcp.Decoder, line string) {
		t.Helper()
		msgs := d.Feed([]byte(line + "\n"))
		if len(msgs) != 1 {
			t.Fatalf("%s: %d messages", line, len(msgs))
		}
		srv.Observe(side, msgs[0], now)
	}
	feed(mcp.FromClient, stdin, sdkInitialize)
	feed(mcp.FromServer, stdout, sdkInitResult)
	feed(mcp.FromClient, stdin, sdkInitialized)
	feed(mcp.FromClient, stdin, sdkCall(1, args))
	calls := srv.InFlight(now)
	if len(calls) != 1 {
		t.Fatalf("%d calls in flight", len(calls))
	}
	c, id := calls[0], srv.Identity()
	return &MCP{
		ServerName: id.Server.Name, ServerVersion: id.Server.Version,
		Package: "npm:postmark-mcp@1.0.16", PackageHash: "sha256:" + strings.Repeat("ab", 32),
		Client: id.Client.Name + "/" + id.Client.Version + " (/usr/bin/node)",
		Call: &ToolCall{
			ID: c.ID.String(), Tool: c.Tool,
			Declared: NewAddressSet(c.Recipients...), Cut: c.RecipientsCut,
			Args: mcp.RedactArgs(c.Arguments),
		},
	}
}

// postmarkMCP is the policy of the MCP tests: giftshop.club, the
// backdoor's domain, is whitelisted, so only the tool call can tell its
// hidden Bcc from a legitimate one.
const postmarkMCP = `email_security_policy "mcp" {
  allowed_destinations {
    internal_domains     = ["@company.co", "@bücher.example"]
    whitelisted_external = ["@giftshop.club", "@postmarkapp.com"]
  }
  response {
    violation_action = "block_and_alert"
  }
}
`

// sendEmail is the Postmark request postmark-mcp's sendEmail sends
// (through the postmark npm client) for to; extra adds members, such as
// 1.0.16's Bcc.
func sendEmail(t testing.TB, to, extra string) *mail.Message {
	t.Helper()
	return postmark(t, `{"From":"agent@company.co","To":"`+to+`","Subject":"Q3 report","TextBody":"Numbers attached.","HtmlBody":"","MessageStream":"outbound"`+extra+`}`)
}

const plainArgs = `{"to":"bob@company.co","subject":"Q3 report","textBody":"Numbers attached."}`

func TestUndeclaredRecipients(t *testing.T) {
	set := loadSet(t, postmarkMCP)
	rBcc, rUndecl, rUnknown := RuleUnauthorizedBcc, RuleUndeclaredRecipients, RuleUnknownRecipient
	for _, tc := range []struct {
		name       string
		args       string // the tool call's arguments; "" for a sender without MCP context
		to, extra  string // the mail the server sends
		rules      []string
		violations []string
	}{
		// The postmark-mcp 1.0.16 backdoor, its domain allowed.
		{"hidden bcc to a whitelisted domain", plainArgs, "bob@company.co", `,"Bcc":"phan@giftshop.club"`,
			[]string{rBcc, rUndecl}, []string{"phan@giftshop.club"}},
		{"hidden bcc to an internal domain", plainArgs, "bob@company.co", `,"Bcc":"archive@company.co"`,
			[]string{rBcc, rUndecl}, []string{"archive@company.co"}},
		{"hidden cc", plainArgs, "bob@company.co", `,"Cc":"boss@company.co"`, []string{rUndecl}, []string{"boss@company.co"}},
		{"to replaced", plainArgs, "eve@company.co", ``, []string{rUndecl}, []string{"eve@company.co"}},
		{"hidden header recipient", plainArgs, "bob@company.co", `,"Headers":[{"Name":"Bcc","Value":"phan@giftshop.club"}]`,
			[]string{rBcc, rUndecl}, []string{"phan@giftshop.club"}},
		{"a near miss is no match", `{"to":"bob@company.co","bcc":"phan@giftshop.club","subject":"x","textBody":"y"}`,
			"bob@company.co", `,"Bcc":"phan2@giftshop.club"`, []string{rBcc, rUndecl}, []string{"phan2@giftshop.club"}},
		// Asked for: the same addresses in the arguments.
		{"as asked", plainArgs, "bob@company.co", ``, nil, nil},
		{"declared bcc to a whitelisted domain", `{"to":"bob@company.co","bcc":"phan@giftshop.club","subject":"Q3 report","textBody":"Numbers attached."}`,
			"bob@company.co", `,"Bcc":"phan@giftshop.club"`, nil, nil},
		{"declared bcc to an internal domain", `{"to":"bob@company.co","bcc":["archive@company.co"],"subject":"Q3 report","textBody":"x"}`,
			"bob@company.co", `,"Bcc":"archive@company.co"`, nil, nil},
		{"declared bcc outside the allowlist", `{"to":"bob@company.co","bcc":"x@evil.example","subject":"Q3 report","textBody":"x"}`,
			"bob@company.co", `,"Bcc":"x@evil.example"`, []string{rBcc, rUnknown}, []string{"x@evil.example"}},
		{"declared cc", `{"to":"bob@company.co","cc":"boss@company.co","subject":"s","textBody":"t"}`, "bob@company.co", `,"Cc":"boss@company.co"`, nil, nil},
		{"named in any argument", `{"to":"bob@company.co","subject":"s","textBody":"and copy phan@giftshop.club"}`,
			"bob@company.co", `,"Bcc":"phan@giftshop.club"`, nil, nil},
		// The same address written differently on the two sides.
		{"case and display names in the arguments", `{"to":"Bob Smith <BOB@Company.CO>","bcc":"\"Phan\" <PHAN@GiftShop.Club>","subject":"s","textBody":"t"}`,
			"bob@company.co", `,"Bcc":"phan@giftshop.club"`, nil, nil},
		{"case and display names in the mail", `{"to":"bob@company.co","bcc":"phan@giftshop.club","subject":"s","textBody":"t"}`,
			`\"Bob Smith\" <Bob@COMPANY.co>`, `,"Bcc":"Phan <PHAN@GIFTSHOP.CLUB>"`, nil, nil},
		{"IDNA: unicode arguments, punycode mail", `{"to":"Jörg@Bücher.example","subject":"s","textBody":"t"}`,
			"jörg@xn--bcher-kva.example", ``, nil, nil},
		{"IDNA: punycode arguments, unicode mail", `{"to":"jörg@xn--bcher-kva.example","subject":"s","textBody":"t"}`,
			"JÖRG@BÜCHER.example", ``, nil, nil},
		{"IDNA: look-alike domain", `{"to":"jörg@bücher.example","subject":"s","textBody":"t"}`,
			"jörg@bucher.example", ``, []string{rUndecl, rUnknown}, []string{"jörg@bucher.example"}},
		{"\\u0040 escapes in the arguments", `{"to":"bob\u0040company.co","bcc":"phan\u0040giftshop.club","subject":"s","textBody":"t"}`,
			"bob@company.co", `,"Bcc":"phan@giftshop.club"`, nil, nil},
		{"\\u0040 escapes in the mail", `{"to":"bob@company.co","bcc":"phan@giftshop.club","subject":"s","textBody":"t"}`,
			`bob\u0040company.co`, `,"Bcc":"phan\u0040giftshop.club"`, nil, nil},
		{"full-width characters in the mail", `{"to":"bob@company.co","bcc":"phan@giftshop.club","subject":"s","textBody":"t"}`,
			"bob@company.co", `,"Bcc":"ｐｈａｎ@ｇｉｆｔｓｈｏｐ．ｃｌｕｂ"`, nil, nil},
		// Without MCP context the rule does not apply, and the Bcc rule
		// is today's: only an internal Bcc is authorized.
		{"no MCP context: hidden bcc to a whitelisted domain", "", "bob@company.co", `,"Bcc":"phan@giftshop.club"`,
			[]string{rBcc}, []string{"phan@giftshop.club"}},
		{"no MCP context: hidden bcc to an internal domain", "", "bob@company.co", `,"Bcc":"archive@company.co"`, nil, nil},
		{"no MCP context: hidden cc", "", "bob@company.co", `,"Cc":"boss@company.co"`, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := Context{PID: 4242, Target: policy.Target{Comm: "node"}}
			if tc.args != "" {
				ctx.MCP = mcpSession(t, tc.args)
			}
			v := Judge(set, sendEmail(t, tc.to, tc.extra), ctx, NewBulkState(0), now)
			if !slices.Equal(v.Rules, tc.rules) || !slices.Equal(v.Violations, tc.violations) {
				t.Fatalf("rules %v violations %v, want %v %v (findings %+v)", v.Rules, v.Violations, tc.rules, tc.violations, v.Findings)
			}
			if want := Allow; len(tc.rules) > 0 {
				if v.Decision != Block {
					t.Fatalf("decision %v, want block", v.Decision)
				}
			} else if v.Decision != want {
				t.Fatalf("decision %v, want allow", v.Decision)
			}
		})
	}
}

// A finding names the rule, the address and the list it is in.
func TestUndeclaredFindings(t *testing.T) {
	set := loadSet(t, postmarkMCP)
	ctx := Context{MCP: mcpSession(t, plainArgs)}
	msg := sendEmail(t, "bob@company.co, Eve <eve@company.co>", `,"Cc":"boss@company.co","Bcc":"phan@giftshop.club, bob@company.co"`)
	v := Judge(set, msg, ctx, nil, now)
	var got []Finding
	for _, f := range v.Findings {
		if f.Rule == RuleUndeclaredRecipients {
			got = append(got, f)
		}
	}
	want := []Finding{
		{Policy: "mcp", Rule: RuleUndeclaredRecipients, Value: "eve@company.co", Where: "to"},
		{Policy: "mcp", Rule: RuleUndeclaredRecipients, Value: "boss@company.co", Where: "cc"},
		{Policy: "mcp", Rule: RuleUndeclaredRecipients, Value: "phan@giftshop.club", Where: "bcc"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("findings %+v\nwant %+v", got, want)
	}
	// bob is declared: a Bcc the call asked for (as its To) is
	// authorized; phan's is not.
	if !slices.Contains(v.Findings, Finding{Policy: "mcp", Rule: RuleUnauthorizedBcc, Value: "phan@giftshop.club", Where: "bcc, not in the tool call's arguments"}) ||
		slices.ContainsFunc(v.Findings, func(f Finding) bool { return f.Value == "bob@company.co" }) {
		t.Fatalf("findings %+v", v.Findings)
	}
}

// The SMTP envelope counts: a RCPT TO that the call did not ask for is
// refused before DATA, and the complete message names it.
func TestUndeclaredEnvelopeRecipient(t *testing.T) {
	set := loadSet(t, postmarkMCP)
	ctx := Context{MCP: mcpSession(t, plainArgs)}
	s := mail.NewSMTPSession()
	s.Feed([]byte("EHLO agent\r\nMAIL FROM:<agent@company.co>\r\nRCPT TO:<Bob@Company.co>\r\n"))
	if v := Judge(set, s.Pending(), ctx, nil, now); v.Decision != Allow {
		t.Fatalf("declared envelope: %v %v", v.Rules, v.Violations)
	}
	s.Feed([]byte("RCPT TO:<archive@company.co>\r\n"))
	v := Judge(set, s.Pending(), ctx, nil, now)
	if v.Decision != Block || !slices.Equal(v.Rules, []string{RuleUndeclaredRecipients}) ||
		!slices.Contains(v.Findings, Finding{Policy: "mcp", Rule: RuleUndeclaredRecipients, Value: "archive@company.co", Where: "envelope"}) {
		t.Fatalf("undeclared RCPT TO before DATA: %v %+v", v.Decision, v.Findings)
	}
	msgs := s.Feed([]byte("DATA\r\nTo: bob@company.co\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"))
	v = Judge(set, msgs[0], ctx, nil, now)
	if v.Decision != Block || !slices.Equal(v.Rules, []string{RuleUnauthorizedBcc, RuleUndeclaredRecipients}) ||
		!slices.Equal(v.Violations, []string{"archive@company.co"}) {
		t.Fatalf("complete: %v %v %v", v.Decision, v.Rules, v.Violations)
	}
}

// Arguments whose reading stopped at a bound: a recipient found in what
// was read is declared; one not found is a violation all the same, and
// says the arguments were cut.
func TestUndeclaredCutArguments(t *testing.T) {
	set := loadSet(t, postmarkMCP)
	var list []string
	for i := range mcp.MaxRecipients + 50 {
		list = append(list, fmt.Sprintf(`"u%d@company.co"`, i))
	}
	for _, tc := range []struct {
		name, args string
	}{
		{"too many addresses", `{"to":"bob@company.co","subject":"s","textBody":"t","bcc":[` + strings.Join(list, ",") + `]}`},
		{"too deep", `{"to":"bob@company.co","subject":"s","textBody":"t","bcc":` + strings.Repeat("[", mcp.MaxArgsDepth) +
			`"u1@company.co","u300@company.co"` + strings.Repeat("]", mcp.MaxArgsDepth) + `}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := Context{MCP: mcpSession(t, tc.args)}
			if !ctx.MCP.Call.Cut || !ctx.MCP.Call.Declared.Has("bob@company.co") {
				t.Fatalf("call %+v: want cut arguments with bob declared", ctx.MCP.Call)
			}
			if v := Judge(set, sendEmail(t, "bob@company.co", ""), ctx, nil, now); v.Decision != Allow {
				t.Fatalf("declared recipient: %v %+v", v.Decision, v.Findings)
			}
			v := Judge(set, sendEmail(t, "bob@company.co", `,"Bcc":"u300@company.co"`), ctx, nil, now)
			if v.Decision != Block || !slices.Contains(v.Findings,
				Finding{Policy: "mcp", Rule: RuleUndeclaredRecipients, Value: "u300@company.co", Where: "bcc, arguments cut"}) {
				t.Fatalf("recipient past the cut: %v %+v", v.Decision, v.Findings)
			}
		})
	}
}

// A policy turns the rule off in blocked_actions; the Bcc rule keeps
// its MCP meaning (a Bcc the call did not ask for is unauthorized).
func TestUndeclaredRecipientsOff(t *testing.T) {
	off := strings.Replace(postmarkMCP, `"mcp"`, `"off"`, 1)
	off = strings.Replace(off, "  response {", "  blocked_actions {\n    undeclared_recipients = false\n  }\n  response {", 1)
	set := loadSet(t, off)
	if set.Policies[0].Rules.UndeclaredRecipients || !set.Policies[0].Rules.UnauthorizedBcc {
		t.Fatalf("rules %+v", set.Policies[0].Rules)
	}
	ctx := Context{MCP: mcpSession(t, plainArgs)}
	if v := Judge(set, sendEmail(t, "bob@company.co", `,"Cc":"boss@company.co"`), ctx, nil, now); v.Decision != Allow {
		t.Errorf("hidden cc with the rule off: %v %v", v.Rules, v.Violations)
	}
	v := Judge(set, sendEmail(t, "bob@company.co", `,"Bcc":"phan@giftshop.club"`), ctx, nil, now)
	if !slices.Equal(v.Rules, []string{RuleUnauthorizedBcc}) || v.Decision != Block {
		t.Errorf("hidden bcc with the rule off: %v %v", v.Decision, v.Rules)
	}
	// Beside a policy that keeps it on, only that one reports it.
	both := loadSet(t, off, postmarkMCP)
	v = Judge(both, sendEmail(t, "bob@company.co", `,"Cc":"boss@company.co"`), ctx, nil, now)
	if v.Decision != Block || v.Policy != "mcp" || !slices.Equal(v.Policies, []string{"mcp"}) {
		t.Errorf("two policies: %v %q %v", v.Decision, v.Policy, v.Policies)
	}
}

// An MCP server serving no tool call has nothing declared to compare
// with: the rule does not apply and the Bcc rule is today's.
func TestUndeclaredNeedsCallInFlight(t *testing.T) {
	set := loadSet(t, postmarkMCP)
	m := mcpSession(t, plainArgs)
	m.Call = nil
	ctx := Context{MCP: m}
	if v := Judge(set, sendEmail(t, "bob@company.co", `,"Cc":"boss@company.co","Bcc":"archive@company.co"`), ctx, nil, now); v.Decision != Allow {
		t.Errorf("no call in flight: %v %v", v.Rules, v.Violations)
	}
	v := Judge(set, sendEmail(t, "bob@company.co", `,"Bcc":"phan@giftshop.club"`), ctx, nil, now)
	if !slices.Equal(v.Rules, []string{RuleUnauthorizedBcc}) {
		t.Errorf("no call in flight, whitelisted bcc: %v", v.Rules)
	}
}

// mcp_servers scopes match the server name of the MCP context.
func TestMCPScope(t *testing.T) {
	set := loadSet(t, `email_security_policy "postmark" {
  scope {
    mcp_servers = ["Postmark-*"]
  }
  blocked_actions {
    unknown_recipient_domains = false
  }
}
`)
	msg := sendEmail(t, "bob@company.co", ``)
	m := mcpSession(t, `{"to":"alice@company.co"}`)
	other := *m
	other.ServerName = "gmail-mcp"
	for _, tc := range []struct {
		name string
		ctx  Context
		want Decision
	}{
		{"the server", Context{MCP: m}, Block},
		{"another server", Context{MCP: &other}, Allow},
		{"no MCP context", Context{}, Allow},
		{"a name set by the caller wins", Context{MCP: &other, Target: policy.Target{MCPServer: "postmark-mcp"}}, Block},
	} {
		if v := Judge(set, msg, tc.ctx, nil, now); v.Decision != tc.want {
			t.Errorf("%s: %v %v, want %v", tc.name, v.Decision, v.Rules, tc.want)
		}
	}
}

// A request judged at every write of its body, from an MCP server with
// its call in flight: the hidden Bcc is blocked from the write that
// completes it, and the request as asked is allowed at every write (a cut
// address never reads as an undeclared one).
func TestUndeclaredPartialPerWrite(t *testing.T) {
	set := loadSet(t, postmarkMCP)
	ctx := Context{PID: 42, MCP: mcpSession(t, plainArgs)}
	const evil = `{"From":"agent@company.co","To":"bob@company.co","Bcc":"phan@giftshop.club","Subject":"Q3 report","TextBody":"Numbers attached.","MessageStream":"outbound"}`
	benign := strings.Replace(evil, `"Bcc":"phan@giftshop.club",`, ``, 1)
	due := strings.Index(evil, `giftshop.club"`) + len(`giftshop.club"`)
	for _, body := range []string{evil, benign} {
		for n := 0; n <= len(body); n++ {
			msgs, err := mail.FromHTTP(&mail.HTTPRequest{Method: "POST", Host: "api.postmarkapp.com", Path: "/email",
				Body: []byte(body[:n]), Partial: n < len(body)})
			if err != nil {
				t.Fatalf("prefix %d: %v", n, err)
			}
			d := Allow
			for _, m := range msgs {
				d = max(d, Judge(set, m, ctx, nil, now).Decision)
			}
			switch {
			case body == benign && d != Allow:
				t.Fatalf("benign prefix %d: %v", n, d)
			case body == evil && n < due && d != Allow:
				t.Fatalf("prefix %d before the Bcc is whole: %v", n, d)
			case body == evil && n >= due && d != Block:
				t.Fatalf("prefix %d after the Bcc is whole: %v", n, d)
			}
		}
	}
}

func TestAddressSet(t *testing.T) {
	s := NewAddressSet("bob@company.co", "jörg@xn--bcher-kva.example", "", "bob@company.co")
	if len(s) != 2 || !s.Has("bob@company.co") || !s.Has("jörg@xn--bcher-kva.example") || s.Has("") || s.Has("eve@company.co") {
		t.Errorf("set %v", s)
	}
	if AddressSet(nil).Has("bob@company.co") {
		t.Error("nil set")
	}
	// What the MCP decoder reads from arguments is in the normal form
	// NewAddressSet expects.
	for _, a := range mcp.Recipients([]byte(`{"to":"Bob <BOB@Company.CO>","cc":"jörg@Bücher.example","bcc":"mailto:phan%40GiftShop.club"}`)) {
		if n, ok := mail.NormalizeAddress(a); !ok || n != a {
			t.Errorf("%q normalises to %q", a, n)
		}
	}
}

func BenchmarkJudgeMCP(b *testing.B) {
	set := loadSet(b, postmarkMCP)
	ctx := Context{PID: 1, MCP: mcpSession(b, plainArgs)}
	msg := sendEmail(b, "bob@company.co", `,"Bcc":"phan@giftshop.club"`)
	b.ReportAllocs()
	for b.Loop() {
		Judge(set, msg, ctx, nil, now)
	}
}

func BenchmarkNewAddressSet(b *testing.B) {
	addrs := make([]string, mcp.MaxRecipients)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("user%d@company.co", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		NewAddressSet(addrs...)
	}
}

// The shipped default policy reports what an MCP server adds to its tool
// call, and only reports.
func TestDefaultPolicyUndeclared(t *testing.T) {
	set, diags := policy.ParseFiles("../../../hcl/policies/default.hcl")
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	ctx := Context{MCP: mcpSession(t, plainArgs)}
	v := Judge(set, sendEmail(t, "bob@company.co", `,"Cc":"boss@company.co"`), ctx, nil, now)
	if v.Decision != Alert || !v.Monitor || !slices.Equal(v.Rules, []string{RuleUndeclaredRecipients}) || !slices.Equal(v.Violations, []string{"boss@company.co"}) {
		t.Fatalf("%v monitor %v %v %v", v.Decision, v.Monitor, v.Rules, v.Violations)
	}
	if v := Judge(set, sendEmail(t, "bob@company.co", ``), ctx, nil, now); v.Decision != Allow {
		t.Fatalf("as asked: %v %v", v.Rules, v.Violations)
	}
}
