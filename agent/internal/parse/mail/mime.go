package mail

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
)

// ParseRFC822 parses a raw Internet message (RFC 5322 with MIME) leniently:
// it never fails, a malformed part is kept as text so that detectors still
// see it. provider and endpoint are copied into the result.
func ParseRFC822(raw []byte, provider, endpoint string) *Message {
	m := newMessage(provider, endpoint)
	parseRFC822Into(m, raw, 0)
	return m
}

// parseRFC822Into fills m from a raw message: addresses, subject, bodies and
// attachments.
func parseRFC822Into(m *Message, raw []byte, depth int) {
	hdr, body := splitHeader(skipEnvelopeLines(raw))
	applyHeaders(m, hdr)
	walkPart(m, hdr, body, depth)
}

// smtpAPIRecipients returns the recipients of a SendGrid X-SMTPAPI header:
// its JSON "to" list. SendGrid's SMTP relay delivers to them (they are not
// in the To header, so they count as envelope recipients); a header that
// is not JSON yields none.
func smtpAPIRecipients(v string) []Address {
	b := []byte(strings.TrimSpace(decodeWords(firstN(v, maxHeaderListBytes))))
	n, err := parseJSON(b)
	if err != nil {
		if n, err = parseJSON(relaxJSON(b)); err != nil {
			return nil
		}
	}
	var out []Address
	for _, t := range n.get("to") {
		out = mergeAddrs(out, t.addresses())
	}
	return out
}

// skipEnvelopeLines drops what may precede a message's header without being
// part of it: blank lines and an mbox "From " separator line. Parsed as they
// are, they would turn the whole header into body and hide its recipients;
// a message never usefully starts with an empty header, so reading on errs
// towards seeing a recipient.
func skipEnvelopeLines(raw []byte) []byte {
	raw = bytes.TrimLeft(raw, "\r\n")
	// "From : x" (space before the colon) is a From header, not a separator.
	if bytes.HasPrefix(raw, []byte("From ")) && !bytes.HasPrefix(bytes.TrimLeft(raw[4:], " \t"), []byte(":")) {
		if _, after, ok := bytes.Cut(raw, []byte{'\n'}); ok {
			raw = bytes.TrimLeft(after, "\r\n")
		}
	}
	return raw
}

// applyHeaders copies the address and subject headers into m.
func applyHeaders(m *Message, hdr textproto.MIMEHeader) {
	for k, vs := range hdr {
		for _, v := range vs {
			m.addHeader(k, v)
		}
	}
	list := func(keys ...string) []Address {
		var out []Address
		for _, k := range keys {
			for _, v := range hdr[k] {
				out = mergeAddrs(out, ParseAddressList(firstN(v, maxHeaderListBytes)))
			}
		}
		return out
	}
	m.From = mergeAddrs(m.From, list("From", "Sender"))
	m.To = mergeAddrs(m.To, list("To", "Resent-To"))
	m.Cc = mergeAddrs(m.Cc, list("Cc", "Resent-Cc"))
	m.Bcc = mergeAddrs(m.Bcc, list("Bcc", "Resent-Bcc"))
	m.ReplyTo = mergeAddrs(m.ReplyTo, list("Reply-To"))
	for _, v := range hdr["X-Smtpapi"] {
		m.EnvelopeTo = mergeAddrs(m.EnvelopeTo, smtpAPIRecipients(v))
	}
	if s := hdr.Get("Subject"); s != "" && m.Subject == "" {
		m.Subject = decodeWords(s)
	}
}

// splitHeader splits a message or part into its header and body. It accepts
// CRLF or LF line ends, folded lines, and lines without a colon (skipped).
// Input that does not start with a header yields an empty header and the
// whole input as body.
func splitHeader(raw []byte) (textproto.MIMEHeader, []byte) {
	hdr := make(textproto.MIMEHeader)
	rest := raw
	var key string
	var val strings.Builder
	flush := func() {
		if key != "" && len(hdr) < MaxParts {
			hdr.Add(key, strings.TrimSpace(val.String()))
		}
		key = ""
		val.Reset()
	}
	first := true
	for len(rest) > 0 {
		line, after, found := bytes.Cut(rest, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			flush()
			if found {
				return hdr, after
			}
			return hdr, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if key != "" && val.Len() < maxHeaderListBytes {
				val.WriteByte(' ')
				val.Write(bytes.TrimSpace(line))
			}
		} else if i := bytes.IndexByte(line, ':'); i > 0 && validHeaderKey(line[:i]) {
			flush()
			key = textproto.CanonicalMIMEHeaderKey(string(bytes.TrimSpace(line[:i])))
			val.Write(line[i+1:])
		} else if first {
			// Not a header at all: everything is body.
			return hdr, raw
		}
		first = false
		rest = after
		if !found {
			break
		}
	}
	flush()
	return hdr, nil
}

func validHeaderKey(k []byte) bool {
	k = bytes.TrimRight(k, " \t")
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for _, c := range k {
		if c <= ' ' || c >= 127 {
			return false
		}
	}
	return true
}

