package mail

import "strings"

// Amazon SES.
//
// v2 (JSON): POST /v2/email/outbound-emails {FromEmailAddress, Destination:
// {ToAddresses, CcAddresses, BccAddresses}, ReplyToAddresses, Content:
// {Simple: {Subject: {Data}, Body: {Text: {Data}, Html: {Data}}, Headers,
// Attachments: [{RawContent, FileName, ContentType}]} | Raw: {Data (base64
// MIME)} | Template: {TemplateName, TemplateData, TemplateContent}}}; POST
// /v2/email/outbound-bulk-emails {FromEmailAddress, DefaultContent,
// BulkEmailEntries: [{Destination, ReplacementEmailContent}]}.
//
// v1 (query API, form-encoded body or query string): Action=SendEmail |
// SendRawEmail | SendTemplatedEmail | SendBulkTemplatedEmail with Source,
// Destination.ToAddresses.member.N (Cc, Bcc), Destinations.member.N,
// Message.Subject.Data, Message.Body.Text.Data, Message.Body.Html.Data,
// RawMessage.Data (base64 MIME), ReplyToAddresses.member.N, TemplateData.

var (
	sesV2Destination = recipientKeys{to: "ToAddresses", cc: "CcAddresses", bcc: "BccAddresses"}
	sesV2Attachments = attachmentKeys{name: "FileName", contentType: "ContentType", content: "RawContent"}
)

func (c *call) isSES() bool {
	h := c.host
	if !strings.HasSuffix(h, ".amazonaws.com") {
		return false
	}
	return strings.HasPrefix(h, "email.") || strings.HasPrefix(h, "email-fips.") ||
		strings.HasPrefix(h, "email-smtp.")
}

func (c *call) ses() ([]*Message, error) {
	switch {
	case c.isPost() && c.path == "/v2/email/outbound-emails":
		n, err := c.json()
		if err != nil || n == nil {
			return nil, err
		}
		m := c.msg(ProviderSES)
		sesV2Common(m, n)
		m.addRecipients(n.first("Destination"), sesV2Destination)
		sesV2Content(m, n.first("Content"))
		if c.r.Partial {
			// A raw message still arriving: its header section, once whole.
			if path, s, ok := cutJSONString(c.r.Body); ok && pathIs(path, "Content", "Raw", "Data") {
				parseRFC822HeaderPrefix(m, decodeBase64Prefix(string(s)))
			}
		}
		return []*Message{m}, nil
	case c.isPost() && c.path == "/v2/email/outbound-bulk-emails":
		n, err := c.json()
		if err != nil || n == nil {
			return nil, err
		}
		var out []*Message
		for _, es := range n.get("BulkEmailEntries") {
			for _, e := range es.arr {
				m := c.msg(ProviderSES)
				sesV2Common(m, n)
				sesV2Content(m, n.first("DefaultContent"))
				m.addRecipients(e.first("Destination"), sesV2Destination)
				m.addTexts(e, "ReplacementEmailContent")
				out = appendMsg(out, m)
			}
		}
		return out, nil
	case c.method == "POST" || c.method == "GET":
		return c.sesV1()
	}
	return nil, nil
}

func sesV2Common(m *Message, n *jnode) {
	m.From = n.first("FromEmailAddress").addresses()
	mergeJSONAddrs(&m.ReplyTo, n, "ReplyToAddresses")
}

func sesV2Content(m *Message, content *jnode) {
	if content == nil {
		return
	}
	for _, s := range content.get("Simple") {
		m.Subject = s.first("Subject").getStr("Data")
		body := s.first("Body")
		m.setText(body.first("Text").getStr("Data"))
		m.setHTML(body.first("Html").getStr("Data"))
		m.addHeaderList(s, "Headers", "Name", "Value")
		m.addAttachments(s, "Attachments", sesV2Attachments)
	}
	for _, r := range content.get("Raw") {
		parseRFC822Into(m, decodeBase64Field(r.getStr("Data")), 0)
	}
	for _, t := range content.get("Template") {
		m.addExtra(t.getStr("TemplateData"))
		if tc := t.first("TemplateContent"); tc != nil {
			if m.Subject == "" {
				m.Subject = tc.getStr("Subject")
			}
			m.setText(tc.getStr("Text"))
			m.setHTML(tc.getStr("Html"))
		}
	}
}

func (c *call) sesV1() ([]*Message, error) {
	fields, tail := c.formFieldsPartial()
	action := ""
	for _, f := range fields {
		if f.Key == "action" {
			action = strings.ToLower(f.Value)
		}
	}
	switch action {
	case "sendemail", "sendrawemail", "sendtemplatedemail", "sendbulktemplatedemail":
	case "":
		// A body still arriving may name its Action last: its recipient
		// fields are judged meanwhile (no other action has them).
		if !c.r.Partial {
			return nil, nil
		}
	default:
		return nil, nil
	}
	m := c.msg(ProviderSES)
	if tail != nil && tail.Key == "rawmessage.data" {
		defer parseRFC822HeaderPrefix(m, decodeBase64Prefix(tail.Value))
	}
	for _, f := range fields {
		k := f.Key
		switch list := sesListName(k); {
		case k == "source":
			mergeAddrList(&m.From, f.Value)
		case list == "toaddresses":
			mergeAddrList(&m.To, f.Value)
		case list == "ccaddresses":
			mergeAddrList(&m.Cc, f.Value)
		case list == "bccaddresses":
			mergeAddrList(&m.Bcc, f.Value)
		case list == "destinations" && strings.Count(k, ".") == 2:
			mergeAddrList(&m.EnvelopeTo, f.Value)
		case list == "replytoaddresses":
			mergeAddrList(&m.ReplyTo, f.Value)
		case k == "message.subject.data":
			m.Subject = f.Value
		case k == "message.body.text.data":
			m.setText(f.Value)
		case k == "message.body.html.data":
			m.setHTML(f.Value)
		case k == "rawmessage.data":
			parseRFC822Into(m, decodeBase64Field(f.Value), 0)
		case strings.HasSuffix(k, "templatedata"):
			m.addExtra(f.Value)
		}
	}
	return []*Message{m}, nil
}

// sesListName returns the name of the list a query key is a member of:
// "destination.bccaddresses.member.2" gives "bccaddresses" and
// "destinations.member.1.destination.toaddresses.member.1" gives
// "toaddresses".
func sesListName(k string) string {
	i := strings.LastIndex(k, ".member.")
	if i < 0 {
		return ""
	}
	head := k[:i]
	if j := strings.LastIndexByte(head, '.'); j >= 0 {
		head = head[j+1:]
	}
	return head
}
