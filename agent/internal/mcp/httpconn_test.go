package mcp

import (
	"fmt"
	"strings"
	"testing"
)

// feedSplit feeds data in pieces of n bytes.
func feedSplit(c *HTTPConn, from Side, data string, n int) []Message {
	var out []Message
	for len(data) > 0 {
		k := min(n, len(data))
		out = append(out, c.Feed(from, []byte(data[:k]))...)
		data = data[k:]
	}
	return out
}

func chunked(body string, size int) string {
	var b strings.Builder
	for len(body) > 0 {
		k := min(size, len(body))
		fmt.Fprintf(&b, "%x\r\n%s\r\n", k, body[:k])
		body = body[k:]
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// A streamable-HTTP session as a node server sees it: POSTs with JSON
// bodies (Content-Length or chunked), answered with JSON, with an SSE
// stream (chunked), and with 202; whatever the split of the bytes.
func TestHTTPConnSession(t *testing.T) {
	initReq := `{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"app","version":"1"}}}`
	initRes := `{"jsonrpc":"2.0","id":0,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"postmark-mcp","version":"1.0.16"}}}`
	call := `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"a@b.example"}}}`
	callRes := `{"jsonrpc":"2.0","id":2,"result":{"content":[{"type":"text","text":"sent"}]}}`
	notif := `{"jsonrpc":"2.0","method":"notifications/initialized"}`
	reqs := "POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: " + fmt.Sprint(len(initReq)) + "\r\n\r\n" + initReq +
		"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nmcp-session-id: s1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(notif, 7) +
		"POST /mcp HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nMcp-Session-Id: s1\r\nContent-Length: " + fmt.Sprint(len(call)) + "\r\n\r\n" + call +
		"DELETE /mcp HTTP/1.1\r\nHost: x\r\nMcp-Session-Id: s1\r\n\r\n"
	resps := "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + fmt.Sprint(len(initRes)) + "\r\n\r\n" + initRes +
		"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked("event: message\nid: e1\ndata: "+callRes+"\n\n", 5) +
		"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	for _, n := range []int{1, 3, 64, 1 << 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := NewHTTPConn(0)
			in := feedSplit(c, FromClient, reqs, n)
			out := feedSplit(c, FromServer, resps, n)
			if c.GivenUp() {
				t.Fatalf("given up: %+v", c.Stats())
			}
			if len(in) != 3 || in[0].Init == nil || in[1].Method != "notifications/initialized" || in[2].Call == nil || in[2].Call.Name != "send_email" {
				t.Errorf("requests decoded %+v", in)
			}
			if len(out) != 2 || out[0].InitResult == nil || !out[1].CallResult || out[1].EventID != "e1" {
				t.Errorf("responses decoded %+v", out)
			}
			if st := c.Stats(); st.Messages != 5 || st.Malformed != 0 {
				t.Errorf("stats %+v", st)
			}
			if b := c.Buffered(); b > 64<<10 {
				t.Errorf("holds %d bytes after the session", b)
			}
		})
	}
}

// What is not MCP over HTTP is given up at once, and then costs nothing.
func TestHTTPConnGivesUp(t *testing.T) {
	for name, in := range map[string]string{
		"tls":        "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"page":       "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n",
		"form":       "POST /login HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\nu=a&p=b",
		"other json": "POST /api HTTP/1.1\r\nContent-Length: 9\r\n\r\n{\"a\": 1}\n",
		"huge head":  "GET /" + strings.Repeat("a", maxHTTPHead+10),
		"bad chunk":  "POST /mcp HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c := NewHTTPConn(0)
			if msgs := c.Feed(FromClient, []byte(in)); len(msgs) != 0 {
				t.Errorf("decoded %+v", msgs)
			}
			if !c.GivenUp() {
				t.Fatalf("not given up")
			}
			if msgs := c.Feed(FromClient, []byte("POST /mcp HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}")); msgs != nil {
				t.Errorf("decoded after giving up: %+v", msgs)
			}
		})
	}
	// A session GET (SSE stream of the server's messages) is MCP-like.
	c := NewHTTPConn(0)
	c.Feed(FromClient, []byte("GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\nMcp-Session-Id: s\r\n\r\n"))
	msgs := c.Feed(FromServer, []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n"))
	if c.GivenUp() || len(msgs) != 1 {
		t.Errorf("GET stream: given up %v, %+v", c.GivenUp(), msgs)
	}
	// Lost bytes: the stream cannot be followed.
	c.Lost(10)
	if !c.GivenUp() {
		t.Errorf("not given up after a loss")
	}
}

// A body over the bound is skipped and counted; the connection goes on.
func TestHTTPConnOversize(t *testing.T) {
	c := NewHTTPConn(64)
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"a":"` + strings.Repeat("b", 100) + `"}}}`
	small := `{"jsonrpc":"2.0","id":2,"method":"ping"}`
	msgs := c.Feed(FromClient, []byte(fmt.Sprintf("POST /mcp HTTP/1.1\r\nMcp-Session-Id: s\r\nContent-Length: %d\r\n\r\n%sPOST /mcp HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s", len(big), big, len(small), small)))
	if len(msgs) != 1 || msgs[0].Method != "ping" || c.Stats().Oversize != 1 || c.GivenUp() {
		t.Errorf("decoded %+v, stats %+v", msgs, c.Stats())
	}
}

// Whatever the bytes and their split, HTTPConn neither panics nor holds
// more than its bounds.
func FuzzHTTPConn(f *testing.F) {
	f.Add([]byte("POST /mcp HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"),
		[]byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata:\r\n0\r\n\r\n"), uint8(3))
	f.Add([]byte("GET /mcp HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n"), []byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in, out []byte, split uint8) {
		c := NewHTTPConn(1 << 10)
		n := int(split)%16 + 1
		for len(in) > 0 || len(out) > 0 {
			k := min(n, len(in))
			c.Feed(FromClient, in[:k])
			in = in[k:]
			k = min(n, len(out))
			c.Feed(FromServer, out[:k])
			out = out[k:]
			if b := c.Buffered(); b > 64<<10 {
				t.Fatalf("holds %d bytes", b)
			}
		}
	})
}
