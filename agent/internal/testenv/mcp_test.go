package testenv

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const mcpWait = 60 * time.Second

// TestNPMDeps: the pinned dependencies are installed, at the versions of
// the lock file, and a second call is a cache hit.
func TestNPMDeps(t *testing.T) {
	start := time.Now()
	nm := NPMDeps(t)
	t.Logf("first NPMDeps: %v", time.Since(start).Round(time.Millisecond))
	_, lockData, err := npmManifest()
	if err != nil {
		t.Fatal(err)
	}
	var lock struct {
		Packages map[string]struct {
			Version string `json:"version"`
		} `json:"packages"`
	}
	if err := json.Unmarshal(lockData, &lock); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"@modelcontextprotocol/sdk", "postmark", "zod", "axios"} {
		var pj struct {
			Version string `json:"version"`
		}
		data, err := os.ReadFile(filepath.Join(nm, name, "package.json"))
		if err != nil {
			t.Fatalf("%s not installed: %v", name, err)
		}
		if err := json.Unmarshal(data, &pj); err != nil {
			t.Fatal(err)
		}
		if want := lock.Packages["node_modules/"+name].Version; pj.Version != want || want == "" {
			t.Errorf("%s is %s, the lock pins %q", name, pj.Version, want)
		}
		t.Logf("%s %s", name, pj.Version)
	}
	start = time.Now()
	if again := NPMDeps(t); again != nm {
		t.Errorf("second NPMDeps = %s, want %s", again, nm)
	}
	t.Logf("warm NPMDeps: %v", time.Since(start))
}

// TestNPMDepsConcurrent: installers racing on an empty cache root run npm
// once between them and all get the complete installation.
func TestNPMDepsConcurrent(t *testing.T) {
	requireBinary(t, "npm", npmHint)
	pkg, lock, err := npmManifest()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	const n = 3
	var wg sync.WaitGroup
	nms := make([]string, n)
	tooks := make([]time.Duration, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nms[i], tooks[i], errs[i] = installNPMDeps(root, pkg, lock)
		}()
	}
	wg.Wait()
	ran := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("installer %d: %v", i, errs[i])
		}
		if nms[i] != nms[0] {
			t.Errorf("installer %d got %s, installer 0 %s", i, nms[i], nms[0])
		}
		if tooks[i] > 0 {
			ran++
			t.Logf("npm ci into an empty cache root (npm's own cache as it is): %v", tooks[i].Round(time.Millisecond))
		}
	}
	if ran != 1 {
		t.Errorf("npm ci ran %d times, want once", ran)
	}
	if !npmComplete(nms[0]) {
		t.Errorf("%s is not complete", nms[0])
	}
	if _, err := os.Stat(filepath.Join(nms[0], "@modelcontextprotocol", "sdk", "package.json")); err != nil {
		t.Error(err)
	}
	left, _ := filepath.Glob(filepath.Join(root, "*.tmp-*"))
	if len(left) != 0 {
		t.Errorf("temporary directories left: %v", left)
	}
}

// mail is the tool arguments of one test mail.
func mail(to string) map[string]any {
	return map[string]any{"to": to, "subject": "Quarterly numbers", "textBody": "Hello, the numbers are attached."}
}

func with(args map[string]any, k string, v any) map[string]any {
	out := map[string]any{}
	for kk, vv := range args {
		out[kk] = vv
	}
	out[k] = v
	return out
}

// checkEmail checks one request the postmark client made: POST /email with
// the token and the fields of args, and Bcc exactly wantBcc ("" none).
func checkEmail(t *testing.T, req APIRequest, args map[string]any, wantBcc string) {
	t.Helper()
	if req.Method != "POST" || req.Path != "/email" {
		t.Errorf("request %s %s, want POST /email", req.Method, req.Path)
	}
	if got := req.Header.Get("X-Postmark-Server-Token"); got != MCPDefaultToken {
		t.Errorf("X-Postmark-Server-Token %q", got)
	}
	var body map[string]any
	if err := json.Unmarshal(req.Body, &body); err != nil {
		t.Fatalf("body %q: %v", req.Body, err)
	}
	want := map[string]any{
		"From":          MCPDefaultSender,
		"To":            args["to"],
		"Subject":       args["subject"],
		"TextBody":      args["textBody"],
		"MessageStream": "outbound",
		"TrackOpens":    true,
		"TrackLinks":    "HtmlAndText",
	}
	if cc, ok := args["cc"]; ok {
		want["Cc"] = cc
	}
	if wantBcc != "" {
		want["Bcc"] = wantBcc
	}
	if !reflect.DeepEqual(body, want) {
		t.Errorf("mail sent:\n %s\nwant the fields\n %v", req.Body, want)
	}
}

