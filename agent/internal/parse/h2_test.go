package parse

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// h2Peer writes one side of an HTTP/2 connection as a real endpoint
// would: frames from http2.Framer, header blocks from one hpack.Encoder
// whose dynamic table lives as long as the connection.
type h2Peer struct {
	buf bytes.Buffer
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

func newH2Peer(client bool) *h2Peer {
	p := &h2Peer{}
	if client {
		p.buf.WriteString(http2.ClientPreface)
	}
	p.fr = http2.NewFramer(&p.buf, nil)
	p.enc = hpack.NewEncoder(&p.hb)
	return p
}

// take returns the bytes written so far and forgets them.
func (p *h2Peer) take() []byte {
	b := bytes.Clone(p.buf.Bytes())
	p.buf.Reset()
	return b
}

// block encodes name, value pairs into a header block.
func (p *h2Peer) block(kv ...string) []byte {
	p.hb.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		p.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return bytes.Clone(p.hb.Bytes())
}

// headers writes a HEADERS frame and, when frag > 0, CONTINUATION frames
// of at most frag bytes each.
func (p *h2Peer) headers(sid uint32, end bool, frag int, kv ...string) {
	b := p.block(kv...)
	first := b
	if frag > 0 && len(b) > frag {
		first, b = b[:frag], b[frag:]
	} else {
		b = nil
	}
	p.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: sid, BlockFragment: first, EndStream: end, EndHeaders: len(b) == 0})
	for len(b) > 0 {
		n := min(frag, len(b))
		p.fr.WriteContinuation(sid, n == len(b), b[:n])
		b = b[n:]
	}
}

// h2Run feeds a connection's calls to the parser.
type h2Run struct {
	p     *Parser
	c     *stream.Conn
	hc    *httpConn
	msgs  []*Message
	mails []*mail.Message
	mono  uint64
}

func newH2Run(limits Limits) *h2Run {
	r := &h2Run{c: &stream.Conn{}, p: New(limits)}
	r.hc = r.p.newConn()
	r.p.conns[r.c.Key] = r.hc
	return r
}

func (r *h2Run) add(o Output) {
	r.msgs = append(r.msgs, o.Messages...)
	r.mails = append(r.mails, o.Mails...)
}

func (r *h2Run) write(b []byte) { r.call(stream.Egress, b, 0) }
func (r *h2Run) read(b []byte)  { r.call(stream.Ingress, b, 0) }

func (r *h2Run) call(dir stream.Dir, b []byte, lost int) {
	r.mono++
	r.c.Last = r.mono
	r.add(r.p.Feed(stream.Segment{Conn: r.c, Dir: dir, Data: b, Lost: lost, Mono: r.mono}))
}

// bytewise writes b one byte per call.
func (r *h2Run) bytewise(dir stream.Dir, b []byte) {
	for i := range b {
		r.call(dir, b[i:i+1], 0)
	}
}

func (r *h2Run) close() { r.add(r.p.Feed(stream.Segment{Conn: r.c, Mono: r.mono, Closed: true})) }

// summary is a message in one line, for comparisons.
func summary(m *Message) string {
	var b strings.Builder
	if m.Response {
		fmt.Fprintf(&b, "#%d %d", m.Stream, m.Status)
	} else {
		fmt.Fprintf(&b, "#%d %s %s%s", m.Stream, m.Method, m.Host, m.Target)
	}
	fmt.Fprintf(&b, " %q", m.Data)
	if m.Truncated {
		b.WriteString(" truncated")
	}
	if m.Reset {
		b.WriteString(" reset")
	}
	return b.String()
}

func summaries(msgs []*Message) string {
	var s []string
	for _, m := range msgs {
		s = append(s, summary(m))
	}
	return strings.Join(s, "\n")
}

