package mail

import (
	"bytes"
	"encoding/json"
)

// Judging a request whose body has only partly arrived (HTTPRequest.Partial).
//
// A prefix yields only what the complete body is certain to contain as
// well: complete JSON members and elements, form fields whose delimiter
// arrived, multipart parts whose closing boundary arrived, and the header
// section of a raw message once its blank line arrived. Nothing cut is ever
// completed: a cut "ceo@comp" must not read as a recipient at domain
// "comp".

// closeJSONPrefix turns a prefix of a JSON document into a JSON document
// holding only the prefix's complete members and elements: it cuts after
// the last complete value (a string whose closing quote arrived, a number
// or literal followed by a delimiter, a closed container, or an opening
// bracket), so that a dangling key, ':' or ',' and a cut scalar are
// dropped, and closes the containers still open. It returns nil when no
// value has begun to be complete (an empty prefix, a cut top-level scalar).
// Input that is not JSON is cut before the first byte in error. Nesting is
// limited to maxJSONDepth as parseJSON limits it. One pass, no allocation
// beyond the result.
func closeJSONPrefix(b []byte) []byte {
	out, _ := closeJSONPrefixOK(b)
	return out
}

// closeJSONPrefixOK is closeJSONPrefix that also reports whether the
// prefix was well-formed JSON as far as it goes (false: it was cut before a
// syntax error or a nesting over the limit).
func closeJSONPrefixOK(b []byte) ([]byte, bool) {
	var arr [maxJSONDepth]byte
	n, stack, ok := scanJSONPrefix(b, &arr, nil)
	if n == 0 {
		return nil, ok
	}
	out := make([]byte, 0, n+len(stack))
	out = append(out, b[:n]...)
	for i := len(stack) - 1; i >= 0; i-- {
		if stack[i] == '{' {
			out = append(out, '}')
		} else {
			out = append(out, ']')
		}
	}
	return out, ok
}

// JSON prefix scanner states: what may come next.
const (
	jsValue      = iota // a value (top level, after '[' , ':' or ',' in an array)
	jsKeyOrClose        // a key or '}' (after '{')
	jsKey               // a key (after ',' in an object)
	jsColon             // ':' after a key
	jsAfterValue        // ',' or the closing bracket
)

// scanJSONPrefix returns the length of the longest safe prefix of b (see
// closeJSONPrefix), the containers open at its end (a slice of a fixed
// array: every push and pop is itself a safe point, so the stack at the
// end of the scan is the stack at the last safe point), and whether b was
// well-formed up to where the scan stopped.
//
// With tr set, it also records where the string value that b ends in,
// cut, starts, and the key of each open object's current member.
func scanJSONPrefix(b []byte, arr *[maxJSONDepth]byte, tr *jsonTrack) (safe int, open []byte, ok bool) {
	stack := arr[:0]
	state := jsValue
	i := 0
	for {
		// Skip whitespace.
		for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
			i++
		}
		if i >= len(b) {
			return safe, stack, true
		}
		c := b[i]
		switch state {
		case jsColon:
			if c != ':' {
				return safe, stack, false
			}
			i++
			state = jsValue
			continue
		case jsAfterValue:
			if len(stack) == 0 {
				// The top-level value is complete: trailing bytes are
				// ignored, as parseJSON ignores them.
				return safe, stack, true
			}
			top := stack[len(stack)-1]
			switch {
			case c == ',' && top == '{':
				state = jsKey
			case c == ',':
				state = jsValue
			case c == '}' && top == '{', c == ']' && top == '[':
				stack = stack[:len(stack)-1]
				safe = i + 1
			default:
				return safe, stack, false
			}
			i++
			continue
		case jsKeyOrClose, jsKey:
			if c == '}' && state == jsKeyOrClose {
				stack = stack[:len(stack)-1]
				i++
				safe = i
				state = jsAfterValue
				continue
			}
			if c != '"' {
				return safe, stack, false
			}
			end, good := scanJSONString(b, i)
			if !good {
				return safe, stack, false
			}
			if end < 0 {
				return safe, stack, true
			}
			if tr != nil {
				tr.keys[len(stack)-1] = [2]int{i, end}
			}
			i = end
			state = jsColon
			continue
		}
		// state == jsValue
		switch {
		case c == '{' || c == '[':
			if len(stack) >= maxJSONDepth {
				return safe, stack, false
			}
			stack = append(stack, c)
			i++
			safe = i
			if c == '{' {
				state = jsKeyOrClose
			} else {
				state = jsValue
				// An empty array: close it at once.
				j := i
				for j < len(b) && (b[j] == ' ' || b[j] == '\t' || b[j] == '\r' || b[j] == '\n') {
					j++
				}
				if j < len(b) && b[j] == ']' {
					stack = stack[:len(stack)-1]
					i = j + 1
					safe = i
					state = jsAfterValue
				}
			}
		case c == '"':
			end, good := scanJSONString(b, i)
			if !good {
				return safe, stack, false
			}
			if end < 0 {
				if tr != nil {
					tr.cut = i
				}
				return safe, stack, true // cut string: dropped
			}
			i = end
			safe = i
			state = jsAfterValue
		case c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z':
			j := i
			for j < len(b) && (b[j] == '-' || b[j] == '+' || b[j] == '.' || '0' <= b[j] && b[j] <= '9' || 'a' <= b[j] && b[j] <= 'z' || 'A' <= b[j] && b[j] <= 'Z') {
				j++
			}
			if j >= len(b) {
				return safe, stack, true // may go on: dropped
			}
			tok := b[i:j]
			switch string(tok) {
			case "true", "false", "null":
			default:
				if !validJSONNumber(tok) {
					return safe, stack, false
				}
			}
			i = j
			safe = i
			state = jsAfterValue
		default:
			return safe, stack, false
		}
	}
}

