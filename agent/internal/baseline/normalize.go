package baseline

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// Bounds of the strings the store keeps.
const (
	maxValueLen   = 1024 // a destination or domain; longer ones are never recorded
	maxGivenLen   = 256  // one form of a destination as given (cut to this)
	maxGiven      = 4    // forms kept per destination
	maxPackageLen = 4096 // a package's name (PATH_MAX for executables)
	maxVersionLen = 256
	maxHashLen    = 128
)

// NormalizeDest returns the form a destination is kept and compared in:
// "host:port" with the host lower-cased and IDNA-mapped (mail.NormalizeDomain),
// without a trailing dot, an IP address in its canonical form (IPv4-mapped
// IPv6 unmapped, IPv6 in brackets) and the port without leading zeros. A
// destination without a port is kept as its host alone. ok is false when
// it is not a host name or address with an optional port 1..65535; such a
// destination is never recorded (and so is always unseen).
func NormalizeDest(s string) (string, bool) {
	if plainDest(s) {
		return s, true
	}
	n, ok := normalizeDestOnce(s)
	if !ok {
		return n, false
	}
	// Only a fixed point is kept: what is written must read back the same.
	if again, ok := normalizeDestOnce(n); !ok || again != n {
		return n, false
	}
	return n, true
}

func normalizeDestOnce(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxValueLen {
		return lowerBounded(s), false
	}
	host, port := s, ""
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	} else if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		host = s[1 : len(s)-1]
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return lowerBounded(s), false
		}
		port = strconv.FormatUint(n, 10)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		host = a.Unmap().String()
	} else {
		d, ok := mail.NormalizeDomain(host)
		if !ok || strings.HasPrefix(d, "[") {
			return lowerBounded(s), false
		}
		host = d
	}
	if port == "" {
		if strings.Contains(host, ":") {
			return "[" + host + "]", true
		}
		return host, true
	}
	return net.JoinHostPort(host, port), true
}

// NormalizeDomain returns the form a recipient domain is kept and
// compared in: mail.NormalizeDomain's (lower-case ASCII, IDNA). ok is
// false for what is not a domain (such a domain is never recorded, and so
// always unseen).
func NormalizeDomain(s string) (string, bool) {
	if plainHost(s) {
		return s, true
	}
	if len(s) > maxValueLen {
		return lowerBounded(s), false
	}
	n, ok := mail.NormalizeDomain(s)
	if !ok || n == "" {
		return lowerBounded(n), false
	}
	if again, ok := mail.NormalizeDomain(n); !ok || again != n {
		return n, false
	}
	return n, true
}

// lowerBounded is what a value that cannot be normalised is reported as:
// lower-cased, valid UTF-8, at most maxGivenLen bytes.
func lowerBounded(s string) string { return cut(strings.ToLower(s), maxGivenLen) }

// cut returns s as valid UTF-8 of at most n bytes (cut at a rune boundary).
func cut(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// plainHost reports whether s is a host name already in normal form,
// which mail.NormalizeDomain would return unchanged: labels of lower-case
// ASCII letters, digits, '-' and '_', none empty, over 63 bytes, starting
// or ending with '-' or holding "--" (IDNA's hyphen rules and Punycode
// are left to the slow path), at most 253 bytes. Host names as Host
// headers and recipient domains usually come: this spares them the IDNA
// mapping (TestPlainAgrees checks the two agree).
func plainHost(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
			if c == '-' && i > start && s[i-1] == '-' {
				return false
			}
			continue
		}
		label := s[start:i]
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		start = i + 1
	}
	return true
}

// plainDest reports whether s is a destination already in normal form: a
// plain host name (plainHost) with an optional port 1..65535 written
// without leading zeros.
func plainDest(s string) bool {
	host, port := s, ""
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if len(port) == 0 || len(port) > 5 || port[0] == '0' {
			return false
		}
		n := 0
		for _, c := range []byte(port) {
			if c < '0' || c > '9' {
				return false
			}
			n = n*10 + int(c-'0')
		}
		if n > 65535 {
			return false
		}
	}
	return plainHost(host)
}
