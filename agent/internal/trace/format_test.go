package trace

import (
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

func TestFormatLine(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	rec := func(m *parse.Message) Record {
		return Record{Conn: stream.Key{PID: 42, SSL: 0x1000}, Comm: "curl", Time: at, Msg: m}
	}
	h1 := &parse.Message{Head: parse.Head{Method: "POST", Target: "/email", Host: "api.postmarkapp.com", Proto: "HTTP/1.1"}, Body: parse.Body{WireSize: 12}}
	h2 := &parse.Message{Head: parse.Head{Method: "POST", Target: "/email", Host: "api.postmarkapp.com", Proto: "HTTP/2.0"}, Body: parse.Body{WireSize: 12}, Stream: 1}
	h2reset := &parse.Message{Head: parse.Head{Method: "POST", Target: "/email", Host: "api.postmarkapp.com", Proto: "HTTP/2.0"}, Body: parse.Body{WireSize: 4, Truncated: true}, Stream: 3, Reset: true}
	resp1 := &parse.Message{Head: parse.Head{Status: 200, Reason: "OK", Proto: "HTTP/1.1"}, Response: true, Body: parse.Body{WireSize: 2}}
	resp2 := &parse.Message{Head: parse.Head{Status: 200, Proto: "HTTP/2.0"}, Response: true, Body: parse.Body{WireSize: 2}, Stream: 1}
	for _, tc := range []struct {
		m       *parse.Message
		verbose bool
		want    string
	}{
		{h1, false, "03:04:05.000006 pid=42 comm=curl POST api.postmarkapp.com /email body=12B\n"},
		{h2, false, "03:04:05.000006 pid=42 comm=curl POST api.postmarkapp.com /email h2#1 body=12B\n"},
		{h2reset, false, "03:04:05.000006 pid=42 comm=curl POST api.postmarkapp.com /email h2#3 body=4B reset truncated\n"},
		{resp1, false, ""},
		{resp1, true, "03:04:05.000006 pid=42 comm=curl <- 200 OK body=2B\n"},
		{resp2, true, "03:04:05.000006 pid=42 comm=curl <- 200 h2#1 body=2B\n"},
	} {
		var b strings.Builder
		if err := Format(&b, rec(tc.m), tc.verbose); err != nil {
			t.Fatal(err)
		}
		got := b.String()
		if tc.verbose {
			got, _, _ = strings.Cut(got, "\n")
			if got != "" {
				got += "\n"
			}
		}
		if got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

func TestFormatSMTPMail(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	m := &mail.Message{
		Provider:     mail.ProviderSMTP,
		EnvelopeFrom: "agent@company.co",
		EnvelopeTo:   []mail.Address{{Addr: "bob@company.co"}, {Addr: "phan@giftshop.club"}},
		Subject:      "Invoice\r\n#42",
		Headers:      map[string][]string{"Subject": {"Invoice #42"}, "From": {"agent@company.co"}},
		TextBody:     "hello\nworld",
	}
	rec := Record{Conn: stream.Key{PID: 42, SSL: 0x1000}, Comm: "python3", Exe: "/usr/bin/python3", Time: at, Mail: m}
	var b strings.Builder
	if err := Format(&b, rec, false); err != nil {
		t.Fatal(err)
	}
	want := `03:04:05.000006 pid=42 comm=python3 SMTP from=agent@company.co rcpt=bob@company.co,phan@giftshop.club subject="Invoice\r\n#42"` + "\n"
	if b.String() != want {
		t.Fatalf("got  %q\nwant %q", b.String(), want)
	}
	b.Reset()
	if err := Format(&b, rec, true); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"    From: agent@company.co\n    Subject: Invoice #42\n", "    hello\n    world\n"} {
		if !strings.Contains(b.String(), s) {
			t.Fatalf("verbose output lacks %q:\n%s", s, b.String())
		}
	}
}

func TestFormatWebSocket(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	ws := func(op uint8, response bool, data string, wire int64) *parse.Message {
		return &parse.Message{Head: parse.Head{Host: "api.openai.com", Target: "/v1/responses"}, Body: parse.Body{Data: []byte(data), WireSize: wire},
			Response: response, WebSocket: true, Opcode: op}
	}
	deflated := ws(parse.WSText, false, `{"type":"response.create","input":"hi"}`, 31)
	deflated.Encoding = "permessage-deflate"
	closing := ws(parse.WSClose, false, "bye", 5)
	closing.CloseCode = 1000
	cut := ws(parse.WSBinary, false, "\x00\x01", 70000)
	cut.Truncated, cut.Missing = true, 69998
	for _, tc := range []struct {
		m       *parse.Message
		verbose bool
		want    string
	}{
		{ws(parse.WSText, false, `{"a":1}`, 7), false, "03:04:05.000006 pid=42 comm=codex WS text 7B api.openai.com /v1/responses\n"},
		{deflated, false, "03:04:05.000006 pid=42 comm=codex WS text 31B api.openai.com /v1/responses permessage-deflate(39B)\n"},
		{closing, false, "03:04:05.000006 pid=42 comm=codex WS close 5B api.openai.com /v1/responses code=1000\n"},
		{cut, false, "03:04:05.000006 pid=42 comm=codex WS binary 70000B api.openai.com /v1/responses truncated(69998B not captured)\n"},
		{ws(parse.WSPing, false, "p", 1), false, "03:04:05.000006 pid=42 comm=codex WS ping 1B api.openai.com /v1/responses\n"},
		{ws(0x3, false, "r", 1), false, "03:04:05.000006 pid=42 comm=codex WS opcode=0x3 1B api.openai.com /v1/responses\n"},
		{ws(parse.WSText, true, "ok", 2), false, ""},
		{ws(parse.WSText, true, "ok", 2), true, "03:04:05.000006 pid=42 comm=codex <- WS text 2B\n" +
			"    exe=/usr/bin/codex cgroup=0 tid=0 ssl=0x1000\n    \n    ok\n"},
		{deflated, true, "03:04:05.000006 pid=42 comm=codex WS text 31B api.openai.com /v1/responses permessage-deflate(39B)\n" +
			"    exe=/usr/bin/codex cgroup=0 tid=0 ssl=0x1000\n    \n    {\"type\":\"response.create\",\"input\":\"hi\"}\n"},
	} {
		var b strings.Builder
		rec := Record{Conn: stream.Key{PID: 42, SSL: 0x1000}, Comm: "codex", Exe: "/usr/bin/codex", Time: at, Msg: tc.m}
		if err := Format(&b, rec, tc.verbose); err != nil {
			t.Fatal(err)
		}
		if b.String() != tc.want {
			t.Errorf("got  %q\nwant %q", b.String(), tc.want)
		}
	}
}
