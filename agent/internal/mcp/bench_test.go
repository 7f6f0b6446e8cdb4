package mcp

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// BenchmarkDecoder decodes a client's side of a session (initialize, a
// listing, a call and more) in 4 KiB reads, as from a pipe.
func BenchmarkDecoder(b *testing.B) {
	data := []byte(strings.Repeat(lines(clientSide...), 8))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var d Decoder
		for rest := data; len(rest) > 0; {
			n := min(4096, len(rest))
			d.Feed(rest[:n])
			rest = rest[n:]
		}
	}
}

// BenchmarkNotMCP feeds binary data in 4 KiB reads until the decoder
// gives up: the whole cost of looking at a pipe that carries no MCP.
func BenchmarkNotMCP(b *testing.B) {
	data := []byte(strings.Repeat("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 4096))
	for b.Loop() {
		var d Decoder
		for rest := data; len(rest) > 0 && !d.GivenUp(); {
			n := min(4096, len(rest))
			d.Feed(rest[:n])
			rest = rest[n:]
		}
	}
}

// BenchmarkObserve tracks one call from request to result.
func BenchmarkObserve(b *testing.B) {
	call, _ := decodeMessage([]byte(tsCall))
	result, _ := decodeMessage([]byte(tsCallResult))
	s := NewServer(ServerOptions{})
	now := time.Unix(0, 0)
	for b.Loop() {
		s.Observe(FromClient, call, now)
		s.InFlight(now)
		s.Observe(FromServer, result, now)
	}
}

func BenchmarkRecipients(b *testing.B) {
	for _, bc := range []struct{ name, args string }{
		{"postmark", `{"to":"Alice <alice@example.com>","subject":"Q3 report","textBody":"See attached.","htmlBody":"<p>See attached.</p>"}`},
		{"1MiB body", `{"to":"alice@example.com","textBody":"` + strings.Repeat("Lorem ipsum dolor sit amet, write to bob@example.org. ", 1<<20/54) + `"}`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.args)))
			for b.Loop() {
				Recipients(json.RawMessage(bc.args))
			}
		})
	}
}

func BenchmarkRedactArgs(b *testing.B) {
	args := json.RawMessage(`{"to":"alice@example.com","subject":"Q3 report","textBody":"` + strings.Repeat("Lorem ipsum dolor sit amet. ", 1000) + `","apiKey":"pm-1234"}`)
	for b.Loop() {
		RedactArgs(args)
	}
}
