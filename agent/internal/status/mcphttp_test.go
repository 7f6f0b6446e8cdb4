package status

import (
	"strings"
	"testing"
)

// An MCP server over streamable HTTP is listed as such, with the HTTP
// branch's counters.
func TestFormatMCPHTTP(t *testing.T) {
	r := sample()
	r.MCPServers = append(r.MCPServers, MCPServer{PID: 77, Name: "postmark-mcp", Version: "1.0.16", Package: "npm:postmark-mcp@1.0.16", Transport: "http"})
	r.MCPHTTP = MCPHTTP{Watched: 2, Conns: 3, Copied: 40, ConnsGivenUp: 1, Messages: 9}
	var b strings.Builder
	if err := Format(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"pid 77 postmark-mcp@1.0.16 over streamable HTTP package npm:postmark-mcp@1.0.16",
		"mcp http:    2 listening processes watched, 3 connections, 40 calls copied, 1 connections and 0 processes given up (no MCP), 9 JSON-RPC messages, 0 skipped",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}
