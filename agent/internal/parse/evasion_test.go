package parse

import (
	"bytes"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
	"github.com/klauspost/compress/zstd"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// Body codings and chunk framings that an attacker may use to hide a
// recipient from the parser. Each row is paired with a benign twin that
// uses the same encoding with allowed recipients only: the hidden Bcc must
// be found, and the twin must yield no foreign recipient.

const (
	hiddenBody = `{"From":"agent@company.com","To":"alice@company.com","Bcc":"phan@giftshop.club","Subject":"x","TextBody":"hi"}`
	benignBody = `{"From":"agent@company.com","To":"alice@company.com","Bcc":"bob@subsidiaries.com","Subject":"x","TextBody":"hi"}`
)

func brEnc(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := brotli.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdEnc(t testing.TB, b []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzEnc(t *testing.T, b []byte) []byte { return gz(t, b) }

// chunk frames b as chunks of n bytes, each size line carrying ext.
func chunk(b []byte, n int, ext string) string {
	var s strings.Builder
	for len(b) > 0 {
		k := min(n, len(b))
		fmt.Fprintf(&s, "%x%s\r\n%s\r\n", k, ext, b[:k])
		b = b[k:]
	}
	return s.String()
}

// foreignRecipients parses wire as one request and returns the recipients
// of its mail messages outside the allowed domains, and whether
// phan@giftshop.club is among the blind recipients.
func foreignRecipients(t *testing.T, wire string) (foreign []string, hiddenBcc bool) {
	t.Helper()
	// Written in pieces, as a client writing chunk by chunk does.
	var calls [][]byte
	for b := []byte(wire); len(b) > 0; {
		k := min(1500, len(b))
		calls = append(calls, b[:k])
		b = b[k:]
	}
	msgs, _ := collect(t, false, calls...)
	if len(msgs) != 1 {
		t.Fatalf("got %d http messages, want 1", len(msgs))
	}
	m := msgs[0]
	req := &mail.HTTPRequest{Method: m.Method, Host: m.Host, Path: m.Target, Header: http.Header(m.Header), Body: m.Data}
	mails, err := mail.FromHTTP(req)
	if err != nil {
		t.Logf("mail: %v", err)
	}
	for _, ml := range mails {
		for _, a := range ml.Recipients() {
			if d := a.Domain(); d != "company.com" && d != "subsidiaries.com" {
				foreign = append(foreign, a.Addr)
			}
		}
		for _, a := range ml.BlindRecipients() {
			hiddenBcc = hiddenBcc || a.Addr == "phan@giftshop.club"
		}
	}
	return foreign, hiddenBcc
}

func TestEvasionBodyCodings(t *testing.T) {
	type enc func(t *testing.T, body []byte) string // returns headers + body
	cl := func(hdr string, b []byte) string {
		return fmt.Sprintf("%sContent-Length: %d\r\n\r\n%s", hdr, len(b), b)
	}
	rows := []struct {
		name string
		wire enc
	}{
		{"br", func(t *testing.T, b []byte) string { return cl("Content-Encoding: br\r\n", brEnc(t, b)) }},
		{"zstd", func(t *testing.T, b []byte) string { return cl("Content-Encoding: zstd\r\n", zstdEnc(t, b)) }},
		{"gzip-then-br", func(t *testing.T, b []byte) string {
			return cl("Content-Encoding: gzip, br\r\n", brEnc(t, gzEnc(t, b)))
		}},
		{"br-zstd-gzip-upper-case", func(t *testing.T, b []byte) string {
			return cl("Content-Encoding: BR,ZSTD , identity,GZIP\r\n", gzEnc(t, zstdEnc(t, brEnc(t, b))))
		}},
		{"two-content-encoding-lines", func(t *testing.T, b []byte) string {
			return cl("Content-Encoding: zstd\r\nContent-Encoding: gzip\r\n", gzEnc(t, zstdEnc(t, b)))
		}},
		{"gzip-transfer-coding", func(t *testing.T, b []byte) string {
			return "Transfer-Encoding: gzip, chunked\r\n\r\n" + chunk(gzEnc(t, b), 7, "") + "0\r\n\r\n"
		}},
		{"br-content-and-gzip-transfer", func(t *testing.T, b []byte) string {
			return "Content-Encoding: br\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunk(gzEnc(t, brEnc(t, b)), 9, "") + "0\r\n\r\n"
		}},
		{"gzip-trailing-garbage", func(t *testing.T, b []byte) string {
			return cl("Content-Encoding: gzip\r\n", append(gzEnc(t, b), "garbage"...))
		}},
		{"chunk-extensions", func(t *testing.T, b []byte) string {
			return "Transfer-Encoding: chunked\r\n\r\n" + chunk(b, 5, `;foo=bar;q="a;b"`) + "0;last\r\n\r\n"
		}},
		{"chunk-extension-whitespace", func(t *testing.T, b []byte) string {
			return "Transfer-Encoding: chunked\r\n\r\n" + chunk(b, 11, " ; x") + "0\r\n\r\n"
		}},
		{"chunk-size-leading-zeros", func(t *testing.T, b []byte) string {
			return "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%020x\r\n%s\r\n", len(b), b) + "00000000000000000000\r\n\r\n"
		}},
		{"chunk-extension-long", func(t *testing.T, b []byte) string {
			return "Transfer-Encoding: chunked\r\n\r\n" + chunk(b, 40, ";x="+strings.Repeat("a", 10000)) + "0\r\n\r\n"
		}},
		{"chunked-trailers", func(t *testing.T, b []byte) string {
			return "Transfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n" + chunk(b, 16, "") +
				"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
		}},
		{"chunked-zstd-extensions-trailer", func(t *testing.T, b []byte) string {
			return "Transfer-Encoding: chunked\r\nContent-Encoding: zstd\r\n\r\n" + chunk(zstdEnc(t, b), 3, ";e=1") +
				"0\r\nX-T: 1\r\n\r\n"
		}},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			head := "POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Type: application/json\r\n"
			foreign, hidden := foreignRecipients(t, head+r.wire(t, []byte(hiddenBody)))
			if !hidden || !slices.Contains(foreign, "phan@giftshop.club") {
				t.Errorf("hidden Bcc not seen: foreign %v", foreign)
			}
			foreign, _ = foreignRecipients(t, head+r.wire(t, []byte(benignBody)))
			if len(foreign) > 0 {
				t.Errorf("benign twin: foreign recipients %v", foreign)
			}
		})
	}
}

