package status

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() Report {
	t0 := time.Date(2026, 11, 26, 9, 0, 0, 0, time.UTC)
	return Report{
		Version: "1.0.0", PID: 42, Started: t0, UptimeSeconds: 3723,
		PolicyDir: "/etc/aarsm/policy.d", PoliciesLoaded: t0,
		Policies:    []Policy{{Name: "default", Mode: "monitor", File: "/etc/aarsm/policy.d/default.hcl"}},
		ReloadError: &ReloadError{At: t0.Add(time.Hour), Error: "zz.hcl:1,1: bad"},
		Probes: []Probe{
			{Path: "/usr/lib/libssl.so.3", Symbols: []string{"SSL_write", "SSL_write_ex"}},
			{Path: "/opt/x/node", Error: "permission denied"},
		},
		HoldScope: HoldScope{EveryProcess: true, EnforcingPolicies: 2, Widened: []string{`policy "default" has no scope`},
			FailClosed: []string{"strict"}},
		Events:         Events{Seen: 10, Lost: 2, Writes: 7, Holds: 3, FileHolds: 1, DeadlineResumed: 4, FailKills: 5},
		LoopAgeSeconds: 0.004,
		Verdicts:       Verdicts{Judged: 3, Blocked: 1, Alerted: 1, Released: 2},
		Quarantines:    []Quarantine{{CgroupID: 7, Cgroup: "/system.slice/mcp.service", Until: t0.Add(24 * time.Hour)}},
		QuarantinedMessages: []QuarantinedMessage{{ID: "01795000000000000000-0123456789abcdef", Expires: t0.Add(24 * time.Hour),
			Policy: "company", Dest: "api.postmarkapp.com", Recipients: 2}},
	}
}

func TestServeAndQuery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "aarsm.sock")
	want := sample()
	srv, err := Listen(path, func() Report { return want })
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode()&os.ModeSocket == 0 || st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", st.Mode())
	}
	if dir, err := os.Stat(filepath.Dir(path)); err != nil || dir.Mode().Perm() != 0o700 {
		t.Errorf("created directory: %v %v, want mode 0700", dir.Mode(), err)
	}
	got, err := Query(path, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != 42 || got.Policies[0].Name != "default" || got.Events.Lost != 2 || got.Verdicts.Blocked != 1 ||
		len(got.Quarantines) != 1 || got.ReloadError == nil || !got.Started.Equal(want.Started) {
		t.Errorf("query returned %+v", got)
	}

	// A second agent does not take the socket over.
	if _, err := Listen(path, func() Report { return Report{} }); err == nil || !strings.Contains(err.Error(), "another agent") {
		t.Errorf("second Listen on a live socket: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	_, err = Query(path, time.Second)
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), path) {
		t.Errorf("query with no agent: %v, want ErrNotRunning naming %s", err, path)
	}
}

// A socket file left by an agent that died (nobody listens) is replaced.
func TestStaleSocketReplaced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "aarsm.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := Query(path, time.Second); !errors.Is(err, ErrNotRunning) {
		t.Errorf("query on a stale socket: %v, want ErrNotRunning", err)
	}
	srv, err := Listen(path, sample)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer srv.Close()
	if r, err := Query(path, 10*time.Second); err != nil || r.PID != 42 {
		t.Errorf("query: %+v %v", r, err)
	}
}

func TestFormat(t *testing.T) {
	var b strings.Builder
	r := sample()
	r.Unmonitored = []Unmonitored{{PID: 77, Exe: "/opt/bun", Stack: "BoringSSL (static, stripped)",
		Reason: "carries BoringSSL but exports no SSL_write symbol: /opt/bun", FirstSeen: time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)}}
	if err := Format(&b, r); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"aarsm 1.0.0, pid 42, up 1h2m3s",
		"policies:    1 from /etc/aarsm/policy.d",
		"default              monitor  /etc/aarsm/policy.d/default.hcl",
		"last reload: FAILED",
		"zz.hcl:1,1: bad",
		"probes:      1 files attached, 1 failed",
		"/usr/lib/libssl.so.3 (SSL_write SSL_write_ex)",
		"/opt/x/node: permission denied",
		"holding:     every process",
		`  widened:   policy "default" has no scope`,
		"  fail-closed policies: strict",
		"deadlines:   4 resumed unjudged, 0 killed unjudged",
		"5 killed by a fail-closed policy",
		"event loop:  went round 4ms ago",
		"events:      10 seen, 2 lost",
		"holds:       3 writes, 1 processes",
		"verdicts:    3 judged, 1 blocked, 0 leaked (blocked after the bytes had left), 1 alerted",
		"quarantine:  1 cgroups",
		"/system.slice/mcp.service until 2026-11-27 09:00:00 UTC",
		"messages:    1 quarantined",
		"01795000000000000000-0123456789abcdef  until 2026-11-27 09:00:00 UTC  policy company  to api.postmarkapp.com  2 recipients",
		"unmonitored: 1 (TLS through a library AARSM cannot read)",
		"  pid 77 /opt/bun: BoringSSL (static, stripped) (carries BoringSSL but exports no SSL_write symbol: /opt/bun), first seen 2026-11-27 08:00:00 UTC",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
}

func TestFormatEgress(t *testing.T) {
	r := sample()
	r.Egress = &Egress{
		Attached: true,
		Policies: []EgressPolicy{{Name: "mail", Mode: "enforce", Cgroups: []string{"/system.slice/mcp.service"},
			Hosts: []EgressHost{{Name: "api.postmarkapp.com", Addrs: []string{"192.0.2.1", "2001:db8::1"}}, {Name: "gone.test", Addrs: []string{}, Error: "no address"}}}},
		Counters:  []EgressCounters{{Hook: "connect4", Allowed: 5, Blocked: 2}, {Hook: "sendmsg4", Reported: 1}},
		Journaled: 3, Deduped: 4,
	}
	var b strings.Builder
	if err := Format(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"egress:      1 policies",
		"  mail                 enforce  /system.slice/mcp.service",
		"    api.postmarkapp.com: 192.0.2.1 2001:db8::1",
		"    gone.test: (no address) (last resolution failed: no address)",
		"allowed/blocked/reported: connect4 5/2/0, sendmsg4 0/0/1; 3 journaled, 4 repeats, 0 lost, 0 journal errors",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("no %q in:\n%s", want, b.String())
		}
	}
	r.Egress, r.EgressError = nil, "load programs: permission denied"
	b.Reset()
	_ = Format(&b, r)
	if !strings.Contains(b.String(), "egress:      unavailable: load programs: permission denied") {
		t.Errorf("no unavailable line:\n%s", b.String())
	}
}
