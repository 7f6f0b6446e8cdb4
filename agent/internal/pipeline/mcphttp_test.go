package pipeline

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
)

// The listening sockets of /proc/net/tcp{,6} that count: loopback and
// wildcard addresses, state LISTEN; not an established connection, not a
// listener bound to another address.
func TestListeners(t *testing.T) {
	dir := t.TempDir()
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0A00020F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1004 1 0000000000000000 100 0 0 10 0
`
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
   2: B80D0120000000000000000001000000:0BBA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2003 1 0000000000000000 100 0 0 10 0
`
	for name, s := range map[string]string{"tcp": tcp, "tcp6": tcp6} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ports := map[string]uint16{}
	listeners(filepath.Join(dir, "tcp"), ports)
	listeners(filepath.Join(dir, "tcp6"), ports)
	want := map[string]uint16{"1001": 8080, "1002": 80, "2001": 3000, "2002": 3001}
	if len(ports) != len(want) {
		t.Errorf("listeners %v, want %v", ports, want)
	}
	for k, v := range want {
		if ports[k] != v {
			t.Errorf("inode %s: port %d, want %d (all %v)", k, ports[k], v, ports)
		}
	}
}

// fakeWatcher is the sensor's control as the pipeline uses it.
type fakeWatcher struct{ unwatched map[uint32]bool }

func (f *fakeWatcher) WatchStdio(uint32, probe.Stdio) error { return nil }
func (f *fakeWatcher) UnwatchStdio(uint32) error            { return nil }
func (f *fakeWatcher) WatchHTTP(uint32, []uint16) error     { return nil }
func (f *fakeWatcher) UnwatchHTTP(pid uint32) error {
	f.unwatched[pid] = true
	return nil
}

func sock(kind probe.Kind, pid uint32, conn uint64, s string) *probe.Event {
	return &probe.Event{Kind: kind, PID: pid, SSL: conn, Len: uint32(len(s)), Data: []byte(s)}
}

// A streamable-HTTP session on a candidate's connection makes it an MCP
// server with its tool call in flight; a candidate whose connections carry
// no MCP is no longer watched after httpGiveUpConns of them; the agent's
// own connections are never followed.
func TestHTTPBranch(t *testing.T) {
	w := &fakeWatcher{unwatched: map[uint32]bool{}}
	p := New(Options{Stdio: w})
	const srv, web = 4000001, 4000002
	body := func(s string) string {
		return fmt.Sprintf("POST /mcp HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(s), s)
	}
	p.Feed(sock(probe.KindSockIn, srv, 1, body(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"clientInfo":{"name":"app","version":"1"}}}`)))
	res := `{"jsonrpc":"2.0","id":0,"result":{"serverInfo":{"name":"postmark-mcp","version":"1.0.16"}}}`
	r := p.Feed(sock(probe.KindSockOut, srv, 1, fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(res), res)))
	if len(r.MCP) != 1 || r.MCP[0].InitResult == nil {
		t.Fatalf("initialize result: %+v", r.MCP)
	}
	r = p.Feed(sock(probe.KindSockIn, srv, 2, body(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"send_email","arguments":{"to":"a@b.example"}}}`)))
	s := p.MCP(srv)
	if len(r.MCP) != 1 || s == nil || !s.HTTP || s.Server.Identity().Server.Name != "postmark-mcp" {
		t.Fatalf("server %+v after %+v", s, r.MCP)
	}
	if calls := s.Server.InFlight(time.Now()); len(calls) != 1 || calls[0].Tool != "send_email" {
		t.Errorf("in flight %+v", calls)
	}
	for i := range httpGiveUpConns {
		p.Feed(sock(probe.KindSockIn, web, uint64(i+1), "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"))
		if w.unwatched[web] != (i == httpGiveUpConns-1) {
			t.Fatalf("after %d pages: unwatched %v", i+1, w.unwatched[web])
		}
	}
	p.Feed(sock(probe.KindSockIn, p.self, 1, body(`{"jsonrpc":"2.0","id":1,"method":"ping"}`)))
	if !w.unwatched[p.self] || p.MCP(p.self) != nil {
		t.Errorf("the agent's own connection followed")
	}
	st := p.StdioStats().HTTP
	if st.Servers != 1 || st.GivenUp != 1 || st.ConnsGivenUp != httpGiveUpConns || st.Messages != 3 {
		t.Errorf("stats %+v", st)
	}
	p.Feed(&probe.Event{Kind: probe.KindExit, PID: srv})
	if p.MCP(srv) != nil || !w.unwatched[srv] {
		t.Errorf("server still known after its exit")
	}
}
