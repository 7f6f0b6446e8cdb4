package mail

import "errors"

// The mail APIs known by name, one file each (providers_*.go), with the
// field helpers they share in providers_fields.go. A request no provider
// takes is searched as generic JSON or form (providers_generic.go).

// provider is a known mail API: the requests it takes (by host, or by a
// path no other API uses) and how it reads them.
type provider struct {
	takes func(c *call) bool
	parse func(c *call) ([]*Message, error)
}

// providers are asked in order: the first that takes a request parses it.
var providers = []provider{
	{(*call).isPostmark, (*call).postmark},
	{(*call).isSendGrid, (*call).sendgrid},
	{(*call).isMailgun, (*call).mailgun},
	{(*call).isSES, (*call).ses},
	{(*call).isResend, (*call).resend},
	{(*call).isGmail, (*call).gmail},
	{(*call).isGraph, func(c *call) ([]*Message, error) { return c.graph(0) }},
}

// messages returns what the request sends: parsed by the provider that
// takes it, else as generic JSON or form.
func (c *call) messages() ([]*Message, error) {
	for _, p := range providers {
		if p.takes(c) {
			return p.parse(c)
		}
	}
	return c.generic()
}

var errNotJSONObject = errors.New("body is not a json object")

// appendMsg appends m, folding everything past MaxParts messages into the
// last one so that no recipient is ever dropped.
func appendMsg(out []*Message, m *Message) []*Message {
	if len(out) < MaxParts {
		return append(out, m)
	}
	last := out[len(out)-1]
	last.Truncated = true
	last.To = mergeAddrs(last.To, m.To)
	last.Cc = mergeAddrs(last.Cc, m.Cc)
	last.Bcc = mergeAddrs(last.Bcc, m.Bcc)
	last.EnvelopeTo = mergeAddrs(last.EnvelopeTo, m.EnvelopeTo)
	return out
}