// scanJSONString scans the string starting at b[i] (a '"'). It returns the
// index after the closing quote, or -1 when the string is cut, and false
// for a string that no JSON parser accepts (a control character, a bad
// escape).
func scanJSONString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		// Skip ordinary bytes in a tight loop (most of a body is the
		// content of long strings).
		for j < len(b) && !jsonStrSpecial[b[j]] {
			j++
		}
		if j >= len(b) {
			break
		}
		switch c := b[j]; {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			if j+1 >= len(b) {
				return -1, true
			}
			j++
			switch b[j] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for k := 1; k <= 4; k++ {
					if j+k >= len(b) {
						return -1, true
					}
					if !isHex(b[j+k]) {
						return 0, false
					}
				}
				j += 4
			default:
				return 0, false
			}
		}
	}
	return -1, true
}

// jsonStrSpecial marks the bytes that end a run of ordinary string
// content: the quote, the backslash and control characters.
var jsonStrSpecial = func() (t [256]bool) {
	for c := 0; c < 0x20; c++ {
		t[c] = true
	}
	t['"'], t['\\'] = true, true
	return t
}()

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// validJSONNumber reports whether t is a JSON number.
func validJSONNumber(t []byte) bool {
	i := 0
	if i < len(t) && t[i] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(t) && '0' <= t[i] && t[i] <= '9' {
			i++
			n++
		}
		return n
	}
	if i < len(t) && t[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(t) && t[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(t) && (t[i] == 'e' || t[i] == 'E') {
		i++
		if i < len(t) && (t[i] == '+' || t[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(t)
}

// parseJSONPrefix parses the complete part of a JSON body prefix (strict
// JSON, else the relaxed dialect relaxJSON reads), or returns nil.
func parseJSONPrefix(b []byte) *jnode {
	closed, ok := closeJSONPrefixOK(b)
	if !ok {
		// Not strict JSON: so the complete body will not be either, and
		// is read in the relaxed dialect. Read the prefix that way too.
		if r := closeJSONPrefix(relaxJSONMode(b, true)); r != nil {
			if n, err := parseJSON(r); err == nil {
				return n
			}
		}
	}
	if closed == nil {
		return nil
	}
	n, err := parseJSON(closed)
	if err != nil {
		return nil
	}
	return n
}

// parseRFC822HeaderPrefix fills m from the header section of a prefix of a
// raw message once all of it has arrived (its blank line), as
// SMTPSession.Pending does, and reports whether it had. The body is left
// for the complete message.
func parseRFC822HeaderPrefix(m *Message, raw []byte) bool {
	raw = skipEnvelopeLines(raw)
	end := headerEnd(raw)
	if end == 0 {
		return false
	}
	hdr, _ := splitHeader(raw[:end])
	applyHeaders(m, hdr)
	if m.Headers == nil {
		m.Headers = make(map[string][]string)
	}
	return true
}

// emptyMessage reports whether m holds nothing to judge.
func emptyMessage(m *Message) bool {
	return len(m.From)+len(m.To)+len(m.Cc)+len(m.Bcc)+len(m.ReplyTo)+len(m.EnvelopeTo)+
		len(m.Extra)+len(m.Attachments)+len(m.Headers) == 0 &&
		m.Subject == "" && m.TextBody == "" && m.HTMLBody == "" && !m.Forward
}

// decodeBase64Prefix decodes a prefix of a base64 field as
// decodeBase64Field decodes the whole: the bytes of its complete
// quantums, a prefix of the field's decoding (a cut quantum is dropped).
func decodeBase64Prefix(s string) []byte {
	n := 0
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\r' && c != '\n' && c != ' ' && c != '\t' && c != '=' {
			n++
		}
	}
	if n%4 == 0 {
		return decodeBase64Field(s)
	}
	// Cut the incomplete quantum off.
	drop := n % 4
	i := len(s)
	for i > 0 && drop > 0 {
		i--
		if c := s[i]; c != '\r' && c != '\n' && c != ' ' && c != '\t' && c != '=' {
			drop--
		}
	}
	return decodeBase64Field(s[:i])
}

// jsonTrack is what scanJSONPrefix records for cutJSONString.
type jsonTrack struct {
	keys [maxJSONDepth][2]int // span of the current member's key, quotes included, per open object
	cut  int                  // index of the opening quote of the cut string value, or -1
}

// cutJSONString returns, when the JSON prefix b ends inside a string value
// (strict JSON), the keys leading to it from the root ("" for an array
// level) and its content so far, unescaped up to the last complete
// character. A raw message in a JSON string (Gmail raw, SES Raw.Data) is
// read from it as soon as its header section is whole.
func cutJSONString(b []byte) (path []string, content []byte, ok bool) {
	var arr [maxJSONDepth]byte
	tr := &jsonTrack{cut: -1}
	_, stack, good := scanJSONPrefix(b, &arr, tr)
	if !good || tr.cut < 0 {
		return nil, nil, false
	}
	for l, c := range stack {
		k := ""
		if c == '{' {
			if sp := tr.keys[l]; sp[1] > sp[0] {
				if json.Unmarshal(b[sp[0]:sp[1]], &k) != nil {
					return nil, nil, false
				}
			}
		}
		path = append(path, k)
	}
	// Cut before an incomplete escape, then unquote.
	raw := b[tr.cut+1:]
	end := 0
	for j := 0; j < len(raw); {
		if raw[j] != '\\' {
			j++
			end = j
			continue
		}
		if j+1 >= len(raw) {
			break
		}
		if raw[j+1] == 'u' {
			if j+6 > len(raw) {
				break
			}
			j += 6
		} else {
			j += 2
		}
		end = j
	}
	if bytes.IndexByte(raw[:end], '\\') < 0 {
		return path, raw[:end], true
	}
	var str string
	q := make([]byte, 0, end+2)
	q = append(append(append(q, '"'), raw[:end]...), '"')
	if json.Unmarshal(q, &str) != nil {
		return nil, nil, false
	}
	return path, []byte(str), true
}

// pathIs reports whether a key path from cutJSONString is want, keys
// compared as jnode.get compares them.
func pathIs(path []string, want ...string) bool {
	if len(path) != len(want) {
		return false
	}
	for i := range path {
		if !keyEqual(path[i], want[i]) { //nolint:gosec // G602: len(path) == len(want) is checked above
			return false
		}
	}
	return true
}
