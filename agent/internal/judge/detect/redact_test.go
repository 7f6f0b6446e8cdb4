package detect

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	const aws, gh = "AKIAQ3EGRTYPLMZK7VWD", "ghp_Xq3vT9mLw2ZrK8pYb5HsJd7GcA1eNf4uQo6R"
	in := "subject " + aws + " and file " + gh + ".env, password: Hunter2-Correct-Horse"
	got := Redact(in)
	for _, s := range []string{aws, gh, "Hunter2-Correct-Horse"} {
		if strings.Contains(got, s) {
			t.Errorf("Redact kept %q: %s", s, got)
		}
	}
	for _, want := range []string{"[redacted:aws_access_key_id 20B]", "[redacted:github_token 40B].env", "password: [redacted:password 21B]"} {
		if !strings.Contains(got, want) {
			t.Errorf("Redact(%q) = %q, lacks %q", in, got, want)
		}
	}
	for _, s := range []string{"", "phan@giftshop.club", "/usr/bin/node", "0:/system.slice/a.service"} {
		if Redact(s) != s {
			t.Errorf("Redact(%q) = %q", s, Redact(s))
		}
	}
}
