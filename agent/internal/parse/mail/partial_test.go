package mail

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func TestCloseJSONPrefix(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, ``},
		{`   `, ``},
		{`{`, `{}`},
		{`[`, `[]`},
		{`"abc`, ``},
		{`"abc"`, `"abc"`},
		{`123`, ``},     // may go on
		{`123 `, `123`}, // complete
		{`tru`, ``},
		{`{"From":"a@company.com","To":"b@company.com","Subject":"x","Bcc":"phan@giftshop.club"`,
			`{"From":"a@company.com","To":"b@company.com","Subject":"x","Bcc":"phan@giftshop.club"}`},
		{`{"To":"b@company.com","Bcc":"phan@gift`, `{"To":"b@company.com"}`},
		{`{"To":"b@company.com","Bcc":`, `{"To":"b@company.com"}`},
		{`{"To":"b@company.com","Bcc" `, `{"To":"b@company.com"}`},
		{`{"To":"b@company.com","Bc`, `{"To":"b@company.com"}`},
		{`{"To":"b@company.com",`, `{"To":"b@company.com"}`},
		{`{"To":"b@company.com"  ,  `, `{"To":"b@company.com"}`},
		{`{"Personalizations":[{"to":[{"email":"a@x.com"}],"bcc":[{"email":"p@giftshop.club"}`,
			`{"Personalizations":[{"to":[{"email":"a@x.com"}],"bcc":[{"email":"p@giftshop.club"}]}]}`},
		{`{"to":["a@company.com","phan@gift`, `{"to":["a@company.com"]}`},
		{`{"to":["a@company.com",`, `{"to":["a@company.com"]}`},
		{`{"to":[]`, `{"to":[]}`},
		{`{"to":[ ] ,"n":12`, `{"to":[ ]}`},
		{`{"n":12,"b":true}`, `{"n":12,"b":true}`},
		{`{"n":-1.5e+3,"b":fals`, `{"n":-1.5e+3}`},
		{`{"a":{"b":{`, `{"a":{"b":{}}}`},
		{`{"e":"x\"y","f":"\\","g":"\u0070han","h":"\u00`, `{"e":"x\"y","f":"\\","g":"\u0070han"}`},
		{`{"e":"x\`, `{}`},
		{`{"a":1} trailing`, `{"a":1}`},
		{`{"a":"b"}{"c":"d"`, `{"a":"b"}`},
		// Not JSON: cut before the error.
		{`{"a":"b",c:'d'`, `{"a":"b"}`},
		{`{"a":"b"]`, `{"a":"b"}`},
		{`{"a":01,`, `{}`},
		{`{"a":"\x"}`, `{}`},
		{"{\"a\":\"b\nc\"}", `{}`},
		{`{"a":[1,]`, `{"a":[1]}`},
		{strings.Repeat("[", 70), strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth)},
	} {
		got := closeJSONPrefix([]byte(tc.in))
		if string(got) != tc.want {
			t.Errorf("closeJSONPrefix(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if got != nil {
			if !json.Valid(got) {
				t.Errorf("closeJSONPrefix(%q) = %q: not JSON", tc.in, got)
			}
			if _, err := parseJSON(got); err != nil {
				t.Errorf("parseJSON(closeJSONPrefix(%q)): %v", tc.in, err)
			}
		}
	}
}

func TestRelaxJSONPrefix(t *testing.T) {
	for in, want := range map[string]string{
		`{to:'a@company.com', bcc:'phan@gift`:        `{"to":"a@company.com"}`,
		`{to:'a@company.com', bcc:'phan@giftshop.c'`: `{"to":"a@company.com","bcc":"phan@giftshop.c"}`,
		`{to:'a@company.com', bcc:phan`:              `{"to":"a@company.com"}`,
		`{to:'a@company.com', ok:true`:               `{"to":"a@company.com"}`,
		`{to:'a@company.com', /* c`:                  `{"to":"a@company.com"}`,
		`{to:'a@company.com', n:12`:                  `{"to":"a@company.com"}`,
		`{to:['a@company.com',`:                      `{"to":["a@company.com"]}`,
	} {
		n := parseJSONPrefix([]byte(in))
		if n == nil {
			t.Errorf("%q: nil", in)
			continue
		}
		if got := string(n.json()); got != want {
			t.Errorf("%q: %s, want %s", in, got, want)
		}
	}
}

// partialRow is a request whose every body prefix is judged. The Bcc
// (addr) must be reported from the prefix that ends with mark (the closing
// quote of its JSON string, the '&' after its form field, the boundary
// after its part, the blank line after the raw header section) on.
type partialRow struct {
	name string
	mark func(addr string) string
	req  func(addr string) *HTTPRequest
}

func markStr(s string) func(string) string { return func(string) string { return s } }

// rawHeaderMark is the base64 of mimeMsg's header section with a Bcc of
// addr, up to its blank line, and the rest of the quantum that ends it.
func rawHeaderMark(enc func(string) string, addr string) string {
	msg := mimeMsg("Bcc: " + addr + "\r\n")
	hdr := strings.Index(msg, "\r\n\r\n") + 4
	return enc(msg)[:(hdr+2)/3*4]
}

var partialRows = []partialRow{
	{"postmark", func(a string) string { return a + `"` }, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"From":"agent@company.com","To":"alice@company.com","Subject":"x","Bcc":"`+a+`","TextBody":"hello there"}`)
	}},
	{"postmark-batch", func(a string) string { return a + `"` }, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email/batch", `[{"From":"agent@company.com","To":"alice@company.com"},{"To":"carol@company.com","Bcc":"`+a+`","Subject":"s"}]`)
	}},
	{"sendgrid-v3", func(a string) string { return a + `"` }, func(a string) *HTTPRequest {
		return jsonReq("api.sendgrid.com", "/v3/mail/send", `{"personalizations":[{"to":[{"email":"alice@company.com","name":"Alice"}],"bcc":[{"email":"`+a+`"}]}],"from":{"email":"agent@company.com"},"subject":"s","content":[{"type":"text/plain","value":"hi"}]}`)
	}},
	{"mailgun-form", func(a string) string { return strings.ReplaceAll(a, "@", "%40") + "&" }, func(a string) *HTTPRequest {
		return reqCT("api.mailgun.net", "/v3/mg.company.com/messages", "application/x-www-form-urlencoded",
			"from=agent%40company.com&to=alice%40company.com&bcc="+strings.ReplaceAll(a, "@", "%40")+"&subject=s&text=hello+there")
	}},
	{"mailgun-multipart", func(a string) string { return a + "\r\n--b0undary\r\n" }, func(a string) *HTTPRequest {
		return multipartForm("api.mailgun.net", "/v3/mg.company.com/messages",
			formPart("to", "", "alice@company.com"), formPart("bcc", "", a), formPart("text", "", "hello there"))
	}},
	{"mailgun-mime", markStr("text/plain\r\n\r\nh"), func(a string) *HTTPRequest {
		// The envelope to is complete first; the Bcc header is seen once
		// the message's header section is whole, before its body (one
		// byte after the blank line: until then the multipart reader
		// holds back a "\r\n" that may start a boundary).
		return multipartForm("api.mailgun.net", "/v3/mg.company.com/messages.mime",
			formPart("to", "", "alice@company.com, "+a),
			"--b0undary\r\nContent-Disposition: form-data; name=\"message\"; filename=\"m.eml\"\r\nContent-Type: message/rfc822\r\n\r\n"+
				mimeMsg("Bcc: "+a+"\r\n")+"\r\n")
	}},
	{"ses-v2-json", func(a string) string { return a + `"` }, func(a string) *HTTPRequest {
		return jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-emails", `{"FromEmailAddress":"agent@company.com","Destination":{"ToAddresses":["alice@company.com"],"BccAddresses":["`+a+`"]},"Content":{"Simple":{"Subject":{"Data":"s"},"Body":{"Text":{"Data":"hello"}}}}}`)
	}},
	{"ses-v2-raw", func(a string) string { return rawHeaderMark(b64, a) }, func(a string) *HTTPRequest {
		return jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-emails", `{"FromEmailAddress":"agent@company.com","Content":{"Raw":{"Data":"`+b64(mimeMsg("Bcc: "+a+"\r\n"))+`"}}}`)
	}},
	{"ses-v1-form", func(a string) string { return strings.ReplaceAll(a, "@", "%40") + "&" }, func(a string) *HTTPRequest {
		// Action last: the recipients are judged before it arrives.
		return reqCT("email.eu-west-1.amazonaws.com", "/", "application/x-www-form-urlencoded",
			"Source=agent%40company.com&Destination.ToAddresses.member.1=alice%40company.com&Destination.BccAddresses.member.1="+strings.ReplaceAll(a, "@", "%40")+"&Message.Subject.Data=s&Action=SendEmail")
	}},
	{"ses-v1-raw", func(a string) string { return url.QueryEscape(rawHeaderMark(b64, a)) }, func(a string) *HTTPRequest {
		return reqCT("email.eu-west-1.amazonaws.com", "/", "application/x-www-form-urlencoded",
			"Action=SendRawEmail&RawMessage.Data="+url.QueryEscape(b64(mimeMsg("Bcc: "+a+"\r\n"))))
	}},
	{"gmail-raw", func(a string) string { return rawHeaderMark(b64url, a) }, func(a string) *HTTPRequest {
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send", `{"raw":"`+b64url(mimeMsg("Bcc: "+a+"\r\n"))+`","threadId":"1"}`)
	}},
	{"gmail-upload-media", markStr("\r\n\r\n"), func(a string) *HTTPRequest {
		return reqCT("gmail.googleapis.com", "/upload/gmail/v1/users/me/messages/send?uploadType=media", "message/rfc822", mimeMsg("Bcc: "+a+"\r\n"))
	}},
	{"graph-mime", func(a string) string { return rawHeaderMark(b64, a) }, func(a string) *HTTPRequest {
		return reqCT("graph.microsoft.com", "/v1.0/me/sendMail", "text/plain", b64(mimeMsg("Bcc: "+a+"\r\n")))
	}},
	{"graph-json", func(a string) string { return a + `"` }, func(a string) *HTTPRequest {
		return jsonReq("graph.microsoft.com", "/v1.0/me/sendMail", `{"message":{"subject":"s","toRecipients":[{"emailAddress":{"address":"alice@company.com"}}],"bccRecipients":[{"emailAddress":{"address":"`+a+`"}}],"body":{"content":"hi"}}}`)
	}},
	{"resend", func(a string) string { return a + `"` }, func(a string) *HTTPRequest {
		return jsonReq("api.resend.com", "/emails", `{"from":"agent@company.com","to":["alice@company.com"],"bcc":["`+a+`"],"subject":"s","text":"hello"}`)
	}},
	{"generic-json", func(a string) string { return a + `"` }, func(a string) *HTTPRequest {
		return jsonReq("mail.example.net", "/api/send", `{"mail":{"to":"alice@company.com","cc":["carol@company.com"],"bcc":"`+a+`","subject":"s"}}`)
	}},
	{"generic-relaxed-json", func(a string) string { return a + `'` }, func(a string) *HTTPRequest {
		return jsonReq("mail.example.net", "/api/send", "{to:'alice@company.com', /* c */ bcc:'"+a+"', subject: 'x'}")
	}},
	{"generic-form", func(a string) string { return strings.ReplaceAll(a, "@", "%40") + "&" }, func(a string) *HTTPRequest {
		return reqCT("mail.example.net", "/api/send", "application/x-www-form-urlencoded", "to=alice%40company.com&bcc="+strings.ReplaceAll(a, "@", "%40")+"&subject=x")
	}},
}

// prefixReq is r with its body cut to n bytes, marked partial.
func prefixReq(r *HTTPRequest, n int) *HTTPRequest {
	cp := *r
	cp.Body = r.Body[:n]
	cp.Partial = true
	return &cp
}

func recipientSet(msgs []*Message) map[string]bool {
	out := map[string]bool{}
	for _, m := range msgs {
		for _, a := range m.Recipients() {
			out[a.Addr] = true
		}
	}
	return out
}

func blindSet(msgs []*Message) map[string]bool {
	out := map[string]bool{}
	for _, m := range msgs {
		for _, a := range m.BlindRecipients() {
			out[a.Addr] = true
		}
	}
	return out
}

// checkPrefixes judges every prefix of r's body and checks that none fails
// or reports a recipient the whole body does not have; it returns the
// recipients and blind recipients of each prefix length.
func checkPrefixes(t *testing.T, r *HTTPRequest) (rcpts, blind []map[string]bool) {
	t.Helper()
	full, err := FromHTTP(r)
	if err != nil {
		t.Fatalf("full body: %v", err)
	}
	all := recipientSet(full)
	for n := 0; n <= len(r.Body); n++ {
		msgs, err := FromHTTP(prefixReq(r, n))
		if err != nil {
			t.Fatalf("prefix %d: %v", n, err)
		}
		for _, m := range msgs {
			if !m.Partial {
				t.Fatalf("prefix %d: message not marked partial", n)
			}
		}
		got := recipientSet(msgs)
		for a := range got {
			if !all[a] {
				t.Fatalf("prefix %d (%q): recipient %q not in the whole message %v", n, r.Body[:n], a, all)
			}
		}
		rcpts = append(rcpts, got)
		blind = append(blind, blindSet(msgs))
	}
	return rcpts, blind
}

func TestFromHTTPPartialPrefixes(t *testing.T) {
	for _, row := range partialRows {
		t.Run(row.name, func(t *testing.T) {
			r := row.req(evilAddr)
			mark := row.mark(evilAddr)
			i := strings.Index(string(r.Body), mark)
			if i < 0 {
				t.Fatalf("mark %q not in body", mark)
			}
			due := i + len(mark)
			rcpts, blind := checkPrefixes(t, r)
			first := -1
			for n := range rcpts {
				if blind[n][evilAddr] && first < 0 {
					first = n
				}
				if n >= due && !blind[n][evilAddr] {
					t.Fatalf("prefix %d of %d (due at %d): %s not reported; recipients %v blind %v",
						n, len(r.Body), due, evilAddr, rcpts[n], blind[n])
				}
			}
			t.Logf("Bcc reported from byte %d of %d (mark ends at %d)", first, len(r.Body), due)

			// The benign twin's prefixes never show a foreign recipient.
			tw := row.req(benignAddr)
			rcpts, _ = checkPrefixes(t, tw)
			for n, set := range rcpts {
				for a := range set {
					if !allowedDomain(a[strings.LastIndexByte(a, '@')+1:]) {
						t.Fatalf("benign twin, prefix %d: foreign recipient %q", n, a)
					}
				}
			}
		})
	}
}

// Every evasion row holds under prefixes: no error, nothing invented, the
// benign twin stays benign.
func TestFromHTTPPartialEvasions(t *testing.T) {
	for _, row := range evasionRows {
		t.Run(row.name, func(t *testing.T) {
			checkPrefixes(t, row.req(evilAddr))
			rcpts, _ := checkPrefixes(t, row.req(benignAddr))
			for n, set := range rcpts {
				for a := range set {
					if !allowedDomain(a[strings.LastIndexByte(a, '@')+1:]) {
						t.Fatalf("benign twin, prefix %d: foreign recipient %q", n, a)
					}
				}
			}
		})
	}
}

// A legitimate address cut inside its domain never reads as a recipient at
// the cut domain.
func TestFromHTTPPartialCutAddress(t *testing.T) {
	for _, r := range []*HTTPRequest{
		jsonReq("api.postmarkapp.com", "/email", `{"To":"ceo@company.com","Bcc":"ceo@comp`),
		jsonReq("api.resend.com", "/emails", `{"to":["ceo@company.com","ceo@comp`),
		jsonReq("mail.example.net", "/x", `{to:'ceo@company.com',bcc:'ceo@comp`),
		reqCT("api.mailgun.net", "/v3/d/messages", "application/x-www-form-urlencoded", "to=ceo%40company.com&bcc=ceo%40comp"),
		reqCT("api.mailgun.net", "/v3/d/messages", "application/x-www-form-urlencoded", "to=ceo%40company.com&bcc=ceo%40company.co%6"),
		multipartForm("api.mailgun.net", "/v3/d/messages", formPart("to", "", "ceo@company.com"), formPart("bcc", "", "ceo@comp")),
		reqCT("gmail.googleapis.com", "/upload/gmail/v1/users/me/messages/send?uploadType=media", "message/rfc822", "To: ceo@company.com\r\nBcc: ceo@comp"),
	} {
		r.Partial = true
		if r.Header.Get("Content-Type") == "multipart/form-data; boundary=b0undary" {
			r.Body = bytes.TrimSuffix(r.Body, []byte("\r\n--b0undary--\r\n"))
		}
		msgs, err := FromHTTP(r)
		if err != nil {
			t.Errorf("%s: %v", r.Body, err)
		}
		got := recipientSet(msgs)
		for a := range got {
			if a != "ceo@company.com" {
				t.Errorf("%q: recipient %q", r.Body, a)
			}
		}
	}
}

func TestFromHTTPPartialNothingYet(t *testing.T) {
	for _, r := range []*HTTPRequest{
		jsonReq("api.postmarkapp.com", "/email", ``),
		jsonReq("api.postmarkapp.com", "/email", `{`),
		jsonReq("api.postmarkapp.com", "/email", `{"To":"ceo@comp`),
		jsonReq("api.sendgrid.com", "/v3/mail/send", `{"personalizations":[{"to":[{"email":"a`),
		jsonReq("graph.microsoft.com", "/v1.0/me/sendMail", `{"message":{"toRecipients":[`),
		reqCT("graph.microsoft.com", "/v1.0/me/sendMail", "text/plain", "VG86IGF"),
		jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send", `{"raw":"VG86IGFAYi5j`),
		reqCT("api.mailgun.net", "/v3/d/messages", "application/x-www-form-urlencoded", "to=a%40b"),
		jsonReq("api.postmarkapp.com", "/email", "\xff\xfe{\x00\"\x00T"),
	} {
		r.Partial = true
		msgs, err := FromHTTP(r)
		if msgs != nil || err != nil {
			t.Errorf("%q: %v, %v", r.Body, msgs, err)
		}
	}
}

// An incomplete body that FromHTTP rejects as a whole is not an error as a
// prefix; the same body not marked partial still is.
func TestFromHTTPPartialNoError(t *testing.T) {
	r := jsonReq("api.sendgrid.com", "/v3/mail/send", `{"personalizations":[{"to":[{"email":"a@company.com"}]}`)
	if _, err := FromHTTP(r); err == nil {
		t.Error("complete body: no error")
	}
	r.Partial = true
	msgs, err := FromHTTP(r)
	if err != nil || len(msgs) != 1 || !slices.Equal(addrs(msgs[0].To), []string{"a@company.com"}) {
		t.Errorf("partial: %v, %v", msgs, err)
	}
}

// The example of the brief: an early Bcc in a body whose end has not come.
func TestFromHTTPPartialUTF16(t *testing.T) {
	full := reqCT("api.postmarkapp.com", "/email", "application/json; charset=utf-16", "")
	s := "\uFEFF" + `{"To":"alice@company.com","Bcc":"` + evilAddr + `","TextBody":"hello"}`
	var b []byte
	for _, u := range s {
		b = append(b, byte(u), byte(u>>8))
	}
	full.Body = b
	rcpts, blind := checkPrefixes(t, full)
	due := 2 * strings.Index(s, `","TextBody`)
	for n := due + 2; n < len(rcpts); n++ {
		if !blind[n][evilAddr] {
			t.Fatalf("prefix %d: %s not seen (%v)", n, evilAddr, rcpts[n])
		}
	}
}

func FuzzJSONPrefix(f *testing.F) {
	f.Add([]byte(`{"From":"a@company.com","To":"b@company.com","Subject":"x","Bcc":"phan@giftshop.club"}`), uint16(60))
	f.Add([]byte(`{"Personalizations":[{"to":[{"email":"a@x.com"}],"bcc":[{"email":"p@giftshop.club"}]}]}`), uint16(70))
	f.Add([]byte(`{"e":"x\"y\\","g":"\u0070han@x.y","n":[1,-2.5e3,true,null,{}]}`), uint16(30))
	f.Add([]byte(`{to:'a@b.c', /* x */ bcc:["p@q.r",],}`), uint16(20))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		_ = closeJSONPrefix(b)
		_ = parseJSONPrefix(b)
		k := int(cut) % (len(b) + 1)
		whole, err := parseJSON(b)
		if err != nil || !json.Valid(b) {
			return
		}
		out := closeJSONPrefix(b[:k])
		if out == nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("closeJSONPrefix(%q) = %q: not JSON", b[:k], out)
		}
		part, err := parseJSON(out)
		if err != nil {
			t.Fatalf("parseJSON(%q): %v", out, err)
		}
		// Every string of the prefix (and so every address) is one of
		// the whole document's strings.
		strs := map[string]bool{}
		var walk func(n *jnode, add bool, d int)
		walk = func(n *jnode, add bool, d int) {
			if n == nil || d > maxJSONDepth {
				return
			}
			switch n.kind {
			case jStr:
				if add {
					strs[n.str] = true
				} else if !strs[n.str] {
					t.Fatalf("string %q of the prefix not in the whole", n.str)
				}
			case jArr:
				for _, e := range n.arr {
					walk(e, add, d+1)
				}
			case jObj:
				for _, kv := range n.obj {
					walk(&jnode{kind: jStr, str: kv.key}, add, d+1)
					walk(kv.val, add, d+1)
				}
			}
		}
		walk(whole, true, 0)
		walk(part, false, 0)
	})
}

func TestFuzzJSONPrefixSeedsEveryCut(t *testing.T) {
	for _, s := range []string{
		`{"From":"a@company.com","To":"b@company.com","Subject":"x","Bcc":"phan@giftshop.club"}`,
		`{"e":"x\"y\\","g":"\u0070han@x.y","n":[1,-2.5e3,true,null,{}],"o":{"p":[[],[{}]]}}`,
		` [ "a" , 12 , { "b" : [ false ] } ] `,
	} {
		for k := 0; k <= len(s); k++ {
			out := closeJSONPrefix([]byte(s[:k]))
			if out != nil && !json.Valid(out) {
				t.Fatalf("closeJSONPrefix(%q) = %q: not JSON", s[:k], out)
			}
		}
		if out := closeJSONPrefix([]byte(s)); !json.Valid(out) || !bytes.Equal(bytes.TrimSpace(out), bytes.TrimSpace([]byte(s))) {
			t.Fatalf("whole %q: %q", s, out)
		}
	}
}

// bigBody is a Postmark request of about 1 MiB: recipients first, then a
// large base64 attachment.
func bigBody() []byte {
	att := strings.Repeat(b64("0123456789abcdefghijklmnopqrstuvwxyz\n"), 1<<20/52)
	return []byte(`{"From":"agent@company.com","To":"alice@company.com","Bcc":"` + evilAddr +
		`","Subject":"report","TextBody":"hello","Attachments":[{"Name":"a.txt","ContentType":"text/plain","Content":"` + att + `"},{"Name":"b.txt","Content":"aGk="}]}`)
}

func BenchmarkCloseJSONPrefix(b *testing.B) {
	body := bigBody()
	for _, bc := range []struct {
		name string
		cut  int
	}{
		{"in-attachment", len(body) - 100},   // the attachment's content is cut: dropped
		{"after-attachment", len(body) - 10}, // ~1 MiB kept
	} {
		b.Run(bc.name, func(b *testing.B) {
			prefix := body[:bc.cut]
			b.SetBytes(int64(len(prefix)))
			b.ReportAllocs()
			for b.Loop() {
				if closeJSONPrefix(prefix) == nil {
					b.Fatal("nil")
				}
			}
		})
	}
}

// BenchmarkFromHTTPPartial1MiB is the agent's cost per held write of a
// 1 MiB request: the whole prefix is judged again each time.
func BenchmarkFromHTTPPartial1MiB(b *testing.B) {
	body := bigBody()
	for _, bc := range []struct {
		name string
		cut  int
	}{
		{"in-attachment", len(body) - 100},
		{"after-attachment", len(body) - 10},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := &HTTPRequest{Method: "POST", Host: "api.postmarkapp.com", Path: "/email",
				Header: http.Header{"Content-Type": {"application/json"}}, Body: body[:bc.cut], Partial: true}
			b.SetBytes(int64(len(r.Body)))
			b.ReportAllocs()
			for b.Loop() {
				msgs, err := FromHTTP(r)
				if err != nil || len(msgs) != 1 || len(msgs[0].Bcc) != 1 {
					b.Fatal(msgs, err)
				}
			}
		})
	}
}

func TestCutJSONString(t *testing.T) {
	for _, tc := range []struct {
		in      string
		path    []string
		content string
		ok      bool
	}{
		{`{"raw":"abc`, []string{"raw"}, "abc", true},
		{`{"message":{"id":"1","raw":"ab\/c\u00`, []string{"message", "raw"}, "ab/c", true},
		{`{"Content":{"Raw":{"Data":"QUJD\`, []string{"Content", "Raw", "Data"}, "QUJD", true},
		{`{"a":[{"b":1},"x`, []string{"a", ""}, "x", true},
		{`{"r\u0061w":"abc`, []string{"raw"}, "abc", true},
		{`{"raw":"abc"`, nil, "", false}, // complete: not cut
		{`{"ra`, nil, "", false},         // a key, not a value
		{`{"a":1,b:"x`, nil, "", false},  // not strict JSON
	} {
		path, content, ok := cutJSONString([]byte(tc.in))
		if ok != tc.ok || !slices.Equal(path, tc.path) || string(content) != tc.content {
			t.Errorf("cutJSONString(%q) = %q, %q, %v; want %q, %q, %v", tc.in, path, content, ok, tc.path, tc.content, tc.ok)
		}
	}
}

// A raw message with a large attachment is judged on its header section,
// long before its JSON string ends.
func TestFromHTTPPartialRawEarly(t *testing.T) {
	msg := mimeMsg("Bcc: "+evilAddr+"\r\n") + strings.Repeat("x", 256<<10)
	for _, r := range []*HTTPRequest{
		jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send", `{"raw":"`+b64url(msg)+`"}`),
		jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/drafts", `{"message":{"raw":"`+strings.ReplaceAll(b64(msg), "/", `\/`)+`"}}`),
		jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-emails", `{"FromEmailAddress":"agent@company.com","Content":{"Raw":{"Data":"`+b64(msg)+`"}}}`),
	} {
		msgs, err := FromHTTP(prefixReq(r, 1024))
		if err != nil || !blindSet(msgs)[evilAddr] {
			t.Errorf("%.60s: %v, %v", r.Body, blindSet(msgs), err)
		}
	}
}