// clientConversation is a client's side of a connection: settings, a GET,
// two interleaved POSTs whose header blocks need CONTINUATION and whose
// bodies span padded DATA frames, each entry one write.
func clientConversation() (writes [][]byte, body3, body5 string) {
	body3 = `{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club"}`
	body5 = strings.Repeat("x", 300)
	c := newH2Peer(true)
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 4 << 20})
	c.fr.WriteWindowUpdate(0, 1<<30)
	writes = append(writes, c.take())
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, EndStream: true, EndHeaders: true,
		BlockFragment: c.block(":method", "GET", ":scheme", "https", ":authority", "api.postmarkapp.com", ":path", "/server", "accept", "*/*"),
		Priority:      http2.PriorityParam{StreamDep: 0, Weight: 15, Exclusive: true}})
	c.headers(3, false, 10, ":method", "POST", ":scheme", "https", ":authority", "api.postmarkapp.com", ":path", "/email",
		"content-type", "application/json", "x-postmark-server-token", strings.Repeat("t", 40))
	c.fr.WriteDataPadded(3, false, []byte(body3[:20]), make([]byte, 7))
	writes = append(writes, c.take())
	c.headers(5, false, 0, ":method", "POST", ":scheme", "https", ":authority", "api.postmarkapp.com", ":path", "/batch")
	c.fr.WriteData(5, false, []byte(body5[:100]))
	c.fr.WriteDataPadded(3, false, []byte(body3[20:50]), nil)
	c.fr.WritePing(false, [8]byte{1})
	writes = append(writes, c.take())
	c.fr.WriteDataPadded(3, true, []byte(body3[50:]), make([]byte, 255))
	writes = append(writes, c.take())
	c.fr.WriteData(5, false, []byte(body5[100:]))
	c.fr.WriteData(5, true, nil)
	writes = append(writes, c.take())
	return writes, body3, body5
}

func serverConversation() [][]byte {
	s := newH2Peer(false)
	var reads [][]byte
	s.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100})
	s.fr.WriteSettingsAck()
	reads = append(reads, s.take())
	s.headers(3, false, 0, ":status", "200", "content-type", "application/json")
	s.fr.WriteData(3, true, []byte(`{"ErrorCode":0}`))
	s.headers(1, true, 0, ":status", "204")
	reads = append(reads, s.take())
	s.headers(5, false, 0, ":status", "100")
	s.headers(5, false, 0, ":status", "422")
	s.fr.WriteDataPadded(5, true, []byte("no"), make([]byte, 3))
	s.fr.WriteGoAway(5, http2.ErrCodeNo, []byte("bye"))
	reads = append(reads, s.take())
	return reads
}

var wantConversation = `#1 GET api.postmarkapp.com/server ""
#3 POST api.postmarkapp.com/email "{\"From\":\"a@company.com\",\"To\":\"b@company.com\",\"Bcc\":\"phan@giftshop.club\"}"
#3 200 "{\"ErrorCode\":0}"
#1 204 ""
#5 POST api.postmarkapp.com/batch "` + strings.Repeat("x", 300) + `"
#5 100 ""
#5 422 "no"`

// sortedLines makes a comparison blind to the order of the directions.
func sortedLines(s string) string {
	l := strings.Split(s, "\n")
	slices.Sort(l)
	return strings.Join(l, "\n")
}

