package trace

import (
	"fmt"
	"slices"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// waitProbed waits until the file at path is probed and returns its target.
func (h *harness) waitProbed(path string) {
	h.t.Helper()
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
				if want := []string{"boringssl SSL_write", "boringssl SSL_read"}; !slices.Equal(tg.Symbols, want) {
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
