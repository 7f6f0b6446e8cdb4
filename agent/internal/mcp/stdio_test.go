package mcp

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// A client's side of a session and the server's, as the TypeScript SDK
// writes them.
var (
	clientSide = []string{tsInitialize, tsInitialized, tsToolsList, tsCall, pyPing, tsCancelled}
	serverSide = []string{tsInitResult, tsToolsResult, serverSampling, tsCallResult, tsCallIsError}
)

func lines(msgs ...string) string { return strings.Join(msgs, "\n") + "\n" }

func contentLength(msgs ...string) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n%s", len(m), m)
	}
	return b.String()
}

// feedAll feeds the whole stream at once.
func feedAll(d *Decoder, s string) []Message { return d.Feed([]byte(s)) }

// summary is a short form of messages for comparisons in failures.
func summary(msgs []Message) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "%s %s %s; ", m.Kind, m.ID, m.Method)
	}
	return b.String()
}

func TestDecoderFramings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		stream  string
		msgs    int
		framing Framing
	}{
		{"client lines", lines(clientSide...), len(clientSide), FramingLines},
		{"server lines", lines(serverSide...), len(serverSide), FramingLines},
		{"CRLF lines", strings.Join(clientSide, "\r\n") + "\r\n", len(clientSide), FramingLines},
		{"client content-length", contentLength(clientSide...), len(clientSide), FramingContentLength},
		{"server content-length", contentLength(serverSide...), len(serverSide), FramingContentLength},
		{"content-type header too", "Content-Type: application/vscode-jsonrpc; charset=utf-8\r\ncontent-length: " +
			fmt.Sprint(len(tsInitialize)) + "\r\n\r\n" + tsInitialize, 1, FramingContentLength},
		{"LF-only headers", "Content-Length: " + fmt.Sprint(len(tsInitialize)) + "\n\n" + tsInitialize, 1, FramingContentLength},
		{"pretty JSON in a body", contentLength("{\n  \"jsonrpc\": \"2.0\",\n  \"id\": 1,\n  \"method\": \"tools/list\"\n}"), 1, FramingContentLength},
		{"batch line", lines("["+tsToolsList+","+tsCall+"]", tsInitialized), 3, FramingLines},
		{"batch body", contentLength("[" + tsCallResult + "," + tsCallIsError + "]"), 2, FramingContentLength},
		{"mixed framings", lines(tsInitialize) + contentLength(tsToolsList) + lines(tsCall), 3, FramingLines},
		{"blank lines between", "\n\n" + tsInitialize + "\n\n\r\n  " + tsToolsList + "\n", 2, FramingLines},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(DecoderOptions{})
			whole := feedAll(d, tc.stream)
			st := d.Stats()
			if len(whole) != tc.msgs || st.Messages != uint64(tc.msgs) || st.Malformed != 0 || st.Oversize != 0 || st.Framing != tc.framing {
				t.Fatalf("%d messages (%s), stats %+v", len(whole), summary(whole), st)
			}
			// Every split into two chunks, and one byte at a time, gives
			// the same messages.
			for i := 0; i <= len(tc.stream); i++ {
				var d Decoder
				got := append(d.Feed([]byte(tc.stream[:i])), d.Feed([]byte(tc.stream[i:]))...)
				if !reflect.DeepEqual(got, whole) {
					t.Fatalf("split at %d: %s, want %s", i, summary(got), summary(whole))
				}
			}
			var d1 Decoder
			var got []Message
			for i := 0; i < len(tc.stream); i++ {
				got = append(got, d1.Feed([]byte{tc.stream[i]})...)
			}
			if !reflect.DeepEqual(got, whole) || d1.Stats() != st {
				t.Fatalf("byte by byte: %s (%+v), want %s (%+v)", summary(got), d1.Stats(), summary(whole), st)
			}
		})
	}
}