func TestH2Conversation(t *testing.T) {
	writes, _, _ := clientConversation()
	reads := serverConversation()
	r := newH2Run(Limits{})
	// The server's SETTINGS may be read before the client's preface is
	// complete: it is held until the protocol is known.
	r.write(writes[0][:5])
	if r.hc.proto() != "" || !r.hc.busy() {
		t.Fatalf("after a preface prefix: proto %q busy %v", r.hc.proto(), r.hc.busy())
	}
	r.read(reads[0])
	r.write(writes[0][5:])
	if r.hc.proto() != ProtoHTTP2 {
		t.Fatalf("proto %q", r.hc.proto())
	}
	r.write(writes[1])
	if len(r.msgs) != 1 || !r.hc.busy() {
		t.Fatalf("after the GET and a partial POST: %d messages, busy %v", len(r.msgs), r.hc.busy())
	}
	r.write(writes[2])
	r.write(writes[3])
	r.read(reads[1])
	r.write(writes[4])
	if r.hc.busy() {
		t.Fatal("busy after every request ended")
	}
	r.read(reads[2])
	r.close()
	if got := summaries(r.msgs); got != wantConversation {
		t.Fatalf("got\n%s\nwant\n%s", got, wantConversation)
	}
	post := r.msgs[1]
	if post.Proto != "HTTP/2.0" || post.Header.Get("Content-Type") != "application/json" ||
		post.Header.Get("X-Postmark-Server-Token") != strings.Repeat("t", 40) || post.WireSize != int64(len(post.Data)) || post.Start >= post.End {
		t.Fatalf("POST: %+v", post)
	}
	if st := r.p.Stats(); st.Messages != 7 || st.JunkBytes != 0 || st.Malformed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestH2Splits(t *testing.T) {
	writes, _, _ := clientConversation()
	reads := serverConversation()
	wire := bytes.Join(writes, nil)
	resp := bytes.Join(reads, nil)
	check := func(name string, r *h2Run) {
		t.Helper()
		r.close()
		if got := summaries(r.msgs); sortedLines(got) != sortedLines(wantConversation) {
			t.Fatalf("%s: got\n%s", name, got)
		}
	}
	// One byte per call, in both directions.
	r := newH2Run(Limits{})
	r.bytewise(stream.Egress, wire)
	r.bytewise(stream.Ingress, resp)
	check("bytewise", r)
	// Every split of the client's bytes in two calls.
	for i := 1; i < len(wire); i++ {
		r := newH2Run(Limits{})
		r.write(wire[:i])
		r.write(wire[i:])
		r.read(resp)
		check(fmt.Sprintf("split at %d", i), r)
	}
}

func TestH2DynamicTableAcrossRequests(t *testing.T) {
	c := newH2Peer(true)
	fields := []string{":method", "POST", ":scheme", "https", ":authority", "api.sendgrid.com", ":path", "/v3/mail/send",
		"authorization", "Bearer SG." + strings.Repeat("k", 60), "content-type", "application/json"}
	c.headers(1, true, 0, fields...)
	first := len(c.buf.Bytes()) - len(http2.ClientPreface)
	c.headers(3, true, 0, fields...)
	wire := c.take()
	second := len(wire) - len(http2.ClientPreface) - first
	if second > 20 {
		t.Fatalf("second header block is %d bytes: not indexed", second)
	}
	r := newH2Run(Limits{})
	r.write(wire)
	if len(r.msgs) != 2 {
		t.Fatalf("%d messages", len(r.msgs))
	}
	for _, m := range r.msgs {
		if m.Host != "api.sendgrid.com" || m.Target != "/v3/mail/send" || m.Header.Get("Authorization") != fields[9] {
			t.Fatalf("stream %d: %+v", m.Stream, m.Head)
		}
	}
}

func TestH2Gzip(t *testing.T) {
	body := []byte(`{"personalizations":[{"to":[{"email":"phan@giftshop.club"}]}]}`)
	z := gz(t, body)
	c := newH2Peer(true)
	c.headers(1, false, 0, ":method", "POST", ":path", "/v3/mail/send", ":authority", "api.sendgrid.com", "content-encoding", "gzip")
	c.fr.WriteData(1, false, z[:10])
	c.fr.WriteData(1, true, z[10:])
	r := newH2Run(Limits{})
	r.write(c.take())
	if len(r.msgs) != 1 || !bytes.Equal(r.msgs[0].Data, body) || r.msgs[0].Encoding != "gzip" || r.msgs[0].WireSize != int64(len(z)) {
		t.Fatalf("got %+v", r.msgs)
	}
}

func TestH2ResetMidBody(t *testing.T) {
	c := newH2Peer(true)
	s := newH2Peer(false)
	c.headers(1, false, 0, ":method", "POST", ":path", "/a", ":authority", "h")
	c.fr.WriteData(1, false, []byte("part"))
	c.headers(3, false, 0, ":method", "POST", ":path", "/b", ":authority", "h")
	c.fr.WriteData(3, false, []byte("early"))
	r := newH2Run(Limits{})
	r.write(c.take())
	// The server answers stream 3 and the client resets stream 1.
	s.headers(3, false, 0, ":status", "200")
	s.fr.WriteData(3, false, []byte("resp"))
	r.read(s.take())
	c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	r.write(c.take())
	if !r.hc.busy() {
		t.Fatal("stream 3 is still open")
	}
	// The server resets stream 3: its request and response end.
	s.fr.WriteRSTStream(3, http2.ErrCodeRefusedStream)
	s.fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	r.read(s.take())
	if r.hc.busy() {
		t.Fatal("busy after every stream was reset")
	}
	want := `#1 POST h/a "part" truncated reset
#3 POST h/b "early" truncated reset
#3 200 "resp" truncated reset`
	if got := summaries(r.msgs); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
}

func TestH2Busy(t *testing.T) {
	c := newH2Peer(true)
	r := newH2Run(Limits{})
	if r.hc.proto() != "" || r.hc.busy() {
		t.Fatal("busy before any byte")
	}
	r.write(c.take()) // the preface
	if r.hc.proto() != ProtoHTTP2 || r.hc.busy() {
		t.Fatalf("after the preface: proto %q busy %v", r.hc.proto(), r.hc.busy())
	}
	// A header block awaiting CONTINUATION.
	b := c.block(":method", "POST", ":path", "/email", ":authority", "api.postmarkapp.com")
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:4]})
	r.write(c.take())
	if !r.hc.busy() {
		t.Fatal("not busy while a header block awaits CONTINUATION")
	}
	c.fr.WriteContinuation(1, true, b[4:])
	frame := c.take()
	r.write(frame[:5]) // a partial frame
	if !r.hc.busy() {
		t.Fatal("not busy inside a frame")
	}
	r.write(frame[5:])
	if !r.hc.busy() {
		t.Fatal("not busy with a request body to come")
	}
	c.fr.WriteData(1, true, []byte("body"))
	r.write(c.take())
	if r.hc.busy() || len(r.msgs) != 1 {
		t.Fatalf("busy %v with %d messages after END_STREAM", r.hc.busy(), len(r.msgs))
	}
	// A GET with END_STREAM on its HEADERS never makes the connection busy
	// once its frame is whole.
	c.headers(3, true, 0, ":method", "GET", ":path", "/", ":authority", "h")
	r.write(c.take())
	if r.hc.busy() || len(r.msgs) != 2 {
		t.Fatalf("busy %v with %d messages after a GET", r.hc.busy(), len(r.msgs))
	}
	// The server's frames do not make the client busy.
	s := newH2Peer(false)
	s.headers(1, false, 0, ":status", "200")
	r.read(s.take())
	if r.hc.busy() {
		t.Fatal("busy with a response open")
	}
}