func TestDecompressionBombsStopAtLimit(t *testing.T) {
	plain := make([]byte, 10<<20)
	const limit = 1 << 20
	for _, tc := range []struct {
		enc  string
		body []byte
	}{
		{"br", brEnc(t, plain)},
		{"zstd", zstdEnc(t, plain)},
		{"gzip, br", brEnc(t, gzEnc(t, plain))},
		{"zstd, gzip", gzEnc(t, zstdEnc(t, plain))},
	} {
		p := &httpParser{limits: Limits{MaxDecoded: limit}}
		p.limits.setDefaults()
		var m *Message
		p.feed(fmt.Appendf(nil, "POST / HTTP/1.1\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s", tc.enc, len(tc.body), tc.body), 0, 1, func(x *Message) { m = x })
		if m == nil || len(m.Data) != limit || !m.Truncated || m.DecodeErr != nil || m.Encoding != tc.enc {
			t.Errorf("%s: %d compressed bytes gave %+v", tc.enc, len(tc.body), m.Body)
		}
	}
}

func TestZstdWindowOverLimitIsRefused(t *testing.T) {
	// A frame declaring a 64 MiB window (Window_Descriptor exponent 16):
	// the decoder would have to allocate it, and RFC 9659 lets a receiver
	// refuse it. One raw last block holds "abc".
	var buf bytes.Buffer
	buf.Write([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 16 << 3, 0x19, 0x00, 0x00})
	buf.WriteString("abc")
	m := &Message{Head: Head{Header: map[string][]string{"Content-Encoding": {"zstd"}}}, Body: Body{Data: buf.Bytes()}}
	decodeBody(m, 1<<20)
	if m.DecodeErr == nil || !bytes.Equal(m.Data, buf.Bytes()) {
		t.Fatalf("decode error %v, %d bytes", m.DecodeErr, len(m.Data))
	}
}

func TestUnknownCodingKeepsRawBody(t *testing.T) {
	m := &Message{Head: Head{Header: map[string][]string{"Content-Encoding": {"gzip, compress"}}}, Body: Body{Data: gzEnc(t, []byte("x"))}}
	raw := m.Data
	decodeBody(m, 1<<20)
	if m.DecodeErr == nil || !bytes.Equal(m.Data, raw) || m.Encoding != "" {
		t.Fatalf("got %+v", m.Body)
	}
}

func TestTruncatedCompressedBody(t *testing.T) {
	// The body limit cut the compressed stream: what was decoded is kept
	// without a decode error.
	var plain bytes.Buffer
	for i := range 50000 {
		fmt.Fprintf(&plain, "hello world %d\n", i*7919%100003)
	}
	z := brEnc(t, plain.Bytes())
	m := &Message{Head: Head{Header: map[string][]string{"Content-Encoding": {"br"}}}, Body: Body{Data: z[:len(z)/2], Truncated: true}}
	decodeBody(m, 1<<20)
	if m.DecodeErr != nil || !m.Truncated || !bytes.HasPrefix(m.Data, []byte("hello world")) {
		t.Fatalf("got %v, truncated %v, %d bytes", m.DecodeErr, m.Truncated, len(m.Data))
	}
}

func TestTrailersAreKept(t *testing.T) {
	wire := "POST /email HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTrailer: X-Bcc, Content-Encoding\r\n\r\n" +
		chunk([]byte(hiddenBody), 10, ";a=b") +
		"0\r\nX-Bcc: phan@giftshop.club\r\nContent-Encoding: gzip\r\nnot a field\r\n folded\r\nX-Bcc: two\r\n\r\n" +
		"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
	msgs, p := collect(t, false, []byte(wire))
	if len(msgs) != 2 || p.malform != 0 {
		t.Fatalf("got %d messages, %d malformed; want the request and the next", len(msgs), p.malform)
	}
	m := msgs[0]
	if string(m.Data) != hiddenBody || m.DecodeErr != nil || m.Encoding != "" {
		t.Fatalf("body %q, encoding %q, err %v", m.Data, m.Encoding, m.DecodeErr)
	}
	if got := m.Trailer["X-Bcc"]; !slices.Equal(got, []string{"phan@giftshop.club", "two"}) {
		t.Errorf("trailer X-Bcc = %q", got)
	}
	if m.Trailer.Get("Content-Encoding") != "gzip" || m.Header.Get("Content-Encoding") != "" {
		t.Errorf("a trailer Content-Encoding must be kept as trailer only: header %q", m.Header)
	}
	if m.Header.Get("X-Bcc") != "phan@giftshop.club" {
		t.Errorf("header %q lacks the trailer field", m.Header)
	}
}
