package mail

import "testing"

// FuzzMultipart walks an arbitrary multipart body under an arbitrary
// boundary (multipart/form-data of the mail APIs, multipart/* of raw
// messages): at most MaxParts parts, within the body budget.
func FuzzMultipart(f *testing.F) {
	f.Add("zz", []byte("--zz\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\na@b.c\r\n--zz\r\nContent-Disposition: form-data; name=\"bcc\"\r\n\r\nphan@giftshop.club\r\n--zz--\r\n"))
	f.Add("o", []byte("--o\nContent-Type: multipart/alternative; boundary=i\n\n--i\nContent-Transfer-Encoding: base64\n\naGk=\n--i--\n--o\nContent-Type: message/rfc822\n\nBcc: x@y.z\n\nhi\n--o--\n"))
	f.Add("b", []byte("--b\r\nContent-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nphan=40giftshop.club=\r\n\r\n--b"))
	f.Fuzz(func(t *testing.T, boundary string, body []byte) {
		m := &Message{}
		walkMultipart(m, body, boundary, 0)
		if m.used > MaxBodyBytes {
			t.Fatalf("budget exceeded: %d", m.used)
		}
		if n := len(m.Attachments); n > MaxParts {
			t.Fatalf("%d attachments", n)
		}
		_ = m.Recipients()
		_ = m.ForwardMarkers()
	})
}
