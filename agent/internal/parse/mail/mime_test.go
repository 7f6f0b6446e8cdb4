package mail

import (
	"bytes"
	"strings"
	"testing"
)

func TestParseRFC822(t *testing.T) {
	m := ParseRFC822([]byte(rawMIME), "test", "")
	if m.Subject != "Invoice €" {
		t.Errorf("subject %q", m.Subject)
	}
	if m.Cc[0].Name != "Bob Böhm" {
		t.Errorf("cc name %q", m.Cc[0].Name)
	}
	if !strings.Contains(m.TextBody, "Hello €") {
		t.Errorf("text %q", m.TextBody)
	}
	if len(m.Attachments) != 1 || !bytes.Contains(m.Attachments[0].Content, []byte("OPENSSH PRIVATE KEY")) {
		t.Errorf("attachments %+v", m.Attachments)
	}
}

func TestParseRFC822Forwarded(t *testing.T) {
	raw := "To: x@gmail.com\r\nSubject: report\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n" +
		"--b\r\nContent-Type: message/rfc822\r\n\r\n" +
		"From: boss@company.com\r\nSubject: secret plans\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" +
		"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=FC=DFe\r\n" +
		"--b--\r\n"
	m := ParseRFC822([]byte(raw), "test", "")
	if got := m.ForwardMarkers(); len(got) != 1 || got[0] != "attachment:message/rfc822" {
		t.Errorf("markers %v", got)
	}
	if !strings.Contains(strings.Join(m.Extra, "|"), "secret plans") || !strings.Contains(strings.Join(m.Extra, "|"), "Grüße") {
		t.Errorf("inner message not extracted: %q", m.Extra)
	}
	if addrs(m.To)[0] != "x@gmail.com" {
		t.Errorf("inner message addresses leaked into outer: %v", addrs(m.To))
	}
}

func TestParseRFC822Garbage(t *testing.T) {
	for _, in := range []string{"", "\r\n", "no header here\r\nat all", "To: a@b.c\r\nContent-Type: multipart/mixed; boundary=\"zz\"\r\n\r\nnot really multipart",
		"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64"} {
		m := ParseRFC822([]byte(in), "t", "")
		if m == nil {
			t.Fatal("nil message")
		}
	}
	m := ParseRFC822([]byte("no header here\r\nAKIA at all"), "t", "")
	if !strings.Contains(m.TextBody, "AKIA") {
		t.Errorf("headerless input must be kept as text, got %q", m.TextBody)
	}
}

func TestForwardMarkers(t *testing.T) {
	tests := []struct {
		subject, body string
		want          bool
	}{
		{"Fwd: hello", "", true},
		{"FW: hello", "", true},
		{"Re: Fwd: hello", "", true},
		{"[ext] WG: Rechnung", "", true},
		{"TR: facture", "", true},
		{"hello", "---------- Forwarded message ---------\nFrom: x", true},
		{"hello", "Begin forwarded message:\n", true},
		{"hello", "-----Original Message-----\n", true},
		{"Re: hello", "thanks", false},
		{"Forward planning for Q3", "", false},
		{"Fwdx", "", false},
		{"", "forwarded to you by the system", false},
	}
	for _, tt := range tests {
		m := &Message{Subject: tt.subject, TextBody: tt.body}
		if got := len(m.ForwardMarkers()) > 0; got != tt.want {
			t.Errorf("subject %q body %q: forward = %v", tt.subject, tt.body, got)
		}
	}
}

func TestDecodeBase64Field(t *testing.T) {
	for _, in := range []string{"aGVsbG8=", "aGVsbG8", "aGVs\r\nbG8="} {
		if got := string(decodeBase64Field(in)); got != "hello" {
			t.Errorf("%q -> %q", in, got)
		}
	}
	if got := string(decodeBase64Field("not base64!")); got != "not base64!" {
		t.Errorf("non-base64 kept as text, got %q", got)
	}
}

func TestIndexFold(t *testing.T) {
	tests := []struct {
		s, sub string
		want   int
	}{
		{"xx Begin FORWARDED message: y", "begin forwarded message:", 3},
		{"begin", "begin forwarded", -1},
		{"", "a", -1},
		{"aBc", "bc", 1},
		{"bbbc", "bc", 2},
	}
	for _, tt := range tests {
		if got := IndexFold(tt.s, tt.sub); got != tt.want {
			t.Errorf("IndexFold(%q, %q) = %d, want %d", tt.s, tt.sub, got, tt.want)
		}
	}
}

func TestKeyEqual(t *testing.T) {
	for _, c := range [][2]string{{"reply_to", "replyTo"}, {"Reply-To", "reply_to"}, {"BCC", "bcc"}, {"_to_", "TO"}} {
		if !keyEqual(c[0], c[1]) {
			t.Errorf("%q != %q", c[0], c[1])
		}
	}
	for _, c := range [][2]string{{"to", "too"}, {"bcc", "cc"}, {"", "a"}, {"toAddresses", "to"}} {
		if keyEqual(c[0], c[1]) {
			t.Errorf("%q == %q", c[0], c[1])
		}
	}
}

func TestSkipEnvelopeLines(t *testing.T) {
	for in, want := range map[string]string{
		"From a@b.c Mon Dec  7 17:57:46 2026\r\nTo: x@y.z\r\n": "To: x@y.z\r\n",
		"\r\n\nFrom : a@b.c\r\n":                               "From : a@b.c\r\n",
		"From: a@b.c\r\n":                                      "From: a@b.c\r\n",
		"From nobody":                                          "From nobody",
	} {
		if got := string(skipEnvelopeLines([]byte(in))); got != want {
			t.Errorf("%q -> %q, want %q", in, got, want)
		}
	}
}
