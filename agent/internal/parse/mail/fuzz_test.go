package mail

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
)

// The fuzz targets check that no parser panics or hangs, and a few
// invariants that must hold on any input.

func FuzzParseAddressList(f *testing.F) {
	for _, s := range []string{"a@b.c", `"N" <a@b.c>, c@d.e`, "=?utf-8?q?a=40b.c?=", "ｐ@ｇ．ｃ", "a%40b.c", "<@r:a@b.c>", "g: a@b.c;", "\xff@\xfe",
		"=?utf-8?B?cGhhbkBnaWZ0c2hvcC5jbHVi?=", "%70%68%61%6E%40giftshop.club", "\"P, Q\" <phan@giftshop.club>;c@d.e"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, a := range ParseAddressList(s) {
			if !strings.Contains(a.Addr, "@") {
				t.Fatalf("address without @: %q", a.Addr)
			}
			// Normalisation is idempotent.
			if n, ok := NormalizeAddress(a.Addr); ok && n != a.Addr {
				t.Fatalf("not idempotent: %q -> %q", a.Addr, n)
			}
		}
	})
}

func FuzzParseRFC822(f *testing.F) {
	f.Add([]byte(rawMIME))
	f.Add([]byte("To: a@b.c\r\n\r\nbody"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: message/rfc822\r\n\r\nTo: x@y.z\r\n\r\nhi\r\n--a--"))
	f.Add([]byte("From a@b.c Mon Dec  7 17:57:46 2026\r\n\r\nBcc: =?utf-8?B?cGhhbkBnaWZ0c2hvcC5jbHVi?=\r\n =?utf-8?Q?x=40y.z?=\r\nResent-Bcc: q@r.s\r\n\r\nhi"))
	f.Add([]byte("\nTo: a@b.c\nContent-Type: multipart/mixed; boundary=o\n\n--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\nContent-Transfer-Encoding: base64\n\naGk=\n--i--\n--o--\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := ParseRFC822(b, "fuzz", "")
		if m.used > MaxBodyBytes {
			t.Fatalf("budget exceeded: %d", m.used)
		}
		_ = m.ForwardMarkers()
		_ = m.Recipients()
	})
}

func FuzzSMTPSession(f *testing.F) {
	f.Add([]byte(smtpSession), uint8(7))
	f.Add([]byte("MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 5 LAST\r\nhello"), uint8(3))
	f.Add([]byte("DATA\r\n.\r\n"), uint8(1))
	f.Add([]byte("MAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nX-SMTPAPI: {\"to\":[\"x@y.z\",\r\n 'P <q@r.s>',]}\r\n\r\nhi\r\n.\r\n"), uint8(5))
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		s := NewSMTPSession()
		n := int(step%32) + 1
		for len(b) > 0 {
			k := min(n, len(b))
			for _, m := range s.Feed(b[:k]) {
				_ = m.BlindRecipients()
			}
			_ = s.Pending()
			b = b[k:]
		}
		if len(s.line) > maxSMTPLine || len(s.dline) > maxSMTPDataLine || len(s.data) > MaxBodyBytes {
			t.Fatal("buffer bound exceeded")
		}
	})
}

