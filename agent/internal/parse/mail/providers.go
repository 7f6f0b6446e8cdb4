package mail

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
)

var errNotJSONObject = errors.New("body is not a json object")

// ---- Postmark ----------------------------------------------------------
//
// POST /email, /email/withTemplate: one object; /email/batch: an array of
// them; /email/batchWithTemplates: {"Messages": [...]}. Fields: From, To, Cc,
// Bcc (comma-separated lists), ReplyTo, Subject, HtmlBody, TextBody,
// Headers [{Name, Value}], Attachments [{Name, Content (base64),
// ContentType}], TemplateId/TemplateAlias, TemplateModel.
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
		for _, v := range n.get("To") {
			m.To = mergeAddrs(m.To, v.addresses())
		}
		for _, v := range n.get("Cc") {
			m.Cc = mergeAddrs(m.Cc, v.addresses())
		}
		for _, v := range n.get("Bcc") {
			m.Bcc = mergeAddrs(m.Bcc, v.addresses())
		}
		for _, v := range n.get("ReplyTo") {
			m.ReplyTo = mergeAddrs(m.ReplyTo, v.addresses())
		}
		m.Subject = n.getStr("Subject")
		m.setText(n.getStr("TextBody"))
		m.setHTML(n.getStr("HtmlBody"))
		for _, hs := range n.get("Headers") {
			for _, h := range hs.arr {
				applyHeaderPair(m, h.getStr("Name"), h.getStr("Value"))
			}
		}
		for _, as := range n.get("Attachments") {
			for _, a := range as.arr {
				m.addAttachment(Attachment{
					Name:        a.getStr("Name"),
					ContentType: a.getStr("ContentType"),
					Content:     decodeBase64Field(a.getStr("Content")),
				})
			}
		}
		for _, tm := range n.get("TemplateModel") {
			m.addExtra(tm.text(MaxBodyBytes))
		}
		out = appendMsg(out, m)
	}
	return out, nil
}

// applyHeaderPair records a custom header; address headers also add their
// recipients, since some APIs honour them.
func applyHeaderPair(m *Message, name, value string) {
	if name == "" {
		return
	}
	m.addHeader(name, value)
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "to", "resent-to":
		m.To = mergeAddrs(m.To, ParseAddressList(value))
	case "cc", "resent-cc":
		m.Cc = mergeAddrs(m.Cc, ParseAddressList(value))
	case "bcc", "resent-bcc":
		m.Bcc = mergeAddrs(m.Bcc, ParseAddressList(value))
	case "reply-to":
		m.ReplyTo = mergeAddrs(m.ReplyTo, ParseAddressList(value))
	case "x-smtpapi":
		m.EnvelopeTo = mergeAddrs(m.EnvelopeTo, smtpAPIRecipients(value))
	case "subject":
		if m.Subject == "" {
			m.Subject = decodeWords(value)
		}
	default:
		m.addExtra(value)
	}
}

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

// ---- SendGrid ----------------------------------------------------------
//
// POST /v3/mail/send: {personalizations: [{to, cc, bcc: [{email, name}],
// subject, headers, substitutions, dynamic_template_data, from}], from,
// reply_to, reply_to_list, subject, content: [{type, value}], attachments:
// [{content (base64), type, filename}], template_id, headers}. Each
// personalization is delivered as its own message.
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
		for _, k := range []string{"reply_to", "reply_to_list"} {
			for _, v := range n.get(k) {
				m.ReplyTo = mergeAddrs(m.ReplyTo, v.addresses())
			}
		}
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
		for _, as := range n.get("attachments") {
			for _, a := range as.arr {
				m.addAttachment(Attachment{
					Name:        a.getStr("filename"),
					ContentType: a.getStr("type"),
					Content:     decodeBase64Field(a.getStr("content")),
				})
			}
		}
		for _, h := range n.get("headers") {
			for _, kv := range h.obj {
				applyHeaderPair(m, kv.key, kv.val.strVal())
			}
		}
		return m
	}
	var out []*Message
	for _, ps := range n.get("personalizations") {
		for _, p := range ps.arr {
			m := base()
			for _, v := range p.get("to") {
				m.To = mergeAddrs(m.To, v.addresses())
			}
			for _, v := range p.get("cc") {
				m.Cc = mergeAddrs(m.Cc, v.addresses())
			}
			for _, v := range p.get("bcc") {
				m.Bcc = mergeAddrs(m.Bcc, v.addresses())
			}
			if f := p.first("from"); f != nil {
				m.From = f.addresses()
			}
			if s := p.getStr("subject"); s != "" {
				m.Subject = s
			}
			for _, h := range p.get("headers") {
				for _, kv := range h.obj {
					applyHeaderPair(m, kv.key, kv.val.strVal())
				}
			}
			for _, k := range []string{"substitutions", "dynamic_template_data"} {
				for _, v := range p.get(k) {
					m.addExtra(v.text(MaxBodyBytes))
				}
			}
			out = appendMsg(out, m)
		}
	}
	if len(out) == 0 {
		out = append(out, base())
	}
	return out, nil
}

