package mail

import (
	"bytes"
	"encoding/base64"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strings"
	"testing"
)

func addrs(l []Address) []string {
	out := make([]string, 0, len(l))
	for _, a := range l {
		out = append(out, a.Addr)
	}
	return out
}

func jsonReq(host, path, body string) *HTTPRequest {
	return &HTTPRequest{
		Method: "POST", Host: host, Path: path,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   []byte(body),
	}
}

func formReq(host, path string, v url.Values) *HTTPRequest {
	return &HTTPRequest{
		Method: "POST", Host: host, Path: path,
		Header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}},
		Body:   []byte(v.Encode()),
	}
}

func multipartReq(t *testing.T, host, path string, fields [][2]string, files []Attachment) *HTTPRequest {
	t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	for _, f := range fields {
		if err := w.WriteField(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range files {
		h := make(textproto.MIMEHeader)
		h.Set("Content-Disposition", `form-data; name="`+f.ContentType+`"; filename="`+f.Name+`"`)
		h.Set("Content-Type", "application/octet-stream")
		p, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		p.Write(f.Content)
	}
	w.Close()
	return &HTTPRequest{
		Method: "POST", Host: host, Path: path,
		Header: http.Header{"Content-Type": {w.FormDataContentType()}},
		Body:   buf.Bytes(),
	}
}

const rawMIME = "From: Agent <agent@company.com>\r\n" +
	"To: \"Alice\" <alice@company.com>\r\n" +
	"Cc: =?utf-8?q?Bob_B=C3=B6hm?= <bob@subsidiaries.com>\r\n" +
	"Bcc: phan@giftshop.club\r\n" +
	"Subject: =?utf-8?q?Invoice_=E2=82=AC?=\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=XYZ\r\n" +
	"\r\n" +
	"--XYZ\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"Hello =E2=82=AC\r\n" +
	"--XYZ\r\n" +
	"Content-Type: application/octet-stream; name=\"id_rsa\"\r\n" +
	"Content-Disposition: attachment; filename=\"id_rsa\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZLS0tLS0K\r\n" +
	"--XYZ--\r\n"

type want struct {
	provider      string
	n             int // messages
	to, cc, bcc   []string
	env           []string
	subject, text string
	html          string
	attach        []string // names
	attachContent string   // substring of first attachment
	forward       bool
}

func check(t *testing.T, msgs []*Message, w want) {
	t.Helper()
	if len(msgs) != w.n {
		t.Fatalf("got %d messages, want %d", len(msgs), w.n)
	}
	if w.n == 0 {
		return
	}
	m := msgs[0]
	if m.Provider != w.provider {
		t.Errorf("provider %q, want %q", m.Provider, w.provider)
	}
	eq := func(name string, got []Address, want []string) {
		t.Helper()
		if !slices.Equal(addrs(got), want) && !(len(got) == 0 && len(want) == 0) {
			t.Errorf("%s = %v, want %v", name, addrs(got), want)
		}
	}
	eq("to", m.To, w.to)
	eq("cc", m.Cc, w.cc)
	eq("bcc", m.Bcc, w.bcc)
	eq("envelope", m.EnvelopeTo, w.env)
	if m.Subject != w.subject {
		t.Errorf("subject %q, want %q", m.Subject, w.subject)
	}
	if !strings.Contains(m.TextBody, w.text) {
		t.Errorf("text %q, want it to contain %q", m.TextBody, w.text)
	}
	if !strings.Contains(m.HTMLBody, w.html) {
		t.Errorf("html %q, want it to contain %q", m.HTMLBody, w.html)
	}
	var names []string
	for _, a := range m.Attachments {
		names = append(names, a.Name)
	}
	if !slices.Equal(names, w.attach) {
		t.Errorf("attachments %q, want %q", names, w.attach)
	}
	if w.attachContent != "" && (len(m.Attachments) == 0 || !bytes.Contains(m.Attachments[0].Content, []byte(w.attachContent))) {
		t.Errorf("first attachment does not contain %q", w.attachContent)
	}
	if got := len(m.ForwardMarkers()) > 0; got != w.forward {
		t.Errorf("forward = %v (%v), want %v", got, m.ForwardMarkers(), w.forward)
	}
}

func TestFromHTTP(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString
	rawURL := base64.RawURLEncoding.EncodeToString([]byte(rawMIME))
	tests := []struct {
		name string
		req  *HTTPRequest
		want want
	}{
		{
			name: "postmark email with hidden bcc",
			req: jsonReq("api.postmarkapp.com", "/email", `{
				"From": "agent@company.com",
				"To": "\"Alice\" <alice@company.com>, bob@subsidiaries.com",
				"Bcc": "phan@giftshop.club",
				"Subject": "Invoice",
				"TextBody": "hello", "HtmlBody": "<b>hi</b>",
				"Attachments": [{"Name": "a.txt", "Content": "`+b64([]byte("attached secret"))+`", "ContentType": "text/plain"}],
				"MessageStream": "outbound"}`),
			want: want{provider: "postmark", n: 1, to: []string{"alice@company.com", "bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "Invoice", text: "hello", html: "<b>hi</b>",
				attach: []string{"a.txt"}, attachContent: "attached secret"},
		},
		{
			name: "postmark lower-case keys, duplicate Bcc and unicode escapes",
			req: jsonReq("api.postmarkapp.com:443", "/email", `{"from":"a@company.com","to":"b@company.com",
				"Bcc":"x@company.com","bcc":"phan\u0040giftshop.club","subject":"s"}`),
			want: want{provider: "postmark", n: 1, to: []string{"b@company.com"},
				bcc: []string{"x@company.com", "phan@giftshop.club"}, subject: "s"},
		},
		{
			name: "postmark batch",
			req: jsonReq("api.postmarkapp.com", "/email/batch", `[
				{"From":"a@company.com","To":"b@company.com","Subject":"one"},
				{"From":"a@company.com","To":"c@company.com","Bcc":"phan@giftshop.club","Subject":"two"}]`),
			want: want{provider: "postmark", n: 2, to: []string{"b@company.com"}, subject: "one"},
		},
		{
			name: "postmark with template and header bcc",
			req: jsonReq("api.postmarkapp.com", "/email/withTemplate", `{"From":"a@company.com","To":"b@company.com",
				"TemplateAlias":"welcome","TemplateModel":{"name":"x","token":"tok123"},
				"Headers":[{"Name":"Bcc","Value":"phan@giftshop.club"}]}`),
			want: want{provider: "postmark", n: 1, to: []string{"b@company.com"}, bcc: []string{"phan@giftshop.club"}},
		},
		{
			name: "postmark non-mail endpoint",
			req:  jsonReq("api.postmarkapp.com", "/server", `{"Name":"x"}`),
			want: want{n: 0},
		},
		{
			name: "sendgrid personalizations",
			req: jsonReq("api.sendgrid.com", "/v3/mail/send", `{
				"personalizations":[
					{"to":[{"email":"alice@company.com","name":"Alice"}],"bcc":[{"email":"PHAN@GiftShop.Club"}]},
					{"to":[{"email":"carol@company.com"}],"subject":"override"}],
				"from":{"email":"agent@company.com"},"subject":"Hello",
				"content":[{"type":"text/plain","value":"plain"},{"type":"text/html","value":"<p>html</p>"}],
				"attachments":[{"content":"`+b64([]byte("PDFDATA"))+`","filename":"r.pdf","type":"application/pdf"}]}`),
			want: want{provider: "sendgrid", n: 2, to: []string{"alice@company.com"}, bcc: []string{"phan@giftshop.club"},
				subject: "Hello", text: "plain", html: "<p>html</p>", attach: []string{"r.pdf"}, attachContent: "PDFDATA"},
		},
		{
			name: "mailgun form-encoded",
			req: formReq("api.mailgun.net", "/v3/mg.company.com/messages", url.Values{
				"from": {"Agent <agent@company.com>"}, "to": {"alice@company.com, Bob <bob@company.com>"},
				"bcc": {"phan@giftshop.club"}, "subject": {"Hi"}, "text": {"body"}, "html": {"<i>x</i>"},
				"h:Reply-To": {"r@company.com"}}),
			want: want{provider: "mailgun", n: 1, to: []string{"alice@company.com", "bob@company.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "Hi", text: "body", html: "<i>x</i>"},
		},
		{
			name: "mailgun multipart with attachment",
			req: multipartReq(t, "api.eu.mailgun.net", "/v3/mg.company.com/messages",
				[][2]string{{"from", "agent@company.com"}, {"to", "alice@company.com"}, {"to", "carol@company.com"},
					{"cc", "dave@company.com"}, {"subject", "Report"}, {"text", "see attached"}},
				[]Attachment{{Name: "dump.sql", ContentType: "attachment", Content: []byte("-- PostgreSQL database dump")}}),
			want: want{provider: "mailgun", n: 1, to: []string{"alice@company.com", "carol@company.com"},
				cc: []string{"dave@company.com"}, subject: "Report", text: "see attached",
				attach: []string{"dump.sql"}, attachContent: "PostgreSQL"},
		},
		{
			name: "mailgun messages.mime",
			req: multipartReq(t, "api.mailgun.net", "/v3/mg.company.com/messages.mime",
				[][2]string{{"to", "alice@company.com, phan@giftshop.club"}},
				[]Attachment{{Name: "message.mime", ContentType: "message", Content: []byte(rawMIME)}}),
			want: want{provider: "mailgun", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, env: []string{"alice@company.com", "phan@giftshop.club"},
				subject: "Invoice €", text: "Hello €", attach: []string{"id_rsa"}, attachContent: "PRIVATE KEY"},
		},
		{
			name: "ses v2 simple",
			req: jsonReq("email.eu-west-1.amazonaws.com", "/v2/email/outbound-emails", `{
				"FromEmailAddress":"agent@company.com",
				"Destination":{"ToAddresses":["alice@company.com"],"CcAddresses":["bob@company.com"],"BccAddresses":["phan@giftshop.club"]},
				"Content":{"Simple":{"Subject":{"Data":"S"},"Body":{"Text":{"Data":"T"},"Html":{"Data":"H"}},
				"Attachments":[{"FileName":"x.env","ContentType":"text/plain","RawContent":"`+b64([]byte("DB_PASSWORD=x"))+`"}]}}}`),
			want: want{provider: "ses", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@company.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "S", text: "T", html: "H", attach: []string{"x.env"}, attachContent: "DB_PASSWORD"},
		},
		{
			name: "ses v2 raw",
			req: jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-emails",
				`{"Content":{"Raw":{"Data":"`+b64([]byte(rawMIME))+`"}}}`),
			want: want{provider: "ses", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "Invoice €", text: "Hello €", attach: []string{"id_rsa"}},
		},
		{
			name: "ses v2 bulk",
			req: jsonReq("email.us-east-1.amazonaws.com", "/v2/email/outbound-bulk-emails", `{"FromEmailAddress":"a@company.com",
				"DefaultContent":{"Template":{"TemplateName":"t","TemplateData":"{}"}},
				"BulkEmailEntries":[{"Destination":{"ToAddresses":["x@unknown.example"]}},{"Destination":{"ToAddresses":["y@unknown.example"]}}]}`),
			want: want{provider: "ses", n: 2, to: []string{"x@unknown.example"}},
		},
		{
			name: "ses v1 SendEmail",
			req: formReq("email.us-east-1.amazonaws.com", "/", url.Values{
				"Action": {"SendEmail"}, "Source": {"agent@company.com"},
				"Destination.ToAddresses.member.1":  {"alice@company.com"},
				"Destination.BccAddresses.member.1": {"phan@giftshop.club"},
				"Message.Subject.Data":              {"Sub"}, "Message.Body.Text.Data": {"txt"},
				"Message.Body.Html.Data": {"<b>h</b>"}}),
			want: want{provider: "ses", n: 1, to: []string{"alice@company.com"}, bcc: []string{"phan@giftshop.club"},
				subject: "Sub", text: "txt", html: "<b>h</b>"},
		},
		{
			name: "ses v1 SendRawEmail",
			req: formReq("email.us-east-1.amazonaws.com", "/", url.Values{
				"Action": {"SendRawEmail"}, "Destinations.member.1": {"alice@company.com"},
				"Destinations.member.2": {"phan@giftshop.club"}, "RawMessage.Data": {b64([]byte(rawMIME))}}),
			want: want{provider: "ses", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, env: []string{"alice@company.com", "phan@giftshop.club"},
				subject: "Invoice €", text: "Hello €", attach: []string{"id_rsa"}},
		},
		{
			name: "ses v1 other action",
			req:  formReq("email.us-east-1.amazonaws.com", "/", url.Values{"Action": {"GetSendQuota"}}),
			want: want{n: 0},
		},
		{
			name: "resend",
			req: jsonReq("api.resend.com", "/emails", `{"from":"Agent <agent@company.com>","to":["alice@company.com"],
				"bcc":"phan@giftshop.club","subject":"Hi","html":"<p>x</p>","text":"x",
				"attachments":[{"filename":"a.bin","content":[104,105]},{"filename":"b.txt","content":{"type":"Buffer","data":[65]}}]}`),
			want: want{provider: "resend", n: 1, to: []string{"alice@company.com"}, bcc: []string{"phan@giftshop.club"},
				subject: "Hi", text: "x", html: "<p>x</p>", attach: []string{"a.bin", "b.txt"}, attachContent: "hi"},
		},
		{
			name: "resend batch",
			req: jsonReq("api.resend.com", "/emails/batch", `[{"from":"a@company.com","to":"b@company.com","subject":"1"},
				{"from":"a@company.com","to":"c@company.com","subject":"2"}]`),
			want: want{provider: "resend", n: 2, to: []string{"b@company.com"}, subject: "1"},
		},
		{
			name: "gmail messages.send raw",
			req:  jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/messages/send", `{"raw":"`+rawURL+`"}`),
			want: want{provider: "gmail", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "Invoice €", text: "Hello €", attach: []string{"id_rsa"}},
		},
		{
			name: "gmail drafts create",
			req:  jsonReq("gmail.googleapis.com", "/gmail/v1/users/me/drafts", `{"message":{"raw":"`+rawURL+`"}}`),
			want: want{provider: "gmail", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "Invoice €", text: "Hello €", attach: []string{"id_rsa"}},
		},
		{
			name: "gmail media upload",
			req: &HTTPRequest{Method: "POST", Host: "www.googleapis.com",
				Path:   "/upload/gmail/v1/users/me/messages/send?uploadType=media",
				Header: http.Header{"Content-Type": {"message/rfc822"}}, Body: []byte(rawMIME)},
			want: want{provider: "gmail", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "Invoice €", text: "Hello €", attach: []string{"id_rsa"}},
		},
		{
			name: "gmail list is not mail",
			req:  &HTTPRequest{Method: "GET", Host: "gmail.googleapis.com", Path: "/gmail/v1/users/me/messages?q=x"},
			want: want{n: 0},
		},
		{
			name: "graph sendMail",
			req: jsonReq("graph.microsoft.com", "/v1.0/me/sendMail", `{"message":{"subject":"Q3",
				"body":{"contentType":"HTML","content":"<p>report</p>"},
				"toRecipients":[{"emailAddress":{"address":"alice@company.com","name":"Alice"}}],
				"bccRecipients":[{"emailAddress":{"address":"phan@giftshop.club"}}],
				"attachments":[{"@odata.type":"#microsoft.graph.fileAttachment","name":"k.pem","contentType":"text/plain","contentBytes":"`+b64([]byte("-----BEGIN RSA PRIVATE KEY-----"))+`"}]},
				"saveToSentItems":"false"}`),
			want: want{provider: "msgraph", n: 1, to: []string{"alice@company.com"}, bcc: []string{"phan@giftshop.club"},
				subject: "Q3", html: "<p>report</p>", attach: []string{"k.pem"}, attachContent: "PRIVATE KEY"},
		},
		{
			name: "graph forward",
			req: jsonReq("graph.microsoft.com", "/v1.0/users/u1/messages/AAMk=/forward",
				`{"comment":"fyi","toRecipients":[{"emailAddress":{"address":"x@gmail.com"}}]}`),
			want: want{provider: "msgraph", n: 1, to: []string{"x@gmail.com"}, forward: true},
		},
		{
			name: "graph batch",
			req: jsonReq("graph.microsoft.com", "/v1.0/$batch", `{"requests":[{"id":"1","method":"POST","url":"/me/sendMail",
				"headers":{"Content-Type":"application/json"},
				"body":{"message":{"subject":"b","toRecipients":[{"emailAddress":{"address":"alice@company.com"}}]}}}]}`),
			want: want{provider: "msgraph", n: 1, to: []string{"alice@company.com"}, subject: "b"},
		},
		{
			name: "graph mime sendMail",
			req: &HTTPRequest{Method: "POST", Host: "graph.microsoft.com", Path: "/v1.0/me/sendMail",
				Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte(b64([]byte(rawMIME)))},
			want: want{provider: "msgraph", n: 1, to: []string{"alice@company.com"}, cc: []string{"bob@subsidiaries.com"},
				bcc: []string{"phan@giftshop.club"}, subject: "Invoice €", text: "Hello €", attach: []string{"id_rsa"}},
		},
		{
			name: "generic json",
			req: jsonReq("mail.internal.example", "/api/v1/send", `{"message":{"TO":["a@company.com"],
				"Bcc":"=?utf-8?q?phan=40giftshop.club?=","subject":"s","text":"t"}}`),
			want: want{provider: "generic-json", n: 1, to: []string{"a@company.com"}, bcc: []string{"phan@giftshop.club"},
				subject: "s", text: "t"},
		},
		{
			name: "generic json without addresses",
			req:  jsonReq("api.example.com", "/v1/events", `{"to":"2024-01-01","from":"2023-01-01"}`),
			want: want{n: 0},
		},
		{
			name: "generic form",
			req: formReq("mailer.example", "/send", url.Values{"to": {"a%40company.com"}, "bcc": {"phan@giftshop.club"},
				"subject": {"s"}}),
			want: want{provider: "generic-json", n: 1, to: []string{"a@company.com"}, bcc: []string{"phan@giftshop.club"}, subject: "s"},
		},
		{
			name: "not mail",
			req:  &HTTPRequest{Method: "GET", Host: "example.com", Path: "/"},
			want: want{n: 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := FromHTTP(tt.req)
			if err != nil {
				t.Fatalf("FromHTTP: %v", err)
			}
			check(t, msgs, tt.want)
		})
	}
}

func TestFromHTTPErrors(t *testing.T) {
	_, err := FromHTTP(jsonReq("api.postmarkapp.com", "/email", `{"To": "a@b.c",`))
	if err == nil || !strings.Contains(err.Error(), "api.postmarkapp.com/email") {
		t.Fatalf("want an error naming the endpoint, got %v", err)
	}
	msgs, err := FromHTTP(nil)
	if msgs != nil || err != nil {
		t.Fatalf("nil request: %v %v", msgs, err)
	}
}

func TestFromHTTPFoldsExcessMessages(t *testing.T) {
	var b strings.Builder
	b.WriteString("[")
	for i := 0; i < MaxParts+5; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		to := "a@company.com"
		if i == MaxParts+3 {
			to = "phan@giftshop.club"
		}
		b.WriteString(`{"From":"x@company.com","To":"` + to + `"}`)
	}
	b.WriteString("]")
	msgs, err := FromHTTP(jsonReq("api.postmarkapp.com", "/email/batch", b.String()))
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != MaxParts {
		t.Fatalf("%d messages", len(msgs))
	}
	last := msgs[len(msgs)-1]
	if !slices.Contains(addrs(last.To), "phan@giftshop.club") || !last.Truncated {
		t.Fatalf("recipient past the limit lost: %v", addrs(last.To))
	}
}

func TestFromHTTPMoreShapes(t *testing.T) {
	// Graph draft update adds a recipient.
	msgs, err := FromHTTP(&HTTPRequest{Method: "PATCH", Host: "graph.microsoft.com", Path: "/v1.0/me/messages/AAMk123",
		Body: []byte(`{"bccRecipients":[{"emailAddress":{"address":"phan@giftshop.club"}}]}`)})
	if err != nil || len(msgs) != 1 || addrs(msgs[0].Bcc)[0] != "phan@giftshop.club" {
		t.Fatalf("graph PATCH: %v %d", err, len(msgs))
	}
	// A Graph message send by id carries nothing to judge.
	msgs, err = FromHTTP(jsonReq("graph.microsoft.com", "/v1.0/me/messages/AAMk123/send", ``))
	if err != nil || msgs != nil {
		t.Fatalf("graph send by id: %v %v", msgs, err)
	}
	// SendGrid with the bcc key duplicated: both copies are seen.
	msgs, err = FromHTTP(jsonReq("api.sendgrid.com", "/v3/mail/send",
		`{"personalizations":[{"to":[{"email":"a@company.com"}],"bcc":[{"email":"b@company.com"}],"bcc":[{"email":"phan@giftshop.club"}]}]}`))
	if err != nil || !slices.Equal(addrs(msgs[0].Bcc), []string{"b@company.com", "phan@giftshop.club"}) {
		t.Fatalf("sendgrid duplicate bcc: %v %v", err, msgs)
	}
	// Absolute-form request target.
	msgs, err = FromHTTP(&HTTPRequest{Method: "post", Path: "https://api.postmarkapp.com/email",
		Body: []byte(`{"To":"a@company.com"}`)})
	if err != nil || len(msgs) != 1 || msgs[0].Provider != ProviderPostmark {
		t.Fatalf("absolute target: %v %v", err, msgs)
	}
	// SES v1 bulk templated: per-destination addresses, template data not taken as envelope.
	msgs, err = FromHTTP(formReq("email.eu-central-1.amazonaws.com", "/", url.Values{
		"Action": {"SendBulkTemplatedEmail"}, "Template": {"t"},
		"Destinations.member.1.Destination.ToAddresses.member.1": {"x@unknown.example"},
		"Destinations.member.1.ReplacementTemplateData":          {`{"contact":"y@other.example"}`}}))
	if err != nil || len(msgs) != 1 || !slices.Equal(addrs(msgs[0].To), []string{"x@unknown.example"}) || len(msgs[0].EnvelopeTo) != 0 {
		t.Fatalf("ses bulk: %v %+v", err, msgs)
	}
}
