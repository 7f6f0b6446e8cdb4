package policy

import (
	"bytes"
	"errors"
	"flag"
	"log/syslog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/hcl/v2"
)

var update = flag.Bool("update", false, "rewrite golden files")

// The case study's policy is accepted exactly as written.
func TestCaseStudyPolicy(t *testing.T) {
	set, diags := ParseFiles(filepath.Join("..", "..", "..", "hcl", "policies", "company.hcl"))
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if len(set.Policies) != 1 {
		t.Fatalf("%d policies", len(set.Policies))
	}
	p := set.Policies[0]
	if p.Name != "company" || p.Mode != ModeEnforce {
		t.Errorf("name %q mode %q", p.Name, p.Mode)
	}
	if got := p.Internal.List(); !slices.Equal(got, []string{"company.com", "subsidiaries.com"}) {
		t.Errorf("internal %v", got)
	}
	if got := p.Whitelisted.List(); !slices.Equal(got, []string{"stripe.com", "github.com", "postmarkapp.com"}) {
		t.Errorf("whitelisted %v", got)
	}
	want := Rules{UnauthorizedBcc: true, UndeclaredRecipients: true, ExternalForwarding: true, BulkToUnknown: true, UnknownRecipients: true,
		UnreadableMail: true, APIKeys: true, Credentials: true, SensitiveAttachments: true,
		UnseenDestinations: LevelAlert, RugPull: LevelBlock}
	if p.Rules != want {
		t.Errorf("rules %+v", p.Rules)
	}
	if p.Action != ActionTerminateAndAlert || !slices.Equal(p.Effects, []Effect{EffectBlock, EffectTerminate, EffectAlert}) {
		t.Errorf("action %q effects %v", p.Action, p.Effects)
	}
	if p.Priority != PriorityErr { // high is LOG_ERR
		t.Errorf("priority %v", p.Priority)
	}
	if p.QuarantineFor != 24*time.Hour {
		t.Errorf("quarantine %v", p.QuarantineFor)
	}
	if len(p.Scopes) != 0 || !p.Applies(Target{}) {
		t.Error("a policy without scope must apply to every process")
	}
}

func TestShippedPolicies(t *testing.T) {
	set, diags := Load(filepath.Join("..", "..", "..", "hcl", "policies"))
	if diags.HasErrors() {
		var buf bytes.Buffer
		WriteDiagnostics(&buf, set.Sources, diags)
		t.Fatal(buf.String())
	}
	if len(set.Policies) < 2 {
		t.Fatalf("want company and default policies, got %d", len(set.Policies))
	}
}

func TestFullPolicy(t *testing.T) {
	set, diags := ParseFiles(filepath.Join("testdata", "good", "full.hcl"))
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	p, m := set.Policies[0], set.Policies[1]
	if p.Description == "" || p.Mode != ModeEnforce || len(p.Scopes) != 2 {
		t.Fatalf("policy %+v", p)
	}
	if !slices.Equal(p.Internal.List(), []string{"company.com", "subsidiaries.com", "xn--bcher-kva.example"}) {
		t.Errorf("internal %v", p.Internal.List())
	}
	if p.Rules.ExternalForwarding || p.Rules.Credentials || !p.Rules.APIKeys {
		t.Errorf("rules %+v", p.Rules)
	}
	if p.Bulk != (Bulk{MaxMessages: 5, MaxRecipients: 10, Window: 36 * time.Hour}) {
		t.Errorf("bulk %+v", p.Bulk)
	}
	if p.Action != ActionQuarantineAndAlert || p.Priority != PriorityCritical || p.QuarantineFor != 7*24*time.Hour {
		t.Errorf("response %v %v %v", p.Action, p.Priority, p.QuarantineFor)
	}
	// Defaults.
	if m.Mode != ModeEnforce || m.Action != DefaultAction || m.Priority != DefaultPriority ||
		m.QuarantineFor != DefaultQuarantineDuration || m.Bulk.MaxMessages != DefaultBulkMaxMessages ||
		m.Bulk.MaxRecipients != DefaultBulkMaxRecipients || m.Bulk.Window != DefaultBulkWindow {
		t.Errorf("defaults %+v", m)
	}
	if !m.Rules.UnauthorizedBcc || !m.Rules.UnknownRecipients || !m.Rules.SensitiveAttachments {
		t.Errorf("rules default to on: %+v", m.Rules)
	}
}

func TestDomainSet(t *testing.T) {
	d := NewDomainSet("company.com", "xn--bcher-kva.de")
	for dom, want := range map[string]bool{
		"company.com":          true,
		"mail.company.com":     true,
		"a.b.company.com":      true,
		"evilcompany.com":      false,
		"company.com.evil.net": false,
		"com":                  false,
		"":                     false,
		"xn--bcher-kva.de":     true,
	} {
		if got := d.Contains(dom); got != want {
			t.Errorf("Contains(%q) = %v", dom, got)
		}
	}
	if (DomainSet{}).Contains("company.com") {
		t.Error("empty set")
	}
}

