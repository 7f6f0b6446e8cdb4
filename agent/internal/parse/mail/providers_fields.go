package mail

import "strings"

// Fields the providers share: recipients, attachments, headers and other
// text, read from JSON members or form fields.

// recipientKeys names the members of a provider's JSON message holding
// each list of recipients ("" where it has none).
type recipientKeys struct{ to, cc, bcc, replyTo string }

// addRecipients merges into m the recipients in n's members named by k.
func (m *Message) addRecipients(n *jnode, k recipientKeys) {
	mergeJSONAddrs(&m.To, n, k.to)
	mergeJSONAddrs(&m.Cc, n, k.cc)
	mergeJSONAddrs(&m.Bcc, n, k.bcc)
	mergeJSONAddrs(&m.ReplyTo, n, k.replyTo)
}

// mergeJSONAddrs merges into *dst the addresses of every value of n's
// members named keys (as jnode.get matches them), however each is
// written: an address list in a string ("a@b.c, C <c@d.e>"), an array of
// those, objects {email or address, name} (also nested, as Graph's
// {emailAddress: {address, name}}), arrays of objects: see jnode.addresses.
func mergeJSONAddrs(dst *[]Address, n *jnode, keys ...string) {
	for _, key := range keys {
		if key == "" {
			continue
		}
		for _, v := range n.get(key) {
			*dst = mergeAddrs(*dst, v.addresses())
		}
	}
}

// mergeAddrList merges into *dst the addresses of an address list: a form
// field, a header value.
func mergeAddrList(dst *[]Address, list string) {
	*dst = mergeAddrs(*dst, ParseAddressList(list))
}

// attachmentKeys names the members of a provider's JSON attachment objects.
type attachmentKeys struct {
	name        string
	altName     string // read when name is missing or empty ("" for none)
	contentType string
	content     string // base64
	// anyBytes: the content may also be an array of byte values or a
	// serialised Node.js Buffer (jsonBytes); only its first value is read.
	anyBytes bool
}

// addAttachments adds the attachments of every array in n's member key,
// objects whose members k names.
func (m *Message) addAttachments(n *jnode, key string, k attachmentKeys) {
	for _, as := range n.get(key) {
		for _, a := range as.arr {
			name := a.getStr(k.name)
			if name == "" && k.altName != "" {
				name = a.getStr(k.altName)
			}
			var content []byte
			if k.anyBytes {
				content = jsonBytes(a.first(k.content))
			} else {
				content = decodeBase64Field(a.getStr(k.content))
			}
			m.addAttachment(Attachment{Name: name, ContentType: a.getStr(k.contentType), Content: content})
		}
	}
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

// data is the content of a form field: a file's bytes, else its value.
func (f *formField) data() []byte {
	if f.IsFile {
		return f.Content
	}
	return []byte(f.Value)
}

// addHeaderList applies the headers of every array in n's member key,
// objects {nameKey: name, valueKey: value}.
func (m *Message) addHeaderList(n *jnode, key, nameKey, valueKey string) {
	for _, hs := range n.get(key) {
		for _, h := range hs.arr {
			applyHeaderPair(m, h.getStr(nameKey), h.getStr(valueKey))
		}
	}
}

// addHeaderMap applies the headers of every object in n's member key,
// {name: value, ...}.
func (m *Message) addHeaderMap(n *jnode, key string) {
	for _, h := range n.get(key) {
		for _, kv := range h.obj {
			applyHeaderPair(m, kv.key, kv.val.strVal())
		}
	}
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
		mergeAddrList(&m.To, value)
	case "cc", "resent-cc":
		mergeAddrList(&m.Cc, value)
	case "bcc", "resent-bcc":
		mergeAddrList(&m.Bcc, value)
	case "reply-to":
		mergeAddrList(&m.ReplyTo, value)
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

// addTexts adds as other text of the mail (Extra) every string leaf of
// the values of n's members named keys: template models, substitutions.
func (m *Message) addTexts(n *jnode, keys ...string) {
	for _, key := range keys {
		for _, v := range n.get(key) {
			m.addExtra(v.text(MaxBodyBytes))
		}
	}
}