// ---- Mailgun -----------------------------------------------------------
//
// POST /v3/{domain}/messages as application/x-www-form-urlencoded or
// multipart/form-data: from, to, cc, bcc (repeatable, each a list),
// subject, text, html, amp-html, attachment and inline (files), template,
// t:variables, h:{Header}, v:{var}. POST /v3/{domain}/messages.mime: to
// (the envelope) and message (a file holding the MIME message).

var mailgunPath = regexp.MustCompile(`^/v3/[^/]+/messages(\.mime)?$`)

func isMailgunHost(h string) bool {
	return h == "api.mailgun.net" || h == "api.eu.mailgun.net"
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
		raw := tail.Content
		if !tail.IsFile {
			raw = []byte(tail.Value)
		}
		defer parseRFC822HeaderPrefix(m, raw)
	}
	for _, f := range fields {
		switch {
		case f.Key == "from":
			m.From = mergeAddrs(m.From, ParseAddressList(f.Value))
		case f.Key == "to" && mimeMode:
			m.EnvelopeTo = mergeAddrs(m.EnvelopeTo, ParseAddressList(f.Value))
		case f.Key == "to":
			m.To = mergeAddrs(m.To, ParseAddressList(f.Value))
		case f.Key == "cc":
			m.Cc = mergeAddrs(m.Cc, ParseAddressList(f.Value))
		case f.Key == "bcc":
			m.Bcc = mergeAddrs(m.Bcc, ParseAddressList(f.Value))
		case f.Key == "subject":
			m.Subject = f.Value
		case f.Key == "text":
			m.setText(f.Value)
		case f.Key == "html" || f.Key == "amp-html":
			m.setHTML(f.Value)
		case f.Key == "message" && mimeMode:
			raw := f.Content
			if !f.IsFile {
				raw = []byte(f.Value)
			}
			parseRFC822Into(m, raw, 0)
		case f.Key == "attachment" || f.Key == "inline":
			content := f.Content
			if !f.IsFile {
				content = []byte(f.Value)
			}
			m.addAttachment(Attachment{Name: f.FileName, ContentType: f.ContentType, Content: content})
		case strings.HasPrefix(f.Key, "h:"):
			applyHeaderPair(m, f.Key[2:], f.Value)
		case f.Key == "t:variables" || strings.HasPrefix(f.Key, "v:") || f.Key == "recipient-variables":
			m.addExtra(f.Value)
		}
	}
	return []*Message{m}, nil
}

// ---- Amazon SES --------------------------------------------------------
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

func isSESHost(h string) bool {
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
		sesV2Destination(m, n.first("Destination"))
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
				sesV2Destination(m, e.first("Destination"))
				for _, r := range e.get("ReplacementEmailContent") {
					m.addExtra(r.text(MaxBodyBytes))
				}
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
	for _, v := range n.get("ReplyToAddresses") {
		m.ReplyTo = mergeAddrs(m.ReplyTo, v.addresses())
	}
}

