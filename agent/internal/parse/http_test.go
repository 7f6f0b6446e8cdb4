package parse

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"fmt"
	"strings"
	"testing"
)

// collect feeds calls (each one write) to a request parser and returns the
// messages it completed.
func collect(t *testing.T, response bool, calls ...[]byte) ([]*Message, *httpParser) {
	t.Helper()
	p := &httpParser{response: response}
	p.limits.setDefaults()
	var out []*Message
	for i, c := range calls {
		p.feed(c, 0, uint64(i+1), func(m *Message) { out = append(out, m) })
	}
	return out, p
}

func gz(t *testing.T, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestRequestFramings(t *testing.T) {
	body := []byte(`{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club"}`)
	var zl, raw bytes.Buffer
	zw := zlib.NewWriter(&zl)
	zw.Write(body)
	zw.Close()
	fw, _ := flate.NewWriter(&raw, 5)
	fw.Write(body)
	fw.Close()
	gzBody := gz(t, body)

	cases := []struct {
		name     string
		wire     string
		chunked  bool
		encoding string
		wireSize int
	}{
		{"content-length", fmt.Sprintf("POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Length: %d\r\n\r\n%s", len(body), body), false, "", len(body)},
		{"chunked", "POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("10;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n", body[:16], len(body)-16, body[16:]), true, "", len(body)},
		{"gzip", fmt.Sprintf("POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", len(gzBody), gzBody), false, "gzip", len(gzBody)},
		{"deflate-zlib", fmt.Sprintf("POST /email HTTP/1.1\r\nHost: h\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s", zl.Len(), zl.Bytes()), false, "deflate", zl.Len()},
		{"deflate-raw", fmt.Sprintf("POST /email HTTP/1.1\r\nHost: h\r\nContent-Encoding: deflate\r\nContent-Length: %d\r\n\r\n%s", raw.Len(), raw.Bytes()), false, "deflate", raw.Len()},
		{"chunked-gzip", "POST /email HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(gzBody), gzBody), true, "gzip", len(gzBody)},
	}
	for _, tc := range cases {
		wire := []byte(tc.wire)
		// Every way of splitting the request in two calls, and one byte per call.
		splits := [][][]byte{{wire}}
		for i := 1; i < len(wire); i++ {
			splits = append(splits, [][]byte{wire[:i], wire[i:]})
		}
		bytewise := make([][]byte, len(wire))
		for i := range wire {
			bytewise[i] = wire[i : i+1]
		}
		splits = append(splits, bytewise)
		for _, calls := range splits {
			msgs, _ := collect(t, false, calls...)
			if len(msgs) != 1 {
				t.Fatalf("%s split %d: %d messages, want 1", tc.name, len(calls[0]), len(msgs))
			}
			m := msgs[0]
			if m.Method != "POST" || m.Target != "/email" || !bytes.Equal(m.Data, body) || m.Chunked != tc.chunked ||
				m.Encoding != tc.encoding || m.WireSize != int64(tc.wireSize) || m.Truncated || m.DecodeErr != nil {
				t.Fatalf("%s split %d: got %+v body %q", tc.name, len(calls[0]), m.Head, m.Data)
			}
		}
	}
}

func TestPipelinedAndKeepAlive(t *testing.T) {
	wire := "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /c HTTP/1.1\r\nHost: y\r\n\r\n"
	msgs, _ := collect(t, false, []byte(wire))
	var got []string
	for _, m := range msgs {
		got = append(got, m.Method+" "+m.Host+m.Target+" "+string(m.Data))
	}
	want := []string{"GET x/a ", "POST x/b abc", "GET y/c "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestJunkIsPassedOverQuietly(t *testing.T) {
	// SMTP, binary garbage, an HTTP/2 preface, then a real request in a new call.
	msgs, p := collect(t, false,
		[]byte("EHLO client\r\n"),
		[]byte{0x00, 0xff, 0x13, '\r', '\n', '\r', '\n'},
		[]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
		[]byte("GET / HTTP/1.1\r\nHost: ok\r\n\r\n"))
	if len(msgs) != 1 || msgs[0].Host != "ok" {
		t.Fatalf("got %d messages, want the one request after the junk", len(msgs))
	}
	if p.junk == 0 {
		t.Fatal("junk bytes were not counted")
	}
}

func TestBadHeadsAreGivenUp(t *testing.T) {
	for _, wire := range []string{
		"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
		"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
		"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
		"GET /\r\n\r\n",
	} {
		msgs, p := collect(t, false, []byte(wire), []byte("GET /next HTTP/1.1\r\n\r\n"))
		if len(msgs) != 1 || msgs[0].Target != "/next" {
			t.Errorf("%q: got %d messages; want only the next request", wire, len(msgs))
		}
		if p.malform != 1 {
			t.Errorf("%q: malformed = %d, want 1", wire, p.malform)
		}
	}
}

func TestHeaderLimit(t *testing.T) {
	p := &httpParser{limits: Limits{MaxHeader: 100}}
	p.limits.setDefaults()
	n := 0
	p.feed([]byte("GET / HTTP/1.1\r\nX: "+strings.Repeat("a", 200)), 0, 1, func(*Message) { n++ })
	if p.state != stJunk || len(p.buf) != 0 {
		t.Fatalf("an oversized head is kept: state %d, %d bytes", p.state, len(p.buf))
	}
}

func TestLostBytesInBody(t *testing.T) {
	// A 40 KiB body written in one call of which the sensor kept 16 KiB.
	body := bytes.Repeat([]byte("x"), 40<<10)
	wire := append([]byte(fmt.Sprintf("POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n", len(body))), body...)
	captured := wire[:16384]
	lost := len(wire) - len(captured)
	p := &httpParser{}
	p.limits.setDefaults()
	var msgs []*Message
	emit := func(m *Message) { msgs = append(msgs, m) }
	p.feed(captured, lost, 1, emit)
	p.feed([]byte("GET /after HTTP/1.1\r\n\r\n"), 0, 2, emit)
	if len(msgs) != 2 {
		t.Fatalf("got %d messages, want the big one and the next", len(msgs))
	}
	m := msgs[0]
	headLen := len(wire) - len(body)
	if m.WireSize != int64(len(body)) || m.Missing != int64(lost) || !m.Truncated || len(m.Data) != 16384-headLen {
		t.Fatalf("size %d missing %d truncated %v kept %d", m.WireSize, m.Missing, m.Truncated, len(m.Data))
	}
	if msgs[1].Target != "/after" {
		t.Fatalf("next request: %q", msgs[1].Target)
	}
}

func TestLostBytesBreakChunkFraming(t *testing.T) {
	p := &httpParser{}
	p.limits.setDefaults()
	var msgs []*Message
	emit := func(m *Message) { msgs = append(msgs, m) }
	// Lost bytes inside a chunk are accounted; lost bytes past it lose the framing.
	p.feed([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123"), 12, 1, emit)
	p.feed([]byte("\r\n5\r\nabcde"), 100, 2, emit)
	p.feed([]byte("GET /next HTTP/1.1\r\n\r\n"), 0, 3, emit)
	if len(msgs) != 1 || msgs[0].Target != "/next" || p.malform != 1 {
		t.Fatalf("got %d messages, malformed %d", len(msgs), p.malform)
	}
}

func TestBodyLimit(t *testing.T) {
	p := &httpParser{limits: Limits{MaxBody: 10}}
	p.limits.setDefaults()
	var m *Message
	p.feed([]byte("POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\n01234567890123456789"), 0, 1, func(x *Message) { m = x })
	if m == nil || len(m.Data) != 10 || m.WireSize != 20 || !m.Truncated {
		t.Fatalf("got %+v", m)
	}
}

func TestGzipBomb(t *testing.T) {
	bomb := gz(t, make([]byte, 10<<20))
	p := &httpParser{limits: Limits{MaxDecoded: 1 << 20}}
	p.limits.setDefaults()
	var m *Message
	p.feed([]byte(fmt.Sprintf("POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s", len(bomb), bomb)), 0, 1, func(x *Message) { m = x })
	if m == nil || len(m.Data) != 1<<20 || !m.Truncated || m.DecodeErr != nil {
		t.Fatalf("decoded %d bytes, truncated %v, err %v", len(m.Data), m.Truncated, m.DecodeErr)
	}
}

func TestBadGzipKeepsRawBody(t *testing.T) {
	_, _ = collect(t, false)
	p := &httpParser{}
	p.limits.setDefaults()
	var m *Message
	p.feed([]byte("POST / HTTP/1.1\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope"), 0, 1, func(x *Message) { m = x })
	if m == nil || m.DecodeErr == nil || string(m.Data) != "nope" {
		t.Fatalf("got %+v", m)
	}
}

func TestResponses(t *testing.T) {
	wire := "HTTP/1.1 100 Continue\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" +
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + // answers HEAD: no body follows
		"HTTP/1.1 204 No Content\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" +
		"HTTP/1.0 200 OK\r\n\r\nuntil close"
	methods := []string{"POST", "HEAD", "GET", "GET", "GET"}
	p := &httpParser{response: true}
	p.limits.setDefaults()
	p.noBody = func() bool {
		m := methods[0]
		methods = methods[1:]
		return m == "HEAD"
	}
	var got []string
	emit := func(m *Message) { got = append(got, fmt.Sprintf("%d:%s", m.Status, m.Data)) }
	p.feed([]byte(wire), 0, 1, emit)
	p.close(2, emit)
	want := []string{"100:", "200:ok", "200:", "204:", "200:abc", "200:until close"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func FuzzHTTPParser(f *testing.F) {
	f.Add([]byte("POST /email HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"), 5, uint8(3))
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), 0, uint8(7))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n\x1f\x8b"), 1, uint8(1))
	f.Add([]byte("\x00\xff\r\n\r\nGET"), 100, uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, lost int, split uint8) {
		for _, response := range []bool{false, true} {
			p := &httpParser{response: response, limits: Limits{MaxHeader: 256, MaxBody: 512, MaxDecoded: 1024}}
			p.noBody = func() bool { return split%2 == 0 }
			emit := func(m *Message) {
				if len(m.Data) > 1024 {
					t.Fatalf("body of %d bytes over the limits", len(m.Data))
				}
			}
			s := int(split) % (len(data) + 1)
			p.feed(data[:s], 0, 1, emit)
			p.feed(data[s:], max(lost%70000, 0), 2, emit)
			p.feed(data, 0, 3, emit)
			p.close(4, emit)
			if len(p.buf) > 256+len(data) {
				t.Fatalf("buffer of %d bytes kept", len(p.buf))
			}
		}
	})
}

// Servers ignore empty lines before a request line (RFC 9112, 2.2; node's
// llhttp does): a request behind them is parsed.
func TestEmptyLinesBeforeRequest(t *testing.T) {
	var got []*Message
	p := httpParser{}
	p.limits.setDefaults()
	p.feed([]byte("\r\n\r\nPOST /email HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"), 0, 1, func(m *Message) { got = append(got, m) })
	if len(got) != 1 || got[0].Method != "POST" || string(got[0].Data) != "{}" {
		t.Fatalf("parsed %+v", got)
	}
}
