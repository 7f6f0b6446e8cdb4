package judge

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

func loadSet(t testing.TB, srcs ...string) *policy.Set {
	t.Helper()
	dir := t.TempDir()
	for i, src := range srcs {
		name := filepath.Join(dir, string(rune('a'+i))+".hcl")
		if err := os.WriteFile(name, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	set, diags := policy.Load(dir)
	if diags.HasErrors() {
		t.Fatalf("policy: %v", diags)
	}
	return set
}

func companySet(t testing.TB) *policy.Set {
	t.Helper()
	set, diags := policy.ParseFiles(filepath.Join("..", "..", "..", "hcl", "policies", "company.hcl"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	return set
}

func postmark(t testing.TB, body string) *mail.Message {
	t.Helper()
	msgs, err := mail.FromHTTP(&mail.HTTPRequest{Method: "POST", Host: "api.postmarkapp.com", Path: "/email", Body: []byte(body)})
	if err != nil || len(msgs) != 1 {
		t.Fatalf("FromHTTP: %v, %d messages", err, len(msgs))
	}
	return msgs[0]
}

func addr(s ...string) []mail.Address {
	var out []mail.Address
	for _, a := range s {
		n, _ := mail.NormalizeAddress(a)
		out = append(out, mail.Address{Addr: n})
	}
	return out
}

var now = time.Date(2025, 9, 25, 12, 0, 0, 0, time.UTC)

// The postmark-mcp backdoor: every message carries a hidden Bcc.
func TestPostmarkMCPBackdoor(t *testing.T) {
	set := companySet(t)
	msg := postmark(t, `{"From":"agent@company.com","To":"alice@company.com","Bcc":"phan@giftshop.club",
		"Subject":"Your invoice","TextBody":"Hello"}`)
	v := Judge(set, msg, Context{PID: 42, Target: policy.Target{Comm: "node"}}, NewBulkState(0), now)
	if v.Decision != Block || v.Monitor {
		t.Fatalf("decision %v monitor %v", v.Decision, v.Monitor)
	}
	if v.Policy != "company" || !slices.Equal(v.Policies, []string{"company"}) {
		t.Errorf("policy %q %v", v.Policy, v.Policies)
	}
	if !slices.Equal(v.Rules, []string{RuleUnauthorizedBcc, RuleUnknownRecipient}) {
		t.Errorf("rules %v", v.Rules)
	}
	if !slices.Equal(v.Violations, []string{"phan@giftshop.club"}) {
		t.Errorf("violations %v", v.Violations)
	}
	if !slices.Equal(v.Actions, []policy.Effect{policy.EffectBlock, policy.EffectTerminate, policy.EffectAlert}) || !slices.Equal(v.Intended, v.Actions) {
		t.Errorf("actions %v intended %v", v.Actions, v.Intended)
	}
	if v.Priority != policy.PriorityHigh || v.Quarantine {
		t.Errorf("priority %v quarantine %v", v.Priority, v.Quarantine)
	}
}

func TestRecipientRules(t *testing.T) {
	set := companySet(t)
	tests := []struct {
		name       string
		msg        *mail.Message
		rules      []string
		violations []string
	}{
		{"internal and whitelisted", &mail.Message{To: addr("a@company.com", "b@Subsidiaries.com"), Cc: addr("billing@stripe.com")}, nil, nil},
		{"subdomains", &mail.Message{To: addr("a@eu.mail.company.com", "x@notifications.github.com")}, nil, nil},
		{"look-alike domains", &mail.Message{To: addr("a@company.com.evil.net", "b@evilcompany.com")},
			[]string{RuleUnknownRecipient}, []string{"a@company.com.evil.net", "b@evilcompany.com"}},
		{"whitelisted bcc is still unauthorized", &mail.Message{To: addr("a@company.com"), Bcc: addr("x@stripe.com")},
			[]string{RuleUnauthorizedBcc}, []string{"x@stripe.com"}},
		{"internal bcc is fine", &mail.Message{To: addr("a@company.com"), Bcc: addr("audit@company.com")}, nil, nil},
		{"smtp envelope-only recipient is a bcc", &mail.Message{Provider: "smtp", To: addr("a@company.com"),
			EnvelopeTo: addr("a@company.com", "x@github.com")}, []string{RuleUnauthorizedBcc}, []string{"x@github.com"}},
		{"forward to whitelisted external", &mail.Message{Subject: "Fwd: contract", To: addr("x@stripe.com")},
			[]string{RuleExternalForwarding}, []string{"x@stripe.com"}},
		{"forward inside the company", &mail.Message{Subject: "Fwd: contract", To: addr("x@company.com")}, nil, nil},
		{"forwarded attachment", &mail.Message{To: addr("x@github.com"),
			Attachments: []mail.Attachment{{Name: "orig.eml", ContentType: "message/rfc822", Content: []byte("Subject: x\r\n\r\nhi")}}},
			[]string{RuleExternalForwarding}, []string{"x@github.com"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(set, tt.msg, Context{PID: 1}, nil, now)
			if !slices.Equal(v.Rules, tt.rules) || !slices.Equal(v.Violations, tt.violations) {
				t.Fatalf("rules %v violations %v; want %v %v", v.Rules, v.Violations, tt.rules, tt.violations)
			}
			if (len(tt.rules) == 0) != (v.Decision == Allow) {
				t.Fatalf("decision %v", v.Decision)
			}
		})
	}
}

func TestIDNDomains(t *testing.T) {
	set := loadSet(t, `email_security_policy "idn" {
  allowed_destinations {
    internal_domains = ["@Bücher.example"]
  }
}
`)
	for _, a := range []string{"x@bücher.example", "x@BÜCHER.example", "x@xn--bcher-kva.example", "x@mail.bücher.example"} {
		msg := &mail.Message{To: mail.ParseAddressList(a)}
		if v := Judge(set, msg, Context{}, nil, now); v.Decision != Allow {
			t.Errorf("%s: %v %v", a, v.Rules, v.Violations)
		}
	}
	msg := &mail.Message{To: mail.ParseAddressList("x@bucher.example")}
	if v := Judge(set, msg, Context{}, nil, now); v.Decision != Block {
		t.Errorf("bucher.example must not match bücher.example")
	}
}

const bulkPolicy = `email_security_policy "bulk" {
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  blocked_actions {
    unauthorized_bcc_recipients = false
    external_email_forwarding   = false
    unknown_recipient_domains   = false
  }
  bulk_email {
    max_messages   = 3
    max_recipients = 5
    window         = "10m"
  }
  response {
    violation_action = "alert"
    alert_priority   = "medium"
  }
}
`

func TestBulkMessages(t *testing.T) {
	set := loadSet(t, bulkPolicy)
	state := NewBulkState(0)
	ctx := Context{PID: 7, StartTime: 100}
	msg := &mail.Message{To: addr("x@unknown.example")}
	internal := &mail.Message{To: addr("x@company.com")}
	for i := 0; i < 3; i++ {
		if v := Judge(set, msg, ctx, state, now.Add(time.Duration(i)*time.Minute)); v.Decision != Allow {
			t.Fatalf("message %d: %v", i+1, v.Rules)
		}
		// Internal mail never counts.
		Judge(set, internal, ctx, state, now)
	}
	v := Judge(set, msg, ctx, state, now.Add(3*time.Minute))
	if v.Decision != Alert || !slices.Equal(v.Rules, []string{RuleBulkToUnknown}) || v.Priority != policy.PriorityMedium {
		t.Fatalf("4th message: %v %v %v", v.Decision, v.Rules, v.Priority)
	}
	if !strings.Contains(v.Violations[0], "4 messages") {
		t.Errorf("violation %q", v.Violations[0])
	}
	// Another process has its own counters.
	if v := Judge(set, msg, Context{PID: 8}, state, now.Add(3*time.Minute)); v.Decision != Allow {
		t.Errorf("other process: %v", v.Rules)
	}
	// A reused PID is another process.
	if v := Judge(set, msg, Context{PID: 7, StartTime: 200}, state, now.Add(3*time.Minute)); v.Decision != Allow {
		t.Errorf("reused pid: %v", v.Rules)
	}
	// After the window the count starts over.
	if v := Judge(set, msg, ctx, state, now.Add(30*time.Minute)); v.Decision != Allow {
		t.Errorf("after window: %v", v.Rules)
	}
	state.Forget(7, 100)
	if state.Len() != 2 {
		t.Errorf("%d processes tracked", state.Len())
	}
}

func TestBulkRecipients(t *testing.T) {
	set := loadSet(t, bulkPolicy)
	state := NewBulkState(0)
	msg := &mail.Message{To: addr("a@u1.example", "b@u2.example", "c@u3.example")}
	if v := Judge(set, msg, Context{PID: 1}, state, now); v.Decision != Allow {
		t.Fatal(v.Rules)
	}
	if v := Judge(set, msg, Context{PID: 1}, state, now); v.Decision != Alert {
		t.Fatal("6 recipients in the window must trip max_recipients = 5")
	}
	// Without state a single message over the threshold still trips.
	big := &mail.Message{To: addr("a@u1.example", "b@u2.example", "c@u3.example", "d@u4.example", "e@u5.example", "f@u6.example")}
	if v := Judge(set, big, Context{PID: 2}, nil, now); v.Decision != Alert {
		t.Fatal("stateless: 6 recipients")
	}
	// Partial (pending SMTP) messages are counted but not recorded.
	state = NewBulkState(0)
	pending := &mail.Message{Partial: true, EnvelopeTo: addr("a@u1.example")}
	for i := 0; i < 10; i++ {
		if v := Judge(set, pending, Context{PID: 3}, state, now); v.Decision != Allow {
			t.Fatalf("pending judged %d times tripped bulk", i+1)
		}
	}
}

func TestBulkStateBounded(t *testing.T) {
	set := loadSet(t, bulkPolicy)
	state := NewBulkState(10)
	msg := &mail.Message{To: addr("a@u1.example")}
	for pid := uint32(0); pid < 100; pid++ {
		Judge(set, msg, Context{PID: pid}, state, now.Add(time.Duration(pid)*time.Second))
	}
	if state.Len() > 10 {
		t.Fatalf("%d processes tracked", state.Len())
	}
	for i := 0; i < 1000; i++ {
		Judge(set, msg, Context{PID: 1000}, state, now)
	}
	state.mu.Lock()
	n := len(state.procs[procKey{1000, 0}].windows["bulk"])
	state.mu.Unlock()
	if n > 6 {
		t.Fatalf("%d events kept", n)
	}
}

func TestSecrets(t *testing.T) {
	set := companySet(t)
	awsKey := "AKIA" + "Q3ZJ5WXRT7KBN2LM"
	tests := []struct {
		name  string
		msg   *mail.Message
		rules []string
		where string
	}{
		{"api key in subject", &mail.Message{To: addr("a@company.com"), Subject: "key " + awsKey}, []string{RuleAPIKeys}, "subject"},
		{"password in html", &mail.Message{To: addr("a@company.com"), HTMLBody: "<p>Password: Tr0ub4dor&amp;3</p>"}, []string{RuleCredentials}, "html_body"},
		{"entity-encoded key in html", &mail.Message{To: addr("a@company.com"), HTMLBody: "<p>AKIA&#x51;3ZJ5WXRT7KBN2LM</p>"}, []string{RuleAPIKeys}, "html_body"},
		{"url credentials in text", &mail.Message{To: addr("a@company.com"), TextBody: "https://bot:Zx81!kkq9@git.company.com"}, []string{RuleCredentials}, "text_body"},
		{"key in template model", &mail.Message{To: addr("a@company.com"), Extra: []string{"ghp_" + strings.Repeat("aB3", 12)}}, []string{RuleAPIKeys}, "template_or_header"},
		{"benign look-alikes", &mail.Message{To: addr("a@company.com"), Subject: "AKIAIOSFODNN7EXAMPLE", TextBody: "Password: ********\npk_live_abc"}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(set, tt.msg, Context{}, nil, now)
			if !slices.Equal(v.Rules, tt.rules) {
				t.Fatalf("rules %v, want %v (%+v)", v.Rules, tt.rules, v.Findings)
			}
			if tt.where != "" && v.Findings[0].Where != tt.where {
				t.Errorf("where %q", v.Findings[0].Where)
			}
			for _, x := range v.Violations {
				if strings.Contains(x, awsKey) || strings.Contains(x, "Tr0ub4dor") {
					t.Errorf("secret leaked into the verdict: %q", x)
				}
			}
		})
	}
	// Disabled detectors find nothing.
	off := loadSet(t, `email_security_policy "off" {
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  content_protection {
    block_api_keys_in_emails         = false
    block_credentials_in_emails      = false
    quarantine_sensitive_attachments = false
  }
}
`)
	msg := &mail.Message{To: addr("a@company.com"), Subject: awsKey, TextBody: "password: Tr0ub4dor&3",
		Attachments: []mail.Attachment{{Name: "id_rsa", Content: []byte("x")}}}
	if v := Judge(off, msg, Context{}, nil, now); v.Decision != Allow {
		t.Fatalf("disabled rules fired: %v", v.Rules)
	}
}

func TestSensitiveAttachmentQuarantines(t *testing.T) {
	set := loadSet(t, `email_security_policy "q" {
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  response {
    violation_action    = "alert"
    quarantine_duration = "48h"
  }
}
`)
	msg := &mail.Message{To: addr("a@company.com"), Attachments: []mail.Attachment{
		{Name: "report.pdf", Content: []byte("%PDF")},
		{Name: "prod.env", Content: []byte("X=1")},
		{Name: "notes.txt", Content: []byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oT4bUqXo+7C2oAoGCCqGSM49\n")},
	}}
	v := Judge(set, msg, Context{}, nil, now)
	if v.Decision != Block || !v.Quarantine || v.QuarantineFor != 48*time.Hour {
		t.Fatalf("decision %v quarantine %v for %v", v.Decision, v.Quarantine, v.QuarantineFor)
	}
	if !slices.Equal(v.Actions, []policy.Effect{policy.EffectBlock, policy.EffectQuarantine, policy.EffectAlert}) {
		t.Errorf("actions %v", v.Actions)
	}
	if !slices.Contains(v.Violations, "prod.env") || !slices.Contains(v.Violations, "notes.txt") || slices.Contains(v.Violations, "report.pdf") {
		t.Errorf("violations %v", v.Violations)
	}
	if !slices.Contains(v.Rules, RuleSensitiveAttachments) || !slices.Contains(v.Rules, RuleCredentials) {
		t.Errorf("rules %v", v.Rules)
	}
}

func TestMonitorMode(t *testing.T) {
	set := loadSet(t, `email_security_policy "watch" {
  mode = "monitor"
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  response {
    violation_action = "terminate_and_alert"
    alert_priority   = "low"
  }
}
`)
	msg := &mail.Message{To: addr("a@company.com"), Bcc: addr("phan@giftshop.club"),
		Attachments: []mail.Attachment{{Name: "id_rsa", Content: []byte("k")}}}
	v := Judge(set, msg, Context{}, nil, now)
	if v.Decision != Alert || !v.Monitor || v.Quarantine {
		t.Fatalf("decision %v monitor %v quarantine %v", v.Decision, v.Monitor, v.Quarantine)
	}
	if !slices.Equal(v.Actions, []policy.Effect{policy.EffectAlert}) || !slices.Equal(v.Intended, []policy.Effect{policy.EffectBlock, policy.EffectQuarantine, policy.EffectTerminate, policy.EffectAlert}) {
		t.Errorf("actions %v intended %v", v.Actions, v.Intended)
	}
	if v.Priority != policy.PriorityLow {
		t.Errorf("priority %v", v.Priority)
	}
}

func TestScopesAndMerging(t *testing.T) {
	set := loadSet(t, `email_security_policy "everyone" {
  mode = "monitor"
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  response {
    alert_priority = "low"
  }
}
`, `email_security_policy "mcp" {
  scope {
    systemd_units = ["postmark-mcp"]
  }
  scope {
    mcp_servers = ["postmark-mcp"]
  }
  allowed_destinations {
    internal_domains = ["company.com"]
  }
  response {
    violation_action = "terminate_and_alert"
    alert_priority   = "critical"
  }
}
`)
	msg := &mail.Message{To: addr("a@company.com"), Bcc: addr("phan@giftshop.club")}
	// Outside the scope only the monitor policy applies.
	v := Judge(set, msg, Context{Target: policy.Target{Unit: "cron.service"}}, nil, now)
	if v.Decision != Alert || !v.Monitor || v.Policy != "everyone" {
		t.Fatalf("unscoped process: %v %v %q", v.Decision, v.Monitor, v.Policy)
	}
	for _, ctx := range []Context{{Target: policy.Target{Unit: "postmark-mcp.service"}}, {Target: policy.Target{MCPServer: "Postmark-MCP"}}} {
		v = Judge(set, msg, ctx, nil, now)
		if v.Decision != Block || v.Monitor || v.Policy != "mcp" || !slices.Equal(v.Policies, []string{"everyone", "mcp"}) {
			t.Fatalf("%+v: %v %v %q %v", ctx, v.Decision, v.Monitor, v.Policy, v.Policies)
		}
		if v.Priority != policy.PriorityCritical || !slices.Equal(v.Actions, []policy.Effect{policy.EffectBlock, policy.EffectTerminate, policy.EffectAlert}) {
			t.Errorf("merged priority %v actions %v", v.Priority, v.Actions)
		}
		if len(v.Findings) != 4 { // 2 rules x 2 policies
			t.Errorf("findings %+v", v.Findings)
		}
	}
}

func TestSMTPPendingJudgedBeforeData(t *testing.T) {
	set := companySet(t)
	s := mail.NewSMTPSession()
	s.Feed([]byte("EHLO x\r\nMAIL FROM:<a@company.com>\r\nRCPT TO:<b@company.com>\r\n"))
	if v := Judge(set, s.Pending(), Context{}, nil, now); v.Decision != Allow {
		t.Fatalf("internal envelope: %v", v.Rules)
	}
	s.Feed([]byte("RCPT TO:<phan@giftshop.club>\r\n"))
	v := Judge(set, s.Pending(), Context{}, nil, now)
	if v.Decision != Block || !slices.Equal(v.Violations, []string{"phan@giftshop.club"}) {
		t.Fatalf("pending with external rcpt: %v %v", v.Decision, v.Violations)
	}
	// The complete message names it a Bcc.
	msgs := s.Feed([]byte("DATA\r\nTo: b@company.com\r\nSubject: hi\r\n\r\nhello\r\n.\r\n"))
	v = Judge(set, msgs[0], Context{}, nil, now)
	if !slices.Equal(v.Rules, []string{RuleUnauthorizedBcc, RuleUnknownRecipient}) {
		t.Fatalf("complete: %v", v.Rules)
	}
}

func TestNoPolicies(t *testing.T) {
	msg := &mail.Message{To: addr("phan@giftshop.club")}
	if v := Judge(nil, msg, Context{}, nil, now); v.Decision != Allow {
		t.Fatal("nil set")
	}
	if v := Judge(&policy.Set{}, msg, Context{}, nil, now); v.Decision != Allow {
		t.Fatal("empty set")
	}
	if v := Judge(companySet(t), nil, Context{}, nil, now); v.Decision != Allow {
		t.Fatal("nil message")
	}
}

func TestDecisionString(t *testing.T) {
	if Allow.String() != "allow" || Alert.String() != "alert" || Block.String() != "block" {
		t.Fatal("names")
	}
	if !Allow.Valid() || !Block.Valid() || Decision(3).Valid() || Decision(-1).Valid() || Decision(3).String() != "decision(3)" {
		t.Fatal("an unknown decision")
	}
}

func BenchmarkJudgeClean(b *testing.B) {
	set := companySet(b)
	msg := postmark(b, `{"From":"agent@company.com","To":"alice@company.com, bob@subsidiaries.com",
		"Subject":"Weekly report","TextBody":"`+strings.Repeat("Numbers are up this week. ", 200)+`"}`)
	state := NewBulkState(0)
	b.ReportAllocs()
	for b.Loop() {
		Judge(set, msg, Context{PID: 1}, state, now)
	}
}

func BenchmarkJudgeBackdoor(b *testing.B) {
	set := companySet(b)
	msg := postmark(b, `{"From":"agent@company.com","To":"alice@company.com","Bcc":"phan@giftshop.club","Subject":"x","TextBody":"hi"}`)
	state := NewBulkState(0)
	b.ReportAllocs()
	for b.Loop() {
		Judge(set, msg, Context{PID: 1}, state, now)
	}
}

// The shipped default policy only reports, whatever it finds.
func TestDefaultPolicyMonitors(t *testing.T) {
	set, diags := policy.ParseFiles(filepath.Join("..", "..", "..", "hcl", "policies", "default.hcl"))
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	msg := postmark(t, `{"From":"agent@company.com","To":"alice@company.com","Bcc":"phan@giftshop.club","Subject":"x"}`)
	v := Judge(set, msg, Context{}, nil, now)
	if v.Decision != Alert || !v.Monitor || !slices.Equal(v.Actions, []policy.Effect{policy.EffectAlert}) {
		t.Fatalf("decision %v monitor %v actions %v", v.Decision, v.Monitor, v.Actions)
	}
	if !slices.Equal(v.Rules, []string{RuleUnauthorizedBcc}) || !slices.Equal(v.Violations, []string{"phan@giftshop.club"}) {
		t.Fatalf("rules %v violations %v", v.Rules, v.Violations)
	}
	// Plain mail to anyone is not reported while the lists are empty.
	plain := postmark(t, `{"From":"a@x.example","To":"b@y.example","Subject":"hello","TextBody":"hi"}`)
	if v := Judge(set, plain, Context{}, nil, now); v.Decision != Allow {
		t.Fatalf("plain mail: %v", v.Rules)
	}
}

// One BulkState shared by concurrent judges (run with -race).
func TestJudgeConcurrent(t *testing.T) {
	set := loadSet(t, bulkPolicy)
	state := NewBulkState(0)
	msg := &mail.Message{To: addr("a@u1.example")}
	done := make(chan int)
	for g := 0; g < 4; g++ {
		go func() {
			alerts := 0
			for i := 0; i < 50; i++ {
				if Judge(set, msg, Context{PID: 9}, state, now).Decision == Alert {
					alerts++
				}
			}
			done <- alerts
		}()
	}
	total := 0
	for g := 0; g < 4; g++ {
		total += <-done
	}
	// 200 messages, max_messages 3: all but the first 3 trip.
	if total != 197 {
		t.Fatalf("%d alerts, want 197", total)
	}
}

// A request to a mail API that could not be read whole is a violation of
// its own (on by default), named with the reason; turned off, it is not;
// a partial message (still being written) never is.
func TestUnreadableMailRequest(t *testing.T) {
	msg := mail.UnreadableRequest("/email", "body is not JSON: invalid character ',' looking for beginning of object key string")
	v := Judge(companySet(t), msg, Context{}, nil, now)
	if v.Decision != Block || !slices.Contains(v.Rules, RuleUnreadableMail) {
		t.Fatalf("verdict %+v, want block by %s", v, RuleUnreadableMail)
	}
	off := loadSet(t, `email_security_policy "p" {
  allowed_destinations {
    internal_domains = ["@company.com"]
  }
  blocked_actions {
    unreadable_mail_requests = false
  }
}`)
	if v := Judge(off, msg, Context{}, nil, now); v.Decision != Allow {
		t.Fatalf("rule off: verdict %+v, want allow", v)
	}
	msg.Partial = true
	if v := Judge(companySet(t), msg, Context{}, nil, now); v.Decision != Allow {
		t.Fatalf("partial message: verdict %+v, want allow", v)
	}
}

// An HTTP request judged at every write of its body: allowed while the Bcc
// value is incomplete, blocked from the write that completes it, before
// the rest of the body leaves; its benign twin is allowed at every write.
func TestHTTPPartialJudgedPerWrite(t *testing.T) {
	set := companySet(t)
	const evil = `{"From":"agent@company.com","To":"alice@company.com","Bcc":"phan@giftshop.club","Subject":"Your invoice","TextBody":"Hello, please find the invoice attached."}`
	benign := strings.Replace(evil, "phan@giftshop.club", "bob@company.com", 1)
	due := strings.Index(evil, `giftshop.club"`) + len(`giftshop.club"`)
	for _, body := range []string{evil, benign} {
		blocked := false
		for n := 0; n <= len(body); n += 7 {
			msgs, err := mail.FromHTTP(&mail.HTTPRequest{Method: "POST", Host: "api.postmarkapp.com", Path: "/email",
				Body: []byte(body[:n]), Partial: n < len(body)})
			if err != nil {
				t.Fatalf("prefix %d: %v", n, err)
			}
			d := Allow
			for _, m := range msgs {
				if v := Judge(set, m, Context{PID: 42}, NewBulkState(0), now); v.Decision > d {
					d = v.Decision
				}
			}
			switch {
			case body == benign && d != Allow:
				t.Fatalf("benign prefix %d: %v", n, d)
			case body == evil && n < due && d != Allow:
				t.Fatalf("prefix %d before the Bcc is whole: %v", n, d)
			case body == evil && n >= due && d != Block:
				t.Fatalf("prefix %d after the Bcc is whole: %v", n, d)
			}
			blocked = blocked || d == Block
		}
		if body == evil && !blocked {
			t.Fatal("never blocked")
		}
	}
}
