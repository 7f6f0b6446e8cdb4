package mcp

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

// The fuzz targets check that no decoder panics, grows past its bounds or
// depends on how its input was cut, and that Recipients keeps what the
// mail parser reads.

func FuzzStdio(f *testing.F) {
	// Short seeds: every execution decodes the input twice.
	f.Add([]byte(lines(tsInitialize, tsToolsList)), uint8(0))
	f.Add([]byte(contentLength(tsCallResult, tsCallIsError)), uint8(3))
	f.Add([]byte("noise\n\x00\xff"+lines("["+tsCall+","+tsCancelled+"]")+contentLength(tsCallRPCError)), uint8(1))
	f.Add([]byte("Content-Length: 99999\r\n\r\n{"), uint8(7))
	f.Add([]byte("Content-Type: x\r\nContent-Length: 2\r\n\r\n{}"), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		opts := DecoderOptions{MaxMessage: 512, GiveUpBytes: 2048, GiveUpFrames: 8}
		whole := NewDecoder(opts)
		want := whole.Feed(data)
		split := NewDecoder(opts)
		n := int(step%64) + 1
		var got []Message
		s := NewServer(ServerOptions{MaxPending: 4, MaxDone: 3, MaxArgsBytes: 200})
		for rest := data; len(rest) > 0; {
			k := min(n, len(rest))
			msgs := split.Feed(rest[:k])
			// A header line may take maxHeaderLine, above this small bound.
			if len(split.buf) > max(opts.MaxMessage, maxHeaderLine) {
				t.Fatalf("buffer %d bytes", len(split.buf))
			}
			for i, m := range msgs {
				side := FromClient
				if i%2 == 1 {
					side = FromServer
				}
				s.Observe(side, m, time.Unix(int64(len(got)+i), 0))
			}
			got = append(got, msgs...)
			rest = rest[k:]
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("split by %d: %s; whole: %s", n, summary(got), summary(want))
		}
		if split.Stats() != whole.Stats() {
			t.Fatalf("split by %d: %+v; whole: %+v", n, split.Stats(), whole.Stats())
		}
		if st := whole.Stats(); st.Messages != uint64(len(want)) {
			t.Fatalf("%d messages counted, %d returned", st.Messages, len(want))
		}
		for _, m := range want {
			if m.Kind < KindRequest || m.Kind > KindError || m.Size > opts.MaxMessage || len(m.ID) > 4*MaxIDLen+2 {
				t.Fatalf("message %+v", m)
			}
		}
		if len(s.pending) > 4 || len(s.done) > 3 || s.argsBytes > 200 || s.argsBytes < 0 {
			t.Fatalf("server bounds: %d pending, %d done, %d bytes of arguments", len(s.pending), len(s.done), s.argsBytes)
		}
	})
}

func FuzzSSE(f *testing.F) {
	f.Add([]byte("event: message\nid: 1\ndata: "+tsInitResult+"\n\n"), uint8(0))
	f.Add([]byte("event: message\r\ndata: "+pyInitResult+"\r\n\r\n: ping\r\n\r\n"), uint8(1))
	f.Add([]byte("data: {\"jsonrpc\":\"2.0\",\rdata: \"id\":1,\"result\":{}}\r\r"), uint8(2))
	f.Add([]byte("data: "+strings.Repeat("x", 600)+"\n\ndata: [1]\n\n"), uint8(5))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		whole := SSEDecoder{MaxMessage: 512}
		want := whole.Feed(data)
		split := SSEDecoder{MaxMessage: 512}
		n := int(step%64) + 1
		var got []Message
		for rest := data; len(rest) > 0; {
			k := min(n, len(rest))
			got = append(got, split.Feed(rest[:k])...)
			if len(split.line) > 512+16 || len(split.data) > 512 {
				t.Fatalf("line %d, data %d bytes", len(split.line), len(split.data))
			}
			rest = rest[k:]
		}
		if !reflect.DeepEqual(got, want) || split.Stats() != whole.Stats() || split.LastEventID() != whole.LastEventID() {
			t.Fatalf("split by %d: %s %+v; whole: %s %+v", n, summary(got), split.Stats(), summary(want), whole.Stats())
		}
		if _, err := ParseResponse("text/event-stream", data); err != nil {
			t.Fatal(err)
		}
		_, _ = ParseBody(data)
	})
}

func FuzzRecipients(f *testing.F) {
	for _, s := range []string{
		`{"to":"alice@example.com"}`, `{"to":"\"P, Q\" <phan\u0040giftshop.club>; x@y.z"}`, `["mailto:a@b.c?cc=d@e.f"]`,
		`{"payload":"{\"to\":\"f\\u0040e.com\"}"}`, `{"password":"x","body":"sk_live_51HqLyjWDarjtT1zdp7dcXYZabcdefghijklmnop"}`,
		`"=?utf-8?B?cGhhbkBnaWZ0c2hvcC5jbHVi?="`, `{"a":[[[[{"b":"%70%68%61%6E%40giftshop.club"}]]]]}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, args string) {
		got, _ := scanRecipients([]byte(args))
		if len(got) > MaxRecipients {
			t.Fatalf("%d addresses", len(got))
		}
		for _, a := range got {
			if !strings.Contains(a, "@") {
				t.Fatalf("address without @: %q", a)
			}
			if n, ok := mail.NormalizeAddress(a); ok && n != a {
				t.Fatalf("not normalised: %q -> %q", a, n)
			}
		}
		// Taken as one string argument, the input yields at least what
		// the mail parser reads from it as a header (JSON strings are
		// UTF-8: JSON and the mail parser replace invalid bytes alike
		// only one at a time).
		wrapped, _ := json.Marshal(map[string]string{"to": args})
		all, cut2 := scanRecipients(wrapped)
		if !cut2 && utf8.ValidString(args) && len(args) <= maxListText {
			for _, a := range mail.ParseAddressList(args) {
				if !slices.Contains(all, a.Addr) {
					t.Fatalf("%q: mail recipient %q not among %q", args, a.Addr, all)
				}
			}
		}
		for _, in := range []string{args, string(wrapped)} {
			r := RedactArgs([]byte(in))
			if len(r) > MaxRedacted || !utf8.ValidString(r) {
				t.Fatalf("redacted to %d bytes (valid UTF-8: %v)", len(r), utf8.ValidString(r))
			}
		}
	})
}
