package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// buildAarsmVersion compiles the command with version v.
func buildAarsmVersion(t testing.TB, v string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "aarsm")
	out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+v, "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// bpfLinks counts the BPF links pid holds open: its probes, and the
// network quarantine's (named bpf-link when opened from their pins).
func bpfLinks(t testing.TB, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && (l == "anon_inode:bpf_link" || l == "anon_inode:bpf-link") {
			n++
		}
	}
	return n
}

// probedSymbols counts the symbols the agent on socket has probes on.
func probedSymbols(t testing.TB, socket string) int {
	t.Helper()
	r, err := status.Query(socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range r.Probes {
		if p.Error == "" {
			n += len(p.Symbols)
		}
	}
	return n
}

type sentMail struct {
	subject  string
	bad      bool      // carries the hidden Bcc: must be blocked
	started  time.Time // when its client was started
	pid      int
	err      error
	signaled syscall.Signal
}

// An upgrade in place (the package's postinst: the new binary installed
// over the running one, then "aarsm handover"): while clients mail
// without pause, half of them with the postmark-mcp Bcc, the agent
// replaces itself by the new binary under the same pid. Every backdoored
// mail is blocked (its client killed, nothing of it at the server, one
// verdict each), every clean one delivered, the probes are attached once
// afterwards, and the new version answers.
func TestHandoverUnderMail(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	next := buildAarsmVersion(t, "handover-next")
	e := newFaultEnv(t, bin, "open")
	e.startAgent(t)
	e.warmUp(t)
	pid := e.agent.Process.Pid
	// Links beside the per-symbol uprobes (tracepoints, the guard's):
	// the same in both images.
	fixed := bpfLinks(t, pid) - probedSymbols(t, e.socket)

	var mu sync.Mutex
	var mails []*sentMail
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Stopped at the latest when the test function ends (a failure
	// below), before any cleanup: the workers register cleanups of their
	// own, and the agent and the clients' cgroup must outlive them.
	stopMail := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopMail()
	mailFrom := time.Now()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := &sentMail{subject: fmt.Sprintf("m-%d-%d", w, i), bad: i%2 == 1, started: time.Now()}
				body := `{"From":"a@company.com","To":"b@company.com","Subject":"` + m.subject + `"`
				if m.bad {
					body += `,"Bcc":"phan@giftshop.club"`
				}
				c := testenv.Curl(t, e.ca, e.srv.URL(), testenv.Request{Method: "POST", Path: "/email", Body: []byte(body + "}")})
				if err := e.clients.Start(c); err != nil {
					m.err = err
				} else {
					m.pid = c.Process.Pid
					m.err = c.Wait()
					if ws, ok := c.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
						m.signaled = ws.Signal()
					}
				}
				mu.Lock()
				mails = append(mails, m)
				mu.Unlock()
			}
		}()
	}
	// A second of mail (as long as ever), and at least a clean and a
	// backdoored one done, since since.
	sentBoth := func(since time.Time) (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		var clean, bad int
		for _, m := range mails {
			if !m.started.Before(since) {
				clean, bad = clean+btoi(!m.bad), bad+btoi(m.bad)
			}
		}
		return clean > 0 && bad > 0 && time.Since(since) >= time.Second,
			fmt.Sprintf("%d clean and %d backdoored mails done in %v", clean, bad, time.Since(since).Round(time.Millisecond))
	}
	testenv.Eventually(t, 20*time.Second, "a second of mail through the old image, both kinds done", func() (bool, string) { return sentBoth(mailFrom) })

	// As dpkg does: the new file renamed over the running one.
	tmp := bin + ".dpkg-new"
	if out, err := exec.Command("cp", next, tmp).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "handover", "--status-socket", e.socket, "--pid", fmt.Sprint(pid)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "version handover-next now enforces") {
		t.Fatalf("aarsm handover: %v\n%s\nagent:\n%s", err, out, e.stderr.String())
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
	detached := testenv.Eventually(t, 20*time.Second, "the predecessor's probes detached", func() bool {
		return strings.Contains(e.stderr.String(), "the predecessor's probes are detached")
	})
	// The new image enforcing alone: a second of mail, both kinds started
	// after that done.
	testenv.Eventually(t, 20*time.Second, "a second of mail after the old probes were detached, both kinds done",
		func() (bool, string) { return sentBoth(detached) })
	stopMail()
	// Every client is gone: the server has handled what they sent.
	e.srv.WaitDrained(t, 10*time.Second)

	// No probe twice: one link per probed symbol of the files the new
	// image probes (it may probe files the old one had not seen: other
	// processes on the host use TLS too), plus the fixed ones.
	if n, want := bpfLinks(t, pid), fixed+probedSymbols(t, e.socket); n > want || n == 0 {
		t.Errorf("after the handover the agent holds %d probe links, want %d (%d beside one per probed symbol)", n, want, fixed)
	}
	r, err := status.Query(e.socket, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.PID != pid || r.Version != "handover-next" || r.Handovers != 1 {
		t.Errorf("after the handover: pid %d version %q handovers %d, want pid %d version handover-next handovers 1", r.PID, r.Version, r.Handovers, pid)
	}

	delivered := map[string]int{}
	for _, req := range e.srv.Requests() {
		var m struct{ Subject string }
		if json.Unmarshal(req.Body, &m) == nil {
			delivered[m.Subject]++
		}
	}
	blocks := map[string]int{} // by pid
	// The agent writes a verdict after its kill: wait for those of the
	// killed clients (the verdicts come in order, so a second one of an
	// earlier mail would be there too).
	testenv.Eventually(t, 10*time.Second, "the block verdicts of the killed clients", func() (bool, string) {
		clear(blocks)
		for _, l := range strings.Split(e.stdout.String(), "\n") {
			var v map[string]any
			if json.Unmarshal([]byte(l), &v) == nil && v["AARSM_VERDICT"] == "block" {
				blocks[fmt.Sprint(v["AARSM_PID"])]++
			}
		}
		var missing []int
		for _, m := range mails {
			if m.signaled == syscall.SIGKILL && blocks[fmt.Sprint(m.pid)] == 0 {
				missing = append(missing, m.pid)
			}
		}
		return len(missing) == 0, fmt.Sprintf("none for pids %v", missing)
	})
	bad := 0
	for _, m := range mails {
		switch {
		case m.bad:
			bad++
			if delivered[m.subject] != 0 {
				t.Errorf("backdoored mail %s reached the server", m.subject)
			}
			if m.signaled != syscall.SIGKILL {
				t.Errorf("backdoored mail %s: client %v, want killed", m.subject, m.err)
			}
			if n := blocks[fmt.Sprint(m.pid)]; n != 1 {
				t.Errorf("backdoored mail %s (pid %d): %d block verdicts, want 1", m.subject, m.pid, n)
			}
		case m.err != nil || delivered[m.subject] != 1:
			t.Errorf("clean mail %s: client %v, delivered %d times, want once", m.subject, m.err, delivered[m.subject])
		}
	}
	if bad == 0 {
		t.Fatal("no backdoored mail sent")
	}
	// A block is not an error: killing a client outside any unit (nothing
	// to stop) logs none.
	if strings.Contains(e.stderr.String(), "level=ERROR") {
		t.Errorf("the agent logged errors")
	}
	judgedForOld := ""
	for _, l := range strings.Split(e.stderr.String(), "\n") {
		if i := strings.Index(l, "events_judged_for_it"); i >= 0 {
			judgedForOld = l[i:]
		}
	}
	t.Logf("%d mails (%d backdoored) around the handover; the new image judged for the old one: %s", len(mails), bad, judgedForOld)
	if t.Failed() {
		t.Logf("agent:\n%s", e.stderr.String())
	}
}

// BenchmarkHandover prints, for 5 handovers of one agent, the window in
// which nothing judges (from the old image leaving its loop to the new
// one switching the kernel over: writes held meanwhile wait that long) and
// the time until the old probes are detached, from the agent's log.
func BenchmarkHandover(b *testing.B) {
	testenv.RequireRoot(b)
	bin := buildAarsm(b)
	e := newFaultEnv(b, bin, "open")
	e.startAgent(b)
	pid := e.agent.Process.Pid
	var windows, detach []float64
	for i := 1; i <= 5; i++ {
		out, err := exec.Command(bin, "handover", "--status-socket", e.socket, "--pid", fmt.Sprint(pid)).CombinedOutput()
		if err != nil {
			b.Fatalf("aarsm handover: %v\n%s", err, out)
		}
		testenv.Eventually(b, 20*time.Second, "old probes detached", func() bool {
			return strings.Count(e.stderr.String(), "the predecessor's probes are detached") == i
		})
	}
	stamps := map[string][]time.Time{}
	for _, l := range strings.Split(e.stderr.String(), "\n") {
		for _, msg := range []string{"handing over to the installed binary", "took over from the predecessor", "the predecessor's probes are detached"} {
			if strings.Contains(l, `msg="`+msg+`"`) {
				if ts, err := time.Parse(time.RFC3339Nano, strings.TrimPrefix(strings.Fields(l)[0], "time=")); err == nil {
					stamps[msg] = append(stamps[msg], ts)
				}
			}
		}
	}
	for i := range stamps["handing over to the installed binary"] {
		from := stamps["handing over to the installed binary"][i]
		windows = append(windows, float64(stamps["took over from the predecessor"][i].Sub(from).Microseconds())/1000)
		detach = append(detach, float64(stamps["the predecessor's probes are detached"][i].Sub(stamps["took over from the predecessor"][i]).Microseconds())/1000)
	}
	sort.Float64s(windows)
	sort.Float64s(detach)
	if testing.Verbose() {
		fmt.Println(e.stderr.String())
	}
	fmt.Printf("\nhandover in place, %d runs: unjudged window (held writes wait) median %.1f ms (min %.1f, max %.1f); old probes detached %.1f ms after the switch (median)\n",
		len(windows), windows[len(windows)/2], windows[0], windows[len(windows)-1], detach[len(detach)/2])
}

// A handover whose new binary cannot run (here: it is gone) stops the
// agent as a stop would (holds released, exit status 1, for the service
// manager to restart it), and "aarsm handover" says it failed.
func TestHandoverWithoutBinary(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	e := newFaultEnv(t, bin, "open")
	e.startAgent(t)
	e.warmUp(t)
	// A copy to run the command with; the agent's own path then gone
	// (a rename would not do: the kernel follows the file to its new name).
	cli := filepath.Join(t.TempDir(), "aarsm")
	if out, err := exec.Command("cp", bin, cli).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cli, "handover", "--status-socket", e.socket, "--pid", fmt.Sprint(e.agent.Process.Pid)).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "exited during the handover") {
		t.Errorf("aarsm handover without the new binary: exit %d, %s", code, out)
	}
	if code := exitCode(e.agent.Wait()); code != 1 || !strings.Contains(e.stderr.String(), "hand over to the installed binary: execute") {
		t.Errorf("agent: exit %d, want 1 with the failed exec logged\n%s", code, e.stderr.String())
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}
