// Package detect finds secrets in e-mail content: API keys and tokens of
// well-known services, private keys, passwords, credentials in URLs, and
// sensitive attachments. Detectors are compiled once; every function is
// pure and safe for concurrent use.
//
// Findings carry a redacted form of the secret only: the secret itself is
// never copied into a report.
package detect

import (
	"encoding/base64"
	"regexp"
	"slices"
	"strings"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// Kinds selects detector families; combine with |.
type Kinds uint8

// Detector families: KindAPIKey is block_api_keys_in_emails,
// KindCredential is block_credentials_in_emails.
const (
	KindAPIKey Kinds = 1 << iota
	KindCredential
	KindAll = KindAPIKey | KindCredential
)

// String names a single kind.
func (k Kinds) String() string {
	switch k {
	case KindAPIKey:
		return "api_key"
	case KindCredential:
		return "credential"
	default: // KindAll, and any other set of kinds
		return "kinds"
	}
}

// Finding is one secret found.
type Finding struct {
	Detector string // e.g. "aws_access_key_id"
	Kind     Kinds
	Redacted string // safe to log
	Offset   int    // byte offset in the scanned text
	Len      int    // length of the secret in bytes, from Offset
}

type detector struct {
	name   string
	kind   Kinds
	hint   []string // cheap pre-filter: at least one must occur (case-sensitive unless hintFold)
	fold   bool     // hints are lower-case and matched case-insensitively
	re     *regexp.Regexp
	group  int                   // submatch holding the secret (0 = whole match)
	valid  func(m string) bool   // optional post-check on the secret
	redact func(m string) string // optional; default redactKey
}

// The detectors, most specific first. Patterns follow the vendors'
// documented token formats.
var detectors = []detector{
	{
		name: "aws_access_key_id", kind: KindAPIKey, hint: []string{"AKIA", "ASIA", "ABIA", "ACCA"},
		re:    regexp.MustCompile(`\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b`),
		valid: func(m string) bool { return !strings.HasSuffix(m, "EXAMPLE") },
	},
	{
		name: "aws_secret_access_key", kind: KindAPIKey, hint: []string{"aws"}, fold: true,
		re:    regexp.MustCompile(`(?i)aws.{0,20}secret.{0,20}?["']?\s*[:=]\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)`),
		group: 1,
		valid: func(m string) bool { return classes(m) >= 3 && !strings.Contains(m, "EXAMPLEKEY") },
	},
	{
		name: "github_token", kind: KindAPIKey, hint: []string{"gh", "github_pat_"},
		re: regexp.MustCompile(`\b(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b`),
	},
	{
		name: "gitlab_token", kind: KindAPIKey, hint: []string{"gl"},
		re:    regexp.MustCompile(`\bgl(?:pat|dt|rt|ptt|soat|cbt|imt|ft|oas|agent)-[A-Za-z0-9_-]{20,}`),
		valid: func(m string) bool { _, v, _ := strings.Cut(m, "-"); return entropyOK(v) },
	},
	{
		name: "slack_token", kind: KindAPIKey, hint: []string{"xox", "xapp-"},
		re: regexp.MustCompile(`\b(?:xox[abposre]-(?:[0-9]+-)+[0-9A-Za-z]{8,}|xapp-[0-9]-[A-Z0-9]+-[0-9]+-[a-f0-9]{16,})\b`),
	},
	{
		name: "slack_webhook", kind: KindAPIKey, hint: []string{"hooks.slack.com"},
		re: regexp.MustCompile(`https://hooks\.slack\.com/(?:services|workflows|triggers)/T[A-Z0-9]+/[A-Z0-9]+/[A-Za-z0-9]{16,}`),
	},
	{
		name: "stripe_secret_key", kind: KindAPIKey, hint: []string{"sk_live_", "sk_test_", "rk_live_", "rk_test_"},
		re: regexp.MustCompile(`\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{20,247}\b`),
	},
	{
		name: "google_api_key", kind: KindAPIKey, hint: []string{"AIza"},
		re: regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}(?:[^0-9A-Za-z_-]|$)`),
		redact: func(m string) string {
			return redactKey(strings.TrimRight(m, "\"' \t\r\n,;.)}]>"))
		},
	},
	{
		name: "anthropic_api_key", kind: KindAPIKey, hint: []string{"sk-ant-"},
		re: regexp.MustCompile(`\bsk-ant-(?:api|admin|sid|oat)[0-9]{2}-[A-Za-z0-9_-]{32,}`),
	},
	{
		name: "openai_api_key", kind: KindAPIKey, hint: []string{"sk-"},
		re:    regexp.MustCompile(`\bsk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48})\b`),
		valid: func(m string) bool { return classes(m) >= 3 },
	},
	{
		name: "jwt", kind: KindAPIKey, hint: []string{"eyJ"},
		re:    regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}`),
		valid: validJWT,
	},
	{
		name: "secret_assignment", kind: KindAPIKey,
		hint: []string{"key", "secret", "token", "bearer"}, fold: true,
		re:    regexp.MustCompile(`(?i)(?:\b(?:api[_-]?key|api[_-]?secret|client[_-]?secret|secret[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token|private[_-]?token)["']?\s*[:=]\s*["']?|\bbearer\s+)([A-Za-z0-9_\-.~+/]{20,}=*)`),
		group: 1,
		valid: func(m string) bool { return !isPlaceholder(m) && classes(m) >= 2 && entropyOK(m) },
	},
	{
		name: "private_key", kind: KindCredential, hint: []string{"PRIVATE KEY", "PuTTY-User-Key-File"},
		re:     regexp.MustCompile(`-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]{0,400}?[A-Za-z0-9+/=]{40,}|PuTTY-User-Key-File-[0-9]+: [a-z0-9-]+`),
		redact: func(m string) string { line, _, _ := strings.Cut(m, "\n"); return strings.TrimSpace(line) },
	},
	{
		name: "password", kind: KindCredential,
		hint: []string{"passw", "pwd", "passphrase", "kennwort", "mot de passe", "contraseña"}, fold: true,
		re:     regexp.MustCompile(`(?i)\b(?:password|passwd|passwort|pwd|passphrase|kennwort|mot de passe|contraseña)\b["']?\s*(?:is\s*)?[:=]\s*["']?([^\s"'<>]+)`),
		group:  1,
		valid:  validPassword,
		redact: redactPassword,
	},
	{
		name: "url_credentials", kind: KindCredential, hint: []string{"://"},
		re:     regexp.MustCompile(`\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s:/?#@'"<>]+:([^\s/?#@'"<>]+)@[A-Za-z0-9.\-\[\]]+`),
		group:  1,
		valid:  func(m string) bool { return !isPlaceholder(m) },
		redact: redactPassword,
	},
}

