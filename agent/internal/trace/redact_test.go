package trace

import (
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/parse"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/stream"
)

// Fake credentials (shaped like real ones, valid nowhere).
const (
	fakeAWS      = "AKIAQ3EGRTYPLMZK7VWD"
	fakePostmark = "5f1c8e2a-93b4-4d7e-a1c6-0b2f9e8d7c34"
	fakeBearer   = "tok_9fQ2xLrT7vKp3ZmW8nYb4HsJd6GcA1e"
	fakePassword = "Hunter2-Correct-Horse"
)

var fakeSecrets = []string{fakeAWS, fakePostmark, fakeBearer, fakePassword}

func TestFormatRedactsSecrets(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	req := &parse.Message{
		Head: parse.Head{Method: "POST", Target: "/email?api_key=" + fakeBearer + "&x=1", Host: "api.postmarkapp.com", Proto: "HTTP/1.1",
			Header: map[string][]string{
				"Authorization":           {"Bearer " + fakeBearer},
				"X-Postmark-Server-Token": {fakePostmark},
				"Cookie":                  {"sid=" + fakeBearer},
				"Content-Type":            {"application/json"},
			}},
		Body: parse.Body{Data: []byte(`{"ServerToken":"` + fakePostmark + `","TextBody":"key ` + fakeAWS + ` and password: ` + fakePassword + `"}`), WireSize: 10},
	}
	resp := &parse.Message{Head: parse.Head{Status: 200, Reason: "OK", Proto: "HTTP/1.1", Header: map[string][]string{"Set-Cookie": {"sid=" + fakeBearer}}},
		Response: true, Body: parse.Body{Data: []byte(`{"access_token":"` + fakeBearer + `"}`)}}
	ws := &parse.Message{Head: parse.Head{Host: "h", Target: "/ws"}, WebSocket: true, Opcode: parse.WSText, Body: parse.Body{Data: []byte("AWS " + fakeAWS)}}
	smtp := &mail.Message{Provider: mail.ProviderSMTP, EnvelopeFrom: "a@company.co", EnvelopeTo: []mail.Address{{Addr: "b@company.co"}},
		Subject: "creds " + fakeAWS, Headers: map[string][]string{"Subject": {"creds " + fakeAWS}, "X-Api-Key": {fakePostmark}},
		TextBody: "password: " + fakePassword}
	recs := []Record{
		{Conn: stream.Key{PID: 1}, Comm: "curl", Time: at, Msg: req},
		{Conn: stream.Key{PID: 1}, Comm: "curl", Time: at, Msg: resp},
		{Conn: stream.Key{PID: 1}, Comm: "node", Time: at, Msg: ws},
		{Conn: stream.Key{PID: 1}, Comm: "python3", Time: at, Mail: smtp},
	}
	for _, show := range []bool{false, true} {
		var b strings.Builder
		for _, r := range recs {
			if err := FormatWith(&b, r, FormatOptions{Verbose: true, ShowSecrets: show}); err != nil {
				t.Fatal(err)
			}
		}
		out := b.String()
		for _, s := range fakeSecrets {
			if strings.Contains(out, s) != show {
				t.Errorf("show secrets %v: %q present %v in:\n%s", show, s, !show, out)
			}
		}
		if !show {
			for _, want := range []string{
				"Authorization: Bearer [redacted:credential 35B]",
				"X-Postmark-Server-Token: [redacted:header 36B]",
				"[redacted:aws_access_key_id 20B]",
				`"ServerToken":"[redacted:secret_field 36B]"`,
				"Content-Type: application/json",
				"api_key=[redacted:",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in:\n%s", want, out)
				}
			}
		}
	}
}

func TestRedactTextKeepsOrdinaryText(t *testing.T) {
	for _, s := range []string{"", "hello world", `{"To":"b@company.co","max_tokens":100}`, "a=1&b=2"} {
		if got := redactText(s); got != s {
			t.Errorf("redactText(%q) = %q", s, got)
		}
	}
}
