package parse

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/sha1" //nolint:gosec // RFC 6455's Sec-WebSocket-Accept is SHA-1 by definition
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// wsFrame encodes one frame (RFC 6455, 5.2) with the shortest length, masked
// with key when key is not nil.
func wsFrame(fin, rsv1 bool, op byte, payload, key []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	if rsv1 {
		b0 |= 0x40
	}
	b := []byte{b0}
	var m byte
	if key != nil {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if key == nil {
		return append(b, payload...)
	}
	b = append(b, key...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

var testKey = []byte{0x37, 0xfa, 0x21, 0x3d}

// wsDeflater compresses messages as RFC 7692 (7.2.1) says: one DEFLATE
// stream per direction, each message ended by a sync flush whose
// 0x00 0x00 0xff 0xff is removed; with noContext the compressor starts
// afresh for each message.
type wsDeflater struct {
	buf       bytes.Buffer
	w         *flate.Writer
	noContext bool
}

func newWSDeflater(t testing.TB, noContext bool) *wsDeflater {
	d := &wsDeflater{noContext: noContext}
	w, err := flate.NewWriter(&d.buf, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	d.w = w
	return d
}

func (d *wsDeflater) message(t testing.TB, p []byte) []byte {
	d.buf.Reset()
	if _, err := d.w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := d.w.Flush(); err != nil {
		t.Fatal(err)
	}
	out := bytes.Clone(d.buf.Bytes())
	if !bytes.HasSuffix(out, []byte{0, 0, 0xff, 0xff}) {
		t.Fatalf("sync flush without its marker: % x", out[max(len(out)-8, 0):])
	}
	if d.noContext {
		d.w.Reset(&d.buf)
	}
	return out[:len(out)-4]
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")) //nolint:gosec // see the import
	return base64.StdEncoding.EncodeToString(h[:])
}

const wsTestKey = "dGhlIHNhbXBsZSBub25jZQ=="

func wsRequest(ext string) []byte {
	req := "GET /v1/responses HTTP/1.1\r\nHost: api.openai.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + wsTestKey + "\r\nSec-WebSocket-Version: 13\r\n"
	if ext != "" {
		req += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
	}
	return []byte(req + "\r\n")
}

func wsResponse(ext string) []byte {
	resp := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + wsAccept(wsTestKey) + "\r\n"
	if ext != "" {
		resp += "Sec-WebSocket-Extensions: " + ext + "\r\n"
	}
	return []byte(resp + "\r\n")
}

// newWSRun is a connection after the opening handshake, with the
// extensions the server accepted.
func newWSRun(t testing.TB, limits Limits, ext string) *h2Run {
	t.Helper()
	r := newH2Run(limits)
	r.write(wsRequest(ext))
	if p := r.p.Proto(r.c.Key); p != ProtoHTTP1 {
		t.Fatalf("proto %q before the 101", p)
	}
	r.read(wsResponse(ext))
	if p := r.p.Proto(r.c.Key); p != ProtoWebSocket || len(r.msgs) != 2 || r.msgs[1].Status != 101 {
		t.Fatalf("proto %q after the 101, messages\n%s", p, summaries(r.msgs))
	}
	r.msgs = nil
	return r
}

// wsLine is a WebSocket message in one line, for comparisons.
func wsLine(m *Message) string {
	var b strings.Builder
	if m.Response {
		b.WriteString("s ")
	} else {
		b.WriteString("c ")
	}
	if !m.WebSocket {
		return b.String() + "http " + summary(m)
	}
	fmt.Fprintf(&b, "op%d", m.Opcode)
	if m.CloseCode != 0 {
		fmt.Fprintf(&b, " code=%d", m.CloseCode)
	}
	fmt.Fprintf(&b, " %s", wsQ(string(m.Data)))
	if m.Encoding != "" {
		b.WriteString(" deflate")
	}
	if m.Truncated {
		b.WriteString(" truncated")
	}
	if m.Missing > 0 {
		fmt.Fprintf(&b, " missing=%d", m.Missing)
	}
	if m.DecodeErr != nil {
		b.WriteString(" decode-error")
	}
	return b.String()
}

// wsQ quotes a payload, cut to its first 40 bytes when over 80.
func wsQ(s string) string {
	if len(s) > 80 {
		s = fmt.Sprintf("%s...(%d)", s[:40], len(s))
	}
	return fmt.Sprintf("%q", s)
}

func wsLines(msgs []*Message) string {
	var s []string
	for _, m := range msgs {
		s = append(s, wsLine(m))
	}
	return strings.Join(s, "\n")
}

// splitsOf feeds calls to fresh runs made by mk: whole, split in two at
// every byte of every call, and one byte per call; each must give want.
func splitsOf(t *testing.T, mk func() *h2Run, calls []recCall, want string) {
	t.Helper()
	check := func(how string, r *h2Run) {
		t.Helper()
		r.close()
		if got := wsLines(r.msgs); got != want {
			t.Fatalf("%s: got\n%s\nwant\n%s", how, got, want)
		}
	}
	r := mk()
	for _, c := range calls {
		r.call(c.dir, c.data, 0)
	}
	check("whole", r)
	for i, c := range calls {
		for k := 1; k < len(c.data); k++ {
			r := mk()
			for j, d := range calls {
				if j == i {
					r.call(d.dir, d.data[:k], 0)
					r.call(d.dir, d.data[k:], 0)
					continue
				}
				r.call(d.dir, d.data, 0)
			}
			check(fmt.Sprintf("call %d split at %d", i, k), r)
		}
	}
	r = mk()
	for _, c := range calls {
		r.bytewise(c.dir, c.data)
	}
	check("bytewise", r)
}

func TestWSFramesSplitAnywhere(t *testing.T) {
	mail := []byte(`{"From":"agent@company.com","To":"phan@giftshop.club","TextBody":"ws-marker"}`)
	calls := []recCall{
		// A masked text message; a fragmented one with a ping between its
		// fragments; a 16-bit length; a server reply; close both ways.
		{stream.Egress, wsFrame(true, false, WSText, mail, testKey)},
		{stream.Egress, slices.Concat(
			wsFrame(false, false, WSText, []byte("part one "), testKey),
			wsFrame(true, false, WSPing, []byte("are you there"), []byte{1, 2, 3, 4}))},
		{stream.Ingress, wsFrame(true, false, WSPong, []byte("are you there"), nil)},
		{stream.Egress, slices.Concat(
			wsFrame(false, false, WSContinuation, []byte("part two "), []byte{9, 9, 9, 9}),
			wsFrame(true, false, WSContinuation, []byte("part three"), testKey))},
		{stream.Egress, wsFrame(true, false, WSBinary, bytes.Repeat([]byte{0xa5}, 300), testKey)},
		{stream.Ingress, wsFrame(true, false, WSText, []byte(`{"ok":true}`), nil)},
		{stream.Egress, wsFrame(true, false, WSClose, []byte("\x03\xe8bye"), testKey)},
		{stream.Ingress, wsFrame(true, false, WSClose, []byte("\x03\xe8"), nil)},
	}
	want := `c op1 "{\"From\":\"agent@company.com\",\"To\":\"phan@giftshop.club\",\"TextBody\":\"ws-marker\"}"
c op9 "are you there"
s op10 "are you there"
c op1 "part one part two part three"
c op2 ` + wsQ(strings.Repeat("\xa5", 300)) + `
s op1 "{\"ok\":true}"
c op8 code=1000 "bye"
s op8 code=1000 ""`
	mk := func() *h2Run { return newWSRun(t, Limits{}, "") }
	splitsOf(t, mk, calls, want)
	r := mk()
	for _, c := range calls {
		r.call(c.dir, c.data, 0)
	}
	r.close()
	for _, m := range r.msgs {
		if !m.WebSocket || m.Host != "api.openai.com" || m.Target != "/v1/responses" || m.Method != "" || m.Start == 0 || m.End < m.Start {
			t.Fatalf("message %s: host %q target %q method %q start %d end %d", wsLine(m), m.Host, m.Target, m.Method, m.Start, m.End)
		}
	}
	if m := r.msgs[4]; m.WireSize != 300 || m.Truncated {
		t.Fatalf("binary: wire size %d", m.WireSize)
	}
	if st := r.p.Stats(); st.JunkBytes != 0 || st.Malformed != 0 || st.Messages != 10 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWSSixtyFourBitLength(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 5000) // 80000 bytes
	frame := wsFrame(true, false, WSBinary, body, testKey)
	if frame[1] != 0x80|127 {
		t.Fatalf("not a 64-bit length: % x", frame[:2])
	}
	r := newWSRun(t, Limits{}, "")
	// As a sensor sees a big write: pieces of 16 KiB.
	for len(frame) > 0 {
		n := min(len(frame), 16<<10)
		r.write(frame[:n])
		frame = frame[n:]
	}
	if len(r.msgs) != 1 || !bytes.Equal(r.msgs[0].Data, body) || r.msgs[0].WireSize != int64(len(body)) {
		t.Fatalf("got\n%s", wsLines(r.msgs))
	}
}

func TestWSBusyAndPending(t *testing.T) {
	r := newWSRun(t, Limits{}, "permessage-deflate")
	k := r.c.Key
	if r.p.Busy(k) || len(r.p.Pending(k).Requests) != 0 {
		t.Fatal("busy after the handshake")
	}
	first := wsFrame(false, false, WSText, []byte(`{"To":"phan@giftshop.club",`), testKey)
	r.write(first[:5]) // a header in part
	if !r.p.Busy(k) {
		t.Fatal("not busy inside a frame header")
	}
	r.write(first[5:12])
	if !r.p.Busy(k) {
		t.Fatal("not busy inside a payload")
	}
	pend := r.p.Pending(k).Requests
	if len(pend) != 1 || !pend[0].Partial || !pend[0].WebSocket || string(pend[0].Data) != `{"To":` {
		t.Fatalf("pending %+v", pend)
	}
	r.write(first[12:])
	if !r.p.Busy(k) {
		t.Fatal("not busy between fragments")
	}
	r.write(wsFrame(true, false, WSPing, nil, testKey))
	if !r.p.Busy(k) || len(r.msgs) != 0 {
		t.Fatal("a ping between fragments ends the message")
	}
	r.write(wsFrame(true, false, WSContinuation, []byte(`"Subject":"x"}`), testKey))
	if r.p.Busy(k) || len(r.p.Pending(k).Requests) != 0 || len(r.msgs) != 1 {
		t.Fatalf("busy %v after the last fragment; %s", r.p.Busy(k), wsLines(r.msgs))
	}
	// A compressed message in progress shows its text, inflated so far.
	text := []byte(`{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club","TextBody":"` + strings.Repeat("hello ", 50) + `"}`)
	d := newWSDeflater(t, false)
	z := d.message(t, text)
	r.write(wsFrame(false, true, WSText, z[:len(z)/2], testKey))
	pend = r.p.Pending(k).Requests
	if len(pend) != 1 || pend[0].Encoding != "permessage-deflate" || !bytes.HasPrefix(text, pend[0].Data) || len(pend[0].Data) < 20 {
		t.Fatalf("pending compressed: %+v", pend)
	}
	r.write(wsFrame(true, false, WSContinuation, z[len(z)/2:], testKey))
	if len(r.msgs) != 2 || !bytes.Equal(r.msgs[1].Data, text) || r.p.Busy(k) {
		t.Fatalf("got\n%s", wsLines(r.msgs))
	}
	// The server's messages never make the client busy.
	r.read(wsFrame(false, false, WSText, []byte("half"), nil))
	if r.p.Busy(k) || len(r.p.Pending(k).Requests) != 0 {
		t.Fatal("busy with a server message")
	}
}

func TestWSDeflateContext(t *testing.T) {
	mail := func(n int) []byte {
		return fmt.Appendf(nil, `{"From":"agent@company.com","To":"bob@company.com","Bcc":"phan@giftshop.club","Subject":"Invoice %d","TextBody":"%s"}`, n, strings.Repeat("the quarterly figures ", 10))
	}
	for _, tc := range []struct {
		name         string
		ext          string
		noCtx        bool // the sender resets its compressor
		wantDecodeOK bool
	}{
		{"takeover", "permessage-deflate", false, true},
		{"client-no-context-takeover", "permessage-deflate; client_no_context_takeover", true, true},
		// The client relies on context the server said it would not keep.
		{"context-not-agreed", "permessage-deflate; client_no_context_takeover", false, false},
		// A sender may always drop its context.
		{"sender-drops-context", "permessage-deflate", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := newWSDeflater(t, tc.noCtx)
			z1, z2 := d.message(t, mail(1)), d.message(t, mail(2))
			if !tc.noCtx && len(z2) > len(z1)/3 {
				t.Fatalf("the second message does not refer to the first: %d then %d bytes", len(z1), len(z2))
			}
			// Server messages, compressed with their own context.
			sd := newWSDeflater(t, false)
			s1, s2 := sd.message(t, []byte(`{"id":"1","status":"queued"}`)), sd.message(t, []byte(`{"id":"2","status":"queued"}`))
			calls := []recCall{
				{stream.Egress, wsFrame(true, true, WSText, z1, testKey)},
				{stream.Ingress, wsFrame(true, true, WSText, s1, nil)},
				// Fragmented: RSV1 on the first frame only.
				{stream.Egress, slices.Concat(wsFrame(false, true, WSText, z2[:len(z2)/2], testKey), wsFrame(true, false, WSContinuation, z2[len(z2)/2:], testKey))},
				{stream.Ingress, wsFrame(true, true, WSText, s2, nil)},
			}
			r := newWSRun(t, Limits{}, tc.ext)
			for _, c := range calls {
				r.call(c.dir, c.data, 0)
			}
			if len(r.msgs) != 4 || !bytes.Equal(r.msgs[0].Data, mail(1)) || r.msgs[0].Encoding != "permessage-deflate" ||
				r.msgs[0].WireSize != int64(len(z1)) || string(r.msgs[3].Data) != `{"id":"2","status":"queued"}` {
				t.Fatalf("got\n%s", wsLines(r.msgs))
			}
			second := r.msgs[2]
			if ok := second.DecodeErr == nil && bytes.Equal(second.Data, mail(2)); ok != tc.wantDecodeOK {
				t.Fatalf("second message decoded %v, want %v: %s (%v)", ok, tc.wantDecodeOK, wsLine(second), second.DecodeErr)
			}
			if !tc.wantDecodeOK && !second.Truncated && second.DecodeErr == nil {
				t.Fatalf("a message read wrong is not marked: %s", wsLine(second))
			}
			if tc.name == "takeover" {
				want := wsLines(r.msgs)
				splitsOf(t, func() *h2Run { return newWSRun(t, Limits{}, tc.ext) }, calls, want)
			}
		})
	}
}

// TestWSMessageAsRequest: a client's message goes to the judge as a
// request (enforce's mailOf and pending: mail.FromHTTP with the message's
// method, host, target, header and data): with no method, a JSON message
// naming recipients is read as mail, whole or in progress.
func TestWSMessageAsRequest(t *testing.T) {
	r := newWSRun(t, Limits{}, "permessage-deflate")
	body := []byte(`{"type":"tool_call","args":{"From":"agent@company.com","To":"bob@company.com","Bcc":"phan@giftshop.club","Subject":"x","TextBody":"hi"}}`)
	z := newWSDeflater(t, false).message(t, body)
	r.write(wsFrame(false, true, WSText, z[:len(z)-4], testKey))
	pend := r.p.Pending(r.c.Key).Requests
	r.write(wsFrame(true, false, WSContinuation, z[len(z)-4:], testKey))
	if len(pend) != 1 || len(r.msgs) != 1 {
		t.Fatalf("pending %d, messages\n%s", len(pend), wsLines(r.msgs))
	}
	for _, m := range []*Message{pend[0], r.msgs[0]} {
		msgs, err := mail.FromHTTP(&mail.HTTPRequest{Method: m.Method, Host: m.Host, Path: m.Target, Header: http.Header(m.Header), Body: m.Data, Partial: m.Partial})
		if err != nil || len(msgs) != 1 || len(msgs[0].Bcc) != 1 || msgs[0].Bcc[0].Addr != "phan@giftshop.club" {
			t.Fatalf("partial %v: %+v %v", m.Partial, msgs, err)
		}
	}
}

func TestWSExtensionParameters(t *testing.T) {
	for _, tc := range []struct {
		ext  string
		want wsParams
	}{
		{"", wsParams{window: [2]int{32768, 32768}}},
		{"x-webkit-deflate-frame", wsParams{window: [2]int{32768, 32768}}},
		{"permessage-deflate", wsParams{deflate: true, window: [2]int{32768, 32768}}},
		{`permessage-deflate; client_max_window_bits=10; server_no_context_takeover; client_no_context_takeover; server_max_window_bits="8"`,
			wsParams{deflate: true, noContext: [2]bool{true, true}, window: [2]int{1024, 512}}},
		{"foo, Permessage-Deflate ; SERVER_NO_CONTEXT_TAKEOVER ; client_max_window_bits=99, permessage-deflate; client_no_context_takeover",
			wsParams{deflate: true, noContext: [2]bool{false, true}, window: [2]int{32768, 32768}}},
	} {
		h := textproto.MIMEHeader{}
		if tc.ext != "" {
			h.Set("Sec-WebSocket-Extensions", tc.ext)
		}
		if got := parseWSExtensions(h); got != tc.want {
			t.Errorf("%q: got %+v, want %+v", tc.ext, got, tc.want)
		}
	}
}

// TestWSDeflateBomb: a message that inflates to 64 MiB keeps the limit,
// allocates about twice the limit at most, and the next message, which
// refers to what was not inflated, fails rather than reads wrong.
func TestWSDeflateBomb(t *testing.T) {
	const limit = 1 << 20
	d := newWSDeflater(t, false)
	bomb := d.message(t, make([]byte, 64<<20))
	next := d.message(t, append(make([]byte, 1000), "after the bomb"...))
	r := newWSRun(t, Limits{MaxDecoded: limit}, "permessage-deflate")
	frame := wsFrame(true, true, WSBinary, bomb, testKey)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r.write(frame)
	runtime.ReadMemStats(&after)
	got := after.TotalAlloc - before.TotalAlloc
	if got > 2*limit+4*uint64(len(bomb))+256<<10 {
		t.Fatalf("inflating the bomb allocated %d bytes (limit %d, %d compressed)", got, limit, len(bomb))
	}
	t.Logf("a %d-byte frame inflating to 64 MiB: %d bytes allocated, limit %d", len(frame), got, limit)
	if len(r.msgs) != 1 || len(r.msgs[0].Data) != limit || !r.msgs[0].Truncated || r.msgs[0].DecodeErr != nil || r.msgs[0].WireSize != int64(len(bomb)) {
		t.Fatalf("got\n%s", wsLines(r.msgs))
	}
	r.write(wsFrame(true, true, WSText, next, testKey))
	if m := r.msgs[1]; m.DecodeErr == nil || !strings.Contains(m.DecodeErr.Error(), "earlier messages not read whole") {
		t.Fatalf("after the bomb: %s %v", wsLine(m), m.DecodeErr)
	}
	// Compressed bytes over the body limit: kept up to it, inflated as
	// far as they go.
	r = newWSRun(t, Limits{MaxBody: 100}, "permessage-deflate; client_no_context_takeover")
	var numbers strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&numbers, "%d,", i*7919%10007)
	}
	big := newWSDeflater(t, true).message(t, []byte(numbers.String()))
	r.write(wsFrame(true, true, WSText, big, testKey))
	if len(r.msgs) != 1 || !r.msgs[0].Truncated || r.msgs[0].DecodeErr != nil || len(r.msgs[0].Data) == 0 || !strings.HasPrefix(numbers.String(), string(r.msgs[0].Data)) {
		t.Fatalf("got\n%s (%v)", wsLines(r.msgs), r.msgs[0].DecodeErr)
	}
}

func TestWSBodyLimit(t *testing.T) {
	r := newWSRun(t, Limits{MaxBody: 1000}, "")
	r.write(wsFrame(false, false, WSText, bytes.Repeat([]byte("a"), 600), testKey))
	r.write(wsFrame(true, false, WSContinuation, bytes.Repeat([]byte("b"), 600), testKey))
	r.write(wsFrame(true, false, WSText, []byte("next"), testKey))
	if len(r.msgs) != 2 || len(r.msgs[0].Data) != 1000 || !r.msgs[0].Truncated || r.msgs[0].WireSize != 1200 ||
		string(r.msgs[0].Data[598:602]) != "aabb" || string(r.msgs[1].Data) != "next" {
		t.Fatalf("got\n%s", wsLines(r.msgs))
	}
}

func TestWSLostBytes(t *testing.T) {
	t.Run("in-payload", func(t *testing.T) {
		// A 40 KB frame of which the sensor kept 16 KiB: frame sync holds.
		r := newWSRun(t, Limits{}, "")
		frame := wsFrame(true, false, WSText, bytes.Repeat([]byte("y"), 40000), testKey)
		r.call(stream.Egress, frame[:16384], len(frame)-16384)
		r.write(wsFrame(true, false, WSText, []byte("next"), testKey))
		if len(r.msgs) != 2 || r.msgs[0].Missing != int64(len(frame)-16384) || !r.msgs[0].Truncated || r.msgs[0].WireSize != 40000 ||
			string(r.msgs[0].Data) != strings.Repeat("y", 16384-8) || string(r.msgs[1].Data) != "next" {
			t.Fatalf("got\n%s", wsLines(r.msgs))
		}
		if st := r.p.Stats(); st.Malformed != 0 || st.JunkBytes != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("across-headers", func(t *testing.T) {
		// One write of three frames, the end of the second lost with the
		// third's header: sync is lost, the fragmented message in progress
		// is emitted truncated, a call that starts mid-frame is passed
		// over, and the next call that starts with a frame resyncs.
		r := newWSRun(t, Limits{}, "")
		write := slices.Concat(
			wsFrame(true, false, WSText, []byte("first"), testKey),
			wsFrame(false, false, WSText, bytes.Repeat([]byte("z"), 100), testKey),
			wsFrame(true, false, WSContinuation, bytes.Repeat([]byte("w"), 100), testKey))
		r.call(stream.Egress, write[:11+6+50], len(write)-(11+6+50))
		frame := wsFrame(true, false, WSText, []byte("tail of a frame whose head was lost"), testKey)
		r.write(frame[8:]) // masked payload: no plausible frame start
		r.write(wsFrame(true, false, WSText, []byte("resynced"), testKey))
		r.close()
		want := `c op1 "first"
c op1 "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz" truncated missing=50`
		if got := wsLines(r.msgs[:2]); got != want || len(r.msgs) != 3 || string(r.msgs[2].Data) != "resynced" {
			t.Fatalf("got\n%s", wsLines(r.msgs))
		}
		if st := r.p.Stats(); st.Malformed != 1 || st.JunkBytes != uint64(106+len(frame)-8) {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("deflate", func(t *testing.T) {
		// Lost compressed bytes: the message inflates as far as it was
		// captured; with context takeover the next one cannot be trusted
		// to refer to what was seen, without it decodes.
		text := []byte(strings.Repeat(`{"To":"phan@giftshop.club","Subject":"hello"} `, 40))
		for _, noCtx := range []bool{false, true} {
			ext := "permessage-deflate"
			if noCtx {
				ext += "; client_no_context_takeover"
			}
			d := newWSDeflater(t, noCtx)
			z1 := d.message(t, append([]byte("abcdefghijklmnopqrstuvwxyz0123456789 "), text...))
			z2 := d.message(t, append([]byte("abcdefghijklmnopqrstuvwxyz0123456789 second "), text...))
			r := newWSRun(t, Limits{}, ext)
			f1 := wsFrame(true, true, WSText, z1, testKey)
			r.call(stream.Egress, f1[:20], len(f1)-20)
			r.write(wsFrame(true, true, WSText, z2, testKey))
			head := "abcdefghijklmnopqrstuvwxyz0123456789 "
			if len(r.msgs) != 2 || !r.msgs[0].Truncated || r.msgs[0].DecodeErr != nil || len(r.msgs[0].Data) == 0 ||
				!strings.HasPrefix(head, string(r.msgs[0].Data[:min(len(r.msgs[0].Data), len(head))])) {
				t.Fatalf("no context %v: got\n%s (%v)", noCtx, wsLines(r.msgs), r.msgs[0].DecodeErr)
			}
			second := r.msgs[1]
			decoded := second.DecodeErr == nil && bytes.HasSuffix(second.Data, text)
			if decoded != noCtx {
				t.Fatalf("no context %v: second %s (%v)", noCtx, wsLine(second), second.DecodeErr)
			}
		}
	})
}

func TestWSUpgradeAnswers(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		r := newH2Run(Limits{})
		r.write(wsRequest(""))
		r.read([]byte("HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope"))
		r.write([]byte("POST /email HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"))
		r.read([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")) // answers nothing offered
		if p := r.p.Proto(r.c.Key); p != ProtoHTTP1 || len(r.msgs) != 4 || r.msgs[2].Method != "POST" {
			t.Fatalf("proto %q\n%s", p, summaries(r.msgs))
		}
	})
	t.Run("frames-before-the-101", func(t *testing.T) {
		// A client that does not wait for the 101 (RFC 6455, 4.1 says it
		// must), with a server that takes its frames all the same: they
		// are read, and judged, as written.
		d := newWSDeflater(t, true)
		calls := []recCall{
			{stream.Egress, slices.Concat(wsRequest("deflate"), wsFrame(true, false, WSText, []byte(`{"Bcc":"phan@giftshop.club"}`), testKey),
				wsFrame(true, true, WSText, d.message(t, []byte("compressed before the answer")), testKey))},
			{stream.Ingress, wsResponse("permessage-deflate; client_no_context_takeover")},
			{stream.Egress, wsFrame(true, true, WSText, d.message(t, []byte("compressed after the answer")), testKey)},
		}
		want := `c http #0 GET api.openai.com/v1/responses ""
c op1 "{\"Bcc\":\"phan@giftshop.club\"}"
c op1 "compressed before the answer" deflate
s http #0 101 ""
c op1 "compressed after the answer" deflate`
		splitsOf(t, func() *h2Run { return newH2Run(Limits{}) }, calls, want)
		r := newH2Run(Limits{})
		r.write(calls[0].data[:len(calls[0].data)-3])
		if p := r.p.Proto(r.c.Key); p != ProtoHTTP1 || !r.p.Busy(r.c.Key) {
			t.Fatalf("before the answer, inside a frame: proto %q busy %v", p, r.p.Busy(r.c.Key))
		}
	})
	t.Run("refused-after-frames", func(t *testing.T) {
		r := newH2Run(Limits{})
		r.write(slices.Concat(wsRequest(""), wsFrame(false, false, WSText, []byte("never ends"), testKey)))
		if !r.p.Busy(r.c.Key) || len(r.p.Pending(r.c.Key).Requests) != 1 {
			t.Fatal("a fragmented message before the answer is not in progress")
		}
		r.read([]byte("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"))
		r.write([]byte("POST /email HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}"))
		r.close()
		want := `c http #0 GET api.openai.com/v1/responses ""
s http #0 403 ""
c op1 "never ends" truncated
c http #0 POST h/email "{}"`
		if got := wsLines(r.msgs); got != want || r.p.Proto(r.c.Key) != "" {
			t.Fatalf("got\n%s\nwant\n%s", got, want)
		}
		if st := r.p.Stats(); st.Malformed != 0 || st.JunkBytes != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("other-protocol", func(t *testing.T) {
		r := newH2Run(Limits{})
		r.write(wsRequest(""))
		r.read([]byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"))
		if p := r.p.Proto(r.c.Key); p != ProtoHTTP1 {
			t.Fatalf("proto %q", p)
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		// A request before the upgrade; its response's body holds an end
		// of head; the 101 and the server's first frame in the same read.
		calls := []recCall{
			{stream.Egress, slices.Concat([]byte("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"), wsRequest(""))},
			{stream.Ingress, slices.Concat([]byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab\r\n\r\ncdef"), wsResponse(""),
				wsFrame(true, false, WSText, []byte("hello from the server"), nil))},
			{stream.Egress, wsFrame(true, false, WSText, []byte("hello from the client"), testKey)},
		}
		want := `c http #0 GET h/a ""
c http #0 GET api.openai.com/v1/responses ""
s http #0 200 "ab\r\n\r\ncdef"
s http #0 101 ""
s op1 "hello from the server"
c op1 "hello from the client"`
		splitsOf(t, func() *h2Run { return newH2Run(Limits{}) }, calls, want)
	})
}

func TestWSControlFrames(t *testing.T) {
	r := newWSRun(t, Limits{}, "")
	r.write(slices.Concat(
		wsFrame(true, false, WSPing, nil, testKey),                            // nothing to show
		wsFrame(true, false, WSPong, []byte("sk-live-0123456789"), testKey),   // a payload: shown
		wsFrame(true, false, WSClose, nil, testKey),                           // a close without a code
		wsFrame(true, false, 0xb, []byte("reserved control"), testKey),        // reserved: read
		wsFrame(true, false, WSPing, bytes.Repeat([]byte("p"), 200), testKey), // too long for a control frame: kept to 125
		wsFrame(true, false, 0x3, []byte("reserved data"), testKey),           // reserved: a message
		wsFrame(true, false, WSContinuation, []byte("orphan"), testKey),       // continues nothing: a message
		wsFrame(true, false, WSText, []byte("ok"), testKey),
	))
	want := `c op10 "sk-live-0123456789"
c op8 ""
c op11 "reserved control"
c op9 "pppppppppppppppppppppppppppppppppppppppp...(125)" truncated missing=75
c op3 "reserved data"
c op0 "orphan"
c op1 "ok"`
	if got := wsLines(r.msgs); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	r.close()
	if st := r.p.Stats(); st.Malformed != 2 || st.JunkBytes != 0 {
		t.Fatalf("stats %+v", st)
	}
	// A new message before the last one ended: the last one is cut.
	r = newWSRun(t, Limits{}, "")
	r.write(wsFrame(false, false, WSText, []byte("unfinished"), testKey))
	r.write(wsFrame(true, false, WSBinary, []byte("new"), testKey))
	r.write(wsFrame(false, false, WSText, []byte("at close"), testKey))
	r.close()
	if got := wsLines(r.msgs); got != "c op1 \"unfinished\" truncated\nc op2 \"new\"\nc op1 \"at close\" truncated" {
		t.Fatalf("got\n%s", got)
	}
	// A length with its top bit set cannot be followed.
	r = newWSRun(t, Limits{}, "")
	r.write([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 'x'})
	r.write(wsFrame(true, false, WSText, []byte("after"), testKey))
	if got := wsLines(r.msgs); got != `c op1 "after"` {
		t.Fatalf("got\n%s", got)
	}
}

// TestWSXNetCapture replays what golang.org/x/net/websocket's client and
// server write to each other, one call per write: masked client frames,
// 16- and 64-bit lengths, a ping and its pong, close.
func TestWSXNetCapture(t *testing.T) {
	// Over loopback TCP, not net.Pipe: the server answers a ping while the
	// client writes, which needs buffers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	rec := &recording{}
	server := &http.Server{
		Handler: websocket.Server{Handler: func(ws *websocket.Conn) {
			for {
				var b []byte
				if err := websocket.Message.Receive(ws, &b); err != nil {
					return
				}
				if err := websocket.Message.Send(ws, "echo "+string(b)); err != nil {
					return
				}
			}
		}},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go server.Serve(newPipeListener(&recConn{Conn: srv, dir: stream.Ingress, rec: rec}))
	defer server.Close()
	config, err := websocket.NewConfig("ws://api.openai.com/v1/responses", "http://api.openai.com/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.NewClient(config, &recConn{Conn: cli, dir: stream.Egress, rec: rec})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	mail := `{"From":"agent@company.com","To":"phan@giftshop.club","TextBody":"` + marker + `"}`
	big := strings.Repeat("z", 70000)
	ws.SetDeadline(time.Now().Add(10 * time.Second))
	for _, m := range []any{mail, bytes.Repeat([]byte{'b'}, 300), []byte(big)} {
		if err := websocket.Message.Send(ws, m); err != nil {
			t.Fatal(err)
		}
		var echo string
		if err := websocket.Message.Receive(ws, &echo); err != nil {
			t.Fatal(err)
		}
	}
	ws.PayloadType = websocket.PingFrame
	if _, err := ws.Write([]byte("are you there")); err != nil {
		t.Fatal(err)
	}
	ws.PayloadType = websocket.TextFrame
	if err := websocket.Message.Send(ws, "after the ping"); err != nil {
		t.Fatal(err)
	}
	var echo string
	if err := websocket.Message.Receive(ws, &echo); err != nil || echo != "echo after the ping" {
		t.Fatalf("echo %q: %v", echo, err)
	}
	ws.Close()
	server.Close()

	rec.mu.Lock()
	calls := slices.Clone(rec.calls)
	rec.mu.Unlock()
	// The client's frames are masked: its first one has the bit, and the
	// marker is nowhere in clear in what it wrote.
	first := true
	for _, c := range calls[1:] {
		if c.dir != stream.Egress {
			continue
		}
		if first && c.data[1]&0x80 == 0 || bytes.Contains(c.data, []byte(marker)) {
			t.Fatalf("a client frame not masked: % x", c.data[:min(len(c.data), 16)])
		}
		first = false
	}
	want := `c http #0 GET api.openai.com/v1/responses ""
s http #0 101 ""
c op1 ` + wsQ(mail) + `
s op1 ` + wsQ("echo "+mail) + `
c op2 ` + wsQ(strings.Repeat("b", 300)) + `
s op1 ` + wsQ("echo "+strings.Repeat("b", 300)) + `
c op2 ` + wsQ(big) + `
s op1 ` + wsQ("echo "+big) + `
c op9 "are you there"
s op10 "are you there"
c op1 "after the ping"
s op1 "echo after the ping"
c op8 code=1000 ""`
	r := newH2Run(Limits{})
	for _, c := range calls {
		r.call(c.dir, c.data, 0)
	}
	if p := r.p.Proto(r.c.Key); p != ProtoWebSocket || r.p.Busy(r.c.Key) {
		t.Fatalf("proto %q busy %v", p, r.p.Busy(r.c.Key))
	}
	r.close()
	// The two ends' writes interleave as the scheduler had it: the order
	// within each direction is what counts.
	if got := wsLines(r.msgs); sortedLines(got) != sortedLines(want) {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if st := r.p.Stats(); st.JunkBytes != 0 || st.Malformed != 0 {
		t.Fatalf("stats %+v", st)
	}
	if m := r.msgs[2]; string(m.Data) != mail || m.Response || m.Host != "api.openai.com" {
		t.Fatalf("the mail: %s host %q", wsLine(m), m.Host)
	}
	r = newH2Run(Limits{})
	for _, c := range calls {
		r.bytewise(c.dir, c.data)
	}
	r.close()
	if got := wsLines(r.msgs); sortedLines(got) != sortedLines(want) {
		t.Fatalf("bytewise: got\n%s", got)
	}
}

// readCapture reads a file of testdata/ws: a call per line, "c" or "s"
// and the bytes in base64.
func readCapture(t *testing.T, name string) []recCall {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "ws", name))
	if err != nil {
		t.Fatal(err)
	}
	var calls []recCall
	for line := range strings.Lines(string(b)) {
		dir, enc, _ := strings.Cut(strings.TrimSpace(line), " ")
		data, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d := stream.Egress
		if dir == "s" {
			d = stream.Ingress
		}
		calls = append(calls, recCall{d, data})
	}
	return calls
}

// TestWSNodeWSCapture replays traffic of the npm package ws 8.23.1
// (testdata/ws/capture.js): permessage-deflate both ways with and without
// context takeover, a fragmented compressed message with a ping between
// its fragments, and plain frames of every length form.
func TestWSNodeWSCapture(t *testing.T) {
	mail := `{"From":"agent@company.com","To":"bob@company.com","Bcc":"phan@giftshop.club","Subject":"Invoice","TextBody":"ws-marker-7f3a9c ` + strings.Repeat("lorem ipsum ", 20) + `"}`
	mail2 := strings.Replace(mail, "Invoice", "Invoice 2", 1)
	q := wsQ
	bin := make([]byte, 70000)
	for i := range bin {
		bin[i] = byte(uint32(i) * 2654435761 >> 13)
	}
	for _, tc := range []struct {
		file string
		want string
	}{
		{"ws-deflate.txt", `c op1 ` + q(mail) + ` deflate
s op1 ` + q(mail) + ` deflate
c op1 ` + q(mail2) + ` deflate
s op1 ` + q(mail2) + ` deflate
c op9 "are you there"
c op1 "part one ws-marker-7f3a9c part two" deflate
s op10 "are you there"
s op1 "part one ws-marker-7f3a9c part two" deflate
c op2 ` + q(string(bin)) + ` deflate
s op2 ` + q(string(bin)) + ` deflate
c op8 code=1000 "bye"
s op8 code=1000 "bye"`},
		{"ws-deflate-nocontext.txt", `c op1 ` + q(mail) + ` deflate
s op1 ` + q(mail) + ` deflate
c op1 ` + q(mail2) + ` deflate
s op1 ` + q(mail2) + ` deflate
c op8 code=1000 "bye"
s op8 code=1000 "bye"`},
		{"ws-plain.txt", `c op1 ` + q(mail) + `
s op1 ` + q(mail) + `
c op2 ` + q(strings.Repeat("a", 300)) + `
s op2 ` + q(strings.Repeat("a", 300)) + `
c op1 ` + q(strings.Repeat("x", 70000)) + `
s op1 ` + q(strings.Repeat("x", 70000)) + `
c op8 code=1000 "bye"
s op8 code=1000 "bye"`},
	} {
		t.Run(tc.file, func(t *testing.T) {
			calls := readCapture(t, tc.file)
			r := newH2Run(Limits{})
			for _, c := range calls {
				r.call(c.dir, c.data, 0)
			}
			r.close()
			var ws []*Message
			for _, m := range r.msgs {
				if m.WebSocket {
					ws = append(ws, m)
				}
			}
			if got := wsLines(ws); got != tc.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tc.want)
			}
			if st := r.p.Stats(); st.JunkBytes != 0 || st.Malformed != 0 {
				t.Fatalf("stats %+v", st)
			}
			for _, m := range ws {
				if m.WireSize > 1000 && m.Encoding != "" && m.Opcode == WSText {
					t.Fatalf("a compressed mail of %d bytes: %s", m.WireSize, wsLine(m))
				}
			}
			if tc.file == "ws-deflate.txt" {
				// With context takeover the second mail refers to the first.
				if ws[2].WireSize*3 > ws[0].WireSize {
					t.Fatalf("second mail %d bytes, first %d", ws[2].WireSize, ws[0].WireSize)
				}
				if ws[8].WireSize >= 1<<16 || ws[8].WireSize == int64(len(bin)) {
					t.Fatalf("binary of %d bytes", ws[8].WireSize)
				}
			}
			want := wsLines(ws)
			r = newH2Run(Limits{})
			for _, c := range calls {
				r.bytewise(c.dir, c.data)
			}
			r.close()
			ws = ws[:0]
			for _, m := range r.msgs {
				if m.WebSocket {
					ws = append(ws, m)
				}
			}
			if got := wsLines(ws); got != want {
				t.Fatalf("bytewise: got\n%s", got)
			}
		})
	}
}

// TestWSNodeLive runs node's own WebSocket client (undici: global from node
// 22, behind --experimental-websocket in node 20) against a server written
// here that accepts permessage-deflate and compresses its messages as RFC
// 7692 says: node must inflate them (it echoes them back), and the parser
// must read both directions.
func TestWSNodeLive(t *testing.T) {
	if testing.Short() {
		t.Skip("runs node")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node")
	}
	var flags []string
	if out, err := exec.Command(node, "-e", "process.stdout.write(typeof WebSocket)").Output(); err != nil || string(out) != "function" {
		flags = append(flags, "--experimental-websocket")
	}
	if out, err := exec.Command(node, append(flags, "-e", "process.stdout.write(typeof WebSocket)")...).Output(); err != nil || string(out) != "function" {
		t.Skipf("node has no WebSocket client: %q %v", out, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	serverMsgs := []string{`{"type":"response.created","id":"` + marker + `"}`, `{"type":"response.created","id":"` + marker + `-2"}`}
	rec := &recording{}
	served := make(chan error, 1)
	go func() { served <- serveWSDeflate(ln, rec, serverMsgs) }()

	script := `
const ws = new WebSocket(process.argv[1]);
let n = 0;
ws.onopen = () => ws.send(JSON.stringify({From: "agent@company.com", To: "phan@giftshop.club", TextBody: process.argv[2]}));
ws.onmessage = (e) => {
  console.log("got " + e.data);
  ws.send("echo " + e.data);
  if (++n === 2) ws.close(1000, "done");
};
ws.onclose = () => process.exit(0);
ws.onerror = (e) => { console.error("error", e.message); process.exit(1); };
setTimeout(() => process.exit(2), 10000);
`
	cmd := exec.Command(node, append(flags, "-e", script, "ws://"+ln.Addr().String()+"/v1/responses", marker)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, out)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	for _, m := range serverMsgs {
		if !strings.Contains(string(out), "got "+m) {
			t.Fatalf("node did not inflate %q:\n%s", m, out)
		}
	}
	rec.mu.Lock()
	calls := slices.Clone(rec.calls)
	rec.mu.Unlock()
	r := newH2Run(Limits{})
	for _, c := range calls {
		r.call(c.dir, c.data, 0)
	}
	r.close()
	mail := `{"From":"agent@company.com","To":"phan@giftshop.club","TextBody":"` + marker + `"}`
	want := fmt.Sprintf(`c http #0 GET %s/v1/responses ""
s http #0 101 ""
s op1 %s deflate
s op1 %s deflate
c op1 %s
c op1 %s
c op1 %s
c op8 code=1000 "done"
s op8 code=1000 "done"`, ln.Addr(), wsQ(serverMsgs[0]), wsQ(serverMsgs[1]), wsQ(mail), wsQ("echo "+serverMsgs[0]), wsQ("echo "+serverMsgs[1]))
	if got := wsLines(r.msgs); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

// serveWSDeflate accepts one connection: the opening handshake (accepting
// permessage-deflate if offered), the messages compressed with context
// takeover, then what the client sends until it closes; it answers the
// client's close frame. Every read and write is recorded.
func serveWSDeflate(ln net.Listener, rec *recording, msgs []string) error {
	c, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	rc := &recReader{Conn: c, rec: rec}
	br := bufio.NewReader(rc)
	req, err := http.ReadRequest(br)
	if err != nil {
		return fmt.Errorf("read the upgrade request: %w", err)
	}
	ext := ""
	if strings.Contains(req.Header.Get("Sec-WebSocket-Extensions"), "permessage-deflate") {
		ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
	}
	w := &recConn{Conn: c, dir: stream.Ingress, rec: rec}
	if _, err := fmt.Fprintf(w, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
		wsAccept(req.Header.Get("Sec-WebSocket-Key")), ext); err != nil {
		return fmt.Errorf("write 101: %w", err)
	}
	if ext == "" {
		return fmt.Errorf("the client offered no permessage-deflate: %q", req.Header.Get("Sec-WebSocket-Extensions"))
	}
	d := newWSDeflater(nopTB{}, false)
	for _, m := range msgs {
		if _, err := w.Write(wsFrame(true, true, WSText, d.message(nopTB{}, []byte(m)), nil)); err != nil {
			return fmt.Errorf("write a message: %w", err)
		}
	}
	// Read the client's frames until its close, which is answered.
	for {
		var h [2]byte
		if _, err := readFull(br, h[:]); err != nil {
			return fmt.Errorf("read a frame header: %w", err)
		}
		ext := make([]byte, wsHeaderLen(h[1])-2)
		if _, err := readFull(br, ext); err != nil {
			return fmt.Errorf("read a frame header: %w", err)
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			n = uint64(binary.BigEndian.Uint16(ext))
		case 127:
			n = binary.BigEndian.Uint64(ext)
		}
		payload := make([]byte, n)
		if _, err := readFull(br, payload); err != nil {
			return fmt.Errorf("read a payload: %w", err)
		}
		if h[0]&0x0f == WSClose {
			key := ext[len(ext)-4:]
			for i := range payload {
				payload[i] ^= key[i%4]
			}
			if _, err := w.Write(wsFrame(true, false, WSClose, payload, nil)); err != nil {
				return fmt.Errorf("answer close: %w", err)
			}
			return nil
		}
	}
}

func readFull(br *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := br.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// recReader records what is read from a connection as the client's writes.
type recReader struct {
	net.Conn
	rec *recording
}

func (c *recReader) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.rec.mu.Lock()
		c.rec.calls = append(c.rec.calls, recCall{stream.Egress, bytes.Clone(b[:n])})
		c.rec.mu.Unlock()
	}
	return n, err
}

// nopTB lets helpers that take a testing.TB run in a goroutine: they fail
// only on a broken compressor.
type nopTB struct{ testing.TB }

func (nopTB) Fatal(...any)          { panic("compressor failed") }
func (nopTB) Fatalf(string, ...any) { panic("compressor failed") }

// FuzzWebSocket feeds frames of any shape to a connection that agreed to
// permessage-deflate, split and with bytes lost: nothing panics, and what
// is kept stays within the limits.
func FuzzWebSocket(f *testing.F) {
	d := newWSDeflater(f, false)
	z := d.message(f, []byte(`{"To":"phan@giftshop.club","Subject":"hi","TextBody":"hello hello hello"}`))
	f.Add(slices.Concat(wsFrame(false, true, WSText, z[:5], testKey), wsFrame(true, false, WSPing, []byte("p"), testKey),
		wsFrame(true, false, WSContinuation, z[5:], testKey)), wsFrame(true, false, WSText, []byte("ok"), nil), 0, uint8(7))
	f.Add(wsFrame(true, false, WSBinary, bytes.Repeat([]byte("b"), 300), testKey), wsFrame(true, true, WSText, z, nil), 20, uint8(3))
	f.Add([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1}, []byte{0x88, 0x02, 0x03, 0xe8}, 3, uint8(1))
	f.Add(wsFrame(true, true, WSText, newWSDeflater(f, false).message(f, make([]byte, 10000)), testKey), []byte{}, 0, uint8(0))
	// split's top bit: the handshake's answer is the fuzzer's too.
	f.Add(wsFrame(true, false, WSText, []byte("a"), testKey), slices.Concat([]byte("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\r\n\r\n"),
		wsResponse("permessage-deflate; client_no_context_takeover"), wsFrame(true, true, WSText, z, nil)), 0, uint8(0x85))
	f.Fuzz(func(t *testing.T, egress, ingress []byte, lost int, split uint8) {
		limits := Limits{MaxHeader: 1024, MaxBody: 512, MaxDecoded: 1024}
		var r *h2Run
		if split&0x80 != 0 {
			r = newH2Run(limits)
			r.write(slices.Concat([]byte("GET / HTTP/1.1\r\n\r\n"), wsRequest("deflate")))
		} else {
			r = newWSRun(t, limits, "permessage-deflate; server_no_context_takeover")
		}
		check := func() {
			for _, m := range r.msgs {
				if len(m.Data) > limits.MaxDecoded {
					t.Fatalf("message of %d bytes over the limits", len(m.Data))
				}
			}
			for i := 0; r.hc.ws != nil && i < len(r.hc.ws.side); i++ {
				s := &r.hc.ws.side[i]
				if len(s.raw) > limits.MaxBody || len(s.dict) > 1<<wsMaxWindow || (s.msg != nil && len(s.msg.Data) > limits.MaxBody) {
					t.Fatalf("side %d keeps %d raw, %d history bytes", i, len(s.raw), len(s.dict))
				}
			}
			for _, m := range r.p.Pending(r.c.Key).Requests {
				if len(m.Data) > limits.MaxDecoded {
					t.Fatalf("pending message of %d bytes", len(m.Data))
				}
			}
		}
		s := int(split&0x7f) % (len(egress) + 1)
		r.write(egress[:s])
		check()
		r.read(ingress)
		r.call(stream.Egress, egress[s:], max(lost%70000, 0))
		check()
		r.write(egress)
		r.bytewise(stream.Ingress, ingress)
		check()
		r.close()
	})
}
