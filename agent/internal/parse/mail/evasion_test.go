package mail

import (
	"encoding/base64"
	"fmt"
	"mime"
	"net/http"
	"slices"
	"strings"
	"testing"
	"unicode/utf16"
)

// Encodings an attacker may use to hide a recipient from the parser. Every
// row builds a request around one recipient address: with
// phan@giftshop.club it must be found (among the blind recipients when the
// row hides a Bcc), and its benign twin, the same encoding with
// bob@subsidiaries.com, must yield no recipient outside the allowed
// domains.

const (
	evilAddr   = "phan@giftshop.club"
	benignAddr = "bob@subsidiaries.com"
)

func allowedDomain(d string) bool { return d == "company.com" || d == "subsidiaries.com" }

// pctAll percent-encodes every byte of s.
func pctAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "%%%02X", s[i])
	}
	return b.String()
}

func b64(s string) string    { return base64.StdEncoding.EncodeToString([]byte(s)) }
func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// qpAll quoted-printable-encodes every byte of s (valid QP, if unusual).
func qpAll(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		fmt.Fprintf(&b, "=%02X", s[i])
	}
	return b.String()
}

// jsonEsc writes every byte of an ASCII s as a \uXXXX escape.
func jsonEsc(s string) string {
	var b strings.Builder
	for _, r := range s {
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	return b.String()
}

func reqCT(host, path, ct, body string) *HTTPRequest {
	return &HTTPRequest{Method: "POST", Host: host, Path: path,
		Header: http.Header{"Content-Type": {ct}}, Body: []byte(body)}
}

// mimeMsg is a raw message from agent@company.com to alice@company.com with
// the given extra header lines (CRLF-terminated).
func mimeMsg(headers string) string {
	return "From: agent@company.com\r\nTo: Alice <alice@company.com>\r\n" + headers +
		"Subject: report\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
}

func formPart(name, extra, body string) string {
	return "--b0undary\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n" + extra + "\r\n" + body + "\r\n"
}

func multipartForm(host, path string, parts ...string) *HTTPRequest {
	return reqCT(host, path, "multipart/form-data; boundary=b0undary", strings.Join(parts, "")+"--b0undary--\r\n")
}

type evasionRow struct {
	name  string
	blind bool // the address must be among the blind recipients
	req   func(addr string) *HTTPRequest
}

var evasionRows = []evasionRow{
	// 3. JSON.
	{"json/unicode-escaped-address", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"From":"agent@company.com","To":"alice@company.com","Bcc":"`+jsonEsc(a)+`"}`)
	}},
	{"json/unicode-escaped-key", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"From":"agent@company.com","To":"alice@company.com","\u0042\u0063\u0063":"`+a+`"}`)
	}},
	{"json/duplicate-key-first", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"To":"alice@company.com","Bcc":"`+a+`","Bcc":""}`)
	}},
	{"json/duplicate-key-last", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"To":"alice@company.com","Bcc":"alice@company.com","bCC":"`+a+`"}`)
	}},
	{"json/postmark-key-case", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"TO":"alice@company.com","bcc":"Ph <`+a+`>"}`)
	}},
	{"json/postmark-comma-list", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"To":"alice@company.com","Bcc":"carol@company.com, \"Phan, P\" <`+a+`>;dave@company.com"}`)
	}},
	{"json/sendgrid-key-case-objects", true, func(a string) *HTTPRequest {
		return jsonReq("api.sendgrid.com", "/v3/mail/send", `{"Personalizations":[{"TO":[{"Email":"alice@company.com"}],"BCC":[{"EMAIL":"`+a+`","Name":"P"}]}],"From":{"email":"agent@company.com"}}`)
	}},
	{"json/resend-bcc-array-and-display-name", true, func(a string) *HTTPRequest {
		return jsonReq("api.resend.com", "/emails", `{"from":"agent@company.com","to":"alice@company.com","BcC":["carol@company.com","Phan <`+a+`>"]}`)
	}},
	{"json/ses-v2-key-case", true, func(a string) *HTTPRequest {
		return jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-emails", `{"FromEmailAddress":"agent@company.com","destination":{"toaddresses":["alice@company.com"],"BCCADDRESSES":["`+a+`"]}}`)
	}},
	{"json/graph-key-case", true, func(a string) *HTTPRequest {
		return jsonReq("graph.microsoft.com", "/v1.0/me/sendMail", `{"Message":{"ToRecipients":[{"EmailAddress":{"Address":"alice@company.com"}}],"BCCRECIPIENTS":[{"emailaddress":{"ADDRESS":"`+a+`"}}]}}`)
	}},
	{"json/generic-key-case-object", true, func(a string) *HTTPRequest {
		return jsonReq("mail.example.net", "/api/send", `{"to":"alice@company.com","BCC":{"email":"`+a+`","name":"P"}}`)
	}},
	{"json/utf8-bom", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", "\uFEFF"+`{"To":"alice@company.com","Bcc":"`+a+`"}`)
	}},
	{"json/utf16-charset", true, func(a string) *HTTPRequest {
		body := utf16.Encode([]rune("\uFEFF" + `{"To":"alice@company.com","Bcc":"` + a + `"}`))
		b := make([]byte, 0, 2*len(body))
		for _, u := range body {
			b = append(b, byte(u), byte(u>>8))
		}
		return reqCT("api.postmarkapp.com", "/email", "application/json; charset=utf-16", string(b))
	}},

	{"json/relaxed-comments-single-quotes-trailing-comma", true, func(a string) *HTTPRequest {
		// Json.NET (Postmark runs on .NET) accepts comments, single quotes,
		// unquoted names and trailing commas; encoding/json does not.
		return jsonReq("api.postmarkapp.com", "/email", "{From:'agent@company.com', /* c */ To: 'alice@company.com', // c\n 'Bcc': '"+a+"',}")
	}},
	{"json/relaxed-generic", true, func(a string) *HTTPRequest {
		return jsonReq("mail.example.net", "/api/send", "{to:['alice@company.com',], bcc:'"+a+"' /* end */}")
	}},
	// 4. Forms.
	{"form/every-byte-percent-encoded", true, func(a string) *HTTPRequest {
		return reqCT("api.mailgun.net", "/v3/mg.company.com/messages", "application/x-www-form-urlencoded",
			pctAll("from")+"="+pctAll("agent@company.com")+"&"+pctAll("to")+"="+pctAll("alice@company.com")+"&"+pctAll("bcc")+"="+pctAll(a))
	}},
	{"form/plus-spaces-display-name", true, func(a string) *HTTPRequest {
		return reqCT("api.mailgun.net", "/v3/mg.company.com/messages", "application/x-www-form-urlencoded",
			"to=Alice+%3Calice%40company.com%3E&bcc=Phan+Q+%3C"+strings.ReplaceAll(a, "@", "%40")+"%3E")
	}},
	{"form/header-field-percent-encoded-colon", true, func(a string) *HTTPRequest {
		return reqCT("api.mailgun.net", "/v3/mg.company.com/messages", "application/x-www-form-urlencoded",
			"to=alice%40company.com&h%3ABcc="+pctAll(a))
	}},
	{"form/repeated-to", false, func(a string) *HTTPRequest {
		return reqCT("api.mailgun.net", "/v3/mg.company.com/messages", "application/x-www-form-urlencoded",
			"to=alice%40company.com&to=carol%40company.com&TO="+pctAll(a))
	}},
	{"form/query-string", true, func(a string) *HTTPRequest {
		return reqCT("api.mailgun.net", "/v3/mg.company.com/messages?bcc="+pctAll(a), "application/x-www-form-urlencoded", "to=alice%40company.com")
	}},
	{"form/ses-v1-percent-encoded-key", true, func(a string) *HTTPRequest {
		return reqCT("email.eu-west-1.amazonaws.com", "/", "application/x-www-form-urlencoded",
			"Action=SendEmail&Source=agent%40company.com&Destination.ToAddresses.member.1=alice%40company.com&"+pctAll("Destination.BccAddresses.member.1")+"="+pctAll(a))
	}},
	{"multipart/quoted-printable-part", true, func(a string) *HTTPRequest {
		return multipartForm("api.mailgun.net", "/v3/mg.company.com/messages",
			formPart("to", "", "alice@company.com"),
			formPart("bcc", "Content-Transfer-Encoding: quoted-printable\r\n", qpAll(a)))
	}},
	{"multipart/base64-part", true, func(a string) *HTTPRequest {
		return multipartForm("api.mailgun.net", "/v3/mg.company.com/messages",
			formPart("to", "", "alice@company.com"),
			formPart("h:Bcc", "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n", b64(a)))
	}},
	{"multipart/rfc2231-field-name", true, func(a string) *HTTPRequest {
		return multipartForm("api.mailgun.net", "/v3/mg.company.com/messages",
			formPart("to", "", "alice@company.com"),
			"--b0undary\r\nContent-Disposition: form-data; name*=utf-8''%62cc\r\n\r\n"+a+"\r\n")
	}},
	{"multipart/generic-repeated", true, func(a string) *HTTPRequest {
		return multipartForm("mail.example.net", "/send",
			formPart("to", "", "alice@company.com"),
			formPart("bcc", "", "carol@company.com"),
			formPart("BCC", "", a))
	}},

	{"multipart/non-text-content-type-field", true, func(a string) *HTTPRequest {
		// A part without a filename is a field value to the server whatever
		// its Content-Type.
		return multipartForm("api.mailgun.net", "/v3/mg.company.com/messages",
			formPart("to", "", "alice@company.com"),
			formPart("bcc", "Content-Type: application/octet-stream\r\n", a))
	}},
	{"multipart/lf-line-ends", true, func(a string) *HTTPRequest {
		r := multipartForm("api.mailgun.net", "/v3/mg.company.com/messages",
			formPart("to", "", "alice@company.com"), formPart("bcc", "", a))
		r.Body = []byte(strings.ReplaceAll(string(r.Body), "\r\n", "\n"))
		return r
	}},
	// 5. Raw MIME.
	{"mime/gmail-raw-folded-bcc", true, func(a string) *HTTPRequest {
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send",
			`{"raw":"`+b64url(mimeMsg("Bcc: carol@company.com,\r\n\t"+a+"\r\n"))+`"}`)
	}},
	{"mime/encoded-word-b-address", true, func(a string) *HTTPRequest {
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send",
			`{"raw":"`+b64url(mimeMsg("BCC: "+mime.BEncoding.Encode("utf-8", a)+"\r\n"))+`"}`)
	}},
	{"mime/encoded-word-q-list", true, func(a string) *HTTPRequest {
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send",
			`{"raw":"`+b64url(mimeMsg("bcc: =?utf-8?Q?"+strings.ReplaceAll(qpAll("carol@company.com, "+a), " ", "_")+"?=\r\n"))+`"}`)
	}},
	{"mime/resent-bcc", true, func(a string) *HTTPRequest {
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/drafts",
			`{"message":{"raw":"`+b64url(mimeMsg("Resent-From: agent@company.com\r\nResent-Bcc: "+a+"\r\n"))+`"}}`)
	}},
	{"mime/raw-with-line-breaks-and-padding", true, func(a string) *HTTPRequest {
		enc := base64.URLEncoding.EncodeToString([]byte(mimeMsg("Bcc: " + a + "\r\n")))
		var b strings.Builder
		for i := 0; i < len(enc); i += 76 {
			b.WriteString(enc[i:min(i+76, len(enc))] + `\r\n`)
		}
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send", `{"raw":"`+b.String()+`"}`)
	}},
	{"mime/raw-mixed-base64-alphabets", true, func(a string) *HTTPRequest {
		// Standard base64 with only some of '+' and '/' replaced by their
		// URL-safe forms: a strict decoder of either alphabet rejects it.
		std := base64.StdEncoding.EncodeToString([]byte(mimeMsg("Bcc: "+a+"\r\nX-Pad: ~~~~\r\n") + "\xfb\xff\xbf"))
		mixed := strings.Replace(std, "/", "_", 1)
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send", `{"raw":"`+mixed+`"}`)
	}},
	{"mime/ses-v1-raw-nested-multipart", true, func(a string) *HTTPRequest {
		raw := "From: agent@company.com\r\nTo: alice@company.com\r\nBcc:\r\n " + mime.QEncoding.Encode("utf-8", a) + "\r\n" +
			"Content-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: multipart/alternative; boundary=i\r\n\r\n" +
			"--i\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64("hi") + "\r\n--i--\r\n--o--\r\n"
		return reqCT("email.us-east-1.amazonaws.com", "/", "application/x-www-form-urlencoded",
			"Action=SendRawEmail&RawMessage.Data="+strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(b64(raw)))
	}},
	{"mime/ses-v2-raw", true, func(a string) *HTTPRequest {
		return jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-emails",
			`{"Content":{"Raw":{"Data":"`+b64(mimeMsg("Bcc: "+a+"\r\n"))+`"}}}`)
	}},
	{"mime/mailgun-mime-file", true, func(a string) *HTTPRequest {
		return multipartForm("api.mailgun.net", "/v3/mg.company.com/messages.mime",
			formPart("to", "", "alice@company.com"),
			"--b0undary\r\nContent-Disposition: form-data; name=\"message\"; filename=\"m.eml\"\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"+
				b64(mimeMsg("Bcc: "+a+"\r\n"))+"\r\n")
	}},
	{"mime/graph-mime-body", true, func(a string) *HTTPRequest {
		return reqCT("graph.microsoft.com", "/v1.0/me/sendMail", "text/plain", b64(mimeMsg("Bcc: "+a+"\r\n")))
	}},
	{"mime/gmail-upload-lf-only", true, func(a string) *HTTPRequest {
		return reqCT("gmail.googleapis.com", "/upload/gmail/v1/users/me/messages/send?uploadType=media", "message/rfc822",
			strings.ReplaceAll(mimeMsg("Bcc : "+a+"\r\n"), "\r\n", "\n"))
	}},

	{"mime/mbox-from-line", true, func(a string) *HTTPRequest {
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send",
			`{"raw":"`+b64url("From agent@company.com Mon Dec  7 17:57:46 2026\r\n"+mimeMsg("Bcc: "+a+"\r\n"))+`"}`)
	}},
	{"mime/leading-blank-line", true, func(a string) *HTTPRequest {
		return jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send",
			`{"raw":"`+b64url("\r\n"+mimeMsg("Bcc: "+a+"\r\n"))+`"}`)
	}},
	// 6. Recipients assembled from several fields.
	{"fields/sendgrid-second-personalization", true, func(a string) *HTTPRequest {
		return jsonReq("api.sendgrid.com", "/v3/mail/send", `{"personalizations":[{"to":[{"email":"alice@company.com"}]},{"to":[{"email":"carol@company.com"}],"bcc":[{"email":"`+a+`"}]}],"from":{"email":"agent@company.com"}}`)
	}},
	{"fields/postmark-batch-second", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email/batch", `[{"To":"alice@company.com"},{"To":"carol@company.com","Bcc":"`+a+`"}]`)
	}},
	{"fields/ses-v2-destination-lists", true, func(a string) *HTTPRequest {
		return jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-emails", `{"Destination":{"ToAddresses":["alice@company.com"],"BccAddresses":["carol@company.com"],"BccAddresses":["dave@company.com","`+a+`"]}}`)
	}},
	{"fields/ses-v2-bulk-entries", false, func(a string) *HTTPRequest {
		return jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-bulk-emails", `{"FromEmailAddress":"agent@company.com","BulkEmailEntries":[{"Destination":{"ToAddresses":["alice@company.com"]}},{"Destination":{"ToAddresses":["`+a+`"]}}]}`)
	}},
	{"fields/ses-v1-member-lists", true, func(a string) *HTTPRequest {
		return reqCT("email.us-east-1.amazonaws.com", "/", "application/x-www-form-urlencoded",
			"Action=SendEmail&Destination.ToAddresses.member.1=alice%40company.com&Destination.BccAddresses.member.1=carol%40company.com&Destination.BccAddresses.member.3="+pctAll(a))
	}},
	{"fields/postmark-header-bcc", true, func(a string) *HTTPRequest {
		return jsonReq("api.postmarkapp.com", "/email", `{"To":"alice@company.com","Headers":[{"Name":"X-Id","Value":"1"},{"Name":"bcc","Value":"`+a+`"}]}`)
	}},
	{"fields/sendgrid-personalization-header-bcc", true, func(a string) *HTTPRequest {
		return jsonReq("api.sendgrid.com", "/v3/mail/send", `{"personalizations":[{"to":[{"email":"alice@company.com"}],"headers":{"BCC":"`+a+`"}}],"from":{"email":"agent@company.com"}}`)
	}},
}

