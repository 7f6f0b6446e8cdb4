// Package mail turns the plaintext that a process sends (HTTP requests to
// e-mail APIs, SMTP sessions inside TLS) into e-mail messages that the judge
// can inspect: envelope and header recipients, subject, bodies and decoded
// attachments.
//
// Every parser here is fed attacker-controlled bytes. None of them panics,
// recurses without a depth limit or keeps more than the limits below.
package mail

import (
	"net/textproto"
	"regexp"
	"strings"
)

// Limits on what a single message may make the parsers keep. Content past a
// limit is dropped and Message.Truncated set.
const (
	MaxBodyBytes       = 16 << 20 // all bodies and attachments of one message together
	MaxParts           = 256      // MIME parts, attachments or JSON messages per request
	MaxDepth           = 16       // MIME / JSON nesting
	MaxRecipients      = 10000    // per message (To+Cc+Bcc+envelope)
	maxHeaderListBytes = 1 << 20
)

// Provider names used in Message.Provider.
const (
	ProviderPostmark = "postmark"
	ProviderSendGrid = "sendgrid"
	ProviderMailgun  = "mailgun"
	ProviderSES      = "ses"
	ProviderResend   = "resend"
	ProviderGmail    = "gmail"
	ProviderGraph    = "msgraph"
	ProviderSMTP     = "smtp"
	ProviderGeneric  = "generic-json"
)