func TestScopeMatch(t *testing.T) {
	set, diags := ParseFiles(filepath.Join("testdata", "good", "full.hcl"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := set.Policies[0]
	tests := []struct {
		t    Target
		want bool
	}{
		{Target{Exe: "/usr/bin/node", Comm: "node", Unit: "postmark-mcp.service", CgroupPath: "/system.slice/mcp.slice/x.scope", MCPServer: "Postmark-MCP"}, true},
		{Target{Exe: "/opt/mcp/bin/server", Comm: "python3.12", Unit: "mcp-mail.service", CgroupPath: "/system.slice/mcp.slice", MCPServer: "postmark-mcp"}, true},
		// First scope fails on the cgroup boundary; second on the server name.
		{Target{Exe: "/usr/bin/node", Comm: "node", Unit: "postmark-mcp.service", CgroupPath: "/system.slice/mcp.slicex", MCPServer: "postmark-mcp"}, false},
		{Target{Exe: "/usr/bin/curl", Comm: "curl", Unit: "postmark-mcp.service", CgroupPath: "/system.slice/mcp.slice", MCPServer: "postmark-mcp"}, false},
		// Second scope alone.
		{Target{Exe: "/usr/bin/anything", MCPServer: "gmail-mailer"}, true},
		{Target{}, false},
	}
	for i, tt := range tests {
		if got := p.Applies(tt.t); got != tt.want {
			t.Errorf("%d: Applies(%+v) = %v", i, tt.t, got)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{"24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "d", "forever", "1x", "99999999999d"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q): no error", in)
		}
	}
}

// Golden diagnostics for broken files: every error, with file, line,
// column and snippet, in one run.
func TestCheckGolden(t *testing.T) {
	tests := []struct {
		name    string
		paths   []string
		wantErr bool
		minErrs int
	}{
		{"syntax", []string{"testdata/broken/syntax.hcl"}, true, 1},
		{"unknown", []string{"testdata/broken/unknown.hcl"}, true, 4},
		{"types", []string{"testdata/broken/types.hcl"}, true, 9},
		{"values", []string{"testdata/broken/values.hcl"}, true, 15},
		{"duplicate", []string{"testdata/broken/dup_a.hcl", "testdata/broken/dup_b.hcl"}, true, 2},
		{"egress", []string{"testdata/broken/egress.hcl"}, true, 12},
		{"missing", []string{"testdata/broken/does-not-exist.hcl"}, true, 1},
		{"good", []string{"testdata/good"}, false, 0},
		{"case-study", []string{"../../../hcl/policies/company.hcl"}, false, 0},
	}
	wd, _ := os.Getwd()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := Check(tt.paths, &buf)
			if tt.wantErr != (err != nil) {
				t.Fatalf("err = %v\n%s", err, buf.String())
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			out := buf.String()
			if n := strings.Count(out, "Error: "); n < tt.minErrs {
				t.Errorf("%d errors reported, want at least %d:\n%s", n, tt.minErrs, out)
			}
			if strings.Contains(out, wd) || strings.Contains(out, filepath.ToSlash(wd)) {
				t.Fatalf("output contains the absolute working directory:\n%s", out)
			}
			if lines := strings.Split(strings.TrimSpace(out), "\n"); !tt.wantErr && tt.name == "case-study" && len(lines) != 1 {
				t.Errorf("a clean file prints one line, got:\n%s", out)
			}
			golden := filepath.Join("testdata", "golden", tt.name+".txt")
			if *update {
				if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if string(want) != out {
				t.Errorf("output differs from %s:\n--- got\n%s\n--- want\n%s", golden, out, want)
			}
		})
	}
}

func TestCheckReportsColumn(t *testing.T) {
	var buf bytes.Buffer
	_ = Check([]string{"testdata/broken/values.hcl"}, &buf)
	if !strings.Contains(buf.String(), "on testdata/broken/values.hcl line 2, column 10") {
		t.Fatalf("no file/line/column locator:\n%s", buf.String())
	}
}

func TestLoadEmptyDir(t *testing.T) {
	dir := t.TempDir()
	set, diags := Load(dir)
	if set == nil || len(set.Policies) != 0 || diags.HasErrors() || len(diags) != 1 || diags[0].Severity != hcl.DiagWarning {
		t.Fatalf("set %v diags %v", set, diags)
	}
	var buf bytes.Buffer
	if err := Check([]string{dir}, &buf); !errors.Is(err, ErrInvalid) {
		t.Fatalf("check of an empty directory: %v", err)
	}
}

func TestLoadKeepsValidPolicies(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.hcl", "email_security_policy \"a\" {\n  allowed_destinations {\n    internal_domains = [\"a.com\"]\n  }\n}\n")
	write("b.hcl", `email_security_policy "b" { mode = "bogus" }`)
	write("c.txt", `not hcl at all {`)
	set, diags := Load(dir)
	if !diags.HasErrors() {
		t.Fatal("want the error of b.hcl")
	}
	if len(set.Policies) != 1 || set.Policies[0].Name != "a" || len(set.Files) != 2 {
		t.Fatalf("policies %v files %v", set.Policies, set.Files)
	}
}

// The priorities are syslog's severities, number for number: the journal
// writes them as PRIORITY.
func TestPrioritiesAreSyslogSeverities(t *testing.T) {
	for p, want := range map[Priority]syslog.Priority{
		PriorityEmerg: syslog.LOG_EMERG, PriorityAlert: syslog.LOG_ALERT, PriorityCrit: syslog.LOG_CRIT,
		PriorityErr: syslog.LOG_ERR, PriorityWarning: syslog.LOG_WARNING, PriorityNotice: syslog.LOG_NOTICE,
		PriorityInfo: syslog.LOG_INFO, PriorityDebug: syslog.LOG_DEBUG,
	} {
		if int(p) != int(want) || !p.Valid() {
			t.Errorf("priority %d, want %d", p, want)
		}
	}
	if Priority(8).Valid() || Priority(-1).Valid() {
		t.Error("a priority outside 0-7 is valid")
	}
	if PriorityHigh.String() != "high" || PriorityInfo.String() != "unknown" {
		t.Errorf("names %q %q", PriorityHigh, PriorityInfo)
	}
}
