package judge

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// The postmark-mcp backdoor's hidden Bcc written in encodings that a
// lenient mail API still reads: each must be blocked as an unauthorized
// Bcc, and the same request with an internal Bcc must be allowed.
func TestEncodedBackdoorIsBlocked(t *testing.T) {
	utf16LE := func(s string) string {
		var b []byte
		for _, u := range utf16.Encode([]rune("\uFEFF" + s)) {
			b = append(b, byte(u), byte(u>>8))
		}
		return string(b)
	}
	raw := func(bcc string) string {
		msg := "From: agent@company.com\r\nTo: alice@company.com\r\nBcc: " + bcc + "\r\nSubject: x\r\n\r\nhi\r\n"
		return strings.Replace(base64.StdEncoding.EncodeToString([]byte(msg)), "+", "-", 1)
	}
	rows := []struct {
		name     string
		host, pt string
		ct       string
		body     func(bcc string) string
	}{
		{"relaxed-json", "api.postmarkapp.com", "/email", "application/json", func(b string) string {
			return "{From:'agent@company.com', To:'alice@company.com', /* */ Bcc:'" + b + "',}"
		}},
		{"utf16-json", "api.postmarkapp.com", "/email", "application/json; charset=utf-16", func(b string) string {
			return utf16LE(`{"From":"agent@company.com","To":"alice@company.com","Bcc":"` + b + `"}`)
		}},
		{"escaped-key-and-duplicate", "api.postmarkapp.com", "/email", "application/json", func(b string) string {
			return `{"From":"agent@company.com","To":"alice@company.com","\u0042cc":"` + strings.Replace(b, "@", `\u0040`, 1) + `","bcc":""}`
		}},
		{"gmail-raw-mixed-alphabet", "gmail.googleapis.com", "/gmail/v1/users/me/messages/send", "application/json", func(b string) string {
			return `{"raw":"` + raw(b) + `"}`
		}},
	}
	set := companySet(t)
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			for _, tc := range []struct {
				bcc   string
				block bool
			}{{"phan@giftshop.club", true}, {"bob@subsidiaries.com", false}} {
				msgs, err := mail.FromHTTP(&mail.HTTPRequest{Method: "POST", Host: r.host, Path: r.pt,
					Header: http.Header{"Content-Type": {r.ct}}, Body: []byte(r.body(tc.bcc))})
				if err != nil || len(msgs) != 1 {
					t.Fatalf("%s: FromHTTP: %v, %d messages", tc.bcc, err, len(msgs))
				}
				v := Judge(set, msgs[0], Context{PID: 42, Target: policy.Target{Comm: "node"}}, NewBulkState(0), now)
				if got := v.Decision == Block && slices.Contains(v.Rules, RuleUnauthorizedBcc); got != tc.block {
					t.Errorf("%s: decision %v rules %v", tc.bcc, v.Decision, v.Rules)
				}
				if !tc.block && v.Decision != Allow {
					t.Errorf("%s: decision %v, want allow", tc.bcc, v.Decision)
				}
			}
		})
	}
}
