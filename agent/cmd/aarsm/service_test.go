package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

func cmd2(bin string, stdout, stderr io.Writer, args ...string) *exec.Cmd {
	c := exec.Command(bin, args...)
	c.Stdout, c.Stderr = stdout, stderr
	return c
}

// scopePolicy limits a policy to the processes of cg: an agent judges
// every process on the host, and an enforcing policy must not kill,
// disconnect or quarantine the clients of tests running beside it.
func scopePolicy(t testing.TB, src []byte, cg *testenv.Cgroup) []byte {
	t.Helper()
	i := bytes.IndexByte(src, '{')
	if i < 0 {
		t.Fatal("policy has no block")
	}
	scope := fmt.Sprintf("\n  scope {\n    cgroups = [%q]\n  }\n", cg.Name())
	return append(append(append([]byte{}, src[:i+1]...), scope...), src[i+1:]...)
}

// notifySocket is a stand-in for systemd's notification socket.
type notifySocket struct {
	path string
	msgs chan string
}

func newNotifySocket(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySocket{path: path, msgs: make(chan string, 1024)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				close(n.msgs)
				return
			}
			n.msgs <- string(buf[:k])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	return n
}

// next returns the next message that is not a watchdog ping.
func (n *notifySocket) next(t *testing.T, what string) string {
	t.Helper()
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("waiting for %s: notify socket closed", what)
			}
			if m != "WATCHDOG=1" {
				return m
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("no %s from the agent within 60s", what)
		}
	}
}

// waitFor returns the next message equal to want, skipping others.
func (n *notifySocket) waitFor(t *testing.T, want string) {
	t.Helper()
	for {
		select {
		case m, ok := <-n.msgs:
			if !ok {
				t.Fatalf("waiting for %s: notify socket closed", want)
			}
			if m == want {
				return
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("no %s from the agent within 60s", want)
		}
	}
}

func fields(msg string) map[string]string {
	out := map[string]string{}
	for _, l := range strings.Split(msg, "\n") {
		if k, v, ok := strings.Cut(l, "="); ok {
			out[k] = v
		}
	}
	return out
}

func queryStatus(t *testing.T, bin, socket string) status.Report {
	t.Helper()
	out, err := exec.Command(bin, "status", "--json", "--status-socket", socket).Output()
	if err != nil {
		t.Fatalf("aarsm status --json: %v", err)
	}
	var r status.Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("aarsm status --json: %v\n%s", err, out)
	}
	return r
}

func policyNames(r status.Report) []string {
	var names []string
	for _, p := range r.Policies {
		names = append(names, p.Name)
	}
	return names
}