func TestH2LostBytes(t *testing.T) {
	c := newH2Peer(true)
	c.headers(1, false, 0, ":method", "POST", ":path", "/big", ":authority", "h")
	data := bytes.Repeat([]byte("d"), 10000)
	c.fr.WriteData(1, false, data)
	frames := c.take()
	// Lost bytes inside a DATA frame keep frame sync: they are accounted.
	r := newH2Run(Limits{})
	r.call(stream.Egress, frames[:len(frames)-4000], 4000)
	c.fr.WriteData(1, true, []byte("end"))
	r.write(c.take())
	if len(r.msgs) != 1 {
		t.Fatalf("%d messages", len(r.msgs))
	}
	m := r.msgs[0]
	if m.Missing != 4000 || m.WireSize != 10003 || len(m.Data) != 6003 || !m.Truncated {
		t.Fatalf("missing %d wire %d kept %d truncated %v", m.Missing, m.WireSize, len(m.Data), m.Truncated)
	}
	// Lost bytes past a frame lose frame sync: the open streams are
	// emitted as truncated and the direction is given up; the other
	// direction goes on.
	c.headers(3, false, 0, ":method", "POST", ":path", "/lost", ":authority", "h")
	c.fr.WriteData(3, false, []byte("seen"))
	r.call(stream.Egress, c.take(), 30)
	if len(r.msgs) != 2 || summary(r.msgs[1]) != `#3 POST h/lost "seen" truncated` || r.hc.busy() {
		t.Fatalf("got\n%s\nbusy %v", summaries(r.msgs), r.hc.busy())
	}
	c.headers(5, true, 0, ":method", "GET", ":path", "/after", ":authority", "h")
	r.write(c.take())
	s := newH2Peer(false)
	s.headers(1, true, 0, ":status", "200")
	r.read(s.take())
	r.close()
	if len(r.msgs) != 3 || r.msgs[2].Status != 200 {
		t.Fatalf("got\n%s", summaries(r.msgs))
	}
	if st := r.p.Stats(); st.Malformed != 1 || st.JunkBytes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestH2HPACKBomb(t *testing.T) {
	c := newH2Peer(true)
	big := strings.Repeat("v", 3000)
	c.headers(1, true, 0, ":method", "GET", ":path", "/", ":authority", "h", "x-big", big)
	// A block that refers to the 3000-byte entry (index 62) 16000 times:
	// 16000 bytes on the wire, 48 MB of header list.
	// Never-indexed literals leave the table as it is.
	c.hb.Reset()
	c.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	c.enc.WriteField(hpack.HeaderField{Name: ":path", Value: "/bomb", Sensitive: true})
	block := append(bytes.Clone(c.hb.Bytes()), bytes.Repeat([]byte{0x80 | 62}, 16000)...)
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block[:12000], EndStream: true})
	c.fr.WriteContinuation(3, true, block[12000:])
	c.headers(5, true, 0, ":method", "GET", ":path", "/next", ":authority", "h", "x-big", big)
	r := newH2Run(Limits{MaxHeader: 16 << 10})
	r.write(c.take())
	if len(r.msgs) != 3 {
		t.Fatalf("got\n%s", summaries(r.msgs))
	}
	bomb := r.msgs[1]
	kept := 0
	for k, vs := range bomb.Header {
		for _, v := range vs {
			kept += len(k) + len(v)
		}
	}
	if bomb.Target != "/bomb" || !bomb.Truncated || kept > 16<<10 {
		t.Fatalf("bomb: target %q truncated %v, %d header bytes kept", bomb.Target, bomb.Truncated, kept)
	}
	// The dynamic table stayed right: the next block refers to it.
	if next := r.msgs[2]; next.Target != "/next" || next.Header.Get("X-Big") != big || next.Truncated {
		t.Fatalf("next: %+v", next.Head)
	}

	// A literal longer than the header limit gives the direction up.
	c = newH2Peer(true)
	c.headers(1, true, 8000, ":method", "GET", ":path", "/", "x-huge", strings.Repeat("h", 20<<10))
	r = newH2Run(Limits{MaxHeader: 16 << 10})
	r.write(c.take())
	r.close()
	if len(r.msgs) != 1 || !r.msgs[0].Truncated || r.p.Stats().Malformed != 1 {
		t.Fatalf("huge literal: got\n%s\nstats %+v", summaries(r.msgs), r.p.Stats())
	}
}

