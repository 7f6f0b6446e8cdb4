package mail

// Resend: POST /emails: {from, to, cc, bcc (string or array), reply_to,
// subject, html, text, headers: {name: value}, attachments: [{content
// (base64, or a serialised Buffer), filename, path, content_type}]}; POST
// /emails/batch: an array of those.

var (
	resendRecipients  = recipientKeys{to: "to", cc: "cc", bcc: "bcc", replyTo: "reply_to"}
	resendAttachments = attachmentKeys{name: "filename", altName: "path", contentType: "content_type", content: "content", anyBytes: true}
)

func (c *call) isResend() bool { return c.host == "api.resend.com" }

func (c *call) resend() ([]*Message, error) {
	if !c.isPost() || (c.path != "/emails" && c.path != "/emails/batch") {
		return nil, nil
	}
	n, err := c.json()
	if err != nil || n == nil {
		return nil, err
	}
	list := []*jnode{n}
	if n.kind == jArr {
		list = n.arr
	}
	var out []*Message
	for _, e := range list {
		if e.kind != jObj {
			continue
		}
		m := c.msg(ProviderResend)
		m.From = e.first("from").addresses()
		m.addRecipients(e, resendRecipients)
		m.Subject = e.getStr("subject")
		m.setText(e.getStr("text"))
		m.setHTML(e.getStr("html"))
		m.addHeaderMap(e, "headers")
		m.addAttachments(e, "attachments", resendAttachments)
		out = appendMsg(out, m)
	}
	return out, nil
}