// Scan returns the secrets of the selected kinds in text, at most max
// findings (max <= 0 means 16).
func Scan(text string, kinds Kinds, max int) []Finding {
	if max <= 0 {
		max = 16
	}
	var out []Finding
	for i := range detectors {
		d := &detectors[i]
		if d.kind&kinds == 0 {
			continue
		}
		if !hasHint(text, d) {
			continue
		}
		for _, loc := range d.re.FindAllStringSubmatchIndex(text, max) {
			start, end := loc[0], loc[1]
			if d.group > 0 && len(loc) > 2*d.group+1 && loc[2*d.group] >= 0 {
				start, end = loc[2*d.group], loc[2*d.group+1]
			}
			secret := text[start:end]
			if d.name == "google_api_key" {
				secret = strings.TrimRight(secret, "\"' \t\r\n,;.)}]>")
			}
			if d.valid != nil && !d.valid(secret) {
				continue
			}
			red := redactKey(secret)
			if d.redact != nil {
				red = d.redact(secret)
			}
			out = append(out, Finding{Detector: d.name, Kind: d.kind, Redacted: red, Offset: start, Len: len(secret)})
			if len(out) >= max {
				return out
			}
		}
	}
	return out
}

func hasHint(text string, d *detector) bool {
	if len(d.hint) == 0 {
		return true
	}
	for _, h := range d.hint {
		if d.fold {
			if mail.IndexFold(text, h) >= 0 {
				return true
			}
		} else if strings.Contains(text, h) {
			return true
		}
	}
	return false
}