func TestH2FloodCostsNoMemory(t *testing.T) {
	c := newH2Peer(true)
	r := newH2Run(Limits{})
	r.write(c.take())
	for range 500 {
		c.fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 1 << 30}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
		c.fr.WriteSettingsAck()
		c.fr.WritePing(false, [8]byte{})
		c.fr.WriteWindowUpdate(0, 1)
		c.fr.WritePriority(1, http2.PriorityParam{Weight: 1})
		c.fr.WriteRawFrame(0x77, 0, 0, []byte("unknown frame type"))
	}
	flood := c.take()
	allocs := testing.AllocsPerRun(20, func() {
		r.write(flood)
		r.bytewise(stream.Egress, flood[:200])
		r.write(flood[200:])
	})
	if allocs != 0 {
		t.Fatalf("a flood of control frames allocates: %v per run", allocs)
	}
	c.headers(1, true, 0, ":method", "GET", ":path", "/after", ":authority", "h")
	r.write(c.take())
	if len(r.msgs) != 1 || r.msgs[0].Target != "/after" {
		t.Fatalf("got\n%s", summaries(r.msgs))
	}
}

func TestH2FrameSizeAndTableSettings(t *testing.T) {
	c := newH2Peer(true)
	s := newH2Peer(false)
	s.enc.SetMaxDynamicTableSizeLimit(32 << 10)
	s.enc.SetMaxDynamicTableSize(32 << 10) // sends a table size update
	// The client allows big frames and a big table: the server may use them.
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20}, http2.Setting{ID: http2.SettingHeaderTableSize, Val: 32 << 10})
	c.headers(1, true, 0, ":method", "GET", ":path", "/", ":authority", "h")
	s.headers(1, false, 0, ":status", "200", "x-big", strings.Repeat("b", 40000))
	s.fr.WriteData(1, true, bytes.Repeat([]byte("r"), 100000))
	r := newH2Run(Limits{})
	r.write(c.take())
	resp := s.take()
	r.read(resp)
	if len(r.msgs) != 2 || len(r.msgs[1].Data) != 100000 || len(r.msgs[1].Header.Get("X-Big")) != 40000 {
		t.Fatalf("got\n%.300s", summaries(r.msgs))
	}
	// The 40 KB header block came in one frame and one call, yet was
	// handed to the decoder in bounded pieces.
	if n := cap(r.hc.h2.side[stream.Ingress].frag); n > h2FlushAt {
		t.Fatalf("header block buffer of %d bytes", n)
	}
	// Without those settings the same bytes break the limits (a 40 KB
	// frame): the direction is given up.
	c = newH2Peer(true)
	c.headers(1, true, 0, ":method", "GET", ":path", "/", ":authority", "h")
	r = newH2Run(Limits{})
	r.write(c.take())
	r.read(resp)
	r.close()
	if len(r.msgs) != 1 || r.p.Stats().Malformed != 1 {
		t.Fatalf("got\n%.300s\nstats %+v", summaries(r.msgs), r.p.Stats())
	}
}

