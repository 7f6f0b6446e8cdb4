package policy

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEgressPolicy(t *testing.T) {
	set, diags := ParseFiles(filepath.Join("testdata", "good", "egress.hcl"))
	if len(diags) > 0 {
		t.Fatalf("diagnostics: %v", diags)
	}
	if len(set.Egress) != 1 || len(set.Policies) != 0 {
		t.Fatalf("egress %d, email %d", len(set.Egress), len(set.Policies))
	}
	p := set.Egress[0]
	if p.Name != "postmark-only" || p.Mode != ModeMonitor || p.Description == "" || len(p.Scopes) != 3 || len(p.Allow) != 2 {
		t.Fatalf("policy %+v", p)
	}
	if !slices.Equal(p.Scopes[0].UnitPatterns(), []string{"postmark-mcp", "postmark-mcp.service"}) {
		t.Errorf("units %v", p.Scopes[0].UnitPatterns())
	}
	if got := p.Hosts(); !slices.Equal(got, []string{"api.postmarkapp.com", "api.example.com"}) {
		t.Errorf("hosts %v", got)
	}
	if !slices.Equal(p.Allow[0].Ports, []uint16{443}) || len(p.Allow[1].Ports) != 0 {
		t.Errorf("ports %v %v", p.Allow[0].Ports, p.Allow[1].Ports)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128"), netip.MustParsePrefix("127.0.0.53/32")}
	if !slices.Equal(p.Allow[1].Prefixes, want) {
		t.Errorf("prefixes %v", p.Allow[1].Prefixes)
	}
}

// The mode defaults to enforce, as an email_security_policy's does.
func TestEgressDefaultsAndLimits(t *testing.T) {
	set, diags := ParseSource("e.hcl", []byte(`egress_policy "e" {
  scope { cgroups = ["/t"] }
  allow { cidrs = ["127.0.0.1/32"] }
}
egress_policy "e" {
  scope { cgroups = ["/t"] }
  allow { cidrs = ["127.0.0.1/32"] }
}`))
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "Duplicate egress policy name") {
		t.Fatalf("diags %v", diags)
	}
	if len(set.Egress) == 0 || set.Egress[0].Mode != ModeEnforce {
		t.Fatalf("egress %+v", set.Egress)
	}
	var b strings.Builder
	for i := range MaxEgressPolicies + 1 {
		b.WriteString("egress_policy \"p" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "\" {\n scope { cgroups = [\"/t\"] }\n allow { cidrs = [\"::1\"] }\n}\n")
	}
	if _, diags := ParseSource("many.hcl", []byte(b.String())); !strings.Contains(diags.Error(), "Too many egress policies") {
		t.Fatalf("diags %v", diags)
	}
}
