package trace

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The Gemini CLI (from npm, a bundle on the system's node), pointed at a
// fake Gemini API on loopback, answers a prompt: its POST to the API,
// with the prompt's marker in the body, is seen, and so is the answer.
func TestGeminiCLI(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	api := testenv.NewGeminiAPI(t, ca)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	cmd := testenv.GeminiCLI(t, ca, api.URL(), "Say hello to "+marker)
	// node is probed before the CLI runs: its first write is seen. A
	// tracer holds nothing, and examines an executable only while a
	// process runs it: a node that waits on its stdin keeps it running
	// until it is probed.
	id, _, err := proc.StatID(cmd.Path)
	if err != nil {
		t.Fatal(err)
	}
	keeper := exec.Command(cmd.Path, "-e", "process.stdin.resume()")
	stdin, err := keeper.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Start(keeper); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = keeper.Wait()
	}()
	testenv.Eventually(t, waitRecord, fmt.Sprintf("%s (%v) probed", cmd.Path, id), func() (bool, string) {
		for _, tg := range h.tracer.Sensor().Targets() {
			if tg.ID == id {
				if !tg.Probed() {
					t.Fatalf("%s examined but not probed: %v", cmd.Path, tg.Err)
				}
				return true, ""
			}
		}
		return false, "not examined yet"
	})
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("gemini: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	// It finished on the fake API's answer.
	if !strings.Contains(stdout.String(), testenv.GeminiAnswer) {
		t.Errorf("gemini printed %q, want the fake API's answer %q\nstderr: %s", stdout.String(), testenv.GeminiAnswer, stderr.String())
	}
	got := api.WaitFor(t, func(r testenv.GeminiRequest) bool { return bytes.Contains(r.Body, []byte(marker)) }, waitRecord)
	var r Record
	testenv.Eventually(t, waitRecord, "gemini's request to the API", func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, rec := range h.records {
			if rec.Cgroup == cg.ID() && rec.Msg != nil && !rec.Msg.Response && rec.Msg.Target == got.Path {
				r = rec
				return true, ""
			}
		}
		return false, "records: " + h.seenLocked()
	})
	m := r.Msg
	if m.Method != "POST" || !strings.Contains(m.Target, ":streamGenerateContent") || r.Exe != cmd.Path {
		t.Errorf("traced %s %s exe %s", m.Method, m.Target, r.Exe)
	}
	if k := m.Header.Get("X-Goog-Api-Key"); k != "aarsm-test-fake-gemini-key" {
		t.Errorf("traced API key %q", k)
	}
	if !bytes.Contains(m.Data, []byte(marker)) {
		t.Errorf("traced body of %d bytes (truncated %v; %d at the API) lacks the prompt's marker", len(m.Data), m.Truncated, len(got.Body))
	}
	h.waitResponse(r)
	t.Logf("gemini: %s %s, body %d bytes traced (truncated %v), %d at the API; %d requests in all",
		m.Method, m.Target, len(m.Data), m.Truncated, len(got.Body), len(api.Requests()))
}
