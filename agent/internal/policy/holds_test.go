package policy

import (
	"strings"
	"testing"
	"time"
)

// Hold settings: a policy's own, else the agent block's, else the defaults.
func TestHoldSettingsInherit(t *testing.T) {
	set, diags := ParseSource("p.hcl", []byte(`
agent {
  fail_mode          = "closed"
  write_hold_timeout = "500ms"
}
email_security_policy "a" {
  exec_hold_timeout = "2s"
}
email_security_policy "b" {
  fail_mode          = "open"
  write_hold_timeout = "250ms"
}
`))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	a, b := set.Holds(set.Policies[0]), set.Holds(set.Policies[1])
	if a != (HoldSettings{FailMode: FailClosed, ExecTimeout: 2 * time.Second, WriteTimeout: 500 * time.Millisecond}) {
		t.Errorf("a: %+v", a)
	}
	if b != (HoldSettings{FailMode: FailOpen, ExecTimeout: DefaultExecHoldTimeout, WriteTimeout: 250 * time.Millisecond}) {
		t.Errorf("b: %+v", b)
	}
	none, _ := ParseSource("q.hcl", []byte(`email_security_policy "c" {}`))
	if got := none.Holds(none.Policies[0]); got != DefaultHoldSettings() {
		t.Errorf("defaults: %+v", got)
	}
	if c := a.Combine(b); c != (HoldSettings{FailMode: FailClosed, ExecTimeout: 2 * time.Second, WriteTimeout: 250 * time.Millisecond}) {
		t.Errorf("combined: %+v", c)
	}
}

// Bad hold settings are rejected with file:line:column, and nothing of
// the file is applied.
func TestHoldSettingsErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"agent {\n  fail_mode = \"shut\"\n}\n", `p.hcl:2,15-21: Unknown fail_mode; "shut" is not a valid fail_mode`},
		{"agent {\n  write_hold_timeout = \"2ms\"\n}\n", `p.hcl:2,24-29: Invalid duration; "2ms" must be between 10ms and 1m`},
		{"email_security_policy \"x\" {\n  exec_hold_timeout = \"2h\"\n}\n", `p.hcl:2,23-27: Invalid duration`},
		{"agent {}\nagent {}\n", `p.hcl:2,1-6: Duplicate agent block; Only one agent block is allowed in the policy directory; the first one is at p.hcl:1,1-6.`},
		{"agent {\n  mode = \"enforce\"\n}\n", `p.hcl:2,3-7: Unsupported argument`},
	} {
		set, diags := ParseSource("p.hcl", []byte(c.src))
		if !diags.HasErrors() || !strings.Contains(diags.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.src, diags, c.want)
		}
		if set != nil && len(set.Policies) != 0 {
			t.Errorf("%q: policies applied: %d", c.src, len(set.Policies))
		}
	}
}

// The last good policies survive a broken policy directory.
func TestLastGood(t *testing.T) {
	state := t.TempDir()
	if set, err := LoadLastGood(state); set != nil || err != nil {
		t.Fatalf("nothing saved yet: %v, %v", set, err)
	}
	set, diags := ParseSource("dir/a.hcl", []byte("agent {\n  fail_mode = \"closed\"\n}\nemail_security_policy \"a\" {\n  mode = \"monitor\"\n}\n"))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	for i := 0; i < 2; i++ { // the second save replaces the first
		if err := SaveLastGood(state, set); err != nil {
			t.Fatal(err)
		}
	}
	got, err := LoadLastGood(state)
	if err != nil || len(got.Policies) != 1 || got.Policies[0].Mode != ModeMonitor || got.Agent.Holds.FailMode != FailClosed {
		t.Fatalf("loaded %+v, %v", got, err)
	}
}
