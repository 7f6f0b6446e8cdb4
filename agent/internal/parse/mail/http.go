package mail

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// HTTPRequest is one plaintext HTTP request as the stream layer reassembled
// it.
type HTTPRequest struct {
	Method string
	Host   string // Host header or :authority, with or without port
	Path   string // request target including the query string
	Header http.Header
	Body   []byte // already de-chunked and decompressed
	// Partial is set when Body is only a prefix of the request's body
	// (more bytes will come): FromHTTP then reports what the prefix shows
	// for certain (see partial.go) and never fails for want of the rest.
	Partial bool
}

// FromHTTP returns the messages that r sends, or nil, nil when r is not an
// e-mail submission. Known providers are recognised by host and path; other
// JSON and form bodies are searched for to/cc/bcc keys holding addresses.
// An error is returned only for a request to a known mail endpoint whose
// body cannot be parsed.
//
// With r.Partial set, the body is a prefix of the real one and FromHTTP
// returns the messages as far as the prefix shows them, each with Partial
// set: only recipients and content that the complete body holds too (JSON
// members and elements whose value is complete, form fields whose '&'
// arrived, multipart parts whose closing boundary arrived, the header
// section of a raw message once its blank line arrived). It never returns
// an error then, and returns nil, nil while nothing can be said yet.
func FromHTTP(r *HTTPRequest) ([]*Message, error) {
	if r == nil {
		return nil, nil
	}
	// Work on a copy: the caller's request is not changed.
	cp := *r
	body := r.Body
	if r.Partial && (bytes.HasPrefix(body, []byte("\xfe\xff")) || bytes.HasPrefix(body, []byte("\xff\xfe"))) && len(body)%2 == 1 {
		// A UTF-16 body cut inside a code unit.
		body = body[:len(body)-1]
	}
	cp.Body = utf8Body(r.Header, body)
	r = &cp
	method := strings.ToUpper(r.Method)
	host := normalizeHost(r.Host)
	p, rawQuery, _ := strings.Cut(r.Path, "?")
	// Absolute-form request targets ("https://host/path").
	if i := strings.Index(p, "://"); i >= 0 {
		rest := p[i+3:]
		h, after, _ := strings.Cut(rest, "/")
		if host == "" {
			host = normalizeHost(h)
		}
		p = "/" + after
	}
	if unesc, err := url.PathUnescape(p); err == nil {
		p = unesc
	}
	lp := strings.ToLower(p)
	lp = strings.TrimRight(lp, "/")
	if lp == "" {
		lp = "/"
	}
	query, _ := url.ParseQuery(rawQuery)
	endpoint := method + " " + host + p
	c := &call{r: r, method: method, host: host, path: lp, query: query, endpoint: endpoint}

	msgs, err := c.messages()
	if r.Partial {
		out := msgs[:0]
		for _, m := range msgs {
			if !emptyMessage(m) {
				m.Partial = true
				out = append(out, m)
			}
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", endpoint, err)
	}
	return msgs, nil
}

// call is the parsed request being examined.
type call struct {
	r        *HTTPRequest
	method   string
	host     string
	path     string // lower-case, no query, no trailing slash
	query    url.Values
	endpoint string
}

func (c *call) msg(provider string) *Message { return newMessage(provider, c.endpoint) }

func (c *call) contentType() string {
	if c.r.Header == nil {
		return ""
	}
	mt, _, _ := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	return mt
}

func (c *call) isPost() bool { return c.method == "POST" }

// json parses the body as JSON; an empty body is nil, nil. A body that
// strict JSON rejects is read again in the relaxed dialect of lenient
// servers (see relaxJSON); the strict error is returned if that fails too.
func (c *call) json() (*jnode, error) {
	if c.r.Partial {
		return parseJSONPrefix(c.r.Body), nil
	}
	b := bytes.TrimSpace(c.r.Body)
	if len(b) == 0 {
		return nil, nil
	}
	n, err := parseJSON(b)
	if err != nil {
		if relaxed, rerr := parseJSON(relaxJSON(b)); rerr == nil {
			return relaxed, nil
		}
	}
	return n, err
}

func normalizeHost(h string) string {
	h = strings.ToLower(strings.TrimSpace(h))
	if strings.HasPrefix(h, "[") {
		if i := strings.Index(h, "]"); i > 0 {
			return h[:i+1]
		}
	}
	if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}

// formField is one field of an urlencoded or multipart/form-data body.
type formField struct {
	Key, Value  string // Key lower-cased
	FileName    string
	ContentType string
	Content     []byte
	IsFile      bool
}

// formFields returns the fields of the query string and of a form body, in
// order. Malformed escapes are kept undecoded rather than dropped. For a
// partial body, only the fields known complete (see formFieldsPartial).
func (c *call) formFields() []formField {
	out, _ := c.formFieldsPartial()
	return out
}

// formFieldsPartial is formFields, also returning, when the body is a
// prefix (HTTPRequest.Partial), the field it ends in, which may be cut:
// the urlencoded field after the last '&' (its value is a prefix of the
// real one, a cut %XX escape removed), or the multipart part whose closing
// boundary has not arrived (its content so far, transfer-decoded). The
// fields returned first are complete: every urlencoded field followed by
// '&' and every part whose closing boundary line arrived.
func (c *call) formFieldsPartial() ([]formField, *formField) {
	var (
		out  []formField
		tail *formField
	)
	addValues := func(raw string) {
		for pair := range strings.SplitSeq(raw, "&") {
			if pair == "" || len(out) >= MaxRecipients {
				continue
			}
			k, v, _ := strings.Cut(pair, "=")
			k = formUnescape(k)
			v = formUnescape(v)
			out = append(out, formField{Key: strings.ToLower(k), Value: v})
		}
	}
	if q := strings.SplitN(c.r.Path, "?", 2); len(q) == 2 {
		addValues(q[1])
	}
	ct := ""
	var params map[string]string
	if c.r.Header != nil {
		ct, params, _ = mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	}
	switch {
	case strings.HasPrefix(ct, "multipart/") && params["boundary"] != "":
		body := c.r.Body
		if c.r.Partial && !bytes.HasSuffix(body, []byte("\n--"+params["boundary"]+"--")) {
			// A last line that is, or may become, a delimiter line is
			// left for when it is whole, so that a cut line is never
			// taken for a boundary ("--b0undaryX" cut as "--b0undary").
			i := bytes.LastIndexByte(body, '\n') + 1
			dash := "--" + params["boundary"]
			if last := string(body[i:]); strings.HasPrefix(last, dash) || strings.HasPrefix(dash, last) {
				body = body[:i]
			}
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for n := 0; n < MaxRecipients; n++ {
			p, err := mr.NextRawPart()
			if err != nil {
				break
			}
			data, rerr := io.ReadAll(io.LimitReader(p, MaxBodyBytes))
			cut := c.r.Partial && rerr != nil
			data = decodeTransfer(p.Header.Get("Content-Transfer-Encoding"), data)
			f := formField{
				Key:         strings.ToLower(p.FormName()),
				FileName:    p.FileName(),
				ContentType: p.Header.Get("Content-Type"),
			}
			if f.FileName != "" || (f.ContentType != "" && !strings.HasPrefix(strings.ToLower(f.ContentType), "text/plain")) {
				f.IsFile = true
				f.Content = data
			}
			if f.FileName == "" {
				// Servers (Go's ReadForm, werkzeug, busboy) take a part
				// without a filename as a field value whatever its
				// Content-Type, so "bcc" sent as application/octet-stream
				// is still a Bcc.
				f.Value = string(data)
			}
			if cut {
				// The part's closing boundary has not arrived.
				tail = &f
				break
			}
			out = append(out, f)
		}
	case ct == "" || ct == "application/x-www-form-urlencoded" || ct == "text/plain":
		body := c.r.Body
		var last []byte
		if c.r.Partial {
			i := bytes.LastIndexByte(body, '&')
			body, last = body[:i+1], body[i+1:]
		}
		b := bytes.TrimSpace(body)
		if len(b) > 0 && b[0] != '{' && b[0] != '[' {
			addValues(string(b))
		}
		if len(b) == 0 {
			last = bytes.TrimLeft(last, " \t\r\n")
		}
		first := b
		if len(first) == 0 {
			first = last
		}
		isJSON := len(first) > 0 && (first[0] == '{' || first[0] == '[')
		if k, v, ok := bytes.Cut(last, []byte("=")); ok && !isJSON && len(out) < MaxRecipients {
			// Drop a cut %XX escape, so the value is a prefix of the real
			// value's decoding.
			if j := bytes.LastIndexByte(v, '%'); j >= 0 && len(v)-j < 3 {
				v = v[:j]
			}
			tail = &formField{Key: strings.ToLower(formUnescape(string(k))), Value: formUnescape(string(v))}
		}
	}
	return out, tail
}

// utf8Body returns a body as the server's parser reads it: a UTF-8 byte
// order mark is dropped and a UTF-16 one selects that encoding (servers
// such as ASP.NET honour it), and a JSON body whose Content-Type declares
// another charset is converted to UTF-8. Other bodies (forms, multipart,
// raw messages) are bytes and are left alone.
func utf8Body(h http.Header, body []byte) []byte {
	mt, params := "", map[string]string(nil)
	if h != nil {
		mt, params, _ = mime.ParseMediaType(h.Get("Content-Type"))
	}
	if strings.HasPrefix(mt, "multipart/") {
		return body
	}
	switch {
	case bytes.HasPrefix(body, []byte("\xef\xbb\xbf")):
		return body[3:]
	case bytes.HasPrefix(body, []byte("\xfe\xff")) || bytes.HasPrefix(body, []byte("\xff\xfe")):
		out, _, err := transform.Bytes(unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM).NewDecoder(), body)
		if err != nil {
			return body
		}
		return out
	}
	if cs := params["charset"]; cs != "" && (mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")) {
		return toUTF8(cs, body)
	}
	return body
}

// formUnescape decodes '+' and %XX leniently.
func formUnescape(s string) string {
	if v, err := url.QueryUnescape(s); err == nil {
		return v
	}
	return percentDecode(strings.ReplaceAll(s, "+", " "))
}
