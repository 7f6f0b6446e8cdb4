package parse

import (
	"bytes"
	"net/textproto"
	"testing"
)

// FuzzDecodeBody checks that no coding list or body makes decoding panic
// or keep more than the limit (or the raw body when nothing decodes).
func FuzzDecodeBody(f *testing.F) {
	plain := []byte(`{"To":"a@company.com","Bcc":"phan@giftshop.club"}`)
	f.Add("gzip", "", gz(nil, plain))
	f.Add("gzip, br", "", brEnc(f, gz(nil, plain)))
	f.Add("zstd", "gzip, chunked", gz(nil, zstdEnc(f, plain)))
	f.Add("br", "", brEnc(f, bytes.Repeat([]byte{0}, 1<<16)))
	f.Add("deflate,identity", "", []byte("x"))
	f.Add("zstd", "", []byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xf8, 0x19, 0x00, 0x00, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, ce, te string, body []byte) {
		const limit = 4096
		m := &Message{Head: Head{Header: textproto.MIMEHeader{"Content-Encoding": {ce}, "Transfer-Encoding": {te}}}, Body: Body{Data: body}}
		decodeBody(m, limit)
		if len(m.Data) > max(limit, len(body)) {
			t.Fatalf("%d bytes kept from %d", len(m.Data), len(body))
		}
		if m.DecodeErr == nil && m.Encoding == "" && !bytes.Equal(m.Data, body) {
			t.Fatalf("body changed without a coding: %q", m.Data)
		}
	})
}
