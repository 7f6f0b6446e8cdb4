package mcp

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2025, 9, 25, 10, 0, 0, 0, time.UTC)

func msg(t *testing.T, s string) Message {
	t.Helper()
	m, ok := decodeMessage([]byte(s))
	if !ok {
		t.Fatalf("%s does not decode", s)
	}
	return m
}

func callMsg(id, tool, args string) string {
	return `{"method":"tools/call","params":{"name":"` + tool + `","arguments":` + args + `},"jsonrpc":"2.0","id":` + id + `}`
}

func resultMsg(id string) string {
	return `{"result":{"content":[{"type":"text","text":"ok"}]},"jsonrpc":"2.0","id":` + id + `}`
}

func ids(calls []Call) []string {
	var out []string
	for _, c := range calls {
		out = append(out, string(c.ID))
	}
	return out
}

func TestServerSession(t *testing.T) {
	s := NewServer(ServerOptions{})
	at := func(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }
	step := func(from Side, m string, sec int, want Event) Call {
		t.Helper()
		ev, c := s.Observe(from, msg(t, m), at(sec))
		if ev != want {
			t.Fatalf("%s: event %s, want %s", m, ev, want)
		}
		return c
	}
	step(FromClient, tsInitialize, 0, EventClientInit)
	if id := s.Identity(); id.Client.Name != "claude-ai" || id.Initialized {
		t.Fatalf("identity %+v", id)
	}
	step(FromServer, tsInitResult, 0, EventIdentified)
	step(FromClient, tsInitialized, 0, EventNone)
	want := Identity{Server: Implementation{"postmark-mcp", "1.0.16"}, ProtocolVersion: "2025-06-18", Client: Implementation{"claude-ai", "0.1.0"}, ClientProtocol: "2025-06-18", Initialized: true}
	if id := s.Identity(); id != want {
		t.Fatalf("identity %+v, want %+v", id, want)
	}
	step(FromClient, tsToolsList, 1, EventNone)
	step(FromServer, tsToolsResult, 1, EventTools)
	if tools := s.Tools(); len(tools) != 4 || tools[0] != "sendEmail" {
		t.Fatalf("tools %q", tools)
	}

	// Three calls in flight, interleaved, answered out of order; the
	// server asks the client for a sample in between (its id 0 is not
	// the client's id 0).
	c := step(FromClient, callMsg("2", "sendEmail", `{"to":"alice@example.com"}`), 2, EventCallStarted)
	if c.ID != "2" || c.Tool != "sendEmail" || c.State != CallInFlight || !slices.Equal(c.Recipients, []string{"alice@example.com"}) || !c.Started.Equal(at(2)) {
		t.Fatalf("call %+v", c)
	}
	step(FromClient, callMsg(`"2"`, "sendEmail", `{"to":"bob@example.com"}`), 3, EventCallStarted)
	step(FromServer, serverSampling, 3, EventNone)
	step(FromClient, `{"jsonrpc":"2.0","id":0,"result":{"role":"assistant","content":{"type":"text","text":"hi"},"model":"m"}}`, 3, EventNone)
	step(FromClient, callMsg("4", "getDeliveryStats", `{}`), 4, EventCallStarted)
	if got := ids(s.InFlight(at(5))); !slices.Equal(got, []string{"4", `"2"`, "2"}) {
		t.Fatalf("in flight %q", got)
	}
	c = step(FromServer, resultMsg(`"2"`), 6, EventCallEnded)
	if c.State != CallDone || !c.Ended.Equal(at(6)) || c.Recipients[0] != "bob@example.com" {
		t.Fatalf("ended %+v", c)
	}
	c = step(FromServer, `{"jsonrpc":"2.0","id":4,"error":{"code":-32603,"message":"boom"}}`, 7, EventCallEnded)
	if c.State != CallFailed || c.Tool != "getDeliveryStats" {
		t.Fatalf("ended %+v", c)
	}
	if got := ids(s.InFlight(at(7))); !slices.Equal(got, []string{"2"}) {
		t.Fatalf("in flight %q", got)
	}
	c = step(FromServer, `{"result":{"content":[],"isError":true},"jsonrpc":"2.0","id":2}`, 8, EventCallEnded)
	if c.State != CallFailed {
		t.Fatalf("isError result: %+v", c)
	}
	// A result for nothing pending, and one answered twice.
	step(FromServer, resultMsg("99"), 9, EventNone)
	step(FromServer, resultMsg("2"), 9, EventNone)
	if got := ids(s.Recent()); !slices.Equal(got, []string{"2", "4", `"2"`}) {
		t.Fatalf("recent %q", got)
	}
	// Cancelled by the client.
	step(FromClient, callMsg("5", "sendEmail", `{}`), 10, EventCallStarted)
	c = step(FromClient, tsCancelled, 11, EventCallEnded)
	if c.State != CallCancelled || c.ID != "5" || len(s.InFlight(at(11))) != 0 {
		t.Fatalf("cancelled %+v", c)
	}
	// The result that arrives after the cancellation answers nothing.
	step(FromServer, resultMsg("5"), 12, EventNone)
	st := s.Stats()
	if st.Calls != 4 || st.Done != 1 || st.Failed != 2 || st.Cancelled != 1 || st.Unmatched != 3 || st.Messages != 18 {
		t.Errorf("stats %+v", st)
	}
}