// checkServerProcess checks that pid runs pkg's script (with args) and
// that the package it belongs to is pkg at its version.
func checkServerProcess(t *testing.T, pid int, pkg *MCPPackage, args ...string) {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatalf("server pid %d: %v", pid, err)
	}
	cmdline := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	want := append([]string{pkg.Interpreter, pkg.Script}, args...)
	if !reflect.DeepEqual(cmdline, want) {
		t.Errorf("server cmdline %q, want %q", cmdline, want)
	}
	if len(cmdline) < 2 || filepath.Dir(cmdline[1]) != pkg.Dir {
		t.Fatalf("server script is not in the package directory %s", pkg.Dir)
	}
	switch pkg.Runtime {
	case MCPNode:
		// The nearest package.json of the script is the package's.
		var pj struct{ Name, Version, Type string }
		data, err := os.ReadFile(filepath.Join(filepath.Dir(cmdline[1]), "package.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &pj); err != nil {
			t.Fatal(err)
		}
		if pj.Name != PostmarkMCPName || pj.Version != pkg.Version || pj.Type != "module" {
			t.Errorf("package.json beside the script: %+v, want %s@%s", pj, PostmarkMCPName, pkg.Version)
		}
	case MCPPython:
		meta, err := os.ReadFile(filepath.Join(filepath.Dir(pkg.Dir), "postmark_mcp-"+pkg.Version+".dist-info", "METADATA"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(meta, []byte("\nName: postmark-mcp\n")) || !bytes.Contains(meta, []byte("\nVersion: "+pkg.Version+"\n")) {
			t.Errorf("METADATA:\n%s", meta)
		}
	}
}

// parentPID returns the PPid of pid.
func parentPID(t *testing.T, pid int) int {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "PPid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no PPid in /proc/%d/status", pid)
	return 0
}

// runMCP runs one session: waits for ready, checks the server process and
// its identity, lets the client call, and returns the results.
func runMCP(t *testing.T, s *MCPSession, pkg *MCPPackage, calls int, args ...string) MCPReady {
	t.Helper()
	ready := s.Ready(t, mcpWait)
	if ready.ServerName != PostmarkMCPName || ready.ServerVersion != pkg.Version {
		t.Errorf("serverInfo %s %s, want %s %s", ready.ServerName, ready.ServerVersion, PostmarkMCPName, pkg.Version)
	}
	if !reflect.DeepEqual(ready.Tools, []string{SendEmailTool}) {
		t.Errorf("tools %v", ready.Tools)
	}
	if ready.ProtocolVersion == "" {
		t.Errorf("no protocol version negotiated")
	}
	checkServerProcess(t, ready.ServerPID, pkg, args...)
	if s.Server == nil {
		if pp := parentPID(t, ready.ServerPID); pp != ready.ClientPID {
			t.Errorf("stdio server's parent is %d, want the client %d", pp, ready.ClientPID)
		}
	}
	s.Go(t)
	s.Wait(t, mcpWait).Succeeded(t, calls)
	return ready
}

// TestMCPNodeStdio: the node client spawns each postmark-mcp version over
// stdio; each sends through the postmark client exactly the mail asked
// for, plus the Bcc for 1.0.16 and the copy to a new host for 1.0.17.
func TestMCPNodeStdio(t *testing.T) {
	ca := NewCA(t)
	newHost := NewMailAPI(t, ca)
	cases := []struct {
		name    string
		variant MCPVariant
		args    map[string]any
		wantBcc string
		copies  int
	}{
		{"1.0.15", CleanMCP(), mail("alice@partner.example"), "", 0},
		{"1.0.15 cc and bcc asked for", CleanMCP(), with(with(mail("alice@partner.example"), "cc", "bob@partner.example"), "bcc", "carol@partner.example"), "carol@partner.example", 0},
		{"1.0.16", BackdooredMCP(""), mail("alice@partner.example"), BackdoorBcc, 0},
		{"1.0.16 bcc to an allowed domain", BackdooredMCP("archive@partner.example"), mail("alice@partner.example"), "archive@partner.example", 0},
		{"1.0.16 bcc named in the call", BackdooredMCP("archive@partner.example"), with(mail("alice@partner.example"), "bcc", "archive@partner.example"), "archive@partner.example", 0},
		{"1.0.17 new host", NewHostMCP(newHost.Addr()), mail("alice@partner.example"), "", 1},
	}
	copies := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := NewMailAPI(t, ca)
			pkg := InstallNodeMCP(t, c.variant)
			s := MCPStdio(t, ca, api, pkg, MCPOptions{Calls: []map[string]any{c.args}, Wait: true})
			runMCP(t, s, pkg, 1)
			reqs := api.Requests()
			if len(reqs) != 1 {
				t.Fatalf("API got %d requests, want 1", len(reqs))
			}
			checkEmail(t, reqs[0], c.args, c.wantBcc)
			t.Logf("postmark client: %s, User-Agent %q", reqs[0].Proto, reqs[0].Header.Get("User-Agent"))
			copies += c.copies
			if got := len(newHost.Requests()); got != copies {
				t.Fatalf("new host got %d requests, want %d", got, copies)
			}
			if c.copies > 0 {
				cp := newHost.Requests()[copies-1]
				checkEmail(t, cp, c.args, c.wantBcc)
				if !bytes.Equal(cp.Body, reqs[0].Body) {
					t.Errorf("copy %s differs from the mail %s", cp.Body, reqs[0].Body)
				}
			}
		})
	}
}

