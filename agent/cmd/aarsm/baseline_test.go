package main

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/baseline"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

var (
	baselineT0 = time.Date(2025, 9, 1, 10, 0, 0, 0, time.UTC)
	pm15       = baseline.Key{Package: "npm:postmark-mcp", Version: "1.0.15", Hash: "sha256:" + strings.Repeat("a", 64), MCP: true}
	pm17       = baseline.Key{Package: "npm:postmark-mcp", Version: "1.0.17", Hash: "sha256:" + strings.Repeat("b", 64)}
)

// baselineCLI runs "aarsm baseline ARGS --state-dir STATE" as root at now.
func baselineCLI(t *testing.T, state string, now time.Time, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	args = append(args, "--state-dir", state)
	code := baselineCommand(args, &out, &errb, 0, now)
	return out.String(), errb.String(), code
}

// learnedState returns a state directory whose baseline has postmark-mcp
// 1.0.15 and curl.
func learnedState(t *testing.T) string {
	t.Helper()
	state := t.TempDir()
	s, err := baseline.Open(baseline.Dir(state), baseline.Options{Mode: baseline.ModeLearn, RefreshInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	s.Observe(pm15, "API.postmarkapp.com:443", []string{"company.com"}, baselineT0)
	s.Observe(pm15, "api.postmarkapp.com:443", []string{"company.com"}, baselineT0.Add(time.Minute))
	s.Observe(baseline.Key{Package: "exe:/usr/bin/curl\x1b[31m"}, "example.org:443", nil, baselineT0)
	s.SetMode(baseline.ModeEnforce)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return state
}

func showJSON(t *testing.T, state string, args ...string) *baseline.File {
	t.Helper()
	out, errs, code := baselineCLI(t, state, baselineT0, append([]string{"show", "--json"}, args...)...)
	if code != 0 {
		t.Fatalf("show --json %v: exit %d: %s", args, code, errs)
	}
	var f baseline.File
	if err := json.Unmarshal([]byte(out), &f); err != nil {
		t.Fatalf("show --json: %v\n%s", err, out)
	}
	return &f
}

func TestBaselineShow(t *testing.T) {
	empty := t.TempDir()
	out, _, code := baselineCLI(t, empty, baselineT0, "show")
	if code != 0 || !strings.Contains(out, "nothing learned yet") {
		t.Fatalf("empty: exit %d: %s", code, out)
	}
	if f := showJSON(t, empty); f.Format != baseline.FileFormat || f.Packages == nil || len(f.Packages) != 0 {
		t.Fatalf("empty JSON: %+v", f)
	}

	state := learnedState(t)
	out, errs, code := baselineCLI(t, state, baselineT0, "show")
	if code != 0 {
		t.Fatalf("show: exit %d: %s", code, errs)
	}
	for _, w := range []string{
		"baseline: 2 packages in " + baseline.Path(baseline.Dir(state)), "(the agent was in enforce mode)",
		"\nmcp      npm:postmark-mcp  (enforced; last used 2025-09-01 10:01:00 UTC)",
		"1.0.15 sha256:aaaaaaaaaaaa  seen 2025-09-01 10:00:00 UTC .. 2025-09-01 10:01:00 UTC",
		"destination  api.postmarkapp.com:443  2×, last 2025-09-01 10:01:00 UTC  (as \"API.postmarkapp.com:443\")",
		"domain       company.com  2×",
		"\nexe      exe:/usr/bin/curl?[31m", // escaped
	} {
		if !strings.Contains(out, w) {
			t.Errorf("show lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("control character shown:\n%q", out)
	}

	f := showJSON(t, state, "postmark-mcp")
	if len(f.Packages) != 1 || f.Packages[0].Name != "npm:postmark-mcp" || f.Packages[0].Builds[0].Destinations[0].Count != 2 {
		t.Fatalf("show --json postmark-mcp: %+v", f)
	}
	if f := showJSON(t, state, "npm:postmark-mcp@1.0.15"); len(f.Packages[0].Builds) != 1 {
		t.Fatalf("one version: %+v", f)
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"show", "npm:nothing"}, 1, "no such package in the baseline: npm:nothing (see aarsm baseline show)"},
		{[]string{"show", "postmark-mcp@9"}, 1, "has no version 9"},
		{[]string{"show", "a", "b"}, 2, "unexpected argument"},
		{[]string{"show", "rpm:x"}, 2, "unknown kind"},
		{[]string{"show", "--for", "1h"}, 2, "flag provided but not defined"},
	} {
		_, errs, code := baselineCLI(t, state, baselineT0, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%v: exit %d, %q; want %d, %q", c.args, code, errs, c.code, c.msg)
		}
	}
}

func TestBaselineForgetAndLearn(t *testing.T) {
	state := learnedState(t)
	now := time.Now()
	out, errs, code := baselineCLI(t, state, now, "learn", "--for", "10m", "postmark-mcp")
	if code != 0 || !strings.Contains(out, "npm:postmark-mcp learns until") {
		t.Fatalf("learn: exit %d: %s%s", code, out, errs)
	}
	if p := showJSON(t, state, "npm:postmark-mcp").Packages[0]; !p.LearnUntil.Equal(now.Add(10 * time.Minute).UTC()) {
		t.Fatalf("window: %v", p.LearnUntil)
	}
	out, _, code = baselineCLI(t, state, now, "show")
	if code != 0 || !strings.Contains(out, "npm:postmark-mcp  (learning until ") {
		t.Fatalf("show: %s", out)
	}
	if _, _, code := baselineCLI(t, state, now, "learn", "npm:postmark-mcp", "--for", "0"); code != 0 {
		t.Fatal("learn --for 0")
	}
	if p := showJSON(t, state, "npm:postmark-mcp").Packages[0]; p.LearnUntil.After(now) {
		t.Fatalf("window not ended: %v", p.LearnUntil)
	}
	out, _, code = baselineCLI(t, state, now, "learn", "--for", "2h")
	if code != 0 || !strings.Contains(out, "every package learns until") {
		t.Fatalf("learn everything: %s", out)
	}
	if f := showJSON(t, state); !f.LearnUntil.Equal(now.Add(2 * time.Hour).UTC()) {
		t.Fatalf("global window: %v", f.LearnUntil)
	}
	// A package not seen yet, named with its kind.
	if _, errs, code := baselineCLI(t, state, now, "learn", "npm:upcoming"); code != 0 {
		t.Fatalf("learn a new package: %s", errs)
	}
	if p := showJSON(t, state, "npm:upcoming").Packages[0]; !p.LearnUntil.Equal(now.Add(time.Hour).UTC()) || len(p.Builds) != 0 {
		t.Fatalf("new package: %+v", p)
	}

	out, errs, code = baselineCLI(t, state, now, "forget", "postmark-mcp@1.0.15")
	if code != 0 || out != "forgot npm:postmark-mcp@1.0.15 (a running agent drops it within a second)\n" {
		t.Fatalf("forget a version: exit %d: %s%s", code, out, errs)
	}
	if _, errs, code := baselineCLI(t, state, now, "show", "npm:postmark-mcp"); code != 1 || !strings.Contains(errs, "no such package") {
		t.Fatalf("forgotten version still shown: %s", errs)
	}
	if _, _, code := baselineCLI(t, state, now, "forget", "/usr/bin/curl\x1b[31m"); code != 0 {
		t.Fatal("forget by path")
	}
	for _, c := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"forget", "/usr/bin/curl\x1b[31m"}, 1, "no such package"},
		{[]string{"forget"}, 2, "missing PACKAGE"},
		{[]string{"forget", "--json", "x"}, 2, "flag provided but not defined"},
		{[]string{"learn", "npm:x@1.0"}, 1, "a package learns whatever version it runs"},
		{[]string{"learn", "never-seen"}, 1, "give its kind: npm:never-seen"},
		{[]string{"learn", "--for", "-1h", "npm:x"}, 2, "not a duration between 0 and 365d"},
		{[]string{"learn", "--for", "soon", "npm:x"}, 2, "not a duration"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	} {
		_, errs, code := baselineCLI(t, state, now, c.args...)
		if code != c.code || !strings.Contains(errs, c.msg) {
			t.Errorf("%v: exit %d, %q; want %d, %q", c.args, code, errs, c.code, c.msg)
		}
	}
	var out2, errb bytes.Buffer
	if code := baselineCommand([]string{"show", "--state-dir", state}, &out2, &errb, 1000, now); code != 1 ||
		!strings.Contains(errb.String(), "must be run as root") {
		t.Fatalf("as a user: exit %d: %s", code, errb.String())
	}
	if code := baselineCommand(nil, &out2, &errb, 0, now); code != 2 {
		t.Fatalf("no command: exit %d", code)
	}
}

