package mcp

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/aarsm/aarsm/agent/internal/judge/detect"
)

// Bounds of RedactArgs.
const (
	// MaxRedacted bounds the text RedactArgs returns, in bytes.
	MaxRedacted = 1024
	// Strings and keys are cut to these lengths in the output.
	maxRedactString = 200
	maxRedactKey    = 64
	// Bytes of a string scanned for secrets beyond what is shown, so
	// that a secret cut by the display bound is still found.
	redactScanMargin = 512
	maxRedactDepth   = 16
)

// Redacted replaces a secret in RedactArgs' output.
const Redacted = "[redacted]"

// RedactArgs renders tool-call arguments for a log line: compact JSON of
// at most MaxRedacted bytes (cut with "…"), long strings shortened, and
// secrets replaced — the value of any key named like a secret (password,
// token, secret, api_key, authorization, credential, private key, cookie…)
// whatever its type, and any string in which the e-mail judge's secret
// detectors (detect.Scan: vendor API keys, JWTs, private keys, passwords,
// credentials in URLs) find one. JSON texts held in strings are redacted
// the same way.
func RedactArgs(args json.RawMessage) string {
	if len(bytes.TrimSpace(args)) == 0 {
		return ""
	}
	r := redactor{limit: MaxRedacted}
	if !r.text(args, 0) {
		return "[unparsable arguments, " + strconv.Itoa(len(args)) + " bytes]"
	}
	return r.String()
}

type redactor struct {
	b     strings.Builder
	limit int
	full  bool
}

func (r *redactor) String() string {
	if r.full {
		return r.b.String() + "…"
	}
	return r.b.String()
}

// write appends s, or as much of it as fits before the bound.
func (r *redactor) write(s string) {
	if r.full {
		return
	}
	// Room for the closing "…".
	room := r.limit - len("…") - r.b.Len()
	if len(s) > room {
		r.b.WriteString(cut(s, max(room, 0)))
		r.full = true
		return
	}
	r.b.WriteString(s)
}

// text redacts one JSON text; false when it does not parse.
func (r *redactor) text(b []byte, depth int) bool {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return false
	}
	return r.value(dec, tok, depth, false) == nil
}

func (r *redactor) value(dec *json.Decoder, tok json.Token, depth int, secret bool) error {
	if r.full {
		return nil
	}
	switch t := tok.(type) {
	case json.Delim:
		if secret || depth >= maxRedactDepth {
			if secret {
				r.write(quote(Redacted))
			} else {
				r.write(`"…"`)
			}
			return skipValue(dec)
		}
		open, close := "{", "}"
		if t == '[' {
			open, close = "[", "]"
		}
		r.write(open)
		for i := 0; dec.More(); i++ {
			if r.full {
				return nil
			}
			if i > 0 {
				r.write(",")
			}
			isSecret := false
			if t == '{' {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key, _ := k.(string)
				isSecret = secretKey(key)
				r.write(quote(cut(key, maxRedactKey)) + ":")
			}
			v, err := dec.Token()
			if err != nil {
				return err
			}
			if err := r.value(dec, v, depth+1, isSecret); err != nil {
				return err
			}
		}
		if _, err := dec.Token(); err != nil && !r.full {
			return err
		}
		r.write(close)
	case string:
		if secret {
			r.write(quote(Redacted))
			return nil
		}
		r.str(t, depth)
	case json.Number:
		if secret {
			r.write(quote(Redacted))
			return nil
		}
		r.write(t.String())
	case bool:
		r.write(strconv.FormatBool(t))
	case nil:
		r.write("null")
	}
	return nil
}

// str writes one string value.
func (r *redactor) str(s string, depth int) {
	t := strings.TrimSpace(s)
	if len(t) > 1 && (t[0] == '{' || t[0] == '[') && depth+1 < maxRedactDepth && json.Valid([]byte(t)) {
		inner := redactor{limit: max(r.limit-r.b.Len(), 8)}
		if inner.text([]byte(t), depth+1) {
			r.write(quote(inner.String()))
			return
		}
	}
	scan := cut(s, maxRedactString+redactScanMargin)
	if f := detect.Scan(scan, detect.KindAll, 1); len(f) > 0 {
		r.write(quote("[redacted " + f[0].Detector + "]"))
		return
	}
	if len(s) > maxRedactString {
		s = cut(s, maxRedactString) + "…"
	}
	r.write(quote(s))
}

// skipValue consumes the rest of an array or object whose opening
// delimiter was just read.
func skipValue(dec *json.Decoder) error {
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '{' || d == '[' {
				depth++
			} else {
				depth--
			}
		}
	}
	return nil
}

// quote returns s as a JSON string, HTML characters unescaped and
// invalid UTF-8 replaced.
func quote(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s)
	return strings.TrimSuffix(b.String(), "\n")
}

// SecretKey reports whether a value under key (a JSON member, a form
// field, a header) is a secret by its name, as RedactArgs decides.
func SecretKey(key string) bool { return secretKey(key) }

// secretKey reports whether a value under key is a secret; keys are
// compared lower-cased with everything but letters and digits removed.
func secretKey(key string) bool {
	var b strings.Builder
	for _, c := range strings.ToLower(key) {
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	k := b.String()
	switch k {
	case "pwd", "pass", "auth", "key", "otp", "cvv", "cvc", "pin":
		return true
	}
	// Parts of key names whose values are secrets.
	for _, w := range [...]string{
		"password", "passwd", "passphrase", "secret", "apikey", "authorization",
		"credential", "privatekey", "accesskey", "cookie", "sessionid", "bearer",
	} {
		if strings.Contains(k, w) {
			return true
		}
	}
	// access_token, refresh_token, token, but not max_tokens.
	return strings.Contains(k, "token") && !strings.HasSuffix(k, "tokens")
}