func TestH2TableSizeOverAnnounced(t *testing.T) {
	// The client announces no HEADER_TABLE_SIZE: a server encoder that
	// grows its table past 4096 breaks HPACK, and the direction is given
	// up rather than guessed; the response seen so far is emitted.
	c := newH2Peer(true)
	s := newH2Peer(false)
	c.headers(1, true, 0, ":method", "GET", ":path", "/", ":authority", "h")
	s.headers(1, false, 0, ":status", "200")
	s.enc.SetMaxDynamicTableSizeLimit(8192)
	s.enc.SetMaxDynamicTableSize(8192)
	s.headers(1, true, 0, "grpc-status", "0") // trailers carrying the size update
	r := newH2Run(Limits{})
	r.write(c.take())
	r.read(s.take())
	r.close()
	if len(r.msgs) != 2 || r.msgs[1].Status != 200 || !r.msgs[1].Truncated || r.p.Stats().Malformed != 1 {
		t.Fatalf("got\n%s\nstats %+v", summaries(r.msgs), r.p.Stats())
	}
}

func TestH2StreamLimit(t *testing.T) {
	c := newH2Peer(true)
	r := newH2Run(Limits{})
	n := h2MaxStreams + 50
	for i := range n {
		c.headers(uint32(2*i+1), false, 0, ":method", "POST", ":path", fmt.Sprintf("/%d", i), ":authority", "h")
	}
	r.write(c.take())
	for i := range n {
		c.fr.WriteData(uint32(2*i+1), true, []byte("b"))
	}
	r.write(c.take())
	side := &r.hc.h2.side[stream.Egress]
	if len(r.msgs) != h2MaxStreams || side.ignored != 50 || len(side.streams) != 0 {
		t.Fatalf("%d messages, %d ignored, %d open", len(r.msgs), side.ignored, len(side.streams))
	}
	r.close()
	if st := r.p.Stats(); st.IgnoredStreams != 50 {
		t.Fatalf("stats %+v", st)
	}
}