func sesV2Destination(m *Message, d *jnode) {
	for _, v := range d.get("ToAddresses") {
		m.To = mergeAddrs(m.To, v.addresses())
	}
	for _, v := range d.get("CcAddresses") {
		m.Cc = mergeAddrs(m.Cc, v.addresses())
	}
	for _, v := range d.get("BccAddresses") {
		m.Bcc = mergeAddrs(m.Bcc, v.addresses())
	}
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
		for _, hs := range s.get("Headers") {
			for _, h := range hs.arr {
				applyHeaderPair(m, h.getStr("Name"), h.getStr("Value"))
			}
		}
		for _, as := range s.get("Attachments") {
			for _, a := range as.arr {
				m.addAttachment(Attachment{
					Name:        a.getStr("FileName"),
					ContentType: a.getStr("ContentType"),
					Content:     decodeBase64Field(a.getStr("RawContent")),
				})
			}
		}
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
			m.From = mergeAddrs(m.From, ParseAddressList(f.Value))
		case list == "toaddresses":
			m.To = mergeAddrs(m.To, ParseAddressList(f.Value))
		case list == "ccaddresses":
			m.Cc = mergeAddrs(m.Cc, ParseAddressList(f.Value))
		case list == "bccaddresses":
			m.Bcc = mergeAddrs(m.Bcc, ParseAddressList(f.Value))
		case list == "destinations" && strings.Count(k, ".") == 2:
			m.EnvelopeTo = mergeAddrs(m.EnvelopeTo, ParseAddressList(f.Value))
		case list == "replytoaddresses":
			m.ReplyTo = mergeAddrs(m.ReplyTo, ParseAddressList(f.Value))
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

// ---- Resend ------------------------------------------------------------
//
// POST /emails: {from, to, cc, bcc (string or array), reply_to, subject,
// html, text, headers: {name: value}, attachments: [{content (base64, or a
// serialised Buffer), filename, path, content_type}]}; POST /emails/batch:
// an array of those.
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
		for _, v := range e.get("to") {
			m.To = mergeAddrs(m.To, v.addresses())
		}
		for _, v := range e.get("cc") {
			m.Cc = mergeAddrs(m.Cc, v.addresses())
		}
		for _, v := range e.get("bcc") {
			m.Bcc = mergeAddrs(m.Bcc, v.addresses())
		}
		for _, v := range e.get("reply_to") {
			m.ReplyTo = mergeAddrs(m.ReplyTo, v.addresses())
		}
		m.Subject = e.getStr("subject")
		m.setText(e.getStr("text"))
		m.setHTML(e.getStr("html"))
		for _, h := range e.get("headers") {
			for _, kv := range h.obj {
				applyHeaderPair(m, kv.key, kv.val.strVal())
			}
		}
		for _, as := range e.get("attachments") {
			for _, a := range as.arr {
				name := a.getStr("filename")
				if name == "" {
					name = a.getStr("path")
				}
				m.addAttachment(Attachment{
					Name:        name,
					ContentType: a.getStr("content_type"),
					Content:     jsonBytes(a.first("content")),
				})
			}
		}
		out = appendMsg(out, m)
	}
	return out, nil
}

// jsonBytes decodes attachment content given as base64, as an array of
// byte values, or as a serialised Node.js Buffer {"type":"Buffer","data":[]}.
func jsonBytes(n *jnode) []byte {
	if n == nil {
		return nil
	}
	switch n.kind {
	case jStr:
		return decodeBase64Field(n.str)
	case jObj:
		return jsonBytes(n.first("data"))
	case jArr:
		out := make([]byte, 0, len(n.arr))
		for _, e := range n.arr {
			v := 0
			for _, ch := range e.strVal() {
				if ch < '0' || ch > '9' {
					break
				}
				v = v*10 + int(ch-'0')
				if v > 255 {
					break
				}
			}
			out = append(out, byte(v))
		}
		return out
	}
	return nil
}

