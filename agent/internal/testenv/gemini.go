package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// GeminiCLIPackage is Google's Gemini CLI from npm: a JavaScript bundle
// run by the system's node (whose built-in OpenSSL the sensor probes).
var GeminiCLIPackage = NPMTarball{
	Spec:      "@google/gemini-cli@0.61.0",
	Integrity: "sha512-dbQ9A0qBtFJNi6XBkHvfZ6Azpn6PNgH/P8h2MZ67RLlX8hSAVjup39CRWqdRxZv7YXIuhrFaytr8y0jKnkoxnQ==",
	Bin:       "bundle/gemini.js",
}

// GeminiModel is the model GeminiCLI asks for. Named on the command line,
// it also keeps the CLI from asking a classifier model first which model
// to use (its "auto" routing).
const GeminiModel = "gemini-2.5-flash"

// GeminiAnswer is the text of every answer of a GeminiAPI.
const GeminiAnswer = "AARSM fake Gemini answer."

// GeminiRequest is one request a GeminiAPI received whole.
type GeminiRequest struct {
	Method string
	Path   string // with the query, e.g. /v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse
	Header http.Header
	Body   []byte
}

// GeminiAPI is a fake Gemini API (generativelanguage's REST surface, as
// the Gemini CLI's @google/genai client calls it) over HTTPS on
// 127.0.0.1: POST .../models/M:streamGenerateContent?alt=sse answers one
// server-sent event, :generateContent one JSON response, each with one
// candidate whose text is GeminiAnswer; :countTokens a count; anything
// else 404 in the API's error format. It records every request.
type GeminiAPI struct {
	ln  net.Listener
	rec *recorder[GeminiRequest]
}

// NewGeminiAPI starts the fake API; it is closed when the test ends.
func NewGeminiAPI(t testing.TB, ca *CA) *GeminiAPI {
	t.Helper()
	cfg := ca.ServerTLSConfig()
	cfg.NextProtos = []string{"http/1.1"}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: listen on loopback: %v", err)
	}
	g := &GeminiAPI{ln: ln, rec: newRecorder[GeminiRequest]()}
	srv := &http.Server{Handler: http.HandlerFunc(g.serve), TLSConfig: cfg, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx) // cleanup: the clients are gone
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("testenv: fake Gemini API: %v", err)
		}
	})
	return g
}

// URL is https://127.0.0.1:PORT, the value for GOOGLE_GEMINI_BASE_URL.
func (g *GeminiAPI) URL() string { return "https://" + g.ln.Addr().String() }

// Requests returns the requests received so far, in arrival order.
func (g *GeminiAPI) Requests() []GeminiRequest {
	items, _ := g.rec.snapshot()
	return items
}

// WaitFor waits for a request matching pred and returns the first one; it
// fails the test after timeout.
func (g *GeminiAPI) WaitFor(t testing.TB, pred func(GeminiRequest) bool, timeout time.Duration) GeminiRequest {
	t.Helper()
	r, all, ok := g.rec.waitFor(pred, timeout)
	if !ok {
		var b strings.Builder
		for _, x := range all {
			fmt.Fprintf(&b, "\n  %s %s (%d body bytes)", x.Method, x.Path, len(x.Body))
		}
		t.Fatalf("testenv: no matching request at the fake Gemini API within %v; %d received:%s", timeout, len(all), b.String())
	}
	return r
}

func (g *GeminiAPI) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRecordedBody))
	if err != nil {
		http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
		return
	}
	g.rec.add(GeminiRequest{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body}, nil)
	_, method, _ := strings.Cut(r.URL.Path, ":")
	answer := map[string]any{
		"candidates": []any{map[string]any{
			"content":      map[string]any{"role": "model", "parts": []any{map[string]any{"text": GeminiAnswer}}},
			"finishReason": "STOP",
			"index":        0,
		}},
		"usageMetadata": map[string]any{"promptTokenCount": 8, "candidatesTokenCount": 5, "totalTokenCount": 13},
		"modelVersion":  GeminiModel,
	}
	switch {
	case r.Method != http.MethodPost:
		geminiError(w, http.StatusMethodNotAllowed, "method not allowed")
	case method == "streamGenerateContent":
		js, _ := json.Marshal(answer) // a map of plain values
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = fmt.Fprintf(w, "data: %s\r\n\r\n", js)
	case method == "generateContent":
		writeJSON(w, answer)
	case method == "countTokens":
		writeJSON(w, map[string]any{"totalTokens": 8})
	default:
		geminiError(w, http.StatusNotFound, "no such method: "+r.URL.Path)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v) // a failed write is the client's loss
}

// geminiError answers in the format of Google APIs' errors.
func geminiError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": code, "message": msg, "status": http.StatusText(code)}})
}

// GeminiCLI returns an unstarted command running the Gemini CLI (from
// npm: GeminiCLIPackage, on the system's node) once, non-interactively
// ("-p prompt", model GeminiModel), against the Gemini API at baseURL (a
// fake one on loopback: GOOGLE_GEMINI_BASE_URL) with a fake API key,
// trusting ca (NODE_EXTRA_CA_CERTS), in a home directory of its own whose
// settings choose the API-key sign-in and turn usage statistics off, in
// an empty trusted workspace. It prints the model's answer on stdout.
func GeminiCLI(t testing.TB, ca *CA, baseURL, prompt string) *exec.Cmd {
	t.Helper()
	node := requireBinary(t, "node", nodeHint)
	script := NPMExecutable(t, GeminiCLIPackage)
	home := stateDir(t, "gemini-home-")
	settings := `{"security":{"auth":{"selectedType":"gemini-api-key"}},"privacy":{"usageStatisticsEnabled":false}}` + "\n"
	if err := os.MkdirAll(filepath.Join(home, ".gemini"), 0o700); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := writeFile(filepath.Join(home, ".gemini", "settings.json"), []byte(settings)); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(node, script, "-m", GeminiModel, "-p", prompt)
	cmd.Dir = stateDir(t, "gemini-workspace-")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "TERM=dumb", "NO_COLOR=1",
		"GOOGLE_GEMINI_BASE_URL=" + baseURL, "GEMINI_API_KEY=aarsm-test-fake-gemini-key",
		"NODE_EXTRA_CA_CERTS=" + ca.CAFile, "GEMINI_CLI_TRUST_WORKSPACE=true"}
	killOnCleanup(t, cmd)
	return cmd
}
