package enforce

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/baseline"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// toolRequest runs the executable tool (a copy of curl) in cg: one
// request to url, over HTTP/2 or HTTP/1.1, a POST when body is set. It
// returns the process's pid and how it ended.
func toolRequest(t *testing.T, e *env, cg *testenv.Cgroup, tool, url string, h2 bool, body string) (int, error) {
	t.Helper()
	args := []string{"-q", "--silent", "--show-error", "--fail", "--noproxy", "*", "--max-time", "30", "--cacert", e.ca.CAFile}
	if h2 {
		args = append(args, "--http2")
	} else {
		args = append(args, "--http1.1")
	}
	if body != "" {
		args = append(args, "-H", "Content-Type: application/json", "--data-binary", body)
	}
	cmd := exec.Command(tool, append(args, "--url", url)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return cmd.Process.Pid, err
}

// learned reports whether the agent's baseline has dest for package pkg.
func learned(a *Agent, pkg, dest string) func() (bool, string) {
	return func() (bool, string) {
		f := a.base.Snapshot()
		i := f.Find(pkg)
		if i < 0 {
			return false, fmt.Sprintf("no package %s", pkg)
		}
		for _, b := range f.Packages[i].Builds {
			if slices.ContainsFunc(b.Destinations, func(d baseline.Entry) bool { return d.Value == dest }) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%s: %+v", pkg, f.Packages[i].Builds)
	}
}

// The baseline beyond MCP servers' mail: a plain executable (a copy of
// curl under a test path, no MCP server, no mail) learns the destination
// it uses; enforcing, a request to another destination is alerted
// (unseen_destinations = "alert", the default) and the learned one is
// not; the executable replaced in place by other content sends to a new
// host: a rug pull, blocked before one byte reaches it.
func TestBaselineExecutable(t *testing.T) {
	cg := testenv.NewCgroup(t)
	dir := policyDir(t, map[string]string{"p.hcl": "agent {\n  baseline = \"learn\"\n}\n" + mcpPolicy})
	e := startOpts(t, dir, cg, Options{StateDir: t.TempDir()})
	srvA, srvB, srvC := testenv.NewMailAPI(t, e.ca), testenv.NewMailAPI(t, e.ca), testenv.NewMailAPI(t, e.ca)
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("the test needs curl: %v", err)
	}
	orig, err := os.ReadFile(curl)
	if err != nil {
		t.Fatal(err)
	}
	tool := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(tool, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	pkg := "exe:" + tool
	smtp := testenv.NewSMTPServer(t, e.ca)
	mail := func(rcpt string) (int, error) {
		cmd := testenv.CurlSMTP(t, e.ca, smtp.URL(), "ops@company.example", []string{rcpt},
			[]byte("From: ops@company.example\r\nTo: "+rcpt+"\r\nSubject: numbers\r\n\r\nQ3.\r\n"))
		cmd.Path = tool
		if err := cg.Start(cmd); err != nil {
			t.Fatal(err)
		}
		return cmd.Process.Pid, cmd.Wait()
	}

	// Learning: the tool fetches from A, and mails a colleague over SMTP.
	if _, err := toolRequest(t, e, cg, tool, srvA.URL()+"/learn", false, ""); err != nil {
		t.Fatalf("learning request: %v", err)
	}
	if _, err := mail("ceo@company.example"); err != nil {
		t.Fatalf("learning mail: %v", err)
	}
	testenv.Eventually(t, 10*time.Second, "the baseline learns A", learned(e.agent, pkg, srvA.Addr()))
	testenv.Eventually(t, 10*time.Second, "the baseline learns the SMTP server", learned(e.agent, pkg, smtp.Addr()))
	if f := e.agent.base.Snapshot(); f.Packages[f.Find(pkg)].Kind() != baseline.KindExe {
		t.Errorf("%s kept as %s, want %s", pkg, f.Packages[f.Find(pkg)].Kind(), baseline.KindExe)
	}

	// Enforcing.
	src, err := os.ReadFile(filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), bytes.Replace(src, []byte(`"learn"`), []byte(`"enforce"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reload(); err != nil {
		t.Fatal(err)
	}

	t.Run("unseen destination", func(t *testing.T) {
		pidA, err := toolRequest(t, e, cg, tool, srvA.URL()+"/known", false, "")
		if err != nil {
			t.Fatalf("request to the learned destination: %v", err)
		}
		pidB, err := toolRequest(t, e, cg, tool, srvB.URL()+"/unseen", true, "")
		if err != nil {
			t.Fatalf("request to an unseen destination (alert only): %v", err)
		}
		rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=alert", fmt.Sprintf("AARSM_PID=%d", pidB))[0]
		for field, want := range map[string]string{
			"AARSM_RULES": "unseen_destinations", "AARSM_VIOLATIONS": srvB.Addr(), "AARSM_BASELINE": "unseen_destination",
		} {
			if got := fmt.Sprint(rec[field]); got != want {
				t.Errorf("%s = %q, want %q", field, got, want)
			}
		}
		if got := fmt.Sprint(rec["AARSM_BASELINE_PACKAGE"]); !strings.HasPrefix(got, pkg+" sha256:") {
			t.Errorf("AARSM_BASELINE_PACKAGE = %q, want %s and its hash", got, pkg)
		}
		if n := len(srvB.Requests()); n != 1 {
			t.Errorf("B received %d requests, want 1 (alerted, not blocked)", n)
		}
		// B's verdict is in: A's request, made before, has none.
		if got := e.jd.Query(t, fmt.Sprintf("AARSM_PID=%d", pidA)); len(got) != 0 {
			t.Errorf("a verdict on the learned destination: %v", got)
		}
	})

	t.Run("smtp", func(t *testing.T) {
		// The destination is the session's peer; mail records its
		// recipient domains too.
		pidKnown, err := mail("cfo@company.example")
		if err != nil {
			t.Fatalf("mail to a learned domain: %v", err)
		}
		pid, err := mail("someone@partner.example")
		if err != nil {
			t.Fatalf("mail to an unseen domain (alert only): %v; verdicts %v", err, e.jd.Query(t, fmt.Sprintf("AARSM_PID=%d", pid)))
		}
		rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=alert", fmt.Sprintf("AARSM_PID=%d", pid))[0]
		for field, want := range map[string]string{
			"AARSM_RULES": "unseen_destinations", "AARSM_VIOLATIONS": "partner.example", "AARSM_BASELINE": "unseen_destination",
		} {
			if got := fmt.Sprint(rec[field]); got != want {
				t.Errorf("%s = %q, want %q", field, got, want)
			}
		}
		if got := e.jd.Query(t, fmt.Sprintf("AARSM_PID=%d", pidKnown), "AARSM_VERDICT=alert"); len(got) != 0 {
			t.Errorf("an alert on mail to a learned domain: %v", got)
		}
	})

	t.Run("rug pull", func(t *testing.T) {
		// Replaced in place: same path, same inode, other content.
		if err := os.WriteFile(tool, append(orig, []byte("rug pull")...), 0o755); err != nil {
			t.Fatal(err)
		}
		pid, err := toolRequest(t, e, cg, tool, srvC.URL()+"/exfil", false, `{"secret":"numbers"}`)
		if err == nil {
			t.Errorf("the rug-pulled tool's request succeeded")
		}
		rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", pid))[0]
		for field, want := range map[string]string{
			"AARSM_RULES": "rug_pull", "AARSM_VIOLATIONS": srvC.Addr(), "AARSM_BASELINE": "rug_pull",
		} {
			if got := fmt.Sprint(rec[field]); got != want {
				t.Errorf("%s = %q, want %q", field, got, want)
			}
		}
		cur, prev := fmt.Sprint(rec["AARSM_BASELINE_PACKAGE"]), fmt.Sprint(rec["AARSM_BASELINE_PREVIOUS"])
		if !strings.HasPrefix(cur, pkg+" sha256:") || !strings.HasPrefix(prev, pkg+" sha256:") || cur == prev {
			t.Errorf("AARSM_BASELINE_PACKAGE %q, AARSM_BASELINE_PREVIOUS %q: want two hashes of %s", cur, prev, pkg)
		}
		if got := srvC.Received(); len(got) != 0 || len(srvC.Requests()) != 0 {
			t.Errorf("C received %d bytes: %q", len(got), got)
		}
	})
}

// A node script outside any package (kind script: its path and content
// hash) learns the WebSocket server it talks to; enforcing, the same
// script talking to another server is alerted (the upgrade request and
// its messages alike), and the learned one is not.
func TestBaselineScriptWebSocket(t *testing.T) {
	cg := testenv.NewCgroup(t)
	dir := policyDir(t, map[string]string{"p.hcl": "agent {\n  baseline = \"learn\"\n}\n" + mcpPolicy})
	e := startOpts(t, dir, cg, Options{StateDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil))})
	wsA, wsB := testenv.NewWSServer(t, e.ca), testenv.NewWSServer(t, e.ca)
	first := testenv.NodeWebSocket(t, e.ca, wsA.URL(), "hello")
	script := first.Args[2]
	run := func(cmd *exec.Cmd) int {
		t.Helper()
		if out, err := output(cg, cmd); err != nil || !strings.Contains(out, "reply") {
			t.Fatalf("%v: %v: %s", cmd.Args, err, out)
		}
		return cmd.Process.Pid
	}
	again := func(url string) *exec.Cmd { // the same script, another server
		cmd := exec.Command(first.Args[0], append(slices.Clone(first.Args[1:3]), url, "hello")...)
		cmd.Env = first.Env
		return cmd
	}
	pkg := "script:" + script
	hostOf := func(u string) string { return strings.TrimSuffix(strings.TrimPrefix(u, "wss://"), "/") }

	run(first)
	testenv.Eventually(t, 10*time.Second, "the baseline learns A", learned(e.agent, pkg, hostOf(wsA.URL())))
	if f := e.agent.base.Snapshot(); f.Packages[f.Find(pkg)].Kind() != baseline.KindScript {
		t.Errorf("%s kept as %s", pkg, f.Packages[f.Find(pkg)].Kind())
	}
	src, err := os.ReadFile(filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), bytes.Replace(src, []byte(`"learn"`), []byte(`"enforce"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reload(); err != nil {
		t.Fatal(err)
	}

	pidA := run(again(wsA.URL()))
	pidB := run(again(wsB.URL()))
	recs := e.jd.WaitFor(t, 1, "AARSM_VERDICT=alert", fmt.Sprintf("AARSM_PID=%d", pidB))
	for _, rec := range recs {
		if got := fmt.Sprint(rec["AARSM_VIOLATIONS"]); got != hostOf(wsB.URL()) || fmt.Sprint(rec["AARSM_BASELINE"]) != "unseen_destination" ||
			!strings.HasPrefix(fmt.Sprint(rec["AARSM_BASELINE_PACKAGE"]), pkg+" sha256:") {
			t.Errorf("verdict on B: %s %s %s", got, rec["AARSM_BASELINE"], rec["AARSM_BASELINE_PACKAGE"])
		}
	}
	if got := e.jd.Query(t, fmt.Sprintf("AARSM_PID=%d", pidA)); len(got) != 0 {
		t.Errorf("a verdict on the learned server: %v", got)
	}
}

// A big executable is hashed off the verdict path (here the verdict does
// not wait at all: Options.ExeHashWait < 0): its first request is judged
// by path, "hash pending", and observed under its hash once known —
// learned in learn mode; enforcing, rewritten with other content, its
// first request to a new host is an unseen destination by path (a rug
// pull cannot be told yet: alerted), the next one a rug pull, blocked.
func TestBaselineHashPending(t *testing.T) {
	cg := testenv.NewCgroup(t)
	dir := policyDir(t, map[string]string{"p.hcl": "agent {\n  baseline = \"learn\"\n}\n" + mcpPolicy})
	e := startOpts(t, dir, cg, Options{StateDir: t.TempDir(), ExeHashWait: -1})
	srvA, srvC := testenv.NewMailAPI(t, e.ca), testenv.NewMailAPI(t, e.ca)
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("the test needs curl: %v", err)
	}
	orig, err := os.ReadFile(curl)
	if err != nil {
		t.Fatal(err)
	}
	tool := filepath.Join(t.TempDir(), "big-tool")
	// curl and 128 MiB of padding: ~100 ms of sha256 here.
	write := func(pad byte) string {
		data := append(slices.Clone(orig), bytes.Repeat([]byte{pad}, 128<<20)...)
		if err := os.WriteFile(tool, data, 0o755); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	pkg := "exe:" + tool
	first := write(0)
	if _, err := toolRequest(t, e, cg, tool, srvA.URL()+"/learn", false, ""); err != nil {
		t.Fatalf("learning request: %v", err)
	}
	testenv.Eventually(t, 30*time.Second, "the baseline learns A under the hash", func() (bool, string) {
		f := e.agent.base.Snapshot()
		i := f.Find(pkg)
		if i < 0 {
			return false, "not yet"
		}
		b := f.Packages[i].Builds
		return len(b) == 1 && b[0].Hash == first && len(b[0].Destinations) == 1 && b[0].Destinations[0].Value == srvA.Addr(), fmt.Sprintf("%+v", b)
	})

	src, err := os.ReadFile(filepath.Join(dir, "p.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p.hcl"), bytes.Replace(src, []byte(`"learn"`), []byte(`"enforce"`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.agent.Reload(); err != nil {
		t.Fatal(err)
	}
	write(1)
	pid, err := toolRequest(t, e, cg, tool, srvC.URL()+"/first", false, "")
	if err != nil {
		t.Fatalf("first request, hash pending (alert only): %v", err)
	}
	rec := e.jd.WaitFor(t, 1, "AARSM_VERDICT=alert", fmt.Sprintf("AARSM_PID=%d", pid))[0]
	if got, want := fmt.Sprint(rec["AARSM_BASELINE_PACKAGE"]), pkg+" (hash pending)"; got != want || fmt.Sprint(rec["AARSM_BASELINE"]) != "unseen_destination" {
		t.Errorf("hash pending: AARSM_BASELINE %v, AARSM_BASELINE_PACKAGE %q, want unseen_destination, %q", rec["AARSM_BASELINE"], got, want)
	}
	// Once hashed: a rug pull.
	testenv.Eventually(t, 30*time.Second, "the rewritten tool hashed", func() (bool, string) {
		st := e.agent.exeHash.Stats()
		return st.Hashed >= 2, fmt.Sprintf("%+v", st)
	})
	pid, err = toolRequest(t, e, cg, tool, srvC.URL()+"/second", false, "")
	if err == nil {
		t.Errorf("the rug pull's request succeeded")
	}
	rec = e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", fmt.Sprintf("AARSM_PID=%d", pid))[0]
	if fmt.Sprint(rec["AARSM_BASELINE"]) != "rug_pull" || !strings.HasPrefix(fmt.Sprint(rec["AARSM_BASELINE_PREVIOUS"]), pkg+" "+baseline.ShortHash(first)) {
		t.Errorf("rug pull: %v, previous %v", rec["AARSM_BASELINE"], rec["AARSM_BASELINE_PREVIOUS"])
	}
	if n := len(srvC.Requests()); n != 1 {
		t.Errorf("C received %d requests, want the first one only", n)
	}
}
