package mail

import (
	"regexp"
	"strings"
)

// Mailgun: POST /v3/{domain}/messages as application/x-www-form-urlencoded
// or multipart/form-data: from, to, cc, bcc (repeatable, each a list),
// subject, text, html, amp-html, attachment and inline (files), template,
// t:variables, h:{Header}, v:{var}. POST /v3/{domain}/messages.mime: to
// (the envelope) and message (a file holding the MIME message).

var mailgunPath = regexp.MustCompile(`^/v3/[^/]+/messages(\.mime)?$`)

func (c *call) isMailgun() bool {
	return c.host == "api.mailgun.net" || c.host == "api.eu.mailgun.net" || mailgunPath.MatchString(c.path)
}

func (c *call) mailgun() ([]*Message, error) {
	if !c.isPost() || !mailgunPath.MatchString(c.path) {
		return nil, nil
	}
	mimeMode := strings.HasSuffix(c.path, ".mime")
	m := c.msg(ProviderMailgun)
	fields, tail := c.formFieldsPartial()
	if tail != nil && tail.Key == "message" && mimeMode {
		// The message is still arriving: its header section, once whole.
		defer parseRFC822HeaderPrefix(m, tail.data())
	}
	for _, f := range fields {
		switch {
		case f.Key == "from":
			mergeAddrList(&m.From, f.Value)
		case f.Key == "to" && mimeMode:
			mergeAddrList(&m.EnvelopeTo, f.Value)
		case f.Key == "to":
			mergeAddrList(&m.To, f.Value)
		case f.Key == "cc":
			mergeAddrList(&m.Cc, f.Value)
		case f.Key == "bcc":
			mergeAddrList(&m.Bcc, f.Value)
		case f.Key == "subject":
			m.Subject = f.Value
		case f.Key == "text":
			m.setText(f.Value)
		case f.Key == "html" || f.Key == "amp-html":
			m.setHTML(f.Value)
		case f.Key == "message" && mimeMode:
			parseRFC822Into(m, f.data(), 0)
		case f.Key == "attachment" || f.Key == "inline":
			m.addAttachment(Attachment{Name: f.FileName, ContentType: f.ContentType, Content: f.data()})
		case strings.HasPrefix(f.Key, "h:"):
			applyHeaderPair(m, f.Key[2:], f.Value)
		case f.Key == "t:variables" || strings.HasPrefix(f.Key, "v:") || f.Key == "recipient-variables":
			m.addExtra(f.Value)
		}
	}
	return []*Message{m}, nil
}