// TestMCPNodeSeveralCalls: one session, two calls, two mails, in order.
func TestMCPNodeSeveralCalls(t *testing.T) {
	ca := NewCA(t)
	api := NewMailAPI(t, ca)
	pkg := InstallNodeMCP(t, BackdooredMCP(""))
	calls := []map[string]any{mail("alice@partner.example"), mail("dave@partner.example")}
	s := MCPStdio(t, ca, api, pkg, MCPOptions{Calls: calls})
	s.Wait(t, mcpWait).Succeeded(t, 2)
	reqs := api.Requests()
	if len(reqs) != 2 {
		t.Fatalf("API got %d requests, want 2", len(reqs))
	}
	for i := range calls {
		checkEmail(t, reqs[i], calls[i], BackdoorBcc)
	}
}

// TestMCPNodeHTTP: the same over streamable HTTP on loopback.
func TestMCPNodeHTTP(t *testing.T) {
	ca := NewCA(t)
	for _, v := range []MCPVariant{CleanMCP(), BackdooredMCP("")} {
		t.Run(v.Version, func(t *testing.T) {
			api := NewMailAPI(t, ca)
			pkg := InstallNodeMCP(t, v)
			args := mail("alice@partner.example")
			s := MCPHTTP(t, ca, api, pkg, MCPOptions{Calls: []map[string]any{args}, Wait: true})
			if !strings.HasPrefix(s.URL, "http://127.0.0.1:") {
				t.Errorf("URL %s", s.URL)
			}
			ready := runMCP(t, s, pkg, 1, "--http=127.0.0.1:0")
			if ready.ServerPID != s.Server.Process.Pid {
				t.Errorf("server pid %d, want %d", ready.ServerPID, s.Server.Process.Pid)
			}
			reqs := api.Requests()
			if len(reqs) != 1 {
				t.Fatalf("API got %d requests, want 1", len(reqs))
			}
			checkEmail(t, reqs[0], args, v.Bcc)
		})
	}
}

// TestMCPPythonStdio: the node client spawns the Python server (JSON-RPC
// written by hand, httpx for the API).
func TestMCPPythonStdio(t *testing.T) {
	ca := NewCA(t)
	newHost := NewMailAPI(t, ca)
	cases := []struct {
		name    string
		variant MCPVariant
		http2   bool
		wantBcc string
		copies  int
	}{
		{"1.0.15", CleanMCP(), false, "", 0},
		{"1.0.16", BackdooredMCP("archive@partner.example"), false, "archive@partner.example", 0},
		{"1.0.16 h2", BackdooredMCP("archive@partner.example"), true, "archive@partner.example", 0},
		{"1.0.17", NewHostMCP(newHost.Addr()), false, "", 1},
	}
	copies := 0
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			api := NewMailAPI(t, ca)
			pkg := InstallPythonMCP(t, c.variant)
			args := with(mail("alice@partner.example"), "cc", "bob@partner.example")
			s := MCPStdio(t, ca, api, pkg, MCPOptions{Calls: []map[string]any{args}, Wait: true, HTTP2: c.http2})
			ready := runMCP(t, s, pkg, 1)
			if ready.ProtocolVersion != "2025-06-18" {
				t.Errorf("protocol version %q", ready.ProtocolVersion)
			}
			reqs := api.Requests()
			if len(reqs) != 1 {
				t.Fatalf("API got %d requests, want 1", len(reqs))
			}
			checkEmail(t, reqs[0], args, c.wantBcc)
			if want := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[c.http2]; reqs[0].Proto != want {
				t.Errorf("httpx spoke %s, want %s", reqs[0].Proto, want)
			}
			copies += c.copies
			if got := len(newHost.Requests()); got != copies {
				t.Fatalf("new host got %d requests, want %d", got, copies)
			}
		})
	}
}

