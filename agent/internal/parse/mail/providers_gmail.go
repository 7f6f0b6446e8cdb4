package mail

import "strings"

// Gmail API: POST /gmail/v1/users/{id}/messages/send {raw: base64url RFC
// 822}; POST .../drafts {message: {raw}}; POST .../drafts/send {id,
// message?}; POST /upload/gmail/v1/users/{id}/messages/send?uploadType=media
// with a message/rfc822 body, or uploadType=multipart (multipart/related:
// JSON metadata, then the message).

func (c *call) isGmail() bool { return strings.Contains(c.path, "/gmail/v1/users/") }

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
			if raw := tail.relatedData(); len(raw) > 0 && raw[0] != '{' {
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
		out = append(out, f.relatedData())
	}
	return out
}

// relatedData is the body of a part of a multipart body: a file's bytes,
// else its value without the space around it.
func (f *formField) relatedData() []byte {
	if f.IsFile {
		return f.Content
	}
	return []byte(strings.TrimSpace(f.Value))
}