// walkPart records one MIME entity: text bodies, attachments and the parts
// of multiparts, down to MaxDepth.
func walkPart(m *Message, hdr textproto.MIMEHeader, body []byte, depth int) {
	if depth > MaxDepth {
		m.Truncated = true
		return
	}
	mediaType, params := mediaTypeOf(hdr.Get("Content-Type"))
	disp, dparams, _ := mime.ParseMediaType(hdr.Get("Content-Disposition"))
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	name = decodeWords(name)

	if strings.HasPrefix(mediaType, "multipart/") && params["boundary"] != "" {
		if walkMultipart(m, body, params["boundary"], depth) {
			return
		}
		// Unparseable multipart: fall through and keep it as text.
		mediaType = "text/plain"
	}
	content := decodeTransfer(hdr.Get("Content-Transfer-Encoding"), body)
	isAttachment := strings.EqualFold(disp, "attachment") || name != ""

	switch {
	case mediaType == "message/rfc822" || mediaType == "message/global":
		m.addAttachment(Attachment{Name: name, ContentType: mediaType, Content: content})
		inner := newMessage(m.Provider, m.Endpoint)
		parseRFC822Into(inner, content, depth+1)
		m.addExtra(inner.Subject)
		m.addExtra(inner.TextBody)
		m.addExtra(inner.HTMLBody)
		for _, a := range inner.Attachments {
			m.addAttachment(a)
		}
		m.Truncated = m.Truncated || inner.Truncated
	case isAttachment || !strings.HasPrefix(mediaType, "text/"):
		m.addAttachment(Attachment{Name: name, ContentType: mediaType, Content: content})
	case mediaType == "text/html":
		m.setHTML(string(toUTF8(params["charset"], content)))
	default:
		m.setText(string(toUTF8(params["charset"], content)))
	}
}

// walkMultipart walks the parts of a multipart body. It returns false when
// no part could be read at all.
func walkMultipart(m *Message, body []byte, boundary string, depth int) bool {
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	n := 0
	for {
		p, err := r.NextRawPart()
		if err != nil {
			return n > 0
		}
		n++
		if n > MaxParts {
			m.Truncated = true
			return true
		}
		data, err := io.ReadAll(io.LimitReader(p, MaxBodyBytes+1))
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && len(data) == 0 {
			return n > 1
		}
		walkPart(m, p.Header, data, depth+1)
	}
}

// mediaTypeOf parses a Content-Type leniently; a missing or broken one means
// text/plain as RFC 2045 says.
func mediaTypeOf(v string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return "text/plain", map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil && mt == "" {
		mt, _, _ = strings.Cut(v, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		if mt == "" {
			mt = "text/plain"
		}
	}
	if params == nil {
		params = map[string]string{}
	}
	return mt, params
}

// decodeTransfer undoes a Content-Transfer-Encoding. Malformed input decodes
// as far as possible; unknown encodings are returned as they are.
func decodeTransfer(cte string, body []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return decodeBase64Lenient(body)
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil && len(out) == 0 {
			return body
		}
		return out
	}
	return body
}

// decodeBase64Lenient decodes standard or URL-safe base64 with or without
// padding, ignoring whitespace and stopping at the first invalid byte.
func decodeBase64Lenient(in []byte) []byte {
	clean := make([]byte, 0, len(in))
	for _, c := range in {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		case c == '-':
			clean = append(clean, '+')
		case c == '_':
			clean = append(clean, '/')
		case c == ' ', c == '\t', c == '\r', c == '\n', c == '=':
		default:
			// Stop at garbage: what came before is still decoded.
			goto done
		}
	}
done:
	if len(clean)%4 == 1 {
		clean = clean[:len(clean)-1]
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, _ := base64.RawStdEncoding.Decode(out, clean)
	return out[:n]
}

// decodeBase64Field decodes an API's base64 field (standard or URL-safe,
// padded or not, with line breaks). A value made of base64 characters that
// no strict decoder accepts (the two alphabets mixed, padding in the wrong
// place) is decoded leniently, since a lenient server would still read the
// message in it. A value that is not base64 is returned as its own bytes,
// so that detectors still see it.
func decodeBase64Field(s string) []byte {
	t := strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(t); err == nil {
			return b
		}
	}
	if t != "" && strings.Trim(t, base64Chars) == "" {
		return decodeBase64Lenient([]byte(t))
	}
	// Base64 with a corrupt tail: the valid start is decoded, so that the
	// tail cannot hide the headers before it (a lenient server may read
	// them; a prefix of the request shows them too). A value that is not
	// base64 at all stays as it is.
	if i := strings.IndexFunc(t, func(r rune) bool { return !strings.ContainsRune(base64Chars, r) }); i >= 16 {
		return decodeBase64Lenient([]byte(t[:i-i%4]))
	}
	return []byte(s)
}

// base64Chars are the characters of both base64 alphabets and padding.
const base64Chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_="
