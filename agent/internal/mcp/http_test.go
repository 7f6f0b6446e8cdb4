package mcp

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseBody(t *testing.T) {
	msgs, err := ParseBody([]byte(tsInitialize))
	if err != nil || len(msgs) != 1 || msgs[0].Init == nil {
		t.Fatalf("%s, %v", summary(msgs), err)
	}
	msgs, err = ParseBody([]byte(" [" + tsInitialized + "," + tsToolsList + "]\n"))
	if err != nil || len(msgs) != 2 || !msgs[1].Batch {
		t.Fatalf("%s, %v", summary(msgs), err)
	}
	for _, bad := range []string{"", "hello", `{"a":1}`, "[]", strings.Repeat(" ", DefaultMaxMessage+1)} {
		if msgs, err := ParseBody([]byte(bad)); err == nil {
			t.Errorf("%.20q: %s, no error", bad, summary(msgs))
		}
	}
}

func TestParseResponse(t *testing.T) {
	for _, tc := range []struct {
		name, ct, body string
		msgs           int
		err            bool
	}{
		{"json", "application/json", tsInitResult, 1, false},
		{"json with charset", "application/json; charset=utf-8", "[" + tsCallResult + "," + tsCallIsError + "]", 2, false},
		// The TypeScript SDK's SSE writer: "event: message\ndata: …\n\n".
		{"sse", "text/event-stream", "event: message\ndata: " + tsInitResult + "\n\n", 1, false},
		{"202 accepted", "", "", 0, false},
		{"html", "text/html", "<html>", 0, true},
		{"bad type", ";;", "x", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := ParseResponse(tc.ct, []byte(tc.body))
			if len(msgs) != tc.msgs || (err != nil) != tc.err {
				t.Fatalf("%s, %v", summary(msgs), err)
			}
		})
	}
}

func TestSSE(t *testing.T) {
	for _, tc := range []struct {
		name      string
		body      string
		want      []string // methods or ids of the messages, in order
		eventIDs  []string
		malformed uint64
	}{
		{"typescript sdk", "event: message\ndata: " + tsInitResult + "\n\n", []string{"0"}, []string{""}, 0},
		{"with event store ids", "event: message\nid: _GET_stream_1\ndata: " + tsToolsResult + "\n\nevent: message\nid: ev2\ndata: " + tsCallResult + "\n\n",
			[]string{"1", "2"}, []string{"_GET_stream_1", "ev2"}, 0},
		// The Python SDK's writer (sse-starlette) ends lines with CRLF.
		{"python sdk CRLF", "event: message\r\ndata: " + pyInitResult + "\r\n\r\n: ping - 2025-01-01 00:00:00\r\n\r\n", []string{`"init-1"`}, []string{""}, 0},
		{"CR only", "event: message\rdata: " + tsCallResult + "\r\r", []string{"2"}, []string{""}, 0},
		{"default event type", "data: " + tsCallResult + "\n\n", []string{"2"}, []string{""}, 0},
		{"no space after colon", "event:message\ndata:" + tsCallResult + "\n\n", []string{"2"}, []string{""}, 0},
		{"multi-line data", "event: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":9,\ndata: \"result\":{\"content\":[]}}\n\n", []string{"9"}, []string{""}, 0},
		{"batch in data", "data: [" + tsCallResult + "," + tsCallIsError + "]\n\n", []string{"2", "3"}, []string{"", ""}, 0},
		{"other event types ignored", "event: endpoint\ndata: /messages?sessionId=1\n\nevent: message\ndata: " + tsCallResult + "\n\n", []string{"2"}, []string{""}, 0},
		{"comments and retry", ": keep-alive\nretry: 3000\n\ndata: " + tsCallResult + "\n\n", []string{"2"}, []string{""}, 0},
		{"server request on the stream", "event: message\ndata: " + serverSampling + "\n\n", []string{"sampling/createMessage"}, []string{""}, 0},
		{"garbage data", "data: not json\n\ndata: " + tsCallResult + "\n\n", []string{"2"}, []string{""}, 1},
		{"empty data", "data:\n\n", nil, nil, 0},
		{"unterminated event", "data: " + tsCallResult + "\n", nil, nil, 0},
		{"id persists", "id: 5\ndata: " + tsCallResult + "\n\ndata: " + tsCallIsError + "\n\n", []string{"2", "3"}, []string{"5", "5"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			check := func(what string, msgs []Message, st Stats) {
				t.Helper()
				var got, ids []string
				for _, m := range msgs {
					if m.Method != "" {
						got = append(got, m.Method)
					} else {
						got = append(got, string(m.ID))
					}
					ids = append(ids, m.EventID)
				}
				if !reflect.DeepEqual(got, tc.want) || !reflect.DeepEqual(ids, tc.eventIDs) || st.Malformed != tc.malformed || st.Messages != uint64(len(tc.want)) {
					t.Fatalf("%s: %q ids %q stats %+v; want %q ids %q", what, got, ids, st, tc.want, tc.eventIDs)
				}
			}
			var d SSEDecoder
			whole := d.Feed([]byte(tc.body))
			check("whole", whole, d.Stats())
			d0 := d.Stats()
			for i := 0; i <= len(tc.body); i++ {
				var d SSEDecoder
				got := append(d.Feed([]byte(tc.body[:i])), d.Feed([]byte(tc.body[i:]))...)
				if !reflect.DeepEqual(got, whole) || d.Stats() != d0 {
					t.Fatalf("split at %d: %s (%+v), want %s (%+v)", i, summary(got), d.Stats(), summary(whole), d0)
				}
			}
			var d1 SSEDecoder
			var got []Message
			for i := 0; i < len(tc.body); i++ {
				got = append(got, d1.Feed([]byte{tc.body[i]})...)
			}
			check("byte by byte", got, d1.Stats())
		})
	}
}

func TestSSEOversize(t *testing.T) {
	big := "data: " + strings.Repeat("x", 5000) + "\n\n"
	many := strings.Repeat("data: "+strings.Repeat("y", 100)+"\n", 50) + "\n"
	body := big + many + "data: " + tsCallResult + "\n\n"
	for _, step := range []int{1, 13, 4096, len(body)} {
		d := SSEDecoder{MaxMessage: 1024}
		var got []Message
		for s := body; len(s) > 0; {
			n := min(step, len(s))
			got = append(got, d.Feed([]byte(s[:n]))...)
			if len(d.line) > 1024+16 || len(d.data) > 1024 {
				t.Fatalf("step %d: line %d, data %d bytes", step, len(d.line), len(d.data))
			}
			s = s[n:]
		}
		if len(got) != 1 || got[0].ID != "2" || d.Stats().Oversize != 2 {
			t.Fatalf("step %d: %s, stats %+v", step, summary(got), d.Stats())
		}
	}
}
