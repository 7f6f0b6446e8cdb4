package trace

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// These tests load the real sensor into the running kernel and drive real
// TLS clients against a loopback server. Every client runs in a cgroup of
// the test's own, and records are matched on that cgroup and on a marker
// unique to the test, so other processes on the host cannot interfere.

const waitRecord = 15 * time.Second

type harness struct {
	t       *testing.T
	tracer  *Tracer
	mu      sync.Mutex
	records []Record
	attach  chan probe.Target
	cancel  context.CancelFunc
	done    chan error
}

func startTracer(t *testing.T) *harness {
	t.Helper()
	testenv.RequireRoot(t)
	h := &harness{t: t, attach: make(chan probe.Target, 256), done: make(chan error, 1)}
	tr, err := Start(Options{Sensor: probe.Options{
		Reads:  true,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
		OnAttach: func(tg probe.Target) {
			select {
			case h.attach <- tg:
			default:
			}
		},
	}})
	if err != nil {
		t.Fatalf("start tracer: %v", err)
	}
	h.tracer = tr
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.done <- tr.Run(ctx, func(r Record) {
			h.mu.Lock()
			h.records = append(h.records, r)
			h.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-h.done; err != nil {
			t.Errorf("tracer run: %v", err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("close tracer: %v", err)
		}
	})
	return h
}

// waitFor returns the first request record of cgroup cg whose target
// contains marker.
func (h *harness) waitFor(cg *testenv.Cgroup, marker string) Record {
	h.t.Helper()
	var r Record
	testenv.Eventually(h.t, waitRecord, fmt.Sprintf("a request with marker %s from cgroup %d", marker, cg.ID()), func() (bool, string) {
		if rs := h.matching(cg, marker); len(rs) > 0 {
			r = rs[0]
			return true, ""
		}
		return false, "records: " + h.seen()
	})
	return r
}

// waitResponse waits for the record of the response on req's connection:
// a client writes its request before it reads the response, and records
// come in the order the kernel saw the calls, so every record of the
// request's writes has come by then.
func (h *harness) waitResponse(req Record) {
	h.t.Helper()
	testenv.Eventually(h.t, waitRecord, fmt.Sprintf("the response to pid %d's %s %s", req.Conn.PID, req.Msg.Method, req.Msg.Target), func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, r := range h.records {
			if r.Conn == req.Conn && r.Msg != nil && r.Msg.Response {
				return true, ""
			}
		}
		return false, "records: " + h.seenLocked()
	})
}

func (h *harness) seen() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seenLocked()
}

// seenLocked lists the last records (what a failure shows).
func (h *harness) seenLocked() string {
	var seen []string
	for _, r := range h.records[max(0, len(h.records)-20):] {
		if r.Msg == nil {
			continue
		}
		kind := r.Msg.Method + " " + r.Msg.Target
		if r.Msg.Response {
			kind = "response"
		}
		seen = append(seen, fmt.Sprintf("%s(cg %d) %s", r.Comm, r.Cgroup, kind))
	}
	return fmt.Sprintf("%d, the last %v", len(h.records), seen)
}

func (h *harness) matching(cg *testenv.Cgroup, marker string) []Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []Record
	for _, r := range h.records {
		if r.Cgroup == cg.ID() && r.Msg != nil && !r.Msg.Response && strings.Contains(r.Msg.Target, marker) {
			out = append(out, r)
		}
	}
	return out
}

func newMarker(t *testing.T) string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "aarsm-" + hex.EncodeToString(b)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// run starts cmd in cg and waits for it to succeed.
func run(t *testing.T, cg *testenv.Cgroup, cmd *exec.Cmd) {
	t.Helper()
	var stderr bytes.Buffer
	if cmd.Stderr == nil {
		cmd.Stderr = &stderr
	}
	if err := cg.Start(cmd); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd.Path, err, stderr.Bytes())
	}
}

