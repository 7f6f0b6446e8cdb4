package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The baseline's settings: the agent block's mode and first-learning
// window, a policy's levels for unseen destinations and rug pulls.
func TestBaselineSettings(t *testing.T) {
	dir := t.TempDir()
	src := `agent {
  baseline             = "enforce"
  baseline_first_learn = "0s"
}
email_security_policy "defaults" {
  allowed_destinations {
    internal_domains = ["company.co"]
  }
}
email_security_policy "set" {
  allowed_destinations {
    internal_domains = ["company.co"]
  }
  blocked_actions {
    unseen_destinations = "block"
    rug_pull            = "off"
  }
}
`
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	set, diags := Load(dir)
	if len(diags) > 0 {
		t.Fatal(diags)
	}
	if b := set.Baseline(); b.Mode != BaselineEnforce || b.FirstLearn != -1 {
		t.Errorf("baseline %+v, want enforce, never first-learn", b)
	}
	if r := set.Policies[0].Rules; r.UnseenDestinations != LevelAlert || r.RugPull != LevelBlock {
		t.Errorf("defaults: %s %s", r.UnseenDestinations, r.RugPull)
	}
	if r := set.Policies[1].Rules; r.UnseenDestinations != LevelBlock || r.RugPull != LevelOff {
		t.Errorf("set: %s %s", r.UnseenDestinations, r.RugPull)
	}
	if b := (&Set{}).Baseline(); b.Mode != BaselineLearn || b.FirstLearn != DefaultBaselineFirstLearn {
		t.Errorf("no agent block: %+v", b)
	}
}

// Bad baseline values are reported at the value with file, line and
// column.
func TestBaselineSettingsErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"agent {\n  baseline = \"strict\"\n}\n", `p.hcl:2,14-22`},
		{"agent {\n  baseline_first_learn = \"soon\"\n}\n", `p.hcl:2,26-32`},
		{"email_security_policy \"x\" {\n  allowed_destinations {\n    internal_domains = [\"company.co\"]\n  }\n  blocked_actions {\n    rug_pull = \"sometimes\"\n  }\n}\n", `p.hcl:6,16-27`},
		{"email_security_policy \"x\" {\n  allowed_destinations {\n    internal_domains = [\"company.co\"]\n  }\n  blocked_actions {\n    unseen_destinations = true\n  }\n}\n", `p.hcl:6,27-31`},
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "p.hcl"), []byte(tc.src), 0o600); err != nil {
			t.Fatal(err)
		}
		_, diags := Load(dir)
		if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%q: diagnostics %v, want one at %s", tc.src, diags, tc.want)
		}
	}
}
