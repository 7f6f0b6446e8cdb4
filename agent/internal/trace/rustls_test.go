package trace

import (
	"testing"

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
