package trace

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// Go programs carry their own TLS (crypto/tls): no library to probe. The
// agent finds (*tls.Conn).Write and Read in the executable's function
// table, stripped or not, and sees each request (a marker unique to it)
// and, with reads on, the response.
func TestGoClients(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	api := testenv.NewMailAPI(t, ca)
	for _, stripped := range []bool{false, true} {
		bin := testenv.BuildGoClient(t, stripped)
		for _, proto := range []string{"h1", "h2"} {
			t.Run(fmt.Sprintf("%s stripped=%v", proto, stripped), func(t *testing.T) {
				cg := testenv.NewCgroup(t)
				marker := newMarker(t)
				body := mailBody(marker)
				req := request(marker, body)
				req.WaitForStdinLine = true
				h.t = t
				defer func(parent *testing.T) { h.t = parent }(h.t)
				runProbed(t, h, cg, testenv.GoClient(t, bin, ca, api.URL(), req, proto), bin)
				r := h.waitFor(cg, marker)
				wantProto := map[string]string{"h1": "HTTP/1.1", "h2": "HTTP/2.0"}[proto]
				if r.Msg.Method != "POST" || r.Msg.Proto != wantProto || !bytes.Equal(r.Msg.Data, body) {
					t.Errorf("traced %s %s %s body %q, want POST %s body %q", r.Msg.Method, r.Msg.Target, r.Msg.Proto, clip(r.Msg.Data), wantProto, clip(body))
				}
				if !strings.Contains(r.Exe, "goclient") && !strings.HasPrefix(r.Comm, "goclient") {
					t.Errorf("record of %q (%s), want the Go client", r.Comm, r.Exe)
				}
				h.waitResponse(r)
				checkGoTarget(t, h, bin, stripped)
			})
		}
	}
}

// runProbed runs cmd (a client that waits for a line on its stdin) in
// cg once the executable bin is probed: trace holds nothing, so a new
// executable runs while it is being examined.
func runProbed(t *testing.T, h *harness, cg *testenv.Cgroup, cmd *exec.Cmd, bin string) {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	gate.Ready(t, waitRecord)
	id, _, err := proc.StatID(bin)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, waitRecord, "the Go client probed", func() (bool, string) {
		for _, tg := range h.tracer.Sensor().Targets() {
			if tg.ID == id {
				return true, ""
			}
		}
		return false, fmt.Sprintf("targets %+v", h.tracer.Sensor().Targets())
	})
	gate.Go(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, stderr.Bytes())
	}
}

// checkGoTarget: the client's executable was probed as Go.
func checkGoTarget(t *testing.T, h *harness, bin string, stripped bool) {
	t.Helper()
	for _, tg := range h.tracer.Sensor().Targets() {
		if tg.Path != bin && !strings.HasSuffix(tg.Path, "/goclient") {
			continue
		}
		if !tg.Probed() || len(tg.Symbols) == 0 || !strings.HasPrefix(tg.Symbols[0], "go1.") || !strings.HasSuffix(tg.Symbols[0], " crypto/tls.(*Conn).Write") {
			t.Errorf("target %s (stripped %v): symbols %q, err %v", tg.Path, stripped, tg.Symbols, tg.Err)
		}
		return
	}
	t.Errorf("the Go client %s is not among the targets", bin)
}

// A Go program started before the agent is probed by the scan of running
// processes.
func TestGoStartedBeforeAgent(t *testing.T) {
	testenv.RequireRoot(t)
	ca := testenv.NewCA(t)
	api := testenv.NewMailAPI(t, ca)
	bin := testenv.BuildGoClient(t, true)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	body := mailBody(marker)
	req := request(marker, body)
	req.WaitForStdinLine = true
	cmd := testenv.GoClient(t, bin, ca, api.URL(), req, "h2")
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	gate.Ready(t, waitRecord)

	h := startTracer(t)
	gate.Go(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go client: %v", err)
	}
	r := h.waitFor(cg, marker)
	if !bytes.Equal(r.Msg.Data, body) {
		t.Errorf("traced body %q, want %q", clip(r.Msg.Data), clip(body))
	}
	h.waitResponse(r)
}

// A Go program run from a path that exists only in its own mount
// namespace is examined and probed through /proc/PID/root.
func TestGoPrivateMountNamespace(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	api := testenv.NewMailAPI(t, ca)
	bin := testenv.BuildGoClient(t, false)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	body := mailBody(marker)
	req := request(marker, body)
	req.WaitForStdinLine = true
	cmd, _ := testenv.GoClientInMountNS(t, bin, ca, api.URL(), req, "h1")
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	pid := gate.Ready(t, waitRecord)
	var tg probe.Target
	testenv.Eventually(t, waitRecord, "the Go client probed", func() (bool, string) {
		for _, x := range h.tracer.Sensor().Targets() {
			if strings.HasPrefix(x.Path, fmt.Sprintf("/proc/%d/", pid)) {
				tg = x
				return true, ""
			}
		}
		return false, fmt.Sprintf("targets %+v", h.tracer.Sensor().Targets())
	})
	if !tg.Probed() {
		t.Fatalf("Go client examined through %s but not probed: %v", tg.Path, tg.Err)
	}
	gate.Go(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go client in mount namespace: %v", err)
	}
	r := h.waitFor(cg, marker)
	if !bytes.Equal(r.Msg.Data, body) {
		t.Errorf("traced body %q, want %q", clip(r.Msg.Data), clip(body))
	}
}
