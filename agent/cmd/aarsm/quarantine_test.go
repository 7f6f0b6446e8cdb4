package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/status"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// quarantinePolicy is the company policy with violation_action
// "quarantine_and_alert" and the quarantine_duration given.
func quarantinePolicy(t *testing.T, duration string) []byte {
	t.Helper()
	src := shippedPolicy(t, "company.hcl")
	src = bytes.Replace(src, []byte(`"terminate_and_alert"`), []byte(`"quarantine_and_alert"`), 1)
	src = bytes.Replace(src, []byte(`quarantine_duration = "24h"`), []byte(`quarantine_duration = "`+duration+`"`), 1)
	if !bytes.Contains(src, []byte(`"quarantine_and_alert"`)) || !bytes.Contains(src, []byte(duration)) {
		t.Fatalf("policy not rewritten:\n%s", src)
	}
	return src
}

// quarantineSetup is what the agents of one test share: their policy,
// state and pin directories and status socket, and the cgroups of the
// agents and of the clients they judge.
type quarantineSetup struct {
	bin, policies, pins, state, socket string
	agentCg, clients                   *testenv.Cgroup
}

func newQuarantineSetup(t *testing.T, duration string) *quarantineSetup {
	t.Helper()
	testenv.RequireRoot(t)
	s := &quarantineSetup{bin: buildAarsm(t), policies: t.TempDir(), state: filepath.Join(t.TempDir(), "state"),
		socket: filepath.Join(t.TempDir(), "status.sock"), agentCg: testenv.NewCgroup(t), clients: testenv.NewCgroup(t)}
	s.pins = fmt.Sprintf("/sys/fs/bpf/aarsm-test-%d", time.Now().UnixNano())
	t.Cleanup(func() { _ = os.RemoveAll(s.pins) })
	src := scopePolicy(t, quarantinePolicy(t, duration), s.clients)
	if err := os.WriteFile(filepath.Join(s.policies, "policy.hcl"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// runningAgent is an "aarsm run" started by a test.
type runningAgent struct {
	cmd            *exec.Cmd
	stdout, stderr *syncBuffer
	exited         chan error
}

// startAgent starts an agent on s, purging every second, and returns once
// its status socket answers.
func (s *quarantineSetup) startAgent(t *testing.T) *runningAgent {
	t.Helper()
	a := &runningAgent{stdout: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan error, 1)}
	a.cmd = exec.Command(s.bin, "run", "--policy-dir", s.policies, "--log-format", "json", "--hold-cgroup", s.clients.Path(),
		"--pin-dir", s.pins, "--state-dir", s.state, "--status-socket", s.socket, "--purge-interval", "1s")
	a.cmd.Stdout, a.cmd.Stderr = a.stdout, a.stderr
	if err := s.agentCg.Start(a.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { a.exited <- a.cmd.Wait() }()
	t.Cleanup(func() {
		_ = a.cmd.Process.Kill()
		if <-a.exited; t.Failed() {
			t.Logf("agent %d stderr:\n%s", a.cmd.Process.Pid, a.stderr.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := status.Query(s.socket, time.Second)
		if err == nil && r.PID == a.cmd.Process.Pid {
			return a
		}
		select {
		case err := <-a.exited:
			a.exited <- err
			t.Fatalf("agent exited at start: %v\n%s", err, a.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent's status socket does not answer within 60s: %v\n%s", err, a.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop stops the agent as systemd does (SIGTERM) and waits for it.
func (a *runningAgent) stop(t *testing.T) {
	t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-a.exited:
		a.exited <- err
		if err != nil {
			t.Fatalf("agent exit: %v\n%s", err, a.stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent did not stop within 30s")
	}
}

// aarsm runs the binary and returns its stdout, stderr and exit code.
func (s *quarantineSetup) aarsm(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("aarsm %v: %v", args, err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// list runs "aarsm quarantine list --json".
func (s *quarantineSetup) list(t *testing.T) quarantineListing {
	t.Helper()
	out, errb, code := s.aarsm(t, "quarantine", "list", "--json", "--state-dir", s.state, "--pin-dir", s.pins)
	if code != 0 {
		t.Fatalf("aarsm quarantine list: exit %d: %s", code, errb)
	}
	var l quarantineListing
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("aarsm quarantine list --json: %v\n%s", err, out)
	}
	return l
}

func listsMessage(l quarantineListing, id string) bool {
	return slices.ContainsFunc(l.Messages, func(i vault.Info) bool { return i.ID == id })
}

func statusListsMessage(r status.Report, id string) bool {
	return slices.ContainsFunc(r.QuarantinedMessages, func(m status.QuarantinedMessage) bool { return m.ID == id })
}

// send posts the postmark-mcp mail (a hidden Bcc) from the clients'
// cgroup with curl over TLS, and checks that it was stopped.
func (s *quarantineSetup) send(t *testing.T, ca *testenv.CA, srv *testenv.Server, text string) {
	t.Helper()
	req := testenv.Request{Method: "POST", Path: "/email", Header: map[string]string{"Content-Type": "application/json"},
		Body: []byte(`{"From":"a@company.com","To":"b@company.com","Bcc":"phan@giftshop.club","Subject":"invoice","TextBody":"` + text + `"}`)}
	client := testenv.Curl(t, ca, srv.URL(), req)
	client.Stdout, client.Stderr = io.Discard, io.Discard
	if err := s.clients.Start(client); err != nil {
		t.Fatal(err)
	}
	if err := client.Wait(); err == nil {
		t.Fatal("curl succeeded: the mail was not blocked")
	}
	for _, r := range srv.Requests() {
		if strings.Contains(string(r.Body), text) {
			t.Fatal("the mail reached the API")
		}
	}
}

// waitEntry waits for a vault entry other than those in known, and
// returns its id.
func waitEntry(t *testing.T, dir string, known ...string) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		des, _ := os.ReadDir(dir)
		for _, de := range des {
			if id, ok := strings.CutSuffix(de.Name(), ".json"); ok && vault.ValidID(id) && !slices.Contains(known, id) {
				return id
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no quarantined message in %s within 15s: %v", dir, des)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pinnedCgroups reads the cgroup ids in the pinned quarantine map.
func pinnedCgroups(t *testing.T, pins string) []uint64 {
	t.Helper()
	m, err := ebpf.LoadPinnedMap(filepath.Join(pins, "quarantined"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var ids []uint64
	var id, until uint64
	it := m.Iterate()
	for it.Next(&id, &until) {
		ids = append(ids, id)
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

// stateEntries reads the state file: cgroup id -> path.
func stateEntries(t *testing.T, state string) map[uint64]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(state, "quarantine.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Entries []struct {
			CgroupID uint64 `json:"cgroup_id"`
			Cgroup   string `json:"cgroup"`
		} `json:"entries"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("state file: %v\n%s", err, b)
	}
	out := map[uint64]string{}
	for _, e := range f.Entries {
		out[e.CgroupID] = e.Cgroup
	}
	return out
}

// stateCgroups reads the cgroup ids in the state file.
func stateCgroups(t *testing.T, state string) []uint64 {
	t.Helper()
	var ids []uint64
	for id := range stateEntries(t, state) {
		ids = append(ids, id)
	}
	return ids
}

// A blocked message under a policy that quarantines: kept in the vault
// (root-only, the Bcc in it, not in the journal), listed by "aarsm
// quarantine list" and by "aarsm status", shown whole, deletable; kept
// across an agent restart and purged at its expiry by the new agent. The
// sender's cgroup, quarantined too, is lifted by "aarsm quarantine lift".
func TestQuarantinedMessageLifecycle(t *testing.T) {
	const keep = 40 * time.Second
	s := newQuarantineSetup(t, "40s")
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	vaultDir := filepath.Join(s.state, "quarantine")
	a1 := s.startAgent(t)

	text := fmt.Sprintf("Q3 numbers m%d", time.Now().UnixNano())
	s.send(t, ca, srv, text)
	id := waitEntry(t, vaultDir)
	sent := time.Now()

	// Root-only: 0600 in 0700, root's.
	dirSt, err := os.Stat(vaultDir)
	if err != nil || dirSt.Mode().Perm() != 0o700 {
		t.Errorf("vault directory: %v %v, want 0700", dirSt.Mode(), err)
	}
	file := filepath.Join(vaultDir, id+".json")
	st, err := os.Stat(file)
	if err != nil || st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("vault file: %v %v, want 0600 owned by root", st.Mode(), err)
	}
	data, err := os.ReadFile(file)
	if err != nil || !bytes.Contains(data, []byte("phan@giftshop.club")) || !bytes.Contains(data, []byte(text)) {
		t.Errorf("vault file lacks the Bcc or the text: %v\n%s", err, data)
	}
	// The journal names the entry and never gets the message.
	waitOutput(t, "verdicts", a1.stdout, "quarantine message="+id)
	if strings.Contains(a1.stdout.String(), text) || strings.Contains(a1.stderr.String(), text) {
		t.Errorf("the message's text reached the journal or the log")
	}

	// aarsm quarantine list, show; aarsm status.
	l := s.list(t)
	i := slices.IndexFunc(l.Messages, func(i vault.Info) bool { return i.ID == id })
	if i < 0 {
		t.Fatalf("aarsm quarantine list: %+v, want %s", l, id)
	}
	if m := l.Messages[i]; m.Policy != "company" || m.Recipients != 2 || m.Dest == "" || m.Expires.Sub(sent) > keep || time.Until(m.Expires) < keep/2 {
		t.Errorf("listed %+v", m)
	}
	if !slices.ContainsFunc(l.Network, func(e act.QuarantineEntry) bool { return e.CgroupID == s.clients.ID() }) {
		t.Errorf("aarsm quarantine list: network %+v, want cgroup %d", l.Network, s.clients.ID())
	}
	out, errb, code := s.aarsm(t, "quarantine", "list", "--state-dir", s.state, "--pin-dir", s.pins)
	if code != 0 || !strings.Contains(out, id) || !strings.Contains(out, "messages: 1 quarantined") || !strings.Contains(out, s.clients.Name()) {
		t.Errorf("aarsm quarantine list: exit %d\n%s%s", code, out, errb)
	}
	out, errb, code = s.aarsm(t, "quarantine", "show", "--state-dir", s.state, id)
	if code != 0 || !regexp.MustCompile(`(?m)^Bcc:\s+phan@giftshop\.club$`).MatchString(out) || !strings.Contains(out, text) ||
		!regexp.MustCompile(`(?m)^policy:\s+company$`).MatchString(out) {
		t.Errorf("aarsm quarantine show: exit %d\n%s%s", code, out, errb)
	}
	out, _, code = s.aarsm(t, "quarantine", "show", id, "--json", "--state-dir", s.state)
	var e vault.Entry
	if err := json.Unmarshal([]byte(out), &e); code != 0 || err != nil || e.ID != id || e.Message == nil ||
		len(e.Message.Bcc) != 1 || e.Message.Bcc[0].Addr != "phan@giftshop.club" || !strings.Contains(e.Message.TextBody, text) {
		t.Errorf("aarsm quarantine show --json: exit %d, %v\n%s", code, err, out)
	}
	r := queryStatus(t, s.bin, s.socket)
	if !statusListsMessage(r, id) || r.VaultError != "" {
		t.Errorf("status: messages %+v (%s), want %s", r.QuarantinedMessages, r.VaultError, id)
	}
	human, _ := exec.Command(s.bin, "status", "--status-socket", s.socket).CombinedOutput()
	if !bytes.Contains(human, []byte("messages:    1 quarantined")) || !bytes.Contains(human, []byte(id)) {
		t.Errorf("aarsm status:\n%s", human)
	}

	// The network quarantine: in the pinned map and the state file, then
	// lifted by hand before its expiry, while the agent runs.
	if !slices.Contains(pinnedCgroups(t, s.pins), s.clients.ID()) || !slices.Contains(stateCgroups(t, s.state), s.clients.ID()) {
		t.Fatalf("cgroup %d not in the pinned map %v or the state file %v", s.clients.ID(), pinnedCgroups(t, s.pins), stateCgroups(t, s.state))
	}
	out, errb, code = s.aarsm(t, "quarantine", "lift", "--state-dir", s.state, "--pin-dir", s.pins, s.clients.Name())
	if code != 0 || !strings.Contains(out, "lifted") {
		t.Fatalf("aarsm quarantine lift: exit %d\n%s%s", code, out, errb)
	}
	if slices.Contains(pinnedCgroups(t, s.pins), s.clients.ID()) || slices.Contains(stateCgroups(t, s.state), s.clients.ID()) {
		t.Errorf("after the lift, cgroup %d still in the pinned map %v or the state file %v", s.clients.ID(), pinnedCgroups(t, s.pins), stateCgroups(t, s.state))
	}
	if r := queryStatus(t, s.bin, s.socket); len(r.Quarantines) != 0 {
		t.Errorf("status after the lift: %+v", r.Quarantines)
	}
	get := testenv.Curl(t, ca, srv.URL(), testenv.Request{Path: "/ping"})
	get.Stdout, get.Stderr = io.Discard, io.Discard
	if err := s.clients.Start(get); err != nil {
		t.Fatal(err)
	}
	if err := get.Wait(); err != nil {
		t.Errorf("the lifted cgroup cannot connect: %v", err)
	}

	// Clear errors.
	if _, errb, code := s.aarsm(t, "quarantine", "lift", "--state-dir", s.state, "--pin-dir", s.pins, s.clients.Name()); code != 1 || !strings.Contains(errb, "not quarantined") {
		t.Errorf("second lift: exit %d, %q", code, errb)
	}
	if _, errb, code := s.aarsm(t, "quarantine", "show", "--state-dir", s.state, "00000000000000000001-0123456789abcdef"); code != 1 || !strings.Contains(errb, "no quarantined message") {
		t.Errorf("show of an unknown id: exit %d, %q", code, errb)
	}
	if _, errb, code := s.aarsm(t, "quarantine", "delete", "--state-dir", s.state, "../quarantine.json"); code != 1 || !strings.Contains(errb, "no quarantined message") {
		t.Errorf("delete of a bad id: exit %d, %q", code, errb)
	}
	if _, _, code := s.aarsm(t, "quarantine", "show"); code != 2 {
		t.Errorf("show without an id: exit %d", code)
	}

	// A second message, deleted by hand.
	s.send(t, ca, srv, text+" again")
	second := waitEntry(t, vaultDir, id)
	if out, errb, code := s.aarsm(t, "quarantine", "delete", "--state-dir", s.state, second); code != 0 || !strings.Contains(out, "deleted") {
		t.Fatalf("aarsm quarantine delete: exit %d\n%s%s", code, out, errb)
	}
	if _, err := os.Stat(filepath.Join(vaultDir, second+".json")); !os.IsNotExist(err) {
		t.Errorf("deleted entry still there: %v", err)
	}
	if l := s.list(t); listsMessage(l, second) || !listsMessage(l, id) {
		t.Errorf("list after the delete: %+v", l.Messages)
	}

	// The agent restarts; the message stays listed until its expiry...
	a1.stop(t)
	if l := s.list(t); !listsMessage(l, id) {
		t.Errorf("no agent: list %+v, want %s", l.Messages, id)
	}
	a2 := s.startAgent(t)
	expires := l.Messages[i].Expires
	if time.Now().After(expires.Add(-time.Second)) {
		t.Fatalf("the test took too long: the entry expired at %v before the restart was checked", expires)
	}
	if r := queryStatus(t, s.bin, s.socket); !statusListsMessage(r, id) {
		t.Errorf("status of the new agent: %+v, want %s", r.QuarantinedMessages, id)
	}
	// ...and the new agent purges it then.
	deadline := expires.Add(15 * time.Second)
	for {
		if _, err := os.Stat(file); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("entry %s, expired at %v, still there at %v", id, expires, time.Now())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if time.Now().Before(expires) {
		t.Errorf("purged before its expiry %v", expires)
	}
	waitOutput(t, "the new agent's log", a2.stderr, id)
	if !strings.Contains(a2.stderr.String(), "expired quarantined messages purged") {
		t.Errorf("the new agent did not log the purge:\n%s", a2.stderr.String())
	}
	if r := queryStatus(t, s.bin, s.socket); statusListsMessage(r, id) {
		t.Errorf("status after the purge: %+v", r.QuarantinedMessages)
	}
	if l := s.list(t); listsMessage(l, id) {
		t.Errorf("list after the purge: %+v", l.Messages)
	}
}

// A network quarantine that expires leaves the pinned map and the state
// file (the agent's housekeeping), and so does its message the vault.
func TestNetworkQuarantineExpires(t *testing.T) {
	s := newQuarantineSetup(t, "3s")
	ca := testenv.NewCA(t)
	srv := testenv.NewServer(t, ca)
	s.startAgent(t)
	s.send(t, ca, srv, fmt.Sprintf("numbers m%d", time.Now().UnixNano()))
	id := waitEntry(t, filepath.Join(s.state, "quarantine"))
	if !slices.Contains(pinnedCgroups(t, s.pins), s.clients.ID()) {
		t.Fatalf("cgroup %d not in the pinned map %v", s.clients.ID(), pinnedCgroups(t, s.pins))
	}
	// With the path the agent read of the sender (to find the cgroup again
	// after a reboot).
	if p, ok := stateEntries(t, s.state)[s.clients.ID()]; !ok || p != s.clients.Name() {
		t.Fatalf("state file %v, want cgroup %d at %s", stateEntries(t, s.state), s.clients.ID(), s.clients.Name())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(s.state, "quarantine", id+".json"))
		gone := os.IsNotExist(err) && !slices.Contains(pinnedCgroups(t, s.pins), s.clients.ID()) &&
			!slices.Contains(stateCgroups(t, s.state), s.clients.ID())
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s on, a 3s quarantine is still there: map %v, state %v, message %v",
				pinnedCgroups(t, s.pins), stateCgroups(t, s.state), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := queryStatus(t, s.bin, s.socket); len(r.Quarantines) != 0 || len(r.QuarantinedMessages) != 0 {
		t.Errorf("status after the expiry: %+v %+v", r.Quarantines, r.QuarantinedMessages)
	}
}

// The commands on a vault of their own, without agent or pins: what they
// print, and that nothing of the sender's reaches the terminal raw.
func TestQuarantineCommands(t *testing.T) {
	state := t.TempDir()
	pins := filepath.Join(t.TempDir(), "no-pins")
	v, err := vault.Open(filepath.Join(state, "quarantine"), vault.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	e := &vault.Entry{
		Header: vault.Header{Policy: "company", Rules: []string{"unauthorized_bcc_recipients"}, Violations: []string{"phan@giftshop.club"},
			PID: 42, Comm: "node", Exe: "/usr/bin/node", Dest: "api.postmarkapp.com"},
		Message: &mail.Message{Provider: "postmark", To: []mail.Address{{Addr: "ceo@company.com"}}, Bcc: []mail.Address{{Addr: "phan@giftshop.club"}},
			Subject: "invoice\x1b]0;owned\x07", TextBody: "line one\nline two \x1b[2J",
			Attachments: []mail.Attachment{{Name: "keys.pem", ContentType: "application/x-pem-file", Content: []byte("-----BEGIN")}}},
	}
	id, err := v.Put(e, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"quarantine", "list", "--state-dir", state, "--pin-dir", pins}, &out, &errb); code != 0 {
		t.Fatalf("list: exit %d: %s", code, errb.String())
	}
	t.Logf("aarsm quarantine list:\n%s", out.String())
	if !strings.Contains(out.String(), id+"  until ") || !strings.Contains(out.String(), "policy company  to api.postmarkapp.com  2 recipients") ||
		!strings.Contains(out.String(), "network:  no cgroup quarantined") {
		t.Errorf("list:\n%s", out.String())
	}
	out.Reset()
	if code := run([]string{"quarantine", "show", id, "--state-dir", state}, &out, &errb); code != 0 {
		t.Fatalf("show: exit %d: %s", code, errb.String())
	}
	t.Logf("aarsm quarantine show:\n%s", out.String())
	if strings.ContainsAny(out.String(), "\x1b\x07") {
		t.Errorf("show printed control characters: %q", out.String())
	}
	for _, want := range []string{"line one\nline two ?[2J", "invoice?]0;owned?", `"keys.pem" application/x-pem-file, 10 bytes, sha256 `} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("show has no %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"quarantine", "delete", "--state-dir", state, id}, &out, &errb); code != 0 {
		t.Fatalf("delete: exit %d: %s", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"quarantine", "delete", "--state-dir", state, id}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "no quarantined message") {
		t.Errorf("second delete: exit %d: %s", code, errb.String())
	}
	// Nothing kept yet (no directory): an empty list, not an error.
	out.Reset()
	if code := run([]string{"quarantine", "list", "--state-dir", t.TempDir(), "--pin-dir", pins}, &out, &errb); code != 0 || !strings.Contains(out.String(), "messages: none quarantined") {
		t.Errorf("list of nothing: exit %d: %s", code, out.String())
	}
	errb.Reset()
	if code := run([]string{"quarantine", "bogus"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), `unknown command "bogus"`) {
		t.Errorf("unknown subcommand: exit %d: %s", code, errb.String())
	}
}
