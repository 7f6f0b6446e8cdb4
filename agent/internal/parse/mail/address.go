package mail

import (
	"mime"
	netmail "net/mail"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
	"golang.org/x/text/unicode/norm"
)

// Address is one mailbox. Addr is the normalised form (see NormalizeAddress)
// that the judge compares; Name is the display name, decoded, for reports.
type Address struct {
	Name string `json:"name,omitempty"`
	Addr string `json:"addr"`
}

// Domain returns the normalised domain of the address ("" when none).
func (a Address) Domain() string {
	i := strings.LastIndexByte(a.Addr, '@')
	if i < 0 {
		return ""
	}
	return a.Addr[i+1:]
}

// String returns the address in "Name <addr>" form, or just addr.
func (a Address) String() string {
	if a.Name == "" {
		return a.Addr
	}
	return (&netmail.Address{Name: a.Name, Address: a.Addr}).String()
}

// idnaProfile maps a domain the way a resolver would look it up: Unicode
// case folding and width mapping (so full-width "ｇｉｆｔｓｈｏｐ．ｃｌｕｂ"
// becomes "giftshop.club"), then Punycode. It is stateless and safe for
// concurrent use.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
	idna.BidiRule(),
)

// NormalizeDomain returns the lower-case ASCII (Punycode) form of a domain
// name, without a leading "@" and without a trailing dot. ok is false when the
// result is not a plausible host name (empty label, a label over 63 bytes,
// the whole over 253 bytes, or characters outside letters, digits, '-' and
// '_'). Domain literals such as "[192.0.2.1]" are returned lower-cased with
// ok true.
func NormalizeDomain(s string) (string, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "@")
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") && len(s) > 2 {
		return strings.ToLower(s), true
	}
	// Unicode full stops used as dots by IDNA (an ASCII name has none:
	// most names, spared building the replacer).
	if !isASCII(s) {
		s = strings.NewReplacer("\u3002", ".", "\uff0e", ".", "\uff61", ".").Replace(s)
	}
	s = strings.TrimSuffix(s, ".")
	if s == "" {
		return "", false
	}
	out, err := idnaProfile.ToASCII(s)
	if err != nil || out == "" {
		// Keep a lower-cased form so that comparisons still work on
		// garbage, but report it as malformed.
		return strings.ToLower(s), false
	}
	out = strings.ToLower(out)
	return out, validHostname(out)
}

func validHostname(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if len(label) == 0 || len(label) > 63 {
			return false
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// NormalizeAddress returns the canonical form of an addr-spec: surrounding
// space, angle brackets, quotes and a "mailto:" prefix removed, URL and
// encoded-word escapes undone, the whole lower-cased and the domain IDN
// normalised. ok is false when there is no "@" with text on both sides.
func NormalizeAddress(s string) (string, bool) {
	// Garbage (broken UTF-8 next to IDNA full stops, quotes) can take more
	// than one pass to reach its normal form: repeat until it is stable, so
	// that a normalised address always normalises to itself.
	n, ok := normalizeAddressOnce(s)
	for i := 0; i < 4; i++ {
		again, againOK := normalizeAddressOnce(n)
		if again == n {
			break
		}
		n, ok = again, againOK
	}
	return n, ok
}

func normalizeAddressOnce(s string) (string, bool) {
	s = cleanAddr(s)
	i := strings.LastIndexByte(s, '@')
	if i <= 0 || i == len(s)-1 {
		return strings.ToLower(s), false
	}
	local, domain := s[:i], s[i+1:]
	local = strings.Trim(local, "\"")
	d, _ := NormalizeDomain(domain)
	if local == "" || d == "" {
		return strings.ToLower(s), false
	}
	local = strings.ToLower(local)
	// Compatibility-fold non-ASCII local parts until stable (NFKC and
	// lower-casing can each undo the other's fixed point).
	for i := 0; i < 4 && !isASCII(local); i++ {
		n := strings.Trim(strings.ToLower(norm.NFKC.String(local)), " \t\"")
		if n == local {
			break
		}
		local = n
	}
	if local == "" {
		return local + "@" + d, false
	}
	return local + "@" + d, true
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

func cleanAddr(s string) string {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "=?") {
		s = decodeWords(s)
	}
	if strings.ContainsRune(s, '%') {
		s = percentDecode(s)
	}
	s = strings.TrimSpace(s)
	if len(s) >= 7 && strings.EqualFold(s[:7], "mailto:") {
		s = s[7:]
		if q := strings.IndexByte(s, '?'); q >= 0 {
			s = s[:q]
		}
	}
	s = strings.TrimLeft(s, "<\"' \t")
	s = strings.TrimRight(s, ">\"' \t.;,")
	return s
}

// percentDecode undoes %XX escapes, leaving malformed ones as they are.
func percentDecode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func ishex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// wordDecoder decodes RFC 2047 encoded-words in any charset that
// golang.org/x/text knows. mime.WordDecoder is safe for concurrent use once
// built as long as CharsetReader is.
var wordDecoder = &mime.WordDecoder{CharsetReader: charsetReader}

func decodeWords(s string) string {
	out, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return out
}

// ParseAddressList parses a header-style address list ("A <a@x>, b@y",
// groups, encoded-words) leniently: when the strict RFC 5322 parser fails,
// every token that looks like local@domain is taken, so that a malformed
// list can never hide a recipient. Invalid entries are dropped; results are
// normalised and de-duplicated in order.
func ParseAddressList(s string) []Address {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	var out []Address
	if list, err := addrParser.ParseList(s); err == nil {
		for _, a := range list {
			if n, ok := NormalizeAddress(a.Address); ok {
				out = appendAddr(out, Address{Name: a.Name, Addr: n})
			}
		}
		// The strict parser accepts an encoded-word as a display name
		// only; an address hidden in one is found by the scan below.
		if !strings.Contains(s, "=?") && !strings.ContainsRune(s, '%') {
			return out
		}
	}
	return scanAddresses(s, out)
}

var addrParser = &netmail.AddressParser{WordDecoder: wordDecoder}

// scanAddresses is the lenient fallback: decode encoded-words and %XX, split
// on separators, and take each local@domain token.
func scanAddresses(s string, out []Address) []Address {
	s = decodeWords(s)
	if strings.ContainsRune(s, '%') {
		s = percentDecode(s)
	}
	isSep := func(r rune) bool {
		switch r {
		case ',', ';', '<', '>', ' ', '\t', '\r', '\n', '"', '\'', '(', ')', '[', ']', ':':
			return true
		}
		return false
	}
	for tok := range strings.FieldsFuncSeq(s, isSep) {
		if !strings.Contains(tok, "@") {
			continue
		}
		if n, ok := NormalizeAddress(tok); ok {
			out = appendAddr(out, Address{Addr: n})
		}
	}
	return out
}

func appendAddr(list []Address, a Address) []Address {
	for _, x := range list {
		if x.Addr == a.Addr {
			return list
		}
	}
	return append(list, a)
}

// mergeAddrs appends the entries of b that a lacks.
func mergeAddrs(a, b []Address) []Address {
	for _, x := range b {
		a = appendAddr(a, x)
	}
	return a
}