func TestDecoderGarbage(t *testing.T) {
	for _, tc := range []struct {
		name      string
		stream    string
		msgs      int
		malformed uint64
	}{
		{"log line first", "Server listening on stdio\n" + lines(tsInitResult), 1, 1},
		{"JSON log line", `{"level":"info","msg":"started"}` + "\n" + lines(tsInitResult), 1, 1},
		{"binary", "\x00\x01\x02\xff\xfe\n" + lines(tsInitResult), 1, 1},
		{"broken JSON", `{"jsonrpc":"2.0","id":1,"method":` + "\n" + lines(tsInitialize), 1, 1},
		{"garbage between", lines(tsInitialize) + "oops\n\x1b[31mred\x1b[0m\n" + lines(tsToolsList), 2, 2},
		{"bad content-length", "Content-Length: abc\r\n\r\n" + lines(tsInitialize), 1, 1},
		{"header without length", "Content-Type: x\r\n\r\n" + lines(tsInitialize), 1, 1},
		{"not a header", "Cats: meow\r\n" + lines(tsInitialize), 1, 1},
		{"C word", "Connecting...\n" + lines(tsInitialize), 1, 1},
		{"header cut by JSON", "Content-Length: 10\r\n" + tsInitialize + "\n" + lines(tsToolsList), 1, 1},
		{"zero length", "Content-Length: 0\r\n\r\n" + lines(tsToolsList), 1, 1},
		{"body not JSON-RPC", contentLength(`{"hello":1}`, tsToolsList), 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var d Decoder
			whole := feedAll(&d, tc.stream)
			st := d.Stats()
			if len(whole) != tc.msgs || st.Malformed != tc.malformed || st.GivenUp {
				t.Fatalf("%s; stats %+v", summary(whole), st)
			}
			for i := 0; i <= len(tc.stream); i++ {
				var d Decoder
				got := append(d.Feed([]byte(tc.stream[:i])), d.Feed([]byte(tc.stream[i:]))...)
				if !reflect.DeepEqual(got, whole) || d.Stats() != st {
					t.Fatalf("split at %d: %s (%+v), want %s (%+v)", i, summary(got), d.Stats(), summary(whole), st)
				}
			}
		})
	}
}

func TestDecoderGivesUp(t *testing.T) {
	// Lines of text that are not JSON-RPC.
	var d Decoder
	for i := range DefaultGiveUpFrames {
		if d.GivenUp() {
			t.Fatalf("given up after %d lines", i)
		}
		d.Feed([]byte("just a line of output\n"))
	}
	if !d.GivenUp() {
		t.Fatalf("not given up: %+v", d.Stats())
	}
	// Nothing is decoded any more, and nothing is kept.
	if msgs := d.Feed([]byte(lines(tsInitialize))); msgs != nil || d.buf != nil {
		t.Fatalf("given-up decoder decoded %s", summary(msgs))
	}
	if d.Stats().Bytes != uint64(DefaultGiveUpFrames*len("just a line of output\n")+len(tsInitialize)+1) {
		t.Errorf("bytes %d", d.Stats().Bytes)
	}

	// Binary data without newlines: given up after GiveUpBytes without
	// holding it.
	d = Decoder{}
	chunk := strings.Repeat("\x89PNG\x00\x00", 1000)
	for i := 0; i < 20 && !d.GivenUp(); i++ {
		d.Feed([]byte(chunk))
		if len(d.buf) > 0 {
			t.Fatalf("garbage buffered: %d bytes", len(d.buf))
		}
	}
	if !d.GivenUp() {
		t.Fatal("binary stream not given up")
	}

	// A JSON line without newline that grows past the size bound.
	d2 := NewDecoder(DecoderOptions{MaxMessage: 1000, GiveUpBytes: 5000})
	d2.Feed([]byte(`{"a":"`))
	for i := 0; i < 10; i++ {
		d2.Feed([]byte(strings.Repeat("x", 1000)))
		if len(d2.buf) > 1000 {
			t.Fatalf("buffer %d bytes over the bound", len(d2.buf))
		}
	}
	if !d2.GivenUp() || d2.Stats().Oversize != 1 {
		t.Fatalf("stats %+v", d2.Stats())
	}

	// Once a message was seen, garbage never gives the stream up.
	d = Decoder{}
	d.Feed([]byte(lines(tsInitialize)))
	for range 10 * DefaultGiveUpFrames {
		d.Feed([]byte("noise\n"))
	}
	if d.GivenUp() || len(d.Feed([]byte(lines(tsToolsList)))) != 1 {
		t.Fatalf("stats %+v", d.Stats())
	}
	if d.Stats().Malformed != uint64(10*DefaultGiveUpFrames) {
		t.Errorf("malformed %d", d.Stats().Malformed)
	}
}

