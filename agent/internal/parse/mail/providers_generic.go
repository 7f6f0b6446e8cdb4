package mail

import "strings"

// Generic JSON and forms: any other JSON body: every object holding a key
// named to, cc or bcc (any case) whose value contains addresses becomes a
// message, with subject and text/html/body keys of the same object. Any
// other form body with such keys becomes one message.
func (c *call) generic() ([]*Message, error) {
	if c.method == "GET" || c.method == "HEAD" || c.method == "OPTIONS" || len(c.r.Body) == 0 {
		return nil, nil
	}
	b := strings.TrimSpace(string(firstNBytes(c.r.Body, 1)))
	if b == "{" || b == "[" || strings.HasPrefix(strings.TrimSpace(string(firstNBytes(c.r.Body, 64))), "{") {
		n, err := c.json()
		if err != nil || n == nil {
			return nil, nil //nolint:nilerr // not JSON after all: not ours to judge
		}
		var out []*Message
		genericWalk(c, n, &out, 0)
		return out, nil
	}
	m := c.msg(ProviderGeneric)
	for _, f := range c.formFields() {
		switch f.Key {
		case "to", "cc", "bcc":
			mergeAddrList(m.recipientList(f.Key), f.Value)
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

// recipientList is m's list of recipients named "to", "cc" or "bcc".
func (m *Message) recipientList(name string) *[]Address {
	switch name {
	case "to":
		return &m.To
	case "cc":
		return &m.Cc
	}
	return &m.Bcc
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
			switch key := strings.ToLower(kv.key); key {
			case "to", "cc", "bcc":
				if m == nil {
					m = c.msg(ProviderGeneric)
				}
				dst := m.recipientList(key)
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