// "aarsm run" as systemd sees it: READY=1 once the probes are attached and
// the policies loaded, RELOADING=1/READY=1 around a reload that keeps the
// old policy when the new one is broken, watchdog pings, STOPPING=1; and
// "aarsm status" reporting what the agent did, over a 0600 socket.
func TestRunStatusAndServiceProtocol(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildAarsm(t)
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	clients := testenv.NewCgroup(t)
	agentCg := testenv.NewCgroup(t)
	// Block by quarantining the sender's cgroup, so a quarantine is in force.
	src := bytes.Replace(shippedPolicy(t, "company.hcl"), []byte(`"terminate_and_alert"`), []byte(`"quarantine_and_alert"`), 1)
	socket := filepath.Join(t.TempDir(), "status.sock")
	notifications := newNotifySocket(t)

	var stdout, stderr syncBuffer
	agent, policies := agentCommand(t, bin, src, clients, socket)
	// WATCHDOG_USEC without WATCHDOG_PID: for whichever process reads it.
	agent.Env = append(os.Environ(), "NOTIFY_SOCKET="+notifications.path, "WATCHDOG_USEC=400000")
	agent.Stdout, agent.Stderr = &stdout, &stderr
	if err := agentCg.Start(agent); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	t.Cleanup(func() {
		_ = agent.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("agent stderr:\n%s", stderr.String())
		}
	})

	// READY=1 comes first, and by then everything is in place.
	ready := fields(notifications.next(t, "READY=1"))
	if ready["READY"] != "1" {
		t.Fatalf("first notification %v, want READY=1", ready)
	}
	st, err := os.Lstat(socket)
	if err != nil {
		t.Fatalf("no status socket at READY=1: %v", err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("status socket mode %v, want a socket with 0600", st.Mode())
	}
	r := queryStatus(t, bin, socket)
	if r.PID != agent.Process.Pid {
		t.Errorf("status pid %d, want %d", r.PID, agent.Process.Pid)
	}
	if got := policyNames(r); len(got) != 1 || got[0] != "company" || r.Policies[0].Mode != "enforce" {
		t.Errorf("status policies %+v, want company (enforce)", r.Policies)
	}
	libssl := false
	for _, p := range r.Probes {
		if strings.Contains(filepath.Base(p.Path), "libssl.so") && p.Error == "" && strings.Contains(strings.Join(p.Symbols, " "), "SSL_write") {
			libssl = true
		}
	}
	if !libssl {
		t.Errorf("at READY=1, status shows no libssl probed: %+v", r.Probes)
	}
	if hs := r.HoldScope; hs.EveryProcess || len(hs.Cgroups) != 1 || hs.Cgroups[0] != clients.Name() || hs.EnforcingPolicies != 1 {
		t.Errorf("status hold scope %+v, want only [%s]", r.HoldScope, clients.Name())
	}
	// Nothing of the clients' yet (the agent judges every process on the
	// host, mails of other tests included; it acts only on its clients').
	if r.Verdicts.Blocked != 0 || r.Events.Holds != 0 || len(r.Quarantines) != 0 || r.QuarantineError != "" {
		t.Errorf("status before any mail: %+v %+v quarantines %v %q", r.Verdicts, r.Events, r.Quarantines, r.QuarantineError)
	}

	// The postmark-mcp mail: blocked, its cgroup quarantined.
	req := testenv.Request{Method: "POST", Path: "/email", Header: map[string]string{"Content-Type": "application/json"},
		Body: []byte(`{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club","Subject":"invoice","TextBody":"hi"}`)}
	client := testenv.Curl(t, ca, srv.URL(), req)
	client.Stdout, client.Stderr = io.Discard, io.Discard
	if err := clients.Start(client); err != nil {
		t.Fatal(err)
	}
	if err := client.Wait(); err == nil {
		t.Errorf("curl succeeded: the mail was not blocked")
	}
	waitOutput(t, "verdicts", &stdout, "phan@giftshop.club")
	if n := len(srv.Requests()); n != 0 {
		t.Errorf("the server got %d requests", n)
	}
	r = queryStatus(t, bin, socket)
	if r.Verdicts.Judged < 1 || r.Verdicts.Blocked < 1 || r.Events.Holds < 1 || r.Events.Seen == 0 || r.Events.Writes == 0 {
		t.Errorf("status after a blocked mail: verdicts %+v events %+v", r.Verdicts, r.Events)
	}
	quarantined := false
	for _, q := range r.Quarantines {
		if q.CgroupID == clients.ID() {
			quarantined = q.Until.After(time.Now())
		}
	}
	if !quarantined {
		t.Errorf("status quarantines %+v, want cgroup %d until tomorrow", r.Quarantines, clients.ID())
	}
	human, err := exec.Command(bin, "status", "--status-socket", socket).CombinedOutput()
	if err != nil {
		t.Fatalf("aarsm status: %v\n%s", err, human)
	}
	for _, want := range []string{"policies:    1", "company", "enforce", "libssl.so", "lost", "blocked", "quarantine:  1 cgroups", "up ", "event loop:  went round"} {
		if !bytes.Contains(human, []byte(want)) {
			t.Errorf("aarsm status output has no %q:\n%s", want, human)
		}
	}

	// A broken policy on SIGHUP: RELOADING=1, READY=1, the old policy stays.
	if err := os.WriteFile(filepath.Join(policies, "zz-broken.hcl"), []byte("email_security_policy \"broken\" {\n  mode = \n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := agent.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloading := fields(notifications.next(t, "RELOADING=1"))
	if reloading["RELOADING"] != "1" || reloading["MONOTONIC_USEC"] == "" {
		t.Errorf("after SIGHUP: %v, want RELOADING=1 with MONOTONIC_USEC", reloading)
	}
	if again := fields(notifications.next(t, "READY=1")); again["READY"] != "1" {
		t.Errorf("after the reload: %v, want READY=1", again)
	}
	r = queryStatus(t, bin, socket)
	if got := policyNames(r); len(got) != 1 || got[0] != "company" {
		t.Errorf("after a broken reload, policies %v, want [company]", got)
	}
	if r.ReloadError == nil || !strings.Contains(r.ReloadError.Error, "zz-broken.hcl") {
		t.Errorf("after a broken reload, reload_error %+v, want one naming zz-broken.hcl", r.ReloadError)
	}
	if !strings.Contains(stderr.String(), "reload failed") || !strings.Contains(stderr.String(), "zz-broken.hcl:") {
		t.Errorf("the broken reload was not logged with its diagnostics:\n%s", stderr.String())
	}

	// aarsm reload (ExecReload=) waits for the outcome: the broken policy
	// fails it with the diagnostics; once it is gone, it succeeds, and the
	// status says so as soon as it returns.
	pid := strconv.Itoa(agent.Process.Pid)
	var out, errb bytes.Buffer
	cmd := exec.Command(bin, "reload", "--pid", pid, "--status-socket", socket)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err == nil || !strings.Contains(errb.String(), "zz-broken.hcl") {
		t.Errorf("aarsm reload with a broken policy: %v, %q; want a failure naming zz-broken.hcl", err, errb.String())
	}
	if err := exec.Command(bin, "reload", "--pid", "1", "--status-socket", socket).Run(); err == nil {
		t.Errorf("aarsm reload --pid of another process succeeded")
	}
	if err := os.Remove(filepath.Join(policies, "zz-broken.hcl")); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	errb.Reset()
	if err := cmd2(bin, &out, &errb, "reload", "--pid", pid, "--status-socket", socket).Run(); err != nil || !strings.Contains(out.String(), "reloaded: 1 policies") {
		t.Errorf("aarsm reload: %v, %q %q", err, out.String(), errb.String())
	}
	if r = queryStatus(t, bin, socket); r.ReloadError != nil || r.Reloads != 3 {
		t.Errorf("right after aarsm reload: reload_error %+v, reloads %d (want none, 3)", r.ReloadError, r.Reloads)
	}

	// The event loop runs: the watchdog pings.
	notifications.waitFor(t, "WATCHDOG=1")

	// SIGTERM: STOPPING=1, the socket goes, and status says nobody answers.
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	notifications.waitFor(t, "STOPPING=1")
	if err := <-exited; err != nil {
		t.Errorf("agent exit: %v", err)
	}
	exited <- nil // for the cleanup
	if _, err := os.Lstat(socket); !os.IsNotExist(err) {
		t.Errorf("status socket left after exit: %v", err)
	}
	cmd = exec.Command(bin, "status", "--status-socket", socket)
	errb.Reset()
	cmd.Stderr = &errb
	err = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != exitNotRunning || !strings.Contains(errb.String(), socket) {
		t.Errorf("aarsm status with no agent: exit %d (%v), %q; want %d naming %s", code, err, errb.String(), exitNotRunning, socket)
	}
}

// The watchdog pings only while the event loop's heartbeat is fresh.
func TestWatchdogFollowsHeartbeat(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	beat := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ticks := make(chan time.Time) // unbuffered: a send returns once the previous tick is handled
	pings := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		watchdog(ctx, ticks, 10*time.Second, func() time.Time { return beat }, func() { pings <- struct{}{} },
			slog.New(slog.NewTextHandler(io.Discard, nil)))
		close(done)
	}()
	ticks <- beat.Add(time.Second) // fresh: ping
	ticks <- beat.Add(time.Minute) // stuck: none
	ticks <- beat.Add(time.Hour)   // stuck: none
	ticks <- beat.Add(2 * time.Second)
	cancel()
	<-done
	if n := len(pings); n != 2 {
		t.Errorf("%d pings, want 2 (one per tick with a fresh heartbeat)", n)
	}
}

// An agent that could probe nothing because permission was denied does not
// start; one that probed something, or found nothing to probe, does.
func TestCheckProbes(t *testing.T) {
	denied := fmt.Errorf("attach SSL_write: opening perf event: %w", syscall.EACCES)
	for _, tc := range []struct {
		name    string
		targets []probe.Target
		fail    bool
	}{
		{"nothing found", nil, false},
		{"probed", []probe.Target{{Path: "/a", Symbols: []string{"SSL_write"}}, {Path: "/b", Err: denied}}, false},
		{"all denied", []probe.Target{{Path: "/usr/lib/libssl.so.3", Err: denied}}, true},
		{"other error", []probe.Target{{Path: "/a", Err: errors.New("not an ELF file")}}, false},
	} {
		err := checkProbes(tc.targets)
		if (err != nil) != tc.fail {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && (!strings.Contains(err.Error(), "/usr/lib/libssl.so.3") || !strings.Contains(err.Error(), "CAP_SYS_ADMIN")) {
			t.Errorf("%s: error does not name the file and the capability: %v", tc.name, err)
		}
	}
}