func FuzzFromHTTP(f *testing.F) {
	seeds := []struct{ host, path, ct, body string }{
		{"api.postmarkapp.com", "/email", "application/json", `{"To":"a@b.c","Bcc":"x@y.z","Attachments":[{"Name":"a","Content":"aGk="}]}`},
		{"api.postmarkapp.com", "/email/batch", "application/json", `[{"To":"a@b.c"}]`},
		{"api.sendgrid.com", "/v3/mail/send", "application/json", `{"personalizations":[{"to":[{"email":"a@b.c"}]}],"content":[{"type":"text/plain","value":"x"}]}`},
		{"api.mailgun.net", "/v3/d/messages", "application/x-www-form-urlencoded", "to=a%40b.c&bcc=x@y.z&h:Bcc=q@r.s"},
		{"email.us-east-1.amazonaws.com", "/", "application/x-www-form-urlencoded", "Action=SendRawEmail&RawMessage.Data=" + base64.StdEncoding.EncodeToString([]byte(rawMIME))},
		{"email.us-east-1.amazonaws.com", "/v2/email/outbound-emails", "application/json", `{"Destination":{"ToAddresses":["a@b.c"]},"Content":{"Raw":{"Data":"VG86IGFAYi5jDQoNCmhp"}}}`},
		{"api.resend.com", "/emails", "application/json", `{"to":["a@b.c"],"attachments":[{"content":[1,2,3]}]}`},
		{"gmail.googleapis.com", "/gmail/v1/users/me/messages/send", "application/json", `{"raw":"VG86IGFAYi5jDQoNCmhp"}`},
		{"graph.microsoft.com", "/v1.0/$batch", "application/json", `{"requests":[{"method":"POST","url":"/me/sendMail","body":{"message":{"toRecipients":[{"emailAddress":{"address":"a@b.c"}}]}}}]}`},
		{"x.example", "/send", "application/json", `{"a":[{"to":"a@b.c","bcc":["x@y.z"]}]}`},
		{"x.example", "/send", "multipart/form-data; boundary=zz", "--zz\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\na@b.c\r\n--zz--\r\n"},
		{"api.postmarkapp.com", "/email", "application/json", "\ufeff{To:'a@b.c', /* c */ \"\\u0042cc\":'phan\\u0040giftshop.club',}"},
		{"api.postmarkapp.com", "/email", "application/json; charset=utf-16", "\xff\xfe{\x00\"\x00T\x00o\x00\"\x00:\x00\"\x00a\x00@\x00b\x00\"\x00}\x00"},
		{"api.mailgun.net", "/v3/d/messages", "application/x-www-form-urlencoded", "%74%6F=%61%40%62&h%3ABcc=%70han%40giftshop.club&to=A+%3Cc%40d%3E"},
		{"api.mailgun.net", "/v3/d/messages", "multipart/form-data; boundary=zz", "--zz\r\nContent-Disposition: form-data; name*=utf-8''bcc\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nphan=40giftshop.club\r\n--zz\r\nContent-Disposition: form-data; name=\"h:Bcc\"\r\nContent-Transfer-Encoding: base64\r\n\r\neEB5Lno=\r\n--zz--\r\n"},
		{"gmail.googleapis.com", "/gmail/v1/users/me/messages/send", "application/json", `{"raw":"VG86IGFAYi5j_Qo+DQpoaQ"}`},
		{"api.sendgrid.com", "/v3/mail/send", "application/json", `{"personalizations":[{"to":[{"email":"a@b.c"}]},{"BCC":[{"Email":"x@y.z","name":"X"}],"headers":{"Bcc":"q@r.s"}}]}`},
	}
	for _, s := range seeds {
		f.Add(s.host, s.path, s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, host, path, ct string, body []byte) {
		r := &HTTPRequest{Method: "POST", Host: host, Path: path, Header: http.Header{"Content-Type": {ct}}, Body: body}
		msgs, err := FromHTTP(r)
		if err != nil && msgs != nil {
			t.Fatal("messages returned with an error")
		}
		if len(msgs) > MaxParts {
			t.Fatalf("%d messages", len(msgs))
		}
		for _, m := range msgs {
			_ = m.ForwardMarkers()
			_ = m.BlindRecipients()
		}
		// Every prefix of the body, judged as partial, fails never and
		// reports no recipient that the whole body does not.
		all := recipientSet(msgs)
		for _, k := range []int{len(body) / 3, len(body) / 2, len(body) - 1, len(body)} {
			if k < 0 {
				continue
			}
			pmsgs, err := FromHTTP(prefixReq(r, k))
			if err != nil {
				t.Fatalf("prefix %d: %v", k, err)
			}
			if msgs == nil {
				continue
			}
			for a := range recipientSet(pmsgs) {
				if !all[a] {
					t.Fatalf("prefix %d: recipient %q not in the whole %v", k, a, all)
				}
			}
		}
	})
}

func FuzzParseJSON(f *testing.F) {
	f.Add([]byte(`{"a":[1,"x",{"b":null,"b":true}]}`))
	f.Add([]byte(`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := parseJSON(b)
		if err != nil {
			return
		}
		// Re-serialising and re-parsing gives the same text.
		again, err := parseJSON(n.json())
		if err != nil {
			t.Fatalf("re-parse of %q: %v", n.json(), err)
		}
		if string(again.json()) != string(n.json()) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzRelaxJSON(f *testing.F) {
	f.Add([]byte(`{a:'x', /* c */ "b":[1,2,],// d` + "\n}"))
	f.Add([]byte(`{'\'':"\"", c:-1e5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := relaxJSON(b)
		if len(out) > 3*len(b)+1 {
			t.Fatalf("%d bytes from %d", len(out), len(b))
		}
		_, _ = parseJSON(out)
	})
}