// Attachment is one attached file, with its content decoded (base64,
// quoted-printable) as the recipient would see it.
type Attachment struct {
	Name        string `json:"name,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	Content     []byte `json:"content,omitempty"`
}

// Message is one e-mail as the judge sees it.
type Message struct {
	Provider string `json:"provider"`
	// Endpoint describes where it was seen, e.g. "POST api.postmarkapp.com/email".
	Endpoint string `json:"endpoint,omitempty"`

	From    []Address `json:"from,omitempty"`
	To      []Address `json:"to,omitempty"`
	Cc      []Address `json:"cc,omitempty"`
	Bcc     []Address `json:"bcc,omitempty"`
	ReplyTo []Address `json:"reply_to,omitempty"`

	// EnvelopeFrom and EnvelopeTo are the SMTP MAIL FROM and RCPT TO (or the
	// API's explicit envelope, e.g. SES SendRawEmail Destinations). Envelope
	// recipients are who the message is really delivered to.
	EnvelopeFrom string    `json:"envelope_from,omitempty"`
	EnvelopeTo   []Address `json:"envelope_to,omitempty"`

	Subject  string `json:"subject,omitempty"`
	TextBody string `json:"text_body,omitempty"`
	HTMLBody string `json:"html_body,omitempty"`
	// Extra holds other text that ends up in the mail: template models and
	// variables, Graph forward comments, custom header values.
	Extra       []string             `json:"extra,omitempty"`
	Attachments []Attachment         `json:"attachments,omitempty"`
	Headers     textproto.MIMEHeader `json:"headers,omitempty"`

	// Forward is set when the API call itself is a forward (Graph
	// /forward). Content-based signs are found by ForwardMarkers.
	Forward bool `json:"forward,omitempty"`
	// Partial is set on SMTP messages whose DATA has not completed
	// (Session.Pending): recipients are known, content may be missing.
	Partial bool `json:"partial,omitempty"`
	// Truncated is set when content was dropped because of a limit.
	Truncated bool `json:"truncated,omitempty"`
	// Unreadable says why a request to a known mail API could not be read
	// whole (a body that does not parse, one cut at a limit, an encoding
	// that could not be undone): what it sends is not fully known.
	Unreadable string `json:"unreadable,omitempty"`

	used int // bytes of content kept so far, against MaxBodyBytes
}

func newMessage(provider, endpoint string) *Message {
	return &Message{Provider: provider, Endpoint: endpoint}
}

// take reserves n bytes of the content budget, returning how many may be kept.
func (m *Message) take(n int) int {
	if left := MaxBodyBytes - m.used; n > left {
		n = max(left, 0)
		m.Truncated = true
	}
	m.used += n
	return n
}

func (m *Message) setText(s string) {
	m.TextBody = m.keepString(m.TextBody, s)
}

func (m *Message) setHTML(s string) {
	m.HTMLBody = m.keepString(m.HTMLBody, s)
}

func (m *Message) keepString(old, s string) string {
	n := m.take(len(s))
	if old != "" {
		return old + "\n" + s[:n]
	}
	return s[:n]
}

func (m *Message) addExtra(s string) {
	if s == "" || len(m.Extra) >= MaxParts {
		return
	}
	n := m.take(len(s))
	m.Extra = append(m.Extra, s[:n])
}

func (m *Message) addAttachment(a Attachment) {
	if len(m.Attachments) >= MaxParts {
		m.Truncated = true
		return
	}
	n := m.take(len(a.Content))
	a.Content = a.Content[:n]
	m.Attachments = append(m.Attachments, a)
}

func (m *Message) addHeader(k, v string) {
	if m.Headers == nil {
		m.Headers = make(textproto.MIMEHeader)
	}
	if len(m.Headers) >= MaxParts {
		return
	}
	m.Headers.Add(k, v)
}

// Recipients returns every distinct recipient: To, Cc, Bcc and the envelope.
func (m *Message) Recipients() []Address {
	n := len(m.To) + len(m.Cc) + len(m.Bcc) + len(m.EnvelopeTo)
	out := make([]Address, 0, n)
	seen := make(map[string]struct{}, n)
	for _, l := range [][]Address{m.To, m.Cc, m.Bcc, m.EnvelopeTo} {
		for _, a := range l {
			if _, ok := seen[a.Addr]; ok {
				continue
			}
			seen[a.Addr] = struct{}{}
			out = append(out, a)
		}
	}
	return out
}

// BlindRecipients returns the recipients that receive the message without
// being shown in its To or Cc: the Bcc list plus, when an envelope is known
// and the headers were seen, envelope recipients absent from To and Cc.
func (m *Message) BlindRecipients() []Address {
	out := append([]Address(nil), m.Bcc...)
	if len(m.EnvelopeTo) == 0 || m.Partial && m.Headers == nil {
		return out
	}
	shown := make(map[string]struct{}, len(m.To)+len(m.Cc))
	for _, a := range m.To {
		shown[a.Addr] = struct{}{}
	}
	for _, a := range m.Cc {
		shown[a.Addr] = struct{}{}
	}
	for _, a := range m.EnvelopeTo {
		if _, ok := shown[a.Addr]; !ok {
			out = appendAddr(out, a)
		}
	}
	return out
}

var (
	// Subject prefixes of forwards in common clients and languages,
	// possibly after Re:/AW: prefixes or a "[list]" tag.
	forwardSubject = regexp.MustCompile(`(?i)^\s*(?:\[[^\]]{0,64}\]\s*)?(?:(?:re|aw|sv|antw)\s*(?:\[\d+\])?\s*:\s*)*(?:fwd?|fw|tr|wg|rv|enc|vs|vb|doorst)\s*(?:\[\d+\])?\s*:`)
	// Body markers inserted by mail clients when forwarding, tried only
	// where a run of dashes starts (see hasForwardMarker).
	forwardDash = regexp.MustCompile(`(?i)^-{2,}\s*(?:(?:forwarded message|original message|weitergeleitete nachricht|message transféré|mensaje reenviado|ursprüngliche nachricht)\s*-{2,}|forwarded by\s)`)
)

// hasForwardMarker reports whether a body holds a client's forwarded-message
// marker. It runs the marker regexp only at runs of dashes, so a long body
// without them costs one IndexByte pass.
func hasForwardMarker(s string) bool {
	for i, n := 0, 0; i < len(s) && n < 4096; n++ {
		j := strings.Index(s[i:], "--")
		if j < 0 {
			break
		}
		p := i + j
		if forwardDash.MatchString(s[p:min(len(s), p+96)]) {
			return true
		}
		for p < len(s) && s[p] == '-' {
			p++
		}
		i = p
	}
	return IndexFold(s, "begin forwarded message:") >= 0
}

// IndexFold returns the index of the first ASCII-case-insensitive match of
// sub (which must start with an ASCII letter) in s, or -1. It does not
// allocate.
func IndexFold(s, sub string) int {
	n := len(sub)
	if n == 0 {
		return 0
	}
	lo, up := sub[0], sub[0]
	if c := sub[0] | 0x20; c >= 'a' && c <= 'z' {
		lo, up = c, c&^0x20
	}
	// Next positions of each case of the first byte; -1 none left, -2 not
	// searched yet. Each is searched again only once passed, so the whole
	// scan is linear.
	nextLo, nextUp := -2, -2
	for i := 0; i+n <= len(s); {
		if nextLo != -1 && nextLo < i {
			if k := strings.IndexByte(s[i:], lo); k >= 0 {
				nextLo = i + k
			} else {
				nextLo = -1
			}
		}
		if nextUp != -1 && nextUp < i {
			if k := strings.IndexByte(s[i:], up); k >= 0 {
				nextUp = i + k
			} else {
				nextUp = -1
			}
		}
		j := nextLo
		if nextUp >= 0 && (j < 0 || nextUp < j) {
			j = nextUp
		}
		if j < 0 || j+n > len(s) {
			return -1
		}
		if strings.EqualFold(s[j:j+n], sub) {
			return j
		}
		i = j + 1
	}
	return -1
}

// ForwardMarkers returns the signs that m forwards another message: a
// forward subject prefix, a client's forwarded-message marker in a body, an
// attached message/rfc822 (or .eml), Resent-* headers, or a forward API
// call. It returns nil for an ordinary message.
func (m *Message) ForwardMarkers() []string {
	var out []string
	if m.Forward {
		out = append(out, "api:forward")
	}
	if forwardSubject.MatchString(m.Subject) {
		out = append(out, "subject:"+strings.TrimSpace(firstN(m.Subject, 40)))
	}
	if hasForwardMarker(m.TextBody) || hasForwardMarker(m.HTMLBody) {
		out = append(out, "body:forwarded-message-marker")
	}
	for _, a := range m.Attachments {
		ct := strings.ToLower(a.ContentType)
		if strings.HasPrefix(ct, "message/rfc822") || strings.HasPrefix(ct, "message/global") ||
			strings.HasSuffix(strings.ToLower(a.Name), ".eml") {
			out = append(out, "attachment:message/rfc822")
			break
		}
	}
	if m.Headers.Get("Resent-To") != "" || m.Headers.Get("Resent-From") != "" {
		out = append(out, "header:Resent")
	}
	return out
}

func firstN(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// UnreadableRequest stands for a request to a known mail endpoint that
// could not be read (FromHTTP's error, why).
func UnreadableRequest(endpoint, why string) *Message {
	m := newMessage("unknown", endpoint)
	m.Unreadable = why
	return m
}