func TestDecoderOversize(t *testing.T) {
	big := `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"b":"` + strings.Repeat("A", 3000) + `"}}}`
	for _, tc := range []struct {
		name, stream string
	}{
		{"line", lines(big, tsToolsList)},
		{"body", contentLength(big, tsToolsList)},
		{"body then line", contentLength(big) + lines(tsToolsList)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, step := range []int{1, 7, 1000, len(tc.stream)} {
				d := NewDecoder(DecoderOptions{MaxMessage: 1024})
				var got []Message
				for s := tc.stream; len(s) > 0; {
					n := min(step, len(s))
					got = append(got, d.Feed([]byte(s[:n]))...)
					if len(d.buf) > 1024 {
						t.Fatalf("buffer %d bytes", len(d.buf))
					}
					s = s[n:]
				}
				st := d.Stats()
				if len(got) != 1 || got[0].Method != "tools/list" || st.Oversize != 1 || st.Malformed != 0 {
					t.Fatalf("step %d: %s, stats %+v", step, summary(got), st)
				}
			}
		})
	}
	// A huge declared length is skipped without being buffered.
	d := NewDecoder(DecoderOptions{MaxMessage: 1024})
	d.Feed([]byte(lines(tsInitialize) + "Content-Length: 1000000000\r\n\r\n"))
	for range 100 {
		d.Feed([]byte(strings.Repeat("z", 4096)))
	}
	if len(d.buf) != 0 || d.state != stSkip || d.Stats().Oversize != 1 {
		t.Fatalf("state %d, buffer %d, stats %+v", d.state, len(d.buf), d.Stats())
	}
}

func TestDecoderReleasesBuffer(t *testing.T) {
	var d Decoder
	d.Feed([]byte(`{"jsonrpc":"2.0","id":1,"method":"x","params":{"p":"` + strings.Repeat("y", 1<<20) + `"}}` + "\n"))
	if cap(d.buf) > keepBuffer {
		t.Fatalf("a %d-byte buffer kept after its frame", cap(d.buf))
	}
}

// An agent that starts while a server runs joins its streams mid-way:
// the decoder loses at most the frame it joined in (and, with
// Content-Length framing, the next one) and decodes every later message.
func TestDecoderJoinsMidStream(t *testing.T) {
	msgs := []string{tsInitResult, tsToolsResult, tsCallResult, tsCallIsError, tsCallRPCError, pyInitResult, tsCallResult}
	for _, tc := range []struct {
		name   string
		frame  func(...string) string
		spared int // frames after the cut that may be lost
	}{
		{"lines", lines, 0},
		{"content-length", contentLength, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var starts []int
			stream := ""
			for _, m := range msgs {
				starts = append(starts, len(stream))
				stream += tc.frame(m)
			}
			var whole Decoder
			all := whole.Feed([]byte(stream))
			if len(all) != len(msgs) {
				t.Fatalf("%d messages", len(all))
			}
			for i := 1; i < len(stream); i++ {
				later := 0 // frames starting at or after the cut
				for _, s := range starts {
					if s >= i {
						later++
					}
				}
				var d Decoder
				got := d.Feed([]byte(stream[i:]))
				if len(got) < later-tc.spared || len(got) > len(all) || len(got) > 0 && !reflect.DeepEqual(got, all[len(all)-len(got):]) {
					t.Fatalf("joined at %d: %s; %d frames start later", i, summary(got), later)
				}
				if d.GivenUp() {
					t.Fatalf("joined at %d: given up", i)
				}
			}
		})
	}
}