// checkRequest asserts that the record carries exactly what the server got.
func checkRequest(t *testing.T, r Record, srv *testenv.Server, marker string, body []byte) {
	t.Helper()
	got := srv.WaitFor(t, func(rec testenv.Recorded) bool { return strings.Contains(rec.Path, marker) }, waitRecord)
	m := r.Msg
	if m.Method != got.Method || m.Target != got.Path || m.Host != got.Host || m.Proto != "HTTP/1.1" {
		t.Errorf("request line: traced %s %s %s (host %s), server got %s %s (host %s)", m.Method, m.Target, m.Proto, m.Host, got.Method, got.Path, got.Host)
	}
	for name, values := range got.Header {
		if strings.EqualFold(name, "Host") {
			continue
		}
		if fmt.Sprint(m.Header.Values(name)) != fmt.Sprint(values) {
			t.Errorf("header %s: traced %q, server got %q", name, m.Header.Values(name), values)
		}
	}
	if m.Header.Get("X-Aarsm-Marker") != marker {
		t.Errorf("X-Aarsm-Marker: traced %q, want %q", m.Header.Get("X-Aarsm-Marker"), marker)
	}
	if !bytes.Equal(m.Data, body) || !bytes.Equal(got.Body, body) {
		t.Errorf("body: traced %d bytes %q, server %d bytes, sent %d bytes", len(m.Data), clip(m.Data), len(got.Body), len(body))
	}
	if m.Truncated || m.DecodeErr != nil {
		t.Errorf("traced body truncated=%v decode error=%v", m.Truncated, m.DecodeErr)
	}
}

func clip(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

func request(marker string, body []byte) testenv.Request {
	return testenv.Request{
		Method: "POST",
		Path:   "/email?marker=" + marker,
		Header: map[string]string{"X-Aarsm-Marker": marker, "Content-Type": "application/json"},
		Body:   body,
	}
}

func mailBody(marker string) []byte {
	return []byte(fmt.Sprintf(`{"From":"ops@company.com","To":"user@company.com","Bcc":"phan@giftshop.club","Subject":"%s","TextBody":"quarterly numbers"}`, marker))
}

func TestClients(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	clients := []struct {
		name string
		cmd  func(testenv.Request) *exec.Cmd
	}{
		{"curl", func(r testenv.Request) *exec.Cmd { return testenv.Curl(t, ca, srv.URL(), r) }},
		{"python", func(r testenv.Request) *exec.Cmd { return testenv.Python(t, ca, srv.URL(), r) }},
		{"node", func(r testenv.Request) *exec.Cmd { return testenv.Node(t, ca, srv.URL(), r) }},
		{"openssl", func(r testenv.Request) *exec.Cmd {
			raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nX-Aarsm-Marker: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
				r.Path, srv.Addr(), r.Header["X-Aarsm-Marker"], len(r.Body), r.Body)
			return testenv.OpenSSL(t, ca, srv.Addr(), []byte(raw))
		}},
		// GnuTLS (libgnutls.so.30): gnutls_record_send.
		{"wget", func(r testenv.Request) *exec.Cmd { return testenv.Wget(t, ca, srv.URL(), r) }},
		{"gnutls-cli", func(r testenv.Request) *exec.Cmd {
			raw := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nX-Aarsm-Marker: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
				r.Path, srv.Addr(), r.Header["X-Aarsm-Marker"], len(r.Body), r.Body)
			return testenv.GnuTLSCLI(t, ca, srv.Addr(), []byte(raw))
		}},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			cg := testenv.NewCgroup(t)
			marker := newMarker(t)
			body := mailBody(marker)
			run(t, cg, c.cmd(request(marker, body)))
			r := h.waitFor(cg, marker)
			checkRequest(t, r, srv, marker, body)
			// node retries its first write until the handshake is done:
			// the request must still appear once (by the response, every
			// record of its writes has come).
			h.waitResponse(r)
			if n := len(h.matching(cg, marker)); n != 1 {
				t.Errorf("request traced %d times, want once", n)
			}
			if r.Exe == "" || r.Exe == "?" {
				t.Errorf("executable of pid %d unknown", r.Conn.PID)
			}
		})
	}
}