// TestMCPUpgradeInPlace: a clean install upgraded in place to the version
// that sends to a new host runs from the same directory; its first request
// goes to the new host.
func TestMCPUpgradeInPlace(t *testing.T) {
	ca := NewCA(t)
	api := NewMailAPI(t, ca)
	newHost := NewMailAPI(t, ca)
	for _, install := range []func(testing.TB, MCPVariant) *MCPPackage{InstallNodeMCP, InstallPythonMCP} {
		pkg := install(t, CleanMCP())
		t.Run(string(pkg.Runtime), func(t *testing.T) {
			dir, script := pkg.Dir, pkg.Script
			args := mail("alice@partner.example")
			before := len(api.Requests())
			s := MCPStdio(t, ca, api, pkg, MCPOptions{Calls: []map[string]any{args}, Wait: true})
			runMCP(t, s, pkg, 1)

			pkg.Upgrade(t, NewHostMCP(newHost.Addr()))
			if pkg.Dir != dir || pkg.Script != script || pkg.Version != "1.0.17" {
				t.Fatalf("after the upgrade: %s %s %s", pkg.Dir, pkg.Script, pkg.Version)
			}
			copies := len(newHost.Requests())
			s = MCPStdio(t, ca, api, pkg, MCPOptions{Calls: []map[string]any{args}, Wait: true})
			runMCP(t, s, pkg, 1)
			if got := len(api.Requests()) - before; got != 2 {
				t.Errorf("API got %d requests, want 2", got)
			}
			if got := len(newHost.Requests()) - copies; got != 1 {
				t.Errorf("new host got %d requests, want 1", got)
			}
			if pkg.Runtime == MCPPython {
				old, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "postmark_mcp-1.0.15.dist-info"))
				if len(old) != 0 {
					t.Errorf("old dist-info left: %v", old)
				}
			}
			left, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), ".*"))
			if len(left) != 0 {
				t.Errorf("staging directories left: %v", left)
			}
		})
	}
}

// TestMCPVariantsDifferByOneLine: 1.0.16 is 1.0.15 plus the Bcc line,
// 1.0.17 plus the copy line.
func TestMCPVariantsDifferByOneLine(t *testing.T) {
	for _, rt := range []MCPRuntime{MCPNode, MCPPython} {
		p := &MCPPackage{Runtime: rt}
		clean, err := p.render(CleanMCP())
		if err != nil {
			t.Fatal(err)
		}
		script := "index.js"
		if rt == MCPPython {
			script = "server.py"
		}
		for _, v := range []MCPVariant{BackdooredMCP(""), NewHostMCP("127.0.0.1:1")} {
			files, err := p.render(v)
			if err != nil {
				t.Fatal(err)
			}
			a := strings.Split(string(clean[script]), "\n")
			b := strings.Split(string(files[script]), "\n")
			if rt == MCPPython {
				// The version is in the file too.
				for i := range a {
					a[i] = strings.ReplaceAll(a[i], CleanMCP().Version, v.Version)
				}
			}
			if len(b) != len(a)+1 {
				t.Fatalf("%s %s: %d lines, clean has %d", rt, v.Version, len(b), len(a))
			}
			i := 0
			for i < len(a) && a[i] == b[i] {
				i++
			}
			if !reflect.DeepEqual(a[i:], b[i+1:]) {
				t.Errorf("%s %s differs from the clean version by more than line %d", rt, v.Version, i+1)
			}
			t.Logf("%s %s adds line %d: %s", rt, v.Version, i+1, strings.TrimSpace(b[i]))
			if strings.Contains(string(files[script]), "@@") {
				t.Errorf("%s %s: a marker is left", rt, v.Version)
			}
		}
	}
}

// TestMCPInCgroup: the client, the stdio server it spawns and an HTTP
// server all run in the cgroup the caller chose.
func TestMCPInCgroup(t *testing.T) {
	RequireRoot(t)
	ca := NewCA(t)
	api := NewMailAPI(t, ca)
	cg := NewCgroup(t)
	pkg := InstallNodeMCP(t, CleanMCP())
	inCgroup := func(pid int) {
		t.Helper()
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), "0::"+cg.Name()+"\n") {
			t.Errorf("pid %d is in %q, want %s", pid, data, cg.Name())
		}
	}
	opts := MCPOptions{Calls: []map[string]any{mail("alice@partner.example")}, Wait: true, Start: cg.Start}
	for _, s := range []*MCPSession{MCPStdio(t, ca, api, pkg, opts), MCPHTTP(t, ca, api, pkg, opts)} {
		ready := s.Ready(t, mcpWait)
		inCgroup(ready.ClientPID)
		inCgroup(ready.ServerPID)
		s.Go(t)
		s.Wait(t, mcpWait).Succeeded(t, 1)
	}
	if got := len(api.Requests()); got != 2 {
		t.Errorf("API got %d requests, want 2", got)
	}
}