func TestServerExpiry(t *testing.T) {
	s := NewServer(ServerOptions{CallTimeout: time.Minute})
	s.Observe(FromClient, msg(t, callMsg("1", "a", `{}`)), t0)
	s.Observe(FromClient, msg(t, callMsg("2", "b", `{}`)), t0.Add(30*time.Second))
	if got := ids(s.InFlight(t0.Add(59 * time.Second))); !slices.Equal(got, []string{"2", "1"}) {
		t.Fatalf("in flight %q", got)
	}
	if got := ids(s.InFlight(t0.Add(time.Minute))); !slices.Equal(got, []string{"2"}) {
		t.Fatalf("in flight after the timeout %q", got)
	}
	if n := s.Expire(t0.Add(2 * time.Minute)); n != 1 {
		t.Fatalf("expired %d", n)
	}
	r := s.Recent()
	if len(r) != 2 || r[0].State != CallExpired || r[0].ID != "2" || !r[0].Ended.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("recent %+v", r)
	}
	// Its late result answers nothing; a clock going back expires nothing.
	if ev, _ := s.Observe(FromServer, msg(t, resultMsg("1")), t0); ev != EventNone {
		t.Fatalf("late result: %s", ev)
	}
	s.Observe(FromClient, msg(t, callMsg("3", "c", `{}`)), t0.Add(time.Hour))
	if len(s.InFlight(t0)) != 1 || s.Stats().Expired != 2 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

func TestServerBounds(t *testing.T) {
	s := NewServer(ServerOptions{MaxPending: 4, MaxDone: 3, MaxArgsBytes: 100})
	args := `{"body":"` + fmt.Sprintf("%040d", 0) + `"}` // 51 bytes
	for i := range 10 {
		s.Observe(FromClient, msg(t, callMsg(fmt.Sprint(i), "t", args)), t0.Add(time.Duration(i)*time.Second))
	}
	// The oldest requests were dropped at the bound, as expired calls;
	// three of them are kept.
	if got := ids(s.InFlight(t0)); !slices.Equal(got, []string{"9", "8", "7", "6"}) {
		t.Fatalf("in flight %q", got)
	}
	if got := ids(s.Recent()); !slices.Equal(got, []string{"5", "4", "3"}) {
		t.Fatalf("recent %q", got)
	}
	if st := s.Stats(); st.Expired != 6 {
		t.Fatalf("stats %+v", st)
	}
	// The arguments budget: at most 100 bytes held over all calls.
	held := 0
	for _, c := range append(s.InFlight(t0), s.Recent()...) {
		held += len(c.Arguments)
		if c.ArgsSize != len(args) {
			t.Fatalf("size %d", c.ArgsSize)
		}
	}
	if held > 100 || held != s.argsBytes {
		t.Fatalf("%d bytes of arguments held, %d accounted", held, s.argsBytes)
	}
	// Memory comes back as calls leave the ring.
	for i := range 10 {
		s.Observe(FromServer, msg(t, resultMsg(fmt.Sprint(i))), t0)
	}
	for i := 10; i < 13; i++ {
		s.Observe(FromClient, msg(t, callMsg(fmt.Sprint(i), "t", `{}`)), t0)
		s.Observe(FromServer, msg(t, resultMsg(fmt.Sprint(i))), t0)
	}
	if s.argsBytes != 6 || len(s.pending) != 0 {
		t.Fatalf("args bytes %d, pending %d", s.argsBytes, len(s.pending))
	}

	// An id reused while pending expires the first request.
	s = NewServer(ServerOptions{})
	s.Observe(FromClient, msg(t, callMsg("1", "a", `{}`)), t0)
	s.Observe(FromClient, msg(t, callMsg("1", "b", `{}`)), t0)
	if f := s.InFlight(t0); len(f) != 1 || f[0].Tool != "b" || s.Recent()[0].State != CallExpired {
		t.Fatalf("in flight %+v", f)
	}
}

func TestServerMissedInitialize(t *testing.T) {
	// The agent started after the client's initialize: the server's
	// answer still identifies it, and later calls are tracked.
	s := NewServer(ServerOptions{})
	if ev, _ := s.Observe(FromServer, msg(t, pyInitResult), t0); ev != EventIdentified || s.Identity().Server.Name != "mail-tools" {
		t.Fatalf("event %s identity %+v", ev, s.Identity())
	}
	s = NewServer(ServerOptions{})
	if ev, _ := s.Observe(FromClient, msg(t, tsCall), t0); ev != EventCallStarted || len(s.InFlight(t0)) != 1 {
		t.Fatalf("event %s", ev)
	}
}

func TestToolsListPages(t *testing.T) {
	s := NewServer(ServerOptions{})
	s.Observe(FromClient, msg(t, `{"jsonrpc":"2.0","id":1,"method":"tools/list"}`), t0)
	s.Observe(FromServer, msg(t, `{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"}],"nextCursor":"p2"}}`), t0)
	s.Observe(FromClient, msg(t, `{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{"cursor":"p2"}}`), t0)
	s.Observe(FromServer, msg(t, `{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"b"}]}}`), t0)
	if got := s.Tools(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("tools %q", got)
	}
	// A new listing from the start replaces it.
	s.Observe(FromClient, msg(t, `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`), t0)
	s.Observe(FromServer, msg(t, `{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"c"}]}}`), t0)
	if got := s.Tools(); !slices.Equal(got, []string{"c"}) {
		t.Fatalf("tools %q", got)
	}
}
