package trace

import (
	"bytes"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// Deno (from npm) links rustls statically and is stripped: the record
// layer's encrypt call is found without symbols, and a fetch with a body
// is seen whole, once per request.
func TestDeno(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cg := testenv.NewCgroup(t)
	for i := range 2 {
		marker := newMarker(t)
		body := mailBody(marker)
		req := request(marker, body)
		req.WaitForStdinLine = true
		cmd := testenv.Deno(t, ca, srv.URL(), req)
		gate := testenv.NewGate(t, cmd)
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		gate.Ready(t, waitRecord)
		if i == 0 {
			h.waitProbed(cmd.Path, "rustls write")
		}
		gate.Go(t)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("deno: %v", err)
		}
		r := h.waitFor(cg, marker)
		checkRequest(t, r, srv, marker, body)
		if n := len(h.matching(cg, marker)); n != 1 {
			t.Errorf("request %d traced %d times, want once", i, n)
		}
		if r.Exe != cmd.Path {
			t.Errorf("executable %q, want %q", r.Exe, cmd.Path)
		}
	}
}

// waitCodex: Codex tries the Responses WebSocket five times (about 8 s)
// before it posts over HTTPS.
const waitCodex = 60 * time.Second

// Codex (from npm: a static Rust executable, rustls 0.23.46, stripped):
// its request to the (fake) OpenAI API carries the prompt and is seen.
func TestCodex(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	// Codex appends its piped stdin to the prompt and reads it to EOF
	// first: it is closed once Codex is probed.
	cmd := testenv.Codex(t, ca, srv.URL()+"/v1", "Say hello to")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("codex: %s", stderr.String())
		}
	})
	h.waitProbed(cmd.Path, "rustls write")
	if _, err := io.WriteString(stdin, marker+"\n"); err != nil {
		t.Fatalf("write the prompt: %v; codex: %s", err, stderr.String())
	}
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	got := srv.WaitFor(t, func(rec testenv.Recorded) bool { return bytes.Contains(rec.Body, []byte(marker)) }, waitCodex)
	var r Record
	testenv.Eventually(t, waitCodex, "codex's request to the API", func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, rec := range h.records {
			// Not its WebSocket upgrade (a GET of the same path).
			if rec.Cgroup == cg.ID() && rec.Msg != nil && !rec.Msg.Response && rec.Msg.Method == got.Method && rec.Msg.Target == got.Path {
				r = rec
				return true, ""
			}
		}
		return false, "records: " + h.seenLocked()
	})
	m := r.Msg
	if m.Method != "POST" || r.Exe != cmd.Path {
		t.Errorf("traced %s %s exe %s", m.Method, m.Target, r.Exe)
	}
	if !bytes.Contains(m.Data, []byte(marker)) && !m.Truncated {
		t.Errorf("body of %d bytes (server got %d) lacks the prompt's marker", len(m.Data), len(got.Body))
	}
	t.Logf("codex: %s %s, body %d bytes traced (truncated %v), %d at the server", m.Method, m.Target, len(m.Data), m.Truncated, len(got.Body))
}

// Codex tries the Responses WebSocket first: against a wss server its
// response.create message, carrying the prompt, is seen as a WebSocket
// message (unmasked) through the same probe.
func TestCodexWebSocket(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	ws := testenv.NewWSServer(t, ca)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	base := "https://" + strings.TrimSuffix(strings.TrimPrefix(ws.URL(), "wss://"), "/") + "/v1"
	cmd := testenv.Codex(t, ca, base, "Say hello to")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("codex: %s", stderr.String())
		}
	})
	h.waitProbed(cmd.Path, "rustls write")
	if _, err := io.WriteString(stdin, marker+"\n"); err != nil {
		t.Fatalf("write the prompt: %v", err)
	}
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, waitCodex, "the message with the marker at the wss server", func() bool {
		return slices.ContainsFunc(ws.Received(), func(m string) bool { return strings.Contains(m, marker) })
	})
	testenv.Eventually(t, waitCodex, "codex's WebSocket message traced", func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, rec := range h.records {
			if rec.Cgroup == cg.ID() && rec.Msg != nil && rec.Msg.WebSocket && !rec.Msg.Response && bytes.Contains(rec.Msg.Data, []byte(marker)) {
				if rec.Exe != cmd.Path {
					t.Errorf("executable %q, want %q", rec.Exe, cmd.Path)
				}
				return true, ""
			}
		}
		return false, "records: " + h.seenLocked()
	})
}
