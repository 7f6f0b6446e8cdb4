package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// asideOf returns the one file moved aside for path, checking it is
// root-only and holds what was there.
func asideOf(t *testing.T, path string, was []byte) string {
	t.Helper()
	m, _ := filepath.Glob(path + ".corrupt-*")
	if len(m) != 1 {
		t.Fatalf("moved aside for %s: %v, want one", path, m)
	}
	st, err := os.Stat(m[0])
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v %v, want 0600", m[0], st, err)
	}
	if got, _ := os.ReadFile(m[0]); !bytes.Equal(got, was) {
		t.Errorf("%s holds %q, want what was in %s", m[0], got, path)
	}
	return m[0]
}

// Corrupt state files at start: the network quarantine's state file, the
// baseline and a quarantined message each are logged with their name,
// moved aside root-only, and replaced by fresh state that works (a new
// quarantine, a new message kept); a good message stays.
func TestCorruptStateFilesMovedAside(t *testing.T) {
	s := newQuarantineSetup(t, "1h")
	vdir := vaultDir(s.state)
	bdir := filepath.Join(s.state, "baseline")
	for _, d := range []string{vdir, bdir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	v, err := vault.Open(vdir, vault.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	good, err := v.Put(&vault.Entry{Header: vault.Header{Policy: "company"}, Message: &mail.Message{Subject: "kept"}}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	badID := fmt.Sprintf("%020d-0123456789abcdef", time.Now().Add(time.Hour).UnixNano())
	garbage := map[string][]byte{
		filepath.Join(s.state, "quarantine.json"): []byte(`{"version":1,"entries":[{"cgroup_id":12`),
		filepath.Join(bdir, "baseline.json"):      []byte("\x00\x01 not json"),
		filepath.Join(vdir, badID+".json"):        []byte(`{"id":"` + badID + `","stored":"2026-`),
	}
	for p, data := range garbage {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	a := s.startAgent(t)
	for p, data := range garbage {
		asideOf(t, p, data)
	}
	log := a.stderr.String()
	for _, want := range []string{
		"network quarantine's state file was corrupt", filepath.Join(s.state, "quarantine.json") + ": quarantine state file corrupt",
		"baseline file was corrupt", filepath.Join(bdir, "baseline.json"),
		"quarantined message's file was corrupt", badID,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the log has no %q:\n%s", want, log)
		}
	}
	if got := stateEntries(t, s.state); len(got) != 0 {
		t.Errorf("fresh state file: %v, want empty", got)
	}

	// The fresh state works: a blocked mail quarantines the sender's
	// cgroup (in the state file) and keeps the message.
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	s.send(t, ca, srv, "after-corruption")
	id := waitEntry(t, vdir, good)
	testenv.Eventually(t, 15*time.Second, "the sender's cgroup in the state file", func() (bool, string) {
		ids := stateCgroups(t, s.state)
		return len(ids) == 1 && ids[0] == s.clients.ID(), fmt.Sprint(ids)
	})
	r := queryStatus(t, s.bin, s.socket)
	if r.VaultError != "" || r.QuarantineError != "" || !statusListsMessage(r, good) || !statusListsMessage(r, id) {
		t.Errorf("status: vault error %q, quarantine error %q, messages %+v; want both messages, no error", r.VaultError, r.QuarantineError, r.QuarantinedMessages)
	}
	if out, errb, code := s.aarsm(t, "baseline", "show", "--json", "--state-dir", s.state); code != 0 {
		t.Errorf("aarsm baseline show after recovery: exit %d %s %s", code, out, errb)
	}
	checkRootOnly(t, s.state)
}

// Policy files that another user could change are refused by "aarsm
// policy check", by "aarsm run" (nothing else to enforce: it does not
// start) and at reload (the old policies stay).
func TestUnsafePolicyRefused(t *testing.T) {
	s := newQuarantineSetup(t, "1h")
	file := filepath.Join(s.policies, "policy.hcl")
	if err := os.Chmod(file, 0o666); err != nil {
		t.Fatal(err)
	}
	out, _, code := s.aarsm(t, "policy", "check", s.policies)
	if code != 1 || !strings.Contains(out, file) || !strings.Contains(out, "mode 0666") {
		t.Errorf("policy check of a 0666 file: exit %d:\n%s\nwant 1 naming %s and its mode", code, out, file)
	}
	// A fresh agent with nothing it could fall back on does not start.
	cmd := exec.Command(s.bin, "run", "--policy-dir", s.policies, "--log-format", "json", "--hold-cgroup", s.clients.Path(),
		"--pin-dir", s.pins+"-refused", "--state-dir", t.TempDir(), "--status-socket", filepath.Join(t.TempDir(), "s.sock"))
	t.Cleanup(func() { _ = os.RemoveAll(s.pins + "-refused") })
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errb
	if err := s.agentCg.Start(cmd); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if exitCode(err) != 1 || !strings.Contains(errb.String(), file) || !strings.Contains(errb.String(), "writable by group or others") {
			t.Errorf("aarsm run on a 0666 policy: %v\n%s\nwant exit 1 naming the file", err, errb.String())
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("aarsm run on a 0666 policy still runs:\n%s", errb.String())
	}

	// Reload: refused, the policy in force stays.
	if err := os.Chmod(file, 0o644); err != nil {
		t.Fatal(err)
	}
	a := s.startAgent(t)
	pid := fmt.Sprint(a.cmd.Process.Pid)
	if err := os.Chown(file, 65534, -1); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := s.aarsm(t, "reload", "--pid", pid, "--status-socket", s.socket)
	if code != 1 || !strings.Contains(errOut, file) || !strings.Contains(errOut, "owned by uid 65534") {
		t.Errorf("reload with a policy of uid 65534: exit %d %s", code, errOut)
	}
	if r := queryStatus(t, s.bin, s.socket); len(r.Policies) != 1 || r.ReloadError == nil {
		t.Errorf("after the refused reload: policies %+v, reload error %+v", r.Policies, r.ReloadError)
	}
	if err := os.Chown(file, 0, -1); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := s.aarsm(t, "reload", "--pid", pid, "--status-socket", s.socket); code != 0 {
		t.Errorf("reload once safe again: exit %d %s %s", code, out, errOut)
	}
}

// tlsSink accepts TLS connections on loopback and discards what comes,
// counting the bytes.
func tlsSink(t *testing.T, ca *testenv.CA) (string, *atomic.Int64) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ca.ServerTLSConfig())
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64<<10)
				for {
					k, err := c.Read(buf)
					n.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).String(), &n
}