func TestH2PushPromiseKeepsTable(t *testing.T) {
	c := newH2Peer(true)
	s := newH2Peer(false)
	c.headers(1, true, 0, ":method", "GET", ":path", "/", ":authority", "h")
	// The promise adds an entry to the server's table; the response then
	// refers to it.
	s.hb.Reset()
	s.enc.WriteField(hpack.HeaderField{Name: ":method", Value: "GET"})
	s.enc.WriteField(hpack.HeaderField{Name: "x-pushed", Value: "yes"})
	s.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: bytes.Clone(s.hb.Bytes()), EndHeaders: true, PadLength: 3})
	s.headers(2, true, 0, ":status", "200")
	s.headers(1, true, 0, ":status", "200", "x-pushed", "yes")
	r := newH2Run(Limits{})
	r.write(c.take())
	r.read(s.take())
	if len(r.msgs) != 2 || r.msgs[1].Stream != 1 || r.msgs[1].Header.Get("X-Pushed") != "yes" {
		t.Fatalf("got\n%s", summaries(r.msgs))
	}
}

func TestConnProtocols(t *testing.T) {
	// HTTP/1.1 that starts like the preface ("P") is still HTTP/1.1.
	r := newH2Run(Limits{})
	r.write([]byte("P"))
	r.write([]byte("OST /email HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"))
	r.read([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	if r.hc.proto() != ProtoHTTP1 || len(r.msgs) != 2 || r.msgs[0].Target != "/email" || r.msgs[0].Stream != 0 {
		t.Fatalf("proto %q got\n%s", r.hc.proto(), summaries(r.msgs))
	}
	// SMTP, with the server's greeting read first.
	r = newH2Run(Limits{})
	r.read([]byte("220 mx ESMTP\r\n"))
	r.write([]byte("EHLO client\r\n"))
	if r.hc.proto() != ProtoSMTP {
		t.Fatalf("proto %q", r.hc.proto())
	}
}

func FuzzHTTP2Parser(f *testing.F) {
	// Small seeds: the fuzzer minimises each new input, which takes long
	// on big ones.
	writes, _, _ := clientConversation()
	f.Add(writes[1], serverConversation()[1], 0, uint8(9))
	c := newH2Peer(true)
	c.headers(1, false, 3, ":method", "POST", ":path", "/x", ":authority", "h", "content-encoding", "gzip")
	c.fr.WriteDataPadded(1, true, []byte("\x1f\x8b\x08"), []byte{0, 0})
	c.fr.WriteRSTStream(1, http2.ErrCodeCancel)
	f.Add(c.take()[len(http2.ClientPreface):], []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}, 7, uint8(30))
	f.Fuzz(func(t *testing.T, egress, ingress []byte, lost int, split uint8) {
		limits := Limits{MaxHeader: 1024, MaxBody: 512, MaxDecoded: 1024}
		r := newH2Run(limits)
		check := func() {
			for _, m := range r.msgs {
				if len(m.Data) > limits.MaxDecoded {
					t.Fatalf("body of %d bytes over the limits", len(m.Data))
				}
			}
			for i := range r.hc.h2.side {
				s := &r.hc.h2.side[i]
				if len(s.streams) > h2MaxStreams || cap(s.frag) > h2FlushAt+len(egress)+len(ingress) {
					t.Fatalf("side %d: %d streams, %d fragment bytes", i, len(s.streams), cap(s.frag))
				}
			}
		}
		r.write([]byte(http2.ClientPreface))
		s := int(split) % (len(egress) + 1)
		r.write(egress[:s])
		r.read(ingress)
		check()
		r.call(stream.Egress, egress[s:], max(lost%70000, 0))
		r.bytewise(stream.Ingress, ingress)
		check()
		r.close()
	})
}

// recConn records what one end of a connection writes, in the order of
// the writes of both ends.
type recConn struct {
	net.Conn
	dir stream.Dir
	rec *recording
}

type recording struct {
	mu    sync.Mutex
	calls []recCall
}

type recCall struct {
	dir  stream.Dir
	data []byte
}

func (c *recConn) Write(b []byte) (int, error) {
	c.rec.mu.Lock()
	c.rec.calls = append(c.rec.calls, recCall{c.dir, bytes.Clone(b)})
	c.rec.mu.Unlock()
	return c.Conn.Write(b)
}

// pipeListener hands http.Server one connection, then nothing until it
// is closed.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	addr  net.Addr
}

