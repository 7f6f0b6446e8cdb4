package trace

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// waitProbed waits until the file at path is probed and returns its target.
func (h *harness) waitProbed(path string, want ...string) {
	h.t.Helper()
	if want == nil {
		want = []string{"boringssl SSL_write", "boringssl SSL_read"}
	}
	id, _, err := proc.StatID(path)
	if err != nil {
		h.t.Fatal(err)
	}
	testenv.Eventually(h.t, waitRecord, fmt.Sprintf("%s (%v) probed", path, id), func() (bool, string) {
		for _, tg := range h.tracer.Sensor().Targets() {
			if tg.ID == id {
				if !tg.Probed() {
					h.t.Fatalf("%s examined but not probed: %v", path, tg.Err)
				}
				if !slices.Equal(tg.Symbols, want) {
					h.t.Errorf("%s probed at %v, want %v", path, tg.Symbols, want)
				}
				return true, ""
			}
		}
		return false, "not examined yet"
	})
}

// Bun (from npm) links BoringSSL statically and is stripped: its SSL_write
// is found without symbols, and a fetch with a body is seen whole, once
// per request.
func TestBun(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cg := testenv.NewCgroup(t)
	for i := range 2 {
		marker := newMarker(t)
		body := mailBody(marker)
		req := request(marker, body)
		req.WaitForStdinLine = true
		cmd := testenv.Bun(t, ca, srv.URL(), req)
		gate := testenv.NewGate(t, cmd)
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		gate.Ready(t, waitRecord)
		if i == 0 {
			// The tracer holds nothing: the fetch waits until the probe is
			// on (later runs find it there).
			h.waitProbed(cmd.Path)
		}
		gate.Go(t)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("bun: %v", err)
		}
		r := h.waitFor(cg, marker)
		checkRequest(t, r, srv, marker, body)
		h.waitResponse(r)
		if n := len(h.matching(cg, marker)); n != 1 {
			t.Errorf("request %d traced %d times, want once", i, n)
		}
		if r.Exe != cmd.Path {
			t.Errorf("executable %q, want %q", r.Exe, cmd.Path)
		}
	}
}

// Claude Code's native executable is built by Bun (a newer one): its
// requests to the (fake) Anthropic API are seen.
func TestClaudeCode(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	cmd := testenv.ClaudeCode(t, ca, srv.URL())
	// Probed before it sends: it reads its prompt from stdin until EOF
	// (giving up on stdin if nothing comes in its first 3 s: the start of
	// the prompt is written at once, the marker once it is probed).
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "Say hello to "); err != nil {
		t.Fatal(err)
	}
	h.waitProbed(cmd.Path)
	if _, err := io.WriteString(stdin, marker+"\n"); err != nil {
		t.Fatalf("write the prompt: %v; claude: %s", err, stderr.String())
	}
	if err := stdin.Close(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait() // fails: the fake API's answer is no model's
	got := srv.WaitFor(t, func(rec testenv.Recorded) bool { return bytes.Contains(rec.Body, []byte(marker)) }, waitRecord)
	var r Record
	testenv.Eventually(t, waitRecord, "claude's request to the API", func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, rec := range h.records {
			if rec.Cgroup == cg.ID() && rec.Msg != nil && !rec.Msg.Response && rec.Msg.Target == got.Path {
				r = rec
				return true, ""
			}
		}
		return false, "records: " + h.seenLocked() + "; claude: " + stderr.String()
	})
	m := r.Msg
	if m.Method != "POST" || m.Header.Get("X-Api-Key") != "sk-ant-aarsm-test-fake" || r.Exe != cmd.Path {
		t.Errorf("traced %s %s exe %s key %q", m.Method, m.Target, r.Exe, m.Header.Get("X-Api-Key"))
	}
	if !bytes.Contains(m.Data, []byte(marker)) && !m.Truncated {
		t.Errorf("body of %d bytes (server got %d) lacks the prompt's marker", len(m.Data), len(got.Body))
	}
	t.Logf("claude: %s %s, body %d bytes traced (truncated %v), %d at the server", m.Method, m.Target, len(m.Data), m.Truncated, len(got.Body))
}
