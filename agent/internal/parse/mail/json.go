package mail

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// jnode is a JSON value that keeps duplicate object keys in order. Mail
// APIs are matched case-insensitively and a duplicated key ("Bcc" twice) is
// seen whichever copy the server would use.
type jnode struct {
	kind jkind
	str  string // string value; number text; "true"/"false"
	arr  []*jnode
	obj  []jkv
}

type jkind uint8

const (
	jNull jkind = iota
	jBool
	jNum
	jStr
	jArr
	jObj
)

type jkv struct {
	key string
	val *jnode
}

const (
	maxJSONDepth = 64
	maxJSONNodes = 1 << 20
)

var errJSONLimit = errors.New("json nesting or size over limit")

// parseJSON parses one JSON value (trailing bytes are ignored).
func parseJSON(b []byte) (*jnode, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	nodes := 0
	n, err := parseJSONValue(dec, 0, &nodes)
	if err != nil {
		return nil, fmt.Errorf("parse json: %w", err)
	}
	return n, nil
}

func parseJSONValue(dec *json.Decoder, depth int, nodes *int) (*jnode, error) {
	if depth > maxJSONDepth || *nodes > maxJSONNodes {
		return nil, errJSONLimit
	}
	*nodes++
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	return parseJSONTok(dec, tok, depth, nodes)
}

func parseJSONTok(dec *json.Decoder, tok json.Token, depth int, nodes *int) (*jnode, error) {
	switch t := tok.(type) {
	case nil:
		return &jnode{kind: jNull}, nil
	case bool:
		if t {
			return &jnode{kind: jBool, str: "true"}, nil
		}
		return &jnode{kind: jBool, str: "false"}, nil
	case json.Number:
		return &jnode{kind: jNum, str: t.String()}, nil
	case string:
		return &jnode{kind: jStr, str: t}, nil
	case json.Delim:
		switch t {
		case '[':
			n := &jnode{kind: jArr}
			for dec.More() {
				v, err := parseJSONValue(dec, depth+1, nodes)
				if err != nil {
					return nil, err
				}
				n.arr = append(n.arr, v)
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		case '{':
			n := &jnode{kind: jObj}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, ok := kt.(string)
				if !ok {
					return nil, fmt.Errorf("object key is %T", kt)
				}
				v, err := parseJSONValue(dec, depth+1, nodes)
				if err != nil {
					return nil, err
				}
				n.obj = append(n.obj, jkv{key: k, val: v})
			}
			if _, err := dec.Token(); err != nil {
				return nil, err
			}
			return n, nil
		}
	}
	return nil, fmt.Errorf("unexpected json token %v: %w", tok, io.ErrUnexpectedEOF)
}

// relaxJSON rewrites the JSON dialect that lenient servers accept into
// strict JSON: comments (// and /* */), single-quoted strings, unquoted
// member names and trailing commas. Json.NET, which .NET mail APIs use,
// reads all of them, so a body that encoding/json rejects may still be
// sent; parsing the rewrite keeps its recipients visible. Unquoted words
// other than true, false and null become strings. The output is at most
// three times the input (a one-letter word gains two quotes).
func relaxJSON(b []byte) []byte { return relaxJSONMode(b, false) }

// relaxJSONMode is relaxJSON; with prefix set, b is a prefix of the body
// and a single-quoted string or an unquoted word that reaches its end (so
// may go on) is left unterminated, for closeJSONPrefix to drop, instead of
// being closed.
func relaxJSONMode(b []byte, prefix bool) []byte {
	out := make([]byte, 0, len(b)+len(b)/8)
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '/' && i+1 < len(b) && (b[i+1] == '/' || b[i+1] == '*'):
			i = skipJSONComment(b, i)
			out = append(out, ' ')
		case c == '"':
			j := i + 1
			for j < len(b) && b[j] != '"' {
				if b[j] == '\\' {
					j++
				}
				j++
			}
			j = min(j+1, len(b))
			out = append(out, b[i:j]...)
			i = j
		case c == '\'':
			out = append(out, '"')
			i++
			for i < len(b) && b[i] != '\'' {
				switch {
				case b[i] == '"':
					out = append(out, '\\', '"')
				case b[i] == '\\' && i+1 < len(b) && b[i+1] == '\'':
					out = append(out, '\'')
					i++
				case b[i] == '\\' && i+1 < len(b):
					out = append(out, b[i], b[i+1])
					i++
				default:
					out = append(out, b[i])
				}
				i++
			}
			if prefix && i >= len(b) {
				break
			}
			out = append(out, '"')
			i++
		case c == ',':
			// A comma followed only by space and comments before a
			// closing bracket is a trailing comma.
			j := i + 1
			for j < len(b) {
				if b[j] == '/' && j+1 < len(b) && (b[j+1] == '/' || b[j+1] == '*') {
					j = skipJSONComment(b, j)
				} else if b[j] == ' ' || b[j] == '\t' || b[j] == '\r' || b[j] == '\n' {
					j++
				} else {
					break
				}
			}
			if j >= len(b) || (b[j] != '}' && b[j] != ']') {
				out = append(out, ',')
			}
			i++
		case c == '-' || '0' <= c && c <= '9':
			// A number, copied whole so that an exponent is not taken
			// for a word.
			j := i + 1
			for j < len(b) && (b[j] == '.' || b[j] == '+' || b[j] == '-' || '0' <= b[j] && b[j] <= '9' || b[j]|0x20 == 'e') {
				j++
			}
			out = append(out, b[i:j]...)
			i = j
		case c == '_' || c == '$' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z':
			j := i
			for j < len(b) && (b[j] == '_' || b[j] == '$' || b[j] == '-' || 'a' <= b[j] && b[j] <= 'z' || 'A' <= b[j] && b[j] <= 'Z' || '0' <= b[j] && b[j] <= '9') {
				j++
			}
			switch w := string(b[i:j]); {
			case prefix && j >= len(b):
				out = append(out, '"')
				out = append(out, w...)
			case w == "true", w == "false", w == "null":
				out = append(out, w...)
			default:
				out = append(out, '"')
				out = append(out, w...)
				out = append(out, '"')
			}
			i = j
		default:
			out = append(out, c)
			i++
		}
	}
	return out
}

