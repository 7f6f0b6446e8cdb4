package trace

import (
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/aarsm/aarsm/agent/internal/judge/detect"
	"github.com/aarsm/aarsm/agent/internal/mcp"
)

// What trace hides unless asked to show secrets (FormatOptions.ShowSecrets):
//
//   - the values of credential headers (Authorization, Proxy-Authorization,
//     Cookie, Set-Cookie, X-Api-Key, Api-Key, X-Postmark-Server-Token and any
//     header named like a secret: token, secret, key, auth, password,
//     credential, session, signature); the scheme of an Authorization value
//     is kept ("Bearer [redacted 40B]");
//   - in every header value, body, subject, SMTP envelope and request
//     target, what the e-mail judge's secret detectors find (detect.Scan:
//     vendor API keys, JWTs, private keys, passwords, credentials in URLs),
//     replaced by "[redacted:DETECTOR NB]";
//   - in JSON texts and forms, the values of members named like a secret
//     (mcp.SecretKey: "ServerToken", "password", "access_token"...), and
//     the same in a target's query string.
//
// MCP tool-call arguments are redacted by mcp.RedactArgs whatever the
// options.

// redactMarker replaces a secret: what found it and its length.
func redactMarker(what string, n int) string {
	return "[redacted:" + what + " " + strconv.Itoa(n) + "B]"
}

// maxScanFindings bounds the secrets replaced in one text.
const maxScanFindings = 64

// credentialHeaders are header names (lower case) whose value is a
// credential whatever it looks like.
var credentialHeaders = []string{
	"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
	"x-postmark-server-token", "x-postmark-account-token", "x-goog-api-key", "x-auth-token",
	"x-amz-security-token", "x-csrf-token", "x-xsrf-token",
}

// credentialHeader reports whether a header's value is a credential by its
// name.
func credentialHeader(name string) bool {
	l := strings.ToLower(name)
	if slices.Contains(credentialHeaders, l) {
		return true
	}
	if l == "sec-websocket-key" || l == "sec-websocket-accept" {
		return false // a nonce of the handshake, no secret
	}
	if mcp.SecretKey(l) {
		return true
	}
	k := strings.ReplaceAll(strings.ReplaceAll(l, "-", ""), "_", "")
	for _, w := range [...]string{"auth", "session", "signature", "apikey"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return strings.HasSuffix(k, "key")
}

// redactHeaderValue returns the value of header name as trace shows it.
func redactHeaderValue(name, v string) string {
	if !credentialHeader(name) {
		return redactText(v)
	}
	if l := strings.ToLower(name); l == "authorization" || l == "proxy-authorization" {
		if scheme, cred, ok := strings.Cut(v, " "); ok && scheme != "" && !strings.ContainsAny(scheme, "=:") {
			return scheme + " " + redactMarker("credential", len(cred))
		}
	}
	return redactMarker("header", len(v))
}

// jsonMember finds a JSON member whose value is a string: its key
// (group 1) and its value (group 2, still escaped).
var jsonMember = regexp.MustCompile(`"((?:[^"\\]|\\.){1,64})"\s*:\s*"((?:[^"\\]|\\.)*)"`)

// formField finds a key=value pair of a form or a query string.
var formField = regexp.MustCompile(`(?:^|[&?;\s])([A-Za-z0-9_.\-\[\]]{1,64})=([^&\s"']+)`)

type span struct {
	start, end int
	what       string
}

// redactText replaces the secrets in s (see above), keeping everything
// else as it is.
func redactText(s string) string {
	if s == "" {
		return s
	}
	var spans []span
	for _, f := range detect.Scan(s, detect.KindAll, maxScanFindings) {
		if f.Len > 0 {
			spans = append(spans, span{f.Offset, f.Offset + f.Len, f.Detector})
		}
	}
	if strings.Contains(s, `"`) {
		for _, m := range jsonMember.FindAllStringSubmatchIndex(s, -1) {
			if m[5] > m[4] && mcp.SecretKey(s[m[2]:m[3]]) {
				spans = append(spans, span{m[4], m[5], "secret_field"})
			}
		}
	}
	if strings.Contains(s, "=") {
		for _, m := range formField.FindAllStringSubmatchIndex(s, -1) {
			key, err := url.QueryUnescape(s[m[2]:m[3]])
			if err != nil {
				key = s[m[2]:m[3]]
			}
			if m[5] > m[4] && mcp.SecretKey(key) {
				spans = append(spans, span{m[4], m[5], "secret_field"})
			}
		}
	}
	if len(spans) == 0 {
		return s
	}
	slices.SortFunc(spans, func(a, b span) int { return a.start - b.start })
	var b strings.Builder
	at := 0
	for _, sp := range spans {
		if sp.end <= at {
			continue // inside one replaced already
		}
		start := max(sp.start, at)
		b.WriteString(s[at:start])
		b.WriteString(redactMarker(sp.what, sp.end-start))
		at = sp.end
	}
	b.WriteString(s[at:])
	return b.String()
}

// redactHeaders returns h with credential values replaced (h itself is
// not changed).
func redactHeaders(h map[string][]string) map[string][]string {
	out := make(map[string][]string, len(h))
	for k, vs := range h {
		rv := make([]string, len(vs))
		for i, v := range vs {
			rv[i] = redactHeaderValue(k, v)
		}
		out[k] = rv
	}
	return out
}