// ---- Gmail API ---------------------------------------------------------
//
// POST /gmail/v1/users/{id}/messages/send {raw: base64url RFC 822};
// POST .../drafts {message: {raw}}; POST .../drafts/send {id, message?};
// POST /upload/gmail/v1/users/{id}/messages/send?uploadType=media with a
// message/rfc822 body, or uploadType=multipart (multipart/related: JSON
// metadata, then the message).
func (c *call) gmail() ([]*Message, error) {
	if !c.isPost() && c.method != "PUT" {
		return nil, nil
	}
	i := strings.Index(c.path, "/gmail/v1/users/")
	rest := c.path[i+len("/gmail/v1/users/"):]
	_, tail, _ := strings.Cut(rest, "/")
	switch tail {
	case "messages/send", "drafts", "drafts/send":
	default:
		if !strings.HasPrefix(tail, "drafts/") { // PUT drafts/{id}
			return nil, nil
		}
	}
	m := c.msg(ProviderGmail)
	upload := strings.HasPrefix(c.path, "/upload/")
	ct := c.contentType()
	switch {
	case upload && strings.HasPrefix(ct, "multipart/"):
		seen := false
		if _, tail := c.formFieldsPartial(); tail != nil {
			raw := tail.Content
			if !tail.IsFile {
				raw = []byte(strings.TrimSpace(tail.Value))
			}
			if len(raw) > 0 && raw[0] != '{' {
				seen = parseRFC822HeaderPrefix(m, raw)
			}
		}
		for _, f := range c.formFieldsRelated() {
			if len(f) > 0 && f[0] == '{' {
				if n, err := parseJSON(f); err == nil {
					if raw := gmailRaw(n); raw != nil {
						parseRFC822Into(m, raw, 0)
						seen = true
					}
				}
				continue
			}
			parseRFC822Into(m, f, 0)
			seen = true
		}
		if !seen {
			return nil, nil
		}
	case upload && ct != "application/json" && c.r.Partial:
		parseRFC822HeaderPrefix(m, c.r.Body)
	case upload && ct != "application/json":
		parseRFC822Into(m, c.r.Body, 0)
	default:
		n, err := c.json()
		if err != nil || n == nil {
			return nil, err
		}
		raw := gmailRaw(n)
		if raw == nil && c.r.Partial {
			// The raw message is still arriving: its header section,
			// once whole.
			if path, s, ok := cutJSONString(c.r.Body); ok && (pathIs(path, "raw") || pathIs(path, "message", "raw")) &&
				parseRFC822HeaderPrefix(m, decodeBase64Prefix(string(s))) {
				return []*Message{m}, nil
			}
		}
		if raw == nil {
			return nil, nil // e.g. drafts/send of an existing draft by id
		}
		parseRFC822Into(m, raw, 0)
	}
	return []*Message{m}, nil
}

func gmailRaw(n *jnode) []byte {
	if s := n.getStr("raw"); s != "" {
		return decodeBase64Field(s)
	}
	if msg := n.first("message"); msg != nil {
		if s := msg.getStr("raw"); s != "" {
			return decodeBase64Field(s)
		}
	}
	return nil
}

// formFieldsRelated returns the bodies of the parts of a multipart body.
func (c *call) formFieldsRelated() [][]byte {
	var out [][]byte
	for _, f := range c.formFields() {
		if f.IsFile {
			out = append(out, f.Content)
		} else {
			out = append(out, []byte(strings.TrimSpace(f.Value)))
		}
	}
	return out
}

// ---- Microsoft Graph ---------------------------------------------------
//
// POST /v1.0/me/sendMail (or /users/{id}/sendMail, /beta/...) {message:
// {subject, body: {contentType, content}, toRecipients, ccRecipients,
// bccRecipients: [{emailAddress: {address, name}}], replyTo, from,
// attachments: [{name, contentType, contentBytes}], internetMessageHeaders:
// [{name, value}]}, saveToSentItems}, or a base64 MIME body with
// Content-Type text/plain. Also .../messages/{id}/forward, reply, replyAll
// and createForward ({comment, toRecipients, message}), draft creation
// POST .../messages and updates PATCH .../messages/{id}, and JSON $batch.

func isGraphHost(h string) bool {
	switch h {
	case "graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us",
		"microsoftgraph.chinacloudapi.cn", "graph.microsoft.de":
		return true
	}
	return false
}

var graphMailPath = regexp.MustCompile(`^/(?:v1\.0|beta)/(?:me|users/[^/]+)(/.*)$`)

