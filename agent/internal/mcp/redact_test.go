package mcp

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestRedactArgs(t *testing.T) {
	for _, tc := range []struct {
		name, args, want string
	}{
		{"plain", `{"to":"alice@example.com", "subject":"Hi <there> & you","n":3,"ok":true,"x":null}`,
			`{"to":"alice@example.com","subject":"Hi <there> & you","n":3,"ok":true,"x":null}`},
		{"secret keys", `{"password":"hunter22","apiKey":"abc","Authorization":"Bearer x","client_secret":{"a":[1,2]},"access_token":7,"max_tokens":100,"author":"Ann"}`,
			`{"password":"[redacted]","apiKey":"[redacted]","Authorization":"[redacted]","client_secret":"[redacted]","access_token":"[redacted]","max_tokens":100,"author":"Ann"}`},
		{"nested secret key", `{"config":{"headers":{"X-Api-Key":"k"}},"list":[{"pwd":"p"}]}`,
			`{"config":{"headers":{"X-Api-Key":"[redacted]"}},"list":[{"pwd":"[redacted]"}]}`},
		{"key-looking value", `{"note":"use sk_live_51HqLyjWDarjtT1zdp7dcXYZabcdefghijklmnop please"}`,
			`{"note":"[redacted stripe_secret_key]"}`},
		{"aws key", `{"env":"AKIAIOSFODNN7ABCDEFG"}`, `{"env":"[redacted aws_access_key_id]"}`},
		{"password in text", `{"body":"Your password: Tr0ub4dor&3xyz"}`, `{"body":"[redacted password]"}`},
		{"url credentials", `{"url":"https://admin:s3cr3tpass@db.example.com/x"}`, `{"url":"[redacted url_credentials]"}`},
		{"JSON in a string", `{"payload":"{\"token\":\"abc\",\"to\":\"a@b.c\"}"}`, `{"payload":"{\"token\":\"[redacted]\",\"to\":\"a@b.c\"}"}`},
		{"array", `["a",1]`, `["a",1]`},
		{"empty", ``, ``},
		{"broken", `{"a":`, `[unparsable arguments, 5 bytes]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := RedactArgs([]byte(tc.args)); got != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRedactArgsBounds(t *testing.T) {
	long := strings.Repeat("é", 5000)
	got := RedactArgs([]byte(`{"body":"` + long + `"}`))
	if !strings.HasPrefix(got, `{"body":"éé`) || !strings.Contains(got, "…") || len(got) > MaxRedacted {
		t.Fatalf("%d bytes: %.40s…", len(got), got)
	}
	var b strings.Builder
	b.WriteString("[")
	for i := range 2000 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"k":"ü"}`)
	}
	b.WriteString("]")
	got = RedactArgs([]byte(b.String()))
	if len(got) > MaxRedacted || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Fatalf("%d bytes, ends %q", len(got), got[max(0, len(got)-10):])
	}
	// A secret cut by the display bound is still found.
	secret := strings.Repeat("x", maxRedactString-10) + " ghp_" + strings.Repeat("A1b2", 9)
	if got := RedactArgs([]byte(`{"s":"` + secret + `"}`)); got != `{"s":"[redacted github_token]"}` {
		t.Fatalf("got %s", got)
	}
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	if got := RedactArgs([]byte(deep)); !strings.Contains(got, `"…"`) || len(got) > MaxRedacted {
		t.Fatalf("deep: %s", got)
	}
	// Invalid UTF-8 in a string comes out valid.
	if got := RedactArgs([]byte("{\"a\":\"\xff\"}")); !utf8.ValidString(got) {
		t.Fatalf("invalid UTF-8: %q", got)
	}
}