func TestBodies(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)

	t.Run("chunked", func(t *testing.T) {
		cg := testenv.NewCgroup(t)
		marker := newMarker(t)
		body := bytes.Repeat(mailBody(marker), 40) // several chunks
		req := request(marker, body)
		req.Chunked, req.ChunkSize = true, 1000
		run(t, cg, testenv.Python(t, ca, srv.URL(), req))
		r := h.waitFor(cg, marker)
		if !r.Msg.Chunked {
			t.Error("not seen as chunked")
		}
		checkRequest(t, r, srv, marker, body)
	})
	t.Run("gzip", func(t *testing.T) {
		cg := testenv.NewCgroup(t)
		marker := newMarker(t)
		body := mailBody(marker)
		req := request(marker, body)
		req.Gzip = true
		run(t, cg, testenv.Curl(t, ca, srv.URL(), req))
		r := h.waitFor(cg, marker)
		if r.Msg.Encoding != "gzip" {
			t.Errorf("encoding %q, want gzip", r.Msg.Encoding)
		}
		checkRequest(t, r, srv, marker, body)
	})
	t.Run("40KiB", func(t *testing.T) {
		before, _, _, err := h.tracer.Stats()
		if err != nil {
			t.Fatal(err)
		}
		cg := testenv.NewCgroup(t)
		marker := newMarker(t)
		body := bytes.Repeat([]byte("0123456789abcdef"), 40<<10/16)
		run(t, cg, testenv.Curl(t, ca, srv.URL(), request(marker, body)))
		r := h.waitFor(cg, marker)
		m := r.Msg
		if !m.Truncated || m.Missing == 0 || m.WireSize != int64(len(body)) {
			t.Errorf("truncated=%v missing=%d size=%d; want a flagged truncation of a %d-byte body", m.Truncated, m.Missing, m.WireSize, len(body))
		}
		if !bytes.HasPrefix(body, m.Data) || len(m.Data) == 0 {
			t.Errorf("captured part of the body is not its beginning: %q", clip(m.Data))
		}
		after, _, _, err := h.tracer.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if after.Truncated <= before.Truncated {
			t.Errorf("truncation not counted: %d -> %d", before.Truncated, after.Truncated)
		}
		// The stream goes on: the next request on a new connection is whole.
		marker2 := newMarker(t)
		run(t, cg, testenv.Curl(t, ca, srv.URL(), request(marker2, mailBody(marker2))))
		checkRequest(t, h.waitFor(cg, marker2), srv, marker2, mailBody(marker2))
	})
}

// A process that loaded its TLS library before the agent started is traced.
func TestProcessStartedBeforeAgent(t *testing.T) {
	testenv.RequireRoot(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	body := mailBody(marker)
	req := request(marker, body)
	req.WaitForStdinLine = true
	cmd := testenv.Node(t, ca, srv.URL(), req)
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	gate.Ready(t, waitRecord)

	h := startTracer(t)
	gate.Go(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("node: %v", err)
	}
	checkRequest(t, h.waitFor(cg, marker), srv, marker, body)
}

// A client in its own mount namespace maps its own copy of libssl (another
// inode than the host's): the agent finds it through the process's root and
// probes it.
func TestPrivateMountNamespace(t *testing.T) {
	h := startTracer(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	cg := testenv.NewCgroup(t)
	marker := newMarker(t)
	body := mailBody(marker)
	req := request(marker, body)
	req.WaitForStdinLine = true
	cmd, lib := testenv.PythonInMountNS(t, ca, srv.URL(), req)
	gate := testenv.NewGate(t, cmd)
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	pid := gate.Ready(t, waitRecord)

	// Wait until the copy is probed.
	deadline := time.After(waitRecord)
	for probed := false; !probed; {
		select {
		case tg := <-h.attach:
			if tg.ID.Ino == lib.CopyInode {
				if !tg.Probed() {
					t.Fatalf("copy of libssl examined but not probed: %v", tg.Err)
				}
				want := fmt.Sprintf("/proc/%d/", pid)
				if !strings.HasPrefix(tg.Path, want) {
					t.Errorf("copy probed through %q, want a path under %s", tg.Path, want)
				}
				probed = true
			}
		case <-deadline:
			t.Fatalf("copy of libssl (inode %d) never probed; targets: %+v", lib.CopyInode, h.tracer.Sensor().Targets())
		}
	}
	gate.Go(t)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("python in mount namespace: %v", err)
	}
	checkRequest(t, h.waitFor(cg, marker), srv, marker, body)
}
