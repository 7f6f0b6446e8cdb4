package trace

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The same server over streamable HTTP on loopback, driven by the SDK's
// StreamableHTTPClientTransport: trace --mcp shows its tool call (read
// from the POST on its loopback connection) and, on the request it made,
// that call.
func TestTraceMCPHTTP(t *testing.T) {
	testenv.RequireRoot(t)
	ca := testenv.NewCA(t)
	api := testenv.NewMailAPI(t, ca)
	cg := testenv.NewCgroup(t)
	pkg := testenv.InstallNodeMCP(t, testenv.CleanMCP())

	tr, err := Start(Options{MCP: true, Sensor: probe.Options{Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))}})
	if err != nil {
		t.Fatalf("start tracer: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	var mu sync.Mutex
	var recs []Record
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tr.Run(ctx, func(r Record) {
			if r.Cgroup == cg.ID() {
				mu.Lock()
				recs = append(recs, r)
				mu.Unlock()
			}
		})
	}()

	s := testenv.MCPHTTP(t, ca, api, pkg, testenv.MCPOptions{
		Calls: []map[string]any{{"to": "bob@company.example", "subject": "Quarterly numbers", "textBody": "Hello"}},
		Start: cg.Start,
	})
	ready := s.Ready(t, time.Minute)
	out := s.Wait(t, time.Minute)
	out.Succeeded(t, 1)
	var lines []string
	var call, request *Record
	testenv.Eventually(t, 10*time.Second, "the tool call and its request traced", func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		lines = lines[:0]
		call, request = nil, nil
		for i := range recs {
			r := &recs[i]
			var b strings.Builder
			_ = Format(&b, *r, false)
			lines = append(lines, strings.TrimSpace(b.String()))
			if r.RPC != nil && r.RPC.Call != nil && r.RPC.Call.Name == "send_email" {
				call = r
			}
			if r.Msg != nil && !r.Msg.Response && r.Msg.Target == "/email" {
				request = r
			}
		}
		return call != nil && request != nil, strings.Join(lines, "\n")
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("tracer run: %v", err)
	}
	t.Logf("trace --mcp:\n%s", strings.Join(lines, "\n"))
	if all := strings.Join(lines, "\n"); !strings.Contains(all, "-> result id=2") || !strings.Contains(all, "<- request tools/call id=2") {
		t.Errorf("the call and its result not traced in their directions")
	}
	if call.Server != "postmark-mcp" || call.Conn.PID != uint32(ready.ServerPID) {
		t.Errorf("tool call of server %q pid %d, want postmark-mcp pid %d", call.Server, call.Conn.PID, ready.ServerPID)
	}
	if request.Call == nil || request.Call.Tool != "send_email" || request.Call.ID != call.RPC.ID || request.Server != "postmark-mcp" {
		t.Errorf("the request's call: server %q call %+v, want send_email id %s", request.Server, request.Call, call.RPC.ID)
	}
}