func newPipeListener(c net.Conn) *pipeListener {
	l := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{}), addr: c.LocalAddr()}
	l.conns <- c
	return l
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return l.addr }

// TestH2NetHTTPCapture replays what Go's own HTTP/2 client and server
// write to each other, one call per write, as the sensor would see it
// at SSL_write and SSL_read.
func TestH2NetHTTPCapture(t *testing.T) {
	rec := &recording{}
	cli, srv := net.Pipe()
	// HTTP/2 with prior knowledge on both ends, no TLS: the bytes written
	// are those SSL_write and SSL_read would see.
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, "echo %s %s %d", r.Method, r.URL.Path, len(body))
		}),
		ReadHeaderTimeout: 10 * time.Second,
		Protocols:         &h2,
	}
	go server.Serve(newPipeListener(&recConn{Conn: srv, dir: stream.Ingress, rec: rec}))
	defer server.Close()
	tr := &http.Transport{
		Protocols: &h2,
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return &recConn{Conn: cli, dir: stream.Egress, rec: rec}, nil
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}

	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	body := `{"From":"a@company.com","To":"phan@giftshop.club","TextBody":"` + marker + strings.Repeat(".", 40000) + `"}`
	resp, err := client.Post("http://api.postmarkapp.com/email", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(got) != fmt.Sprintf("echo POST /email %d", len(body)) {
		t.Fatalf("response %s %q", resp.Proto, got)
	}
	resp, err = client.Get("http://api.postmarkapp.com/server?" + marker)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()

	rec.mu.Lock()
	calls := slices.Clone(rec.calls)
	rec.mu.Unlock()
	r := newH2Run(Limits{})
	for _, c := range calls {
		r.call(c.dir, c.data, 0)
	}
	if r.hc.proto() != ProtoHTTP2 || r.hc.busy() {
		t.Fatalf("proto %q busy %v", r.hc.proto(), r.hc.busy())
	}
	r.close()
	var reqs, resps []*Message
	for _, m := range r.msgs {
		if m.Response {
			resps = append(resps, m)
		} else {
			reqs = append(reqs, m)
		}
	}
	if len(reqs) != 2 || len(resps) != 2 {
		t.Fatalf("got\n%.2000s", summaries(r.msgs))
	}
	post, get := reqs[0], reqs[1]
	if post.Method != "POST" || post.Host != "api.postmarkapp.com" || post.Target != "/email" || post.Proto != "HTTP/2.0" ||
		post.Stream != 1 || string(post.Data) != body || post.Truncated || post.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("POST: %+v, %d body bytes", post.Head, len(post.Data))
	}
	if get.Method != "GET" || get.Target != "/server?"+marker || get.Stream != 3 || len(get.Data) != 0 {
		t.Fatalf("GET: %+v", get.Head)
	}
	for i, m := range resps {
		if m.Status != http.StatusAccepted || m.Stream != reqs[i].Stream || m.Header.Get("Content-Type") != "text/plain" || m.Truncated {
			t.Fatalf("response %d: %+v %q", i, m.Head, m.Data)
		}
	}
	if want := fmt.Sprintf("echo POST /email %d", len(body)); string(resps[0].Data) != want {
		t.Fatalf("response body %q, want %q", resps[0].Data, want)
	}
	if st := r.p.Stats(); st.JunkBytes != 0 || st.Malformed != 0 {
		t.Fatalf("stats %+v", st)
	}
}