// skipJSONComment returns the index after the comment starting at b[i].
func skipJSONComment(b []byte, i int) int {
	if b[i+1] == '/' {
		if k := bytes.IndexByte(b[i:], '\n'); k >= 0 {
			return i + k + 1
		}
		return len(b)
	}
	if k := bytes.Index(b[i+2:], []byte("*/")); k >= 0 {
		return i + 2 + k + 2
	}
	return len(b)
}

// get returns every value of an object whose key equals key ignoring case
// (and ignoring '_' and '-', so "reply_to", "replyTo" and "Reply-To" match).
func (n *jnode) get(key string) []*jnode {
	if n == nil || n.kind != jObj {
		return nil
	}
	var out []*jnode
	for _, kv := range n.obj {
		if keyEqual(kv.key, key) {
			out = append(out, kv.val)
		}
	}
	return out
}

// first returns the first value for key, or nil.
func (n *jnode) first(key string) *jnode {
	if v := n.get(key); len(v) > 0 {
		return v[0]
	}
	return nil
}

func keyEqual(a, b string) bool {
	if strings.EqualFold(a, b) {
		return true
	}
	// Compare again skipping '_' and '-', ASCII case-insensitively,
	// without allocating.
	i, j := 0, 0
	for {
		for i < len(a) && (a[i] == '_' || a[i] == '-') {
			i++
		}
		for j < len(b) && (b[j] == '_' || b[j] == '-') {
			j++
		}
		if i == len(a) || j == len(b) {
			return i == len(a) && j == len(b)
		}
		x, y := a[i], b[j]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
		i++
		j++
	}
}

// str returns a scalar's text ("" for arrays, objects and null).
func (n *jnode) strVal() string {
	if n == nil || n.kind == jArr || n.kind == jObj || n.kind == jNull {
		return ""
	}
	return n.str
}

// getStr returns the concatenation of every string value for key.
func (n *jnode) getStr(key string) string {
	var parts []string
	for _, v := range n.get(key) {
		if s := v.strVal(); s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, "\n")
}

// addresses extracts mailboxes from a value: a string (an address list),
// an array of those, or objects with an "email"/"address" member (optionally
// nested in "emailAddress", as Microsoft Graph does) and a "name".
func (n *jnode) addresses() []Address {
	var out []Address
	n.collectAddrs(&out, 0)
	return out
}

func (n *jnode) collectAddrs(out *[]Address, depth int) {
	if n == nil || depth > maxJSONDepth || len(*out) >= MaxRecipients {
		return
	}
	switch n.kind {
	case jStr:
		*out = mergeAddrs(*out, ParseAddressList(n.str))
	case jArr:
		for _, e := range n.arr {
			e.collectAddrs(out, depth+1)
		}
	case jObj:
		name := n.getStr("name")
		for _, k := range []string{"email", "address", "addr", "emailAddress", "mail"} {
			for _, v := range n.get(k) {
				if v.kind == jObj || v.kind == jArr {
					v.collectAddrs(out, depth+1)
					continue
				}
				for _, a := range ParseAddressList(v.strVal()) {
					if a.Name == "" {
						a.Name = name
					}
					*out = appendAddr(*out, a)
				}
			}
		}
	}
}

// text returns every string leaf of n joined by newlines (template models,
// variables), up to limit bytes.
func (n *jnode) text(limit int) string {
	var b strings.Builder
	n.collectText(&b, limit, 0)
	return b.String()
}

func (n *jnode) collectText(b *strings.Builder, limit, depth int) {
	if n == nil || depth > maxJSONDepth || b.Len() >= limit {
		return
	}
	switch n.kind {
	case jStr:
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(firstN(n.str, limit-b.Len()))
	case jArr:
		for _, e := range n.arr {
			e.collectText(b, limit, depth+1)
		}
	case jObj:
		for _, kv := range n.obj {
			kv.val.collectText(b, limit, depth+1)
		}
	}
}

// json serialises n back to JSON (used for nested request bodies).
func (n *jnode) json() []byte {
	var b bytes.Buffer
	n.writeJSON(&b, 0)
	return b.Bytes()
}

func (n *jnode) writeJSON(b *bytes.Buffer, depth int) {
	if n == nil || depth > maxJSONDepth {
		b.WriteString("null")
		return
	}
	switch n.kind {
	case jNull:
		b.WriteString("null")
	case jBool, jNum:
		b.WriteString(n.str)
	case jStr:
		q, _ := json.Marshal(n.str)
		b.Write(q)
	case jArr:
		b.WriteByte('[')
		for i, e := range n.arr {
			if i > 0 {
				b.WriteByte(',')
			}
			e.writeJSON(b, depth+1)
		}
		b.WriteByte(']')
	case jObj:
		b.WriteByte('{')
		for i, kv := range n.obj {
			if i > 0 {
				b.WriteByte(',')
			}
			q, _ := json.Marshal(kv.key)
			b.Write(q)
			b.WriteByte(':')
			kv.val.writeJSON(b, depth+1)
		}
		b.WriteByte('}')
	}
}
