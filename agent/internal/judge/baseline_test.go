package judge

import (
	"slices"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// A baseline deviation: a rug pull blocks by default, an unseen
// destination alerts; each level is the policy's to set; a clean message
// from a package with no deviation is allowed.
func TestBaselineFindings(t *testing.T) {
	const head = `email_security_policy "p" {
  allowed_destinations {
    internal_domains = ["company.co"]
  }
`
	defaults := loadSet(t, head+"}\n")
	strict := loadSet(t, head+"  blocked_actions {\n    unseen_destinations = \"block\"\n    rug_pull = \"off\"\n  }\n}\n")
	msg := &mail.Message{Provider: mail.ProviderPostmark, From: []mail.Address{{Addr: "a@company.co"}}, To: []mail.Address{{Addr: "b@company.co"}}}
	rug := &Baseline{Package: "npm:postmark-mcp@1.0.17 sha256:2", Previous: "npm:postmark-mcp@1.0.15 sha256:1", RugPull: true, Unseen: []string{"copy.example:443"}}
	unseen := &Baseline{Package: "npm:postmark-mcp@1.0.15 sha256:1", Unseen: []string{"other.example:443"}}
	for _, tc := range []struct {
		name     string
		set      *policy.Set
		b        *Baseline
		decision Decision
		rule     string
	}{
		{"no deviation", defaults, nil, Allow, ""},
		{"rug pull, default", defaults, rug, Block, RuleRugPull},
		{"unseen, default", defaults, unseen, Alert, RuleUnseenDestinations},
		{"rug pull, off", strict, rug, Allow, ""},
		{"unseen, block", strict, unseen, Block, RuleUnseenDestinations},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Judge(tc.set, msg, Context{Baseline: tc.b}, nil, time.Now())
			if v.Decision != tc.decision {
				t.Fatalf("decision %v, want %v (%+v)", v.Decision, tc.decision, v)
			}
			if tc.rule == "" {
				return
			}
			if !slices.Equal(v.Rules, []string{tc.rule}) || !slices.Equal(v.Violations, tc.b.Unseen) {
				t.Errorf("rules %v violations %v", v.Rules, v.Violations)
			}
			if tc.decision == Alert && slices.Contains(v.Actions, policy.EffectBlock) {
				t.Errorf("an alert-level finding carries %v", v.Actions)
			}
		})
	}
}