func TestEvasions(t *testing.T) {
	for _, row := range evasionRows {
		t.Run(row.name, func(t *testing.T) {
			msgs, err := FromHTTP(row.req(evilAddr))
			if err != nil {
				t.Logf("error: %v", err)
			}
			var all, blind []string
			for _, m := range msgs {
				all = append(all, addrs(m.Recipients())...)
				blind = append(blind, addrs(m.BlindRecipients())...)
			}
			if !slices.Contains(all, evilAddr) || row.blind && !slices.Contains(blind, evilAddr) {
				t.Errorf("%s not seen: recipients %v, blind %v", evilAddr, all, blind)
			}

			msgs, err = FromHTTP(row.req(benignAddr))
			if err != nil {
				t.Errorf("benign twin: %v", err)
			}
			var seen bool
			for _, m := range msgs {
				for _, a := range m.Recipients() {
					if !allowedDomain(a.Domain()) {
						t.Errorf("benign twin: foreign recipient %q", a.Addr)
					}
					seen = seen || a.Addr == benignAddr
				}
			}
			if !seen {
				t.Errorf("benign twin: %s not seen", benignAddr)
			}
		})
	}
}

func TestRelaxJSON(t *testing.T) {
	for in, want := range map[string]string{
		`{a:1e5,'b':'it\'s "x"',c:[1,2,],/*x*/d:-2.5E-3,}`: `{"a":1e5,"b":"it's \"x\"","c":[1,2],"d":-2.5E-3}`,
		"{\"u\":\"a,}\", // x\n v: true, w: null, x: NaN}": `{"u":"a,}","v":true,"w":null,"x":"NaN"}`,
		`{"a":"\"'",}`: `{"a":"\"'"}`,
	} {
		n, err := parseJSON(relaxJSON([]byte(in)))
		if err != nil {
			t.Errorf("%s: %v (relaxed %s)", in, err, relaxJSON([]byte(in)))
			continue
		}
		if got := string(n.json()); got != want {
			t.Errorf("%s -> %s, want %s", in, got, want)
		}
	}
}