// classes counts character classes: lower, upper, digit, other.
func classes(s string) int {
	var l, u, d, o int
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z':
			l = 1
		case c >= 'A' && c <= 'Z':
			u = 1
		case c >= '0' && c <= '9':
			d = 1
		default:
			o = 1
		}
	}
	return l + u + d + o
}

// entropyOK rejects long runs of few distinct characters ("aaaa...",
// "1234512345...").
func entropyOK(s string) bool {
	var seen [256]bool
	n := 0
	for i := 0; i < len(s); i++ {
		if !seen[s[i]] {
			seen[s[i]] = true
			n++
		}
	}
	return n >= 10
}

var placeholderWords = map[string]bool{
	"password": true, "passwd": true, "pass": true, "pwd": true, "secret": true, "redacted": true,
	"hidden": true, "none": true, "null": true, "nil": true, "empty": true, "example": true,
	"your_password": true, "yourpassword": true, "mypassword": true, "your-password": true,
	"n/a": true, "na": true, "unchanged": true, "required": true, "reset": true, "changed": true,
	"expired": true, "updated": true, "protected": true, "same": true, "token": true, "apikey": true,
	"api_key": true, "your_api_key": true, "xxx": true, "notset": true, "not_set": true, "undefined": true,
}

// isPlaceholder reports values that stand for a secret without being one:
// masks, template variables, words.
func isPlaceholder(v string) bool {
	v = strings.Trim(v, "\"'`.,;:!?)]}")
	if v == "" {
		return true
	}
	switch v[0] {
	case '<', '{', '$', '%', '[', '(', '*':
		return true
	}
	same := true
	for i := 1; i < len(v); i++ {
		if v[i] != v[0] {
			same = false
			break
		}
	}
	if same {
		return true
	}
	l := strings.ToLower(v)
	if placeholderWords[l] {
		return true
	}
	for _, s := range []string{"password", "example", "redacted", "xxxx", "****", "placeholder", "changeme_", "your_", "your-", "<", "{{", "${"} {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func validPassword(v string) bool {
	v = strings.Trim(v, "\"'`.,;:!?)]}")
	if len(v) < 6 || isPlaceholder(v) {
		return false
	}
	return classes(v) >= 2 || len(v) >= 12
}

func validJWT(m string) bool {
	head, _, _ := strings.Cut(m, ".")
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(head, "="))
	if err != nil {
		return false
	}
	s := string(b)
	return strings.HasPrefix(strings.TrimSpace(s), "{") && strings.Contains(s, `"alg"`)
}

// redactKey keeps a recognisable prefix and the last four characters, as
// cloud consoles show keys.
func redactKey(s string) string {
	if len(s) <= 12 {
		return strings.Repeat("*", len(s))
	}
	prefix := 4
	if i := strings.IndexAny(s, "_-"); i > 0 && i < 12 {
		prefix = i + 1
	}
	return s[:prefix] + "…" + s[len(s)-4:]
}

func redactPassword(s string) string {
	return "[" + itoa(len(s)) + " characters]"
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// Redact returns text with every secret that Scan finds (of any kind)
// replaced by "[redacted:DETECTOR NB]", N its length in bytes; text
// without one is returned as it is.
func Redact(text string) string {
	fs := Scan(text, KindAll, 64)
	if len(fs) == 0 {
		return text
	}
	slices.SortFunc(fs, func(a, b Finding) int { return a.Offset - b.Offset })
	var b strings.Builder
	at := 0
	for _, f := range fs {
		end := f.Offset + f.Len
		if end <= at || f.Len == 0 {
			continue // inside one replaced already
		}
		start := max(f.Offset, at)
		b.WriteString(text[at:start])
		b.WriteString("[redacted:" + f.Detector + " " + itoa(end-start) + "B]")
		at = end
	}
	b.WriteString(text[at:])
	return b.String()
}