func (c *call) graph(depth int) ([]*Message, error) {
	if depth > 2 {
		return nil, nil
	}
	if c.isPost() && (c.path == "/v1.0/$batch" || c.path == "/beta/$batch") {
		return c.graphBatch(depth)
	}
	sm := graphMailPath.FindStringSubmatch(c.path)
	if sm == nil {
		return nil, nil
	}
	sub := sm[1]
	kind := ""
	switch {
	case sub == "/sendmail" && c.isPost():
		kind = "send"
	case strings.HasSuffix(sub, "/forward") || strings.HasSuffix(sub, "/createforward"):
		kind = "forward"
	case strings.HasSuffix(sub, "/reply") || strings.HasSuffix(sub, "/replyall") ||
		strings.HasSuffix(sub, "/createreply") || strings.HasSuffix(sub, "/createreplyall"):
		kind = "reply"
	case c.isPost() && (strings.HasSuffix(sub, "/messages")):
		kind = "draft"
	case c.method == "PATCH" && strings.Contains(sub, "/messages/") && strings.Count(sub, "/") <= 5:
		kind = "draft"
	default:
		return nil, nil
	}
	if (kind == "forward" || kind == "reply") && !c.isPost() {
		return nil, nil
	}
	m := c.msg(ProviderGraph)
	m.Forward = kind == "forward"
	if kind == "send" && !strings.HasPrefix(strings.TrimSpace(string(c.r.Body)), "{") {
		// MIME format: base64 of the RFC 822 message.
		if c.r.Partial {
			parseRFC822HeaderPrefix(m, decodeBase64Prefix(string(c.r.Body)))
		} else {
			parseRFC822Into(m, decodeBase64Field(string(c.r.Body)), 0)
		}
		return []*Message{m}, nil
	}
	n, err := c.json()
	if err != nil || n == nil {
		return nil, err
	}
	msgNode := n.first("message")
	if kind == "draft" {
		msgNode = n
	}
	graphMessage(m, msgNode)
	if kind == "forward" || kind == "reply" {
		graphRecipients(m, n)
		m.addExtra(n.getStr("comment"))
	}
	if len(m.Recipients()) == 0 && kind != "send" && m.TextBody == "" && m.HTMLBody == "" &&
		len(m.Attachments) == 0 && len(m.Extra) == 0 {
		return nil, nil
	}
	return []*Message{m}, nil
}

func graphRecipients(m *Message, n *jnode) {
	for _, v := range n.get("toRecipients") {
		m.To = mergeAddrs(m.To, v.addresses())
	}
	for _, v := range n.get("ccRecipients") {
		m.Cc = mergeAddrs(m.Cc, v.addresses())
	}
	for _, v := range n.get("bccRecipients") {
		m.Bcc = mergeAddrs(m.Bcc, v.addresses())
	}
	for _, v := range n.get("replyTo") {
		m.ReplyTo = mergeAddrs(m.ReplyTo, v.addresses())
	}
}

func graphMessage(m *Message, n *jnode) {
	if n == nil || n.kind != jObj {
		return
	}
	graphRecipients(m, n)
	m.From = mergeAddrs(n.first("from").addresses(), n.first("sender").addresses())
	m.Subject = n.getStr("subject")
	for _, b := range n.get("body") {
		if strings.EqualFold(b.getStr("contentType"), "html") {
			m.setHTML(b.getStr("content"))
		} else {
			m.setText(b.getStr("content"))
		}
	}
	for _, hs := range n.get("internetMessageHeaders") {
		for _, h := range hs.arr {
			applyHeaderPair(m, h.getStr("name"), h.getStr("value"))
		}
	}
	for _, as := range n.get("attachments") {
		for _, a := range as.arr {
			m.addAttachment(Attachment{
				Name:        a.getStr("name"),
				ContentType: a.getStr("contentType"),
				Content:     decodeBase64Field(a.getStr("contentBytes")),
			})
		}
	}
}