// repeatReader yields n bytes of 'A'.
type repeatReader struct{ left int }

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.left)
	for i := range k {
		p[i] = 'A'
	}
	r.left -= k
	return k, nil
}

// An unprivileged user floods the agent with TLS writes (nobody, uid
// 65534: openssl s_client, 16 KiB per SSL_write, copied because a
// monitoring policy watches every process) while a process in an
// enforcing policy's scope sends the postmark-mcp mail: its hold gets
// through (the kernel sheds monitoring copies once the ring is three
// quarters full: bpf/ssl/ssl.c, "ring headroom") and the mail is judged
// and blocked, under fail_mode "open" as under "closed"; the loss is
// counted in status and in the metrics.
func TestFloodDoesNotHideViolation(t *testing.T) {
	for _, mode := range []string{"open", "closed"} {
		t.Run("fail_mode "+mode, func(t *testing.T) { floodDuringViolation(t, mode) })
	}
}

func floodDuringViolation(t *testing.T, failMode string) {
	s := newQuarantineSetup(t, "1h")
	company := shippedPolicy(t, "company.hcl")
	i := bytes.IndexByte(company, '{')
	company = append(append(append([]byte{}, company[:i+1]...), "\n  fail_mode = \""+failMode+"\"\n"...), company[i+1:]...)
	if err := os.WriteFile(filepath.Join(s.policies, "policy.hcl"), scopePolicy(t, company, s.clients), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.policies, "watch.hcl"), shippedPolicy(t, "default.hcl"), 0o644); err != nil {
		t.Fatal(err)
	}
	a := s.startAgent(t)
	if r := queryStatus(t, s.bin, s.socket); !r.HoldScope.CopyAll || (len(r.HoldScope.FailClosed) == 1) != (failMode == "closed") {
		t.Fatalf("hold scope %+v: want every write copied, fail mode %s", r.HoldScope, failMode)
	}
	ca := testenv.NewCA(t)
	addr, received := tlsSink(t, ca)
	srv := testenv.NewServer(t, ca)
	flooders := testenv.NewCgroup(t)
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("openssl: %v", err)
	}
	const n, each = 3, 32 << 20
	var cmds []*exec.Cmd
	for range n {
		// -quiet implies -ign_eof: -no_ign_eof makes it leave at the end
		// of its input.
		c := exec.Command(openssl, "s_client", "-connect", addr, "-quiet", "-no_ign_eof")
		c.Stdin = &repeatReader{left: each}
		c.Stdout, c.Stderr = io.Discard, io.Discard
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}}
		if err := flooders.Start(c); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill() })
		cmds = append(cmds, c)
	}
	testenv.Eventually(t, 60*time.Second, "the flood under way", func() (bool, string) {
		return received.Load() >= 16<<20, fmt.Sprint(received.Load())
	})
	s.send(t, ca, srv, "during-the-flood")
	finished := make(chan struct{})
	go func() {
		for _, c := range cmds {
			_ = c.Wait()
		}
		close(finished)
	}()
	select {
	case <-finished:
	case <-time.After(3 * time.Minute):
		t.Fatalf("the flooders did not finish within 3 minutes (%d MiB received)", received.Load()>>20)
	}
	r := queryStatus(t, s.bin, s.socket)
	var missed uint64
	for _, p := range r.Programs {
		missed += p.Missed
	}
	t.Logf("fail_mode %s: flood of %d MiB; events seen %d, lost %d; holds %d, fail kills %d; program runs missed %d",
		failMode, received.Load()>>20, r.Events.Seen, r.Events.Lost, r.Events.Holds, r.Events.FailKills, missed)
	if !strings.Contains(a.stdout.String(), `"AARSM_VERDICT":"block"`) || r.Verdicts.Blocked < 1 {
		t.Errorf("the mail was not judged and blocked (verdicts %+v, events %+v)", r.Verdicts, r.Events)
	}
	if r.Events.FailKills != 0 {
		t.Errorf("%d fail-closed kills: a hold did not reach the agent", r.Events.FailKills)
	}
	if r.Events.Lost == 0 {
		t.Logf("no event lost: the flood did not fill the ring on this machine")
	}
	out, err := exec.Command(s.bin, "status", "--prometheus", "--status-socket", s.socket).Output()
	if err != nil {
		t.Fatal(err)
	}
	e, err := testenv.ParseExposition(string(out))
	if err != nil {
		t.Fatal(err)
	}
	if lost, _ := e.Value("aarsm_events_lost_total"); uint64(lost) < r.Events.Lost {
		t.Errorf("metrics lost %v, status said %d before", lost, r.Events.Lost)
	}
}
