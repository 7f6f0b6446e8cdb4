package mail

import (
	"net/url"
	"regexp"
	"strings"
)

// Microsoft Graph: POST /v1.0/me/sendMail (or /users/{id}/sendMail,
// /beta/...) {message: {subject, body: {contentType, content},
// toRecipients, ccRecipients, bccRecipients: [{emailAddress: {address,
// name}}], replyTo, from, attachments: [{name, contentType, contentBytes}],
// internetMessageHeaders: [{name, value}]}, saveToSentItems}, or a base64
// MIME body with Content-Type text/plain. Also .../messages/{id}/forward,
// reply, replyAll and createForward ({comment, toRecipients, message}),
// draft creation POST .../messages and updates PATCH .../messages/{id}, and
// JSON $batch.

var (
	graphMailPath    = regexp.MustCompile(`^/(?:v1\.0|beta)/(?:me|users/[^/]+)(/.*)$`)
	graphRecipients  = recipientKeys{to: "toRecipients", cc: "ccRecipients", bcc: "bccRecipients", replyTo: "replyTo"}
	graphAttachments = attachmentKeys{name: "name", contentType: "contentType", content: "contentBytes"}
)

func (c *call) isGraph() bool {
	switch c.host {
	case "graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us",
		"microsoftgraph.chinacloudapi.cn", "graph.microsoft.de":
		return true
	}
	return false
}

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
		m.addRecipients(n, graphRecipients)
		m.addExtra(n.getStr("comment"))
	}
	if len(m.Recipients()) == 0 && kind != "send" && m.TextBody == "" && m.HTMLBody == "" &&
		len(m.Attachments) == 0 && len(m.Extra) == 0 {
		return nil, nil
	}
	return []*Message{m}, nil
}

func graphMessage(m *Message, n *jnode) {
	if n == nil || n.kind != jObj {
		return
	}
	m.addRecipients(n, graphRecipients)
	m.From = mergeAddrs(n.first("from").addresses(), n.first("sender").addresses())
	m.Subject = n.getStr("subject")
	for _, b := range n.get("body") {
		if strings.EqualFold(b.getStr("contentType"), "html") {
			m.setHTML(b.getStr("content"))
		} else {
			m.setText(b.getStr("content"))
		}
	}
	m.addHeaderList(n, "internetMessageHeaders", "name", "value")
	m.addAttachments(n, "attachments", graphAttachments)
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