// graphBatch parses a JSON batch {requests: [{method, url, headers, body}]}
// and examines each request as if sent on its own.
func (c *call) graphBatch(depth int) ([]*Message, error) {
	n, err := c.json()
	if err != nil || n == nil {
		return nil, err
	}
	version := strings.TrimSuffix(c.path, "/$batch")
	var out []*Message
	for _, rs := range n.get("requests") {
		for _, r := range rs.arr {
			u := r.getStr("url")
			if !strings.HasPrefix(u, "/") {
				u = "/" + u
			}
			if !strings.HasPrefix(strings.ToLower(u), "/v1.0/") && !strings.HasPrefix(strings.ToLower(u), "/beta/") {
				u = version + u
			}
			var body []byte
			if b := r.first("body"); b != nil {
				if b.kind == jStr {
					body = []byte(b.str)
				} else {
					body = b.json()
				}
			}
			sub := &HTTPRequest{Method: r.getStr("method"), Host: c.host, Path: u, Body: body}
			p, q, _ := strings.Cut(u, "?")
			query, _ := url.ParseQuery(q)
			sc := &call{r: sub, method: strings.ToUpper(sub.Method), host: c.host,
				path: strings.TrimRight(strings.ToLower(p), "/"), query: query,
				endpoint: c.endpoint + " " + strings.ToUpper(sub.Method) + " " + p}
			msgs, err := sc.graph(depth + 1)
			if err != nil {
				return nil, err
			}
			for _, m := range msgs {
				out = appendMsg(out, m)
			}
		}
	}
	return out, nil
}

// ---- generic JSON and forms --------------------------------------------
//
// Any other JSON body: every object holding a key named to, cc or bcc (any
// case) whose value contains addresses becomes a message, with subject and
// text/html/body keys of the same object. Any other form body with such
// keys becomes one message.
func (c *call) generic() ([]*Message, error) {
	if c.method == "GET" || c.method == "HEAD" || c.method == "OPTIONS" || len(c.r.Body) == 0 {
		return nil, nil
	}
	b := strings.TrimSpace(string(firstNBytes(c.r.Body, 1)))
	if b == "{" || b == "[" || strings.HasPrefix(strings.TrimSpace(string(firstNBytes(c.r.Body, 64))), "{") {
		n, err := c.json()
		if err != nil || n == nil {
			return nil, nil // not JSON after all: not ours to judge
		}
		var out []*Message
		genericWalk(c, n, &out, 0)
		return out, nil
	}
	m := c.msg(ProviderGeneric)
	for _, f := range c.formFields() {
		switch f.Key {
		case "to":
			m.To = mergeAddrs(m.To, ParseAddressList(f.Value))
		case "cc":
			m.Cc = mergeAddrs(m.Cc, ParseAddressList(f.Value))
		case "bcc":
			m.Bcc = mergeAddrs(m.Bcc, ParseAddressList(f.Value))
		case "subject":
			m.Subject = f.Value
		case "text", "body", "text_body", "textbody", "message":
			m.setText(f.Value)
		case "html", "html_body", "htmlbody":
			m.setHTML(f.Value)
		}
	}
	if len(m.To)+len(m.Cc)+len(m.Bcc) == 0 {
		return nil, nil
	}
	return []*Message{m}, nil
}

func firstNBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

func genericWalk(c *call, n *jnode, out *[]*Message, depth int) {
	if n == nil || depth > maxJSONDepth {
		return
	}
	switch n.kind {
	case jArr:
		for _, e := range n.arr {
			genericWalk(c, e, out, depth+1)
		}
	case jObj:
		var m *Message
		for _, kv := range n.obj {
			var dst *[]Address
			switch strings.ToLower(kv.key) {
			case "to":
				if m == nil {
					m = c.msg(ProviderGeneric)
				}
				dst = &m.To
			case "cc":
				if m == nil {
					m = c.msg(ProviderGeneric)
				}
				dst = &m.Cc
			case "bcc":
				if m == nil {
					m = c.msg(ProviderGeneric)
				}
				dst = &m.Bcc
			}
			if dst != nil {
				*dst = mergeAddrs(*dst, kv.val.addresses())
				continue
			}
			if kv.val.kind == jObj || kv.val.kind == jArr {
				genericWalk(c, kv.val, out, depth+1)
			}
		}
		if m != nil && len(m.To)+len(m.Cc)+len(m.Bcc) > 0 {
			m.From = n.first("from").addresses()
			m.Subject = n.getStr("subject")
			for _, k := range []string{"text", "body", "textBody", "content", "message"} {
				m.setText(n.getStr(k))
			}
			for _, k := range []string{"html", "htmlBody"} {
				m.setHTML(n.getStr(k))
			}
			*out = appendMsg(*out, m)
		}
	}
}
