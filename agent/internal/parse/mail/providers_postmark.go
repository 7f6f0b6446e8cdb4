package mail

// Postmark: POST /email, /email/withTemplate: one object; /email/batch: an
// array of them; /email/batchWithTemplates: {"Messages": [...]}. Fields:
// From, To, Cc, Bcc (comma-separated lists), ReplyTo, Subject, HtmlBody,
// TextBody, Headers [{Name, Value}], Attachments [{Name, Content (base64),
// ContentType}], TemplateId/TemplateAlias, TemplateModel.

var (
	postmarkRecipients  = recipientKeys{to: "To", cc: "Cc", bcc: "Bcc", replyTo: "ReplyTo"}
	postmarkAttachments = attachmentKeys{name: "Name", contentType: "ContentType", content: "Content"}
)

func (c *call) isPostmark() bool { return c.host == "api.postmarkapp.com" }

func (c *call) postmark() ([]*Message, error) {
	if !c.isPost() {
		return nil, nil
	}
	var list []*jnode
	switch c.path {
	case "/email", "/email/withtemplate":
		n, err := c.json()
		if err != nil || n == nil {
			return nil, err
		}
		list = []*jnode{n}
	case "/email/batch":
		n, err := c.json()
		if err != nil || n == nil {
			return nil, err
		}
		list = n.arr
		if n.kind == jObj {
			list = []*jnode{n}
		}
	case "/email/batchwithtemplates":
		n, err := c.json()
		if err != nil || n == nil {
			return nil, err
		}
		for _, m := range n.get("Messages") {
			list = append(list, m.arr...)
		}
	default:
		return nil, nil
	}
	var out []*Message
	for _, n := range list {
		if n.kind != jObj {
			continue
		}
		m := c.msg(ProviderPostmark)
		m.From = n.first("From").addresses()
		m.addRecipients(n, postmarkRecipients)
		m.Subject = n.getStr("Subject")
		m.setText(n.getStr("TextBody"))
		m.setHTML(n.getStr("HtmlBody"))
		m.addHeaderList(n, "Headers", "Name", "Value")
		m.addAttachments(n, "Attachments", postmarkAttachments)
		m.addTexts(n, "TemplateModel")
		out = appendMsg(out, m)
	}
	return out, nil
}