// A corrupt baseline file is an error that names it; old files (version
// 1: MCP servers' packages only) are shown, as MCP servers'.
func TestBaselineShowFiles(t *testing.T) {
	state := t.TempDir()
	dir := baseline.Dir(state)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(baseline.Path(dir), []byte(`{"format":"aarsm-baseline","version":1,"packages":[{"package":"npm:x","builds":[{"version":"1.0","destinations":[{"value":"a.example:443","count":1}],"domains":[]}]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code := baselineCLI(t, state, baselineT0, "show")
	if code != 0 || !strings.Contains(out, "\nmcp      npm:x") {
		t.Fatalf("version 1 file: exit %d: %s%s", code, out, errs)
	}
	if err := os.WriteFile(baseline.Path(dir), []byte(`{"format":"aarsm-baseline","version":2,"packages":[{"package":"exe:"`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, cmd := range []string{"show", "forget"} {
		_, errs, code = baselineCLI(t, state, baselineT0, cmd, "exe:/x")
		if code != 1 || !strings.Contains(errs, baseline.Path(dir)+": baseline file corrupt") {
			t.Errorf("%s, corrupt file: exit %d: %s", cmd, code, errs)
		}
	}
}

// TestBaselineEditWhileOpen: the CLI changes the baseline of a running
// store, which sees it without being told.
func TestBaselineEditWhileOpen(t *testing.T) {
	state := learnedState(t)
	s, err := baseline.Open(baseline.Dir(state), baseline.Options{Mode: baseline.ModeEnforce, RefreshInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	if r := s.Check(pm17, "collector.example:443", nil, now); r.Verdict != baseline.RugPull || !r.Violation() {
		t.Fatalf("before: %+v", r)
	}
	if _, errs, code := baselineCLI(t, state, now, "learn", "npm:postmark-mcp", "--for", "1h"); code != 0 {
		t.Fatal(errs)
	}
	testenv.Eventually(t, 5*time.Second, "the store to see the learning window", func() bool {
		return s.Check(pm17, "collector.example:443", nil, now).Learning
	})
	s.Observe(pm17, "collector.example:443", nil, now) // learned
	if _, errs, code := baselineCLI(t, state, now, "forget", "npm:postmark-mcp"); code != 0 {
		t.Fatal(errs)
	}
	testenv.Eventually(t, 5*time.Second, "the store to forget", func() bool {
		return s.Check(pm15, "api.postmarkapp.com:443", nil, now).NoBaseline
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := baselineCLI(t, state, now, "show", "npm:postmark-mcp"); code != 1 {
		t.Fatalf("forgotten package written back by the store: %s", errs)
	}
}
