package mcp

import "testing"

// FuzzParseResponse parses an arbitrary streamable-HTTP response (content
// type and body): JSON or SSE, else an error; never a panic, and no
// message over the default bound.
func FuzzParseResponse(f *testing.F) {
	f.Add("application/json", []byte(tsInitResult))
	f.Add("text/event-stream; charset=utf-8", []byte("event: message\ndata: "+tsInitResult+"\n\n"))
	f.Add("application/json;;", []byte("["+tsCall+","+tsCancelled+"]"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		msgs, err := ParseResponse(ct, body)
		if err != nil && len(msgs) > 0 {
			t.Fatalf("%d messages with an error: %v", len(msgs), err)
		}
		for _, m := range msgs {
			if m.Size > DefaultMaxMessage || m.Kind < KindRequest || m.Kind > KindError {
				t.Fatalf("message %+v", m)
			}
		}
	})
}
