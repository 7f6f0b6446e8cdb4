package mail

import "strings"

// SendGrid: POST /v3/mail/send: {personalizations: [{to, cc, bcc: [{email,
// name}], subject, headers, substitutions, dynamic_template_data, from}],
// from, reply_to, reply_to_list, subject, content: [{type, value}],
// attachments: [{content (base64), type, filename}], template_id, headers}.
// Each personalization is delivered as its own message.

var (
	sendgridRecipients  = recipientKeys{to: "to", cc: "cc", bcc: "bcc"} // of a personalization
	sendgridAttachments = attachmentKeys{name: "filename", contentType: "type", content: "content"}
)

func (c *call) isSendGrid() bool {
	return c.host == "api.sendgrid.com" || strings.HasSuffix(c.path, "/v3/mail/send")
}

func (c *call) sendgrid() ([]*Message, error) {
	if !c.isPost() || !strings.HasSuffix(c.path, "/mail/send") {
		return nil, nil
	}
	n, err := c.json()
	if err != nil || n == nil {
		return nil, err
	}
	if n.kind != jObj {
		return nil, errNotJSONObject
	}
	base := func() *Message {
		m := c.msg(ProviderSendGrid)
		m.From = n.first("from").addresses()
		mergeJSONAddrs(&m.ReplyTo, n, "reply_to", "reply_to_list")
		m.Subject = n.getStr("subject")
		for _, cs := range n.get("content") {
			for _, ct := range cs.arr {
				typ := strings.ToLower(ct.getStr("type"))
				switch {
				case strings.HasPrefix(typ, "text/html"):
					m.setHTML(ct.getStr("value"))
				case strings.HasPrefix(typ, "text/plain"):
					m.setText(ct.getStr("value"))
				default:
					m.addExtra(ct.getStr("value"))
				}
			}
		}
		m.addAttachments(n, "attachments", sendgridAttachments)
		m.addHeaderMap(n, "headers")
		return m
	}
	var out []*Message
	for _, ps := range n.get("personalizations") {
		for _, p := range ps.arr {
			m := base()
			m.addRecipients(p, sendgridRecipients)
			if f := p.first("from"); f != nil {
				m.From = f.addresses()
			}
			if s := p.getStr("subject"); s != "" {
				m.Subject = s
			}
			m.addHeaderMap(p, "headers")
			m.addTexts(p, "substitutions", "dynamic_template_data")
			out = appendMsg(out, m)
		}
	}
	if len(out) == 0 {
		out = append(out, base())
	}
	return out, nil
}