// SendGrid's SMTP relay delivers to the "to" list of an X-SMTPAPI header:
// recipients that appear in no To, Cc or Bcc header.
func TestSMTPAPIHeaderRecipients(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		foreign bool
	}{{evilAddr, true}, {benignAddr, false}} {
		session := "EHLO c\r\nAUTH PLAIN AGFwaWtleQBzZWNyZXQ=\r\nMAIL FROM:<agent@company.com>\r\nRCPT TO:<alice@company.com>\r\nDATA\r\n" +
			"From: agent@company.com\r\nTo: alice@company.com\r\n" +
			"X-SMTPAPI: {\"to\": [\"alice@company.com\",\r\n \"P <" + tc.addr + ">\"], \"category\": \"x\"}\r\n" +
			"Subject: s\r\n\r\nhi\r\n.\r\n"
		s := NewSMTPSession()
		msgs := s.Feed([]byte(session))
		if len(msgs) != 1 {
			t.Fatalf("%d messages", len(msgs))
		}
		blind := addrs(msgs[0].BlindRecipients())
		if got := slices.Contains(blind, tc.addr); !got {
			t.Errorf("%s not among blind recipients %v", tc.addr, blind)
		}
		for _, a := range msgs[0].Recipients() {
			if !allowedDomain(a.Domain()) != (tc.foreign && a.Addr == evilAddr) {
				t.Errorf("recipient %s", a.Addr)
			}
		}
	}
	// The same header given as a custom header of a JSON API.
	msgs, err := FromHTTP(jsonReq("api.sendgrid.com", "/v3/mail/send", `{"personalizations":[{"to":[{"email":"alice@company.com"}]}],"headers":{"X-SMTPAPI":"{\"to\":[\"`+evilAddr+`\"]}"}}`))
	if err != nil || len(msgs) != 1 || !slices.Contains(addrs(msgs[0].BlindRecipients()), evilAddr) {
		t.Errorf("json api header: %v, %v", err, msgs)
	}
}
