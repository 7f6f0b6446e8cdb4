package pipeline

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/mcp"
	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

func write(pid uint32, ssl uint64, s string, mono uint64) *probe.Event {
	return &probe.Event{Kind: probe.KindWrite, PID: pid, SSL: ssl, Len: uint32(len(s)), Data: []byte(s), Mono: mono}
}

func TestFeedReturnsWhatEachEventCompleted(t *testing.T) {
	p := New(Options{})
	k := stream.Key{PID: 7, SSL: 0xa}
	r := p.Feed(write(7, 0xa, "POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Length: 4\r\n\r\n{\"", 1))
	if r.Conn == nil || r.Conn.Key != k || len(r.Done) != 0 {
		t.Fatalf("first write: conn %v, done %d", r.Conn, len(r.Done))
	}
	if !p.Busy(k) || p.Proto(k) != parse.ProtoHTTP1 {
		t.Fatalf("after the head: busy %v proto %q", p.Busy(k), p.Proto(k))
	}
	if pend := p.Pending(k); len(pend.Requests) != 1 || string(pend.Requests[0].Data) != `{"` {
		t.Fatalf("pending %+v", pend)
	}
	r = p.Feed(write(7, 0xa, "}\"", 2))
	if len(r.Done) != 1 || r.Done[0].Conn != r.Conn || len(r.Done[0].Messages) != 1 || r.Done[0].Messages[0].Target != "/email" {
		t.Fatalf("second write: %+v", r.Done)
	}
	if p.Busy(k) {
		t.Fatal("busy after the request ended")
	}
	// SMTP: the mail is complete at the write with the end of its DATA.
	r = p.Feed(write(7, 0xb, "EHLO c\r\nMAIL FROM:<a@company.co>\r\nRCPT TO:<phan@giftshop.club>\r\nDATA\r\n", 3))
	if len(r.Done) != 0 || p.Proto(stream.Key{PID: 7, SSL: 0xb}) != parse.ProtoSMTP {
		t.Fatalf("smtp envelope: %+v proto %q", r.Done, p.Proto(stream.Key{PID: 7, SSL: 0xb}))
	}
	r = p.Feed(write(7, 0xb, "Subject: hi\r\n\r\nbody\r\n.\r\n", 4))
	if len(r.Done) != 1 || len(r.Done[0].Mails) != 1 || r.Done[0].Mails[0].EnvelopeTo[0].Addr != "phan@giftshop.club" {
		t.Fatalf("smtp data: %+v", r.Done)
	}
}

func TestCloseFlushesAndForgets(t *testing.T) {
	p := New(Options{})
	p.Feed(write(7, 0xa, "GET / HTTP/1.1\r\n\r\n", 1))
	// A response whose end is the connection's end.
	r := p.Feed(&probe.Event{Kind: probe.KindRead, PID: 7, SSL: 0xa, Len: 22, Data: []byte("HTTP/1.0 200 OK\r\n\r\nhi"), Mono: 2})
	if len(r.Done) != 0 {
		t.Fatalf("response ended before the connection: %+v", r.Done)
	}
	r = p.Feed(&probe.Event{Kind: probe.KindExit, PID: 7, Mono: 3})
	if r.Conn != nil || len(r.Done) != 1 || len(r.Done[0].Messages) != 1 || !r.Done[0].Messages[0].Response {
		t.Fatalf("exit: conn %v done %+v", r.Conn, r.Done)
	}
	if p.Lookup(stream.Key{PID: 7, SSL: 0xa}) != nil || p.Proto(stream.Key{PID: 7, SSL: 0xa}) != "" {
		t.Fatal("connection kept after its process exited")
	}
}

func TestIdleConnectionsEvicted(t *testing.T) {
	s := uint64(time.Second)
	p := New(Options{Stream: stream.Options{Idle: time.Second}, EvictEvery: time.Second})
	p.Feed(write(7, 0xa, "POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nabc", 1*s))
	r := p.Feed(write(8, 0xb, "GET / HTTP/1.1\r\n\r\n", 5*s))
	if p.Lookup(stream.Key{PID: 7, SSL: 0xa}) != nil {
		t.Fatal("idle connection not evicted")
	}
	if len(r.Done) != 1 || r.Done[0].Conn.PID != 8 {
		t.Fatalf("done %+v: want only the GET of pid 8", r.Done)
	}
	if ss, _ := p.Stats(); ss.Evicted != 1 {
		t.Fatalf("evicted %d", ss.Evicted)
	}
}

// BenchmarkFeed passes a keep-alive connection's traffic through the
// stream and parse stages: per iteration one JSON mail request in two
// writes (head, body) and its response.
func BenchmarkFeed(b *testing.B) {
	body := `{"From":"agent@company.co","To":"bob@company.co","Subject":"Invoice","TextBody":"` + strings.Repeat("x", 2000) + `"}`
	head := fmt.Sprintf("POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
	p := New(Options{})
	b.ReportAllocs()
	b.SetBytes(int64(len(head) + len(body) + len(resp)))
	mono := uint64(1)
	for b.Loop() {
		p.Feed(write(7, 0xa, head, mono))
		if r := p.Feed(write(7, 0xa, body, mono+1)); len(r.Done) != 1 {
			b.Fatalf("request not completed: %+v", r.Done)
		}
		p.Feed(&probe.Event{Kind: probe.KindRead, PID: 7, SSL: 0xa, Len: uint32(len(resp)), Data: []byte(resp), Mono: mono + 2})
		mono += 3
	}
}

// BenchmarkMCPServerMemory prints the heap an MCP server costs the agent:
// its two stdio decoders and its tracker after a session of an initialize,
// a tools/list and 64 tool calls with their results (the tracker keeps the
// last 32), beside the heap of nothing tracked in the same run.
func BenchmarkMCPServerMemory(b *testing.B) {
	const servers = 200
	lines := []string{
		`{"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"claude-ai","version":"0.1.0"}},"jsonrpc":"2.0","id":0}`,
		`{"method":"tools/list","jsonrpc":"2.0","id":1}`,
	}
	out := []string{
		`{"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"postmark-mcp","version":"1.0.16"}},"jsonrpc":"2.0","id":0}`,
		`{"result":{"tools":[{"name":"send_email","inputSchema":{"type":"object"}}]},"jsonrpc":"2.0","id":1}`,
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for b.Loop() {
		base := heap()
		kept := make([]*MCPServer, 0, servers)
		for range servers {
			s := newMCPServer(1)
			for _, l := range lines {
				s.feed(mcp.FromClient, []byte(l+"\n"), time.Now())
			}
			for _, l := range out {
				s.feed(mcp.FromServer, []byte(l+"\n"), time.Now())
			}
			for i := 2; i < 66; i++ {
				call := fmt.Sprintf(`{"method":"tools/call","params":{"name":"send_email","arguments":{"to":"alice@partner.example","subject":"Q3","textBody":"%s"}},"jsonrpc":"2.0","id":%d}`, strings.Repeat("x", 400), i)
				s.feed(mcp.FromClient, []byte(call+"\n"), time.Now())
				s.feed(mcp.FromServer, []byte(fmt.Sprintf(`{"result":{"content":[{"type":"text","text":"sent"}]},"jsonrpc":"2.0","id":%d}`, i)+"\n"), time.Now())
			}
			kept = append(kept, s)
		}
		per := float64(heap()-base) / servers
		runtime.KeepAlive(kept)
		b.ReportMetric(per, "B/server")
	}
}
