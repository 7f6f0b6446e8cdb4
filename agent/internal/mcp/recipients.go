package mcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// Bounds of Recipients.
const (
	// MaxRecipients bounds the addresses read from one tool call.
	MaxRecipients = 256
	// MaxArgsDepth bounds the nesting of arrays and objects read, JSON
	// texts held in strings counting as one more level.
	MaxArgsDepth = 32
	// maxNested bounds the JSON texts in strings that are parsed.
	maxNested = 64
	// A string longer than maxListText is read token by token, at most
	// maxLongTokens distinct tokens that may hold an address.
	maxListText   = 16 << 10
	maxLongTokens = 4096
)

// Recipients returns every e-mail address that a tool call's arguments
// name: in any string at any depth (and in object keys), in "Name <a@b>"
// forms, comma- or semicolon-separated lists, mailto: URLs, encoded words,
// %40 and \u0040 escapes, and in JSON texts held in strings — normalised
// as the mail parser normalises recipients (mail.NormalizeAddress), so
// that they compare equal to the recipients of the mail the tool sends.
// Every address mail.ParseAddressList reads from any string of the
// arguments is among them (strings over 16 KiB, message bodies rather
// than address lists, are read token by token). At most MaxRecipients,
// without duplicates.
func Recipients(args json.RawMessage) []string {
	out, _ := scanRecipients(args)
	return out
}

// scanRecipients is Recipients; cut reports that a bound (depth,
// count, or a syntax error) stopped the reading before the end.
func scanRecipients(args json.RawMessage) (out []string, cut bool) {
	if len(bytes.TrimSpace(args)) == 0 {
		return nil, false
	}
	r := recipientScan{seen: make(map[string]bool)}
	r.scan(args, 0)
	return r.out, r.cut
}

type recipientScan struct {
	out    []string
	seen   map[string]bool
	cut    bool
	nested int
}

func (r *recipientScan) full() bool {
	if len(r.out) >= MaxRecipients {
		r.cut = true
		return true
	}
	return false
}

// scan reads one JSON text whose outermost value sits at depth base.
func (r *recipientScan) scan(text []byte, base int) {
	dec := json.NewDecoder(bytes.NewReader(text))
	dec.UseNumber()
	depth := base
	for !r.full() {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			// A text cut inside an array or object.
			r.cut = r.cut || depth != base
			return
		}
		if err != nil {
			r.cut = true
			return
		}
		switch t := tok.(type) {
		case json.Delim:
			if t == '{' || t == '[' {
				depth++
				if depth > MaxArgsDepth {
					r.cut = true
					return
				}
			} else {
				depth--
			}
		case string:
			r.text(t, depth)
		}
	}
}

// text takes the addresses of one string: all that the mail parser reads
// from it as an address list (so that no address it would read from a
// header is missed), those of the JSON text it holds, if any, and those of
// its mailto: URLs without their queries.
func (r *recipientScan) text(s string, depth int) {
	t := strings.TrimSpace(s)
	if len(t) > 1 && (t[0] == '{' && t[len(t)-1] == '}' || t[0] == '[' && t[len(t)-1] == ']') && json.Valid([]byte(t)) {
		if depth+1 > MaxArgsDepth || r.nested >= maxNested {
			r.cut = true
		} else {
			r.nested++
			r.scan([]byte(t), depth+1)
		}
	}
	if !strings.Contains(s, "@") && mail.IndexFold(s, "%40") < 0 && !strings.Contains(s, "=?") {
		return
	}
	if len(s) > maxListText {
		r.longText(s)
		return
	}
	if mail.IndexFold(s, "mailto:") >= 0 {
		// The list parser keeps a mailto: URL's query with the domain
		// ("a@b?subject=x"): read the URL without it first.
		for _, a := range mail.ParseAddressList(dropMailtoQueries(s)) {
			r.add(a.Addr)
		}
	}
	for _, a := range mail.ParseAddressList(s) {
		r.add(a.Addr)
	}
}

// longText reads the addresses of a string too long to be an address
// list (a message body): each distinct token that may hold an address,
// split where the mail parser's lenient scan splits, is parsed alone, so
// that an address repeated a thousand times is normalised once.
func (r *recipientScan) longText(s string) {
	if mail.IndexFold(s, "mailto:") >= 0 {
		s = dropMailtoQueries(s)
	}
	seen := make(map[string]bool)
	for tok := range strings.FieldsFuncSeq(s, isAddrSep) {
		if r.full() {
			return
		}
		if seen[tok] || !strings.Contains(tok, "@") && mail.IndexFold(tok, "%40") < 0 && !strings.Contains(tok, "=?") {
			continue
		}
		if len(seen) == maxLongTokens {
			r.cut = true
			return
		}
		seen[tok] = true
		for _, a := range mail.ParseAddressList(tok) {
			r.add(a.Addr)
		}
	}
}

// isAddrSep splits text as the mail parser's lenient address scan does.
func isAddrSep(c rune) bool {
	switch c {
	case ',', ';', '<', '>', ' ', '\t', '\r', '\n', '"', '\'', '(', ')', '[', ']', ':':
		return true
	}
	return false
}

// dropMailtoQueries removes the query of each mailto: URL in s
// ("mailto:a@b?subject=x" becomes "mailto:a@b"): the list parser would
// keep it with the domain.
func dropMailtoQueries(s string) string {
	var b strings.Builder
	for {
		i := mail.IndexFold(s, "mailto:")
		if i < 0 {
			break
		}
		i += len("mailto:")
		b.WriteString(s[:i])
		s = s[i:]
		end := strings.IndexAny(s, " \t\r\n<>\"'()[]")
		if end < 0 {
			end = len(s)
		}
		if q := strings.IndexByte(s[:end], '?'); q >= 0 {
			b.WriteString(s[:q])
			s = s[end:]
		}
	}
	b.WriteString(s)
	return b.String()
}

func (r *recipientScan) add(addr string) {
	if r.seen[addr] || r.full() {
		return
	}
	r.seen[addr] = true
	r.out = append(r.out, addr)
}
