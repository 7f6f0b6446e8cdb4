package journal

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	sdjournal "github.com/coreos/go-systemd/v22/journal"

	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// blockVerdict is the example of the package documentation.
func blockVerdict() Verdict {
	return Verdict{
		Reason:        "unauthorized Bcc phan@giftshop.club",
		Priority:      policy.PriorityWarning,
		Decision:      judge.Block,
		Actions:       []policy.Effect{policy.EffectBlock, policy.EffectAlert},
		ActionDetails: []string{"block sockets=1"},
		Policy:        "company",
		Rules:         []string{"unauthorized_bcc_recipients"},
		Violations:    []string{"phan@giftshop.club"},
		PID:           4242,
		Comm:          "node",
		Exe:           "/usr/bin/node",
		Unit:          "postmark-mcp.service",
		Cgroup:        "/system.slice/postmark-mcp.service",
		CgroupID:      8127,
		Dest:          "api.postmarkapp.com:443",
		Peer:          netip.MustParseAddrPort("[2001:db8::25]:443"),
		Recipients:    []string{"ceo@company.example", "phan@giftshop.club"},
		Latency:       57*time.Microsecond + 900*time.Nanosecond,
		MCP: MCP{
			Server:     "postmark-mcp/1.0.16",
			Package:    "npm:postmark-mcp@1.0.16 sha256:" + testHash,
			Client:     "claude-ai/0.1.0 (/usr/bin/node)",
			Tool:       "sendEmail",
			ToolCallID: "2",
			ToolArgs:   `{"to":"ceo@company.example","subject":"Q3 report","textBody":"See attached."}`,
		},
		Baseline: Baseline{Kind: "rug_pull", Package: "npm:postmark-mcp@1.0.16 sha256:" + testHash,
			Previous: "npm:postmark-mcp@1.0.15 sha256:" + testHash[:8]},
	}
}

const testHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// blockFields are the fields blockVerdict must show in the journal.
var blockFields = map[string]string{
	"MESSAGE":                 "blocked mail from pid 4242 (node, /usr/bin/node, unit postmark-mcp.service, MCP server postmark-mcp/1.0.16, tool sendEmail) to api.postmarkapp.com:443: unauthorized Bcc phan@giftshop.club (policy company, rules unauthorized_bcc_recipients)",
	"MESSAGE_ID":              "1e6d0debf976458f86720059eece6864",
	"PRIORITY":                "4",
	"SYSLOG_IDENTIFIER":       "aarsm",
	"AARSM_VERDICT":           "block",
	"AARSM_ACTIONS":           "block,alert",
	"AARSM_ACTION_DETAILS":    "block sockets=1",
	"AARSM_POLICY":            "company",
	"AARSM_RULES":             "unauthorized_bcc_recipients",
	"AARSM_VIOLATIONS":        "phan@giftshop.club",
	"AARSM_PID":               "4242",
	"AARSM_COMM":              "node",
	"AARSM_EXE":               "/usr/bin/node",
	"AARSM_UNIT":              "postmark-mcp.service",
	"AARSM_CGROUP":            "/system.slice/postmark-mcp.service",
	"AARSM_CGROUP_ID":         "8127",
	"AARSM_DEST":              "api.postmarkapp.com:443",
	"AARSM_PEER":              "[2001:db8::25]:443",
	"AARSM_RECIPIENTS":        "ceo@company.example,phan@giftshop.club",
	"AARSM_LATENCY_US":        "57",
	"AARSM_MCP_SERVER":        "postmark-mcp/1.0.16",
	"AARSM_MCP_PACKAGE":       "npm:postmark-mcp@1.0.16 sha256:" + testHash,
	"AARSM_MCP_CLIENT":        "claude-ai/0.1.0 (/usr/bin/node)",
	"AARSM_TOOL":              "sendEmail",
	"AARSM_TOOL_CALL_ID":      "2",
	"AARSM_TOOL_ARGS":         `{"to":"ceo@company.example","subject":"Q3 report","textBody":"See attached."}`,
	"AARSM_BASELINE":          "rug_pull",
	"AARSM_BASELINE_PACKAGE":  "npm:postmark-mcp@1.0.16 sha256:" + testHash,
	"AARSM_BASELINE_PREVIOUS": "npm:postmark-mcp@1.0.15 sha256:" + testHash[:8],
}

func newJournalLogger(t *testing.T, j *testenv.Journald, opts Options) *Logger {
	t.Helper()
	opts.Format = FormatJournal
	opts.SocketPath = j.SocketPath
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func checkFields(t *testing.T, e map[string]any, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got, ok := e[k]; !ok || got != v {
			t.Errorf("%s = %#v, want %q", k, got, v)
		}
	}
}

func TestJournaldBlockVerdict(t *testing.T) {
	j := testenv.NewJournald(t)
	l := newJournalLogger(t, j, Options{})
	if l.Format() != FormatJournal {
		t.Fatalf("format %s", l.Format())
	}
	if err := l.Log(blockVerdict()); err != nil {
		t.Fatal(err)
	}
	got := j.WaitFor(t, 1, "AARSM_VERDICT=block")
	if len(got) != 1 {
		t.Fatalf("want one entry, got %d", len(got))
	}
	checkFields(t, got[0], blockFields)
	// The catalog's query finds it too.
	if n := len(j.Query(t, "MESSAGE_ID="+MessageID, "-t", "aarsm")); n != 1 {
		t.Errorf("MESSAGE_ID query found %d entries", n)
	}
	if s := l.Stats(); s != (Stats{Blocked: 1, Written: 1}) {
		t.Errorf("stats %+v", s)
	}
}

func TestJournaldHardValues(t *testing.T) {
	j := testenv.NewJournald(t)
	l := newJournalLogger(t, j, Options{})
	big := strings.Repeat("0123456789abcdef", 640) // 10 KiB
	v := blockVerdict()
	v.Message = "line one\nline two\n\tindented"
	v.Violations = []string{"evil\r\nBcc: x@y.example", "a\x00b"}
	v.Cgroup = big
	v.Exe = "/opt/\xff\xfebin/é"
	if err := l.Log(v); err != nil {
		t.Fatal(err)
	}
	e := j.WaitFor(t, 1, "AARSM_VERDICT=block")[0]
	checkFields(t, e, map[string]string{
		"MESSAGE":          v.Message,
		"AARSM_VIOLATIONS": `evil\x0d` + "\n" + `Bcc: x@y.example,a\x00b`,
		"AARSM_EXE":        `/opt/\xff\xfebin/é`,
	})
	cg, ok := e["AARSM_CGROUP"].(string)
	if !ok {
		t.Fatalf("AARSM_CGROUP = %#v, want a string", e["AARSM_CGROUP"])
	}
	kept, more, ok := strings.Cut(cg, "…(+")
	if !ok || len(cg) > MaxValueBytes || !strings.HasPrefix(big, kept) {
		t.Fatalf("AARSM_CGROUP not capped as expected: %d bytes, %q…", len(cg), cg[:min(len(cg), 40)])
	}
	if want := strconv.Itoa(len(big)-len(kept)) + " more)"; more != want {
		t.Errorf("suffix %q, want %q", more, want)
	}
	// Without --all journalctl shows it too: it is below 4 KiB.
	if !strings.Contains(runJournalctlNoAll(t, j), `"AARSM_CGROUP":"0123`) {
		t.Errorf("capped field not shown by journalctl -o json without --all")
	}
}

// runJournalctlNoAll returns journalctl -o json output without --all.
func runJournalctlNoAll(t *testing.T, j *testenv.Journald) string {
	t.Helper()
	out, err := execJournalctl(j.JournalDir)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestJournaldMemfd(t *testing.T) {
	j := testenv.NewJournald(t)
	s, err := newNativeSink(j.SocketPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.forceMemfd = true
	huge := strings.Repeat("x", 300<<10) // beyond one datagram
	if err := s.write([]Field{{"MESSAGE", "memfd"}, {"AARSM_VERDICT", "alert"}, {"AARSM_HUGE", huge}}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	e := j.WaitFor(t, 1, "AARSM_VERDICT=alert")[0]
	if e["MESSAGE"] != "memfd" || e["AARSM_HUGE"] != huge {
		t.Fatalf("memfd entry: MESSAGE %#v, AARSM_HUGE %d bytes", e["MESSAGE"], len(e["AARSM_HUGE"].(string)))
	}
}

func TestJournaldAllows(t *testing.T) {
	j := testenv.NewJournald(t)
	allow := blockVerdict()
	allow.Decision, allow.Priority = judge.Allow, policy.PriorityInfo

	quiet := newJournalLogger(t, j, Options{})
	for range 3 {
		if err := quiet.Log(allow); err != nil {
			t.Fatal(err)
		}
	}
	// An alert sent after the allows: once it is in, any allow would be.
	alert := blockVerdict()
	alert.Decision = judge.Alert
	if err := quiet.Log(alert); err != nil {
		t.Fatal(err)
	}
	j.WaitFor(t, 1, "AARSM_VERDICT=alert")
	if n := len(j.Query(t, "AARSM_VERDICT=allow")); n != 0 {
		t.Errorf("allows logged without LogAllows: %d", n)
	}
	if s := quiet.Stats(); s != (Stats{Allowed: 3, Alerted: 1, Written: 1}) {
		t.Errorf("stats %+v", s)
	}

	loud := newJournalLogger(t, j, Options{LogAllows: true})
	if err := loud.Log(allow); err != nil {
		t.Fatal(err)
	}
	e := j.WaitFor(t, 1, "AARSM_VERDICT=allow")[0]
	checkFields(t, e, map[string]string{"PRIORITY": "6", "MESSAGE": strings.Replace(blockFields["MESSAGE"], "blocked", "allowed", 1)})
	if s := loud.Stats(); s != (Stats{Allowed: 1, Written: 1}) {
		t.Errorf("stats %+v", s)
	}
}

func TestJournaldJSONSink(t *testing.T) {
	var buf bytes.Buffer
	now := time.Date(2026, 11, 25, 5, 37, 1, 123456789, time.FixedZone("CET", 3600))
	l, err := New(Options{Format: FormatJSON, Out: &buf, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	v := blockVerdict()
	if err := l.Log(v); err != nil {
		t.Fatal(err)
	}
	v.Message = "two\nlines <&>"
	if err := l.Log(v); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %q", buf.String())
	}
	var e map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"TIMESTAMP": "2026-11-25T04:37:01.123456Z"}
	for k, v := range blockFields {
		want[k] = v
	}
	checkFields(t, e, want)
	if len(e) != len(want) {
		t.Errorf("json entry has %d fields, want %d: %v", len(e), len(want), e)
	}
	if !strings.HasPrefix(lines[0], `{"TIMESTAMP":`) || !strings.Contains(lines[1], `"MESSAGE":"two\nlines <&>"`) {
		t.Errorf("json lines %q", lines)
	}
}

func TestJournaldAutoFormat(t *testing.T) {
	absent := filepath.Join(t.TempDir(), "socket")
	l, err := New(Options{Format: FormatAuto, SocketPath: absent, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if l.Format() != FormatJSON {
		t.Errorf("auto without journald chose %s", l.Format())
	}
	if _, err := New(Options{Format: FormatJournal, SocketPath: absent}); !errors.Is(err, ErrJournalUnavailable) {
		t.Errorf("journal without journald: %v, want ErrJournalUnavailable", err)
	}

	j := testenv.NewJournald(t)
	l, err = New(Options{SocketPath: j.SocketPath})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Format() != FormatJournal {
		t.Errorf("auto with journald chose %s", l.Format())
	}

	var f Format
	if err := f.Set("json"); err != nil || f != FormatJSON {
		t.Errorf("Set json: %v %s", err, f)
	}
	if err := f.Set("syslog"); err == nil {
		t.Error("Set syslog: no error")
	}
}

func TestJournaldInvalidVerdict(t *testing.T) {
	l, err := New(Options{Format: FormatJSON, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []Verdict{{Decision: judge.Decision(7)}, {Decision: judge.Block, Priority: 8}, {Decision: judge.Block, Priority: -1}} {
		if err := l.Log(v); !errors.Is(err, ErrInvalidVerdict) {
			t.Errorf("Log(%+v) = %v, want ErrInvalidVerdict", v, err)
		}
	}
	if s := l.Stats(); s != (Stats{}) {
		t.Errorf("stats %+v", s)
	}
}

func TestJournaldSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        "plain",
		"a\nb\tc":      "a\nb\tc",
		"nul\x00":      `nul\x00`,
		"cr\r":         `cr\x0d`,
		"del\x7f":      `del\x7f`,
		"bad\xc3":      `bad\xc3`,
		"c1\u0085":     `c1\u0085`,
		"ünïcödé ok ✓": "ünïcödé ok ✓",
	} {
		if got := Sanitize(in); got != want {
			t.Errorf("Sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	for _, n := range []int{MaxValueBytes, MaxValueBytes + 1, 10 << 10, 1 << 20} {
		for _, unit := range []string{"a", "é", "✓", "\x00"} {
			in := strings.Repeat(unit, n/len(unit)+1)[:n]
			got := Sanitize(in)
			if len(got) > MaxValueBytes || !utf8.ValidString(got) {
				t.Errorf("Sanitize(%d × %q): %d bytes, valid UTF-8 %v", n, unit, len(got), utf8.ValidString(got))
			}
		}
	}
	if got := Sanitize(strings.Repeat("a", 5000)); !strings.HasSuffix(got, "…(+"+strconv.Itoa(5000-strings.Index(got, "…"))+" more)") {
		t.Errorf("suffix of capped value: %q", got[len(got)-30:])
	}
}

// TestJournaldGoSystemdParity sends the same entry with go-systemd's
// journal.Send (whose socket path is fixed, so it runs in journald's mount
// namespace) and with the native sink, and compares what journald stored.
func TestJournaldGoSystemdParity(t *testing.T) {
	j := testenv.NewJournald(t)
	v := blockVerdict()
	v.Message = "multi\nline"
	fields := v.Fields()
	vars := map[string]string{"AARSM_SINK": "go-systemd"}
	for _, f := range fields[3:] { // after MESSAGE, MESSAGE_ID, PRIORITY
		vars[f.Name] = f.Value
	}
	vars[FieldMessageID] = MessageID
	var sendErr error
	if err := j.InNamespace(func() {
		if !sdjournal.Enabled() {
			sendErr = errors.New("go-systemd: journal not enabled in the namespace")
			return
		}
		sendErr = sdjournal.Send(v.Message, sdjournal.PriWarning, vars)
	}); err != nil {
		t.Fatal(err)
	}
	if sendErr != nil {
		t.Fatal(sendErr)
	}
	l := newJournalLogger(t, j, Options{})
	if err := l.Log(v); err != nil {
		t.Fatal(err)
	}
	got := j.WaitFor(t, 2, "AARSM_VERDICT=block")
	ref := got[0]
	if got[0]["AARSM_SINK"] == nil {
		ref = got[1]
	}
	for _, e := range got {
		for _, f := range fields {
			if e[f.Name] != ref[f.Name] {
				t.Errorf("%s: go-systemd stored %#v, native %#v", f.Name, ref[f.Name], e[f.Name])
			}
		}
	}
}

// execJournalctl runs journalctl -o json on dir without --all.
func execJournalctl(dir string) (string, error) {
	jc, err := exec.LookPath("journalctl")
	if err != nil {
		return "", fmt.Errorf("find journalctl: %w", err)
	}
	out, err := exec.Command(jc, "--directory="+dir, "--no-pager", "-o", "json").Output()
	if err != nil {
		return "", fmt.Errorf("run journalctl: %w", err)
	}
	return string(out), nil
}

// The catalog explains every AARSM_* field a verdict can have, and no
// other: a verdict with every field set has exactly the catalog's.
func TestCatalogListsEveryField(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "..", "systemd", "aarsm.catalog"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(src), "\n-- "+MessageID+"\n") {
		t.Errorf("the catalog has no entry %s", MessageID)
	}
	_, list, ok := strings.Cut(string(src), "The fields of this entry")
	if !ok {
		t.Fatal("the catalog has no list of fields")
	}
	list, _, _ = strings.Cut(list, "\n-- ") // the verdict entry's only
	var catalog []string
	for _, m := range regexp.MustCompile(`(?m)^  (AARSM_[A-Z0-9_]+) `).FindAllStringSubmatch(list, -1) {
		catalog = append(catalog, m[1])
	}
	var fields []string
	full := blockVerdict()
	full.Unmonitored = Unmonitored{Stack: "rustls", Reason: "rustls is not probed"}
	for _, f := range full.Fields() {
		if strings.HasPrefix(f.Name, "AARSM_") {
			fields = append(fields, f.Name)
		}
	}
	slices.Sort(catalog)
	slices.Sort(fields)
	if !slices.Equal(catalog, fields) {
		t.Errorf("catalog fields %v, verdict fields %v", catalog, fields)
	}
}

func TestRecords(t *testing.T) {
	quiet, err := New(Options{Format: FormatJSON, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	loud, err := New(Options{Format: FormatJSON, Out: io.Discard, LogAllows: true})
	if err != nil {
		t.Fatal(err)
	}
	if quiet.Records(judge.Allow) || !quiet.Records(judge.Alert) || !quiet.Records(judge.Block) || !loud.Records(judge.Allow) {
		t.Error("Records")
	}
}

// The MCP fields come from the judge's MCP context, are written when
// known and read back as written; a verdict on a process that is no MCP
// server has none of them.
func TestJournaldMCPFields(t *testing.T) {
	ctx := &judge.MCP{
		ServerName: "postmark-mcp", ServerVersion: "1.0.16",
		Package: "npm:postmark-mcp@1.0.16", PackageHash: "sha256:" + testHash,
		Client: "claude-ai/0.1.0 (/usr/bin/node)",
		Call: &judge.ToolCall{
			ID: `"call-7"`, Tool: "sendEmail",
			Declared: judge.NewAddressSet("ceo@company.example"),
			Args:     `{"to":"ceo@company.example","apiKey":"[redacted]","note":"line one` + "\n" + `line two\x01"}`,
		},
	}
	mcpFields := map[string]string{
		"AARSM_MCP_SERVER":   "postmark-mcp/1.0.16",
		"AARSM_MCP_PACKAGE":  "npm:postmark-mcp@1.0.16 sha256:" + testHash,
		"AARSM_MCP_CLIENT":   "claude-ai/0.1.0 (/usr/bin/node)",
		"AARSM_TOOL":         "sendEmail",
		"AARSM_TOOL_CALL_ID": `"call-7"`,
		"AARSM_TOOL_ARGS":    `{"to":"ceo@company.example","apiKey":"[redacted]","note":"line one` + "\n" + `line two\x01"}`,
	}
	if got := MCPOf(nil); got != (MCP{}) {
		t.Errorf("MCPOf(nil) = %+v", got)
	}
	// What is unknown stays out: no initialize seen, no package, no call.
	if got := MCPOf(&judge.MCP{ServerVersion: "1.0", PackageHash: "sha256:" + testHash}); got != (MCP{Package: "sha256:" + testHash}) {
		t.Errorf("MCPOf(partly known) = %+v", got)
	}
	if got := MCPOf(&judge.MCP{ServerName: "x"}); got != (MCP{Server: "x"}) {
		t.Errorf("MCPOf(name only) = %+v", got)
	}

	j := testenv.NewJournald(t)
	l := newJournalLogger(t, j, Options{})
	withMCP := blockVerdict()
	withMCP.PID = 1001
	withMCP.MCP = MCPOf(ctx)
	withMCP.MCP.ToolArgs += strings.Repeat("x", 3*MaxValueBytes) // capped like any field
	without := blockVerdict()
	without.PID = 1002
	without.MCP = MCP{}
	for _, v := range []Verdict{withMCP, without} {
		if err := l.Log(v); err != nil {
			t.Fatal(err)
		}
	}
	e := j.WaitFor(t, 1, "AARSM_PID=1001")[0]
	args := mcpFields["AARSM_TOOL_ARGS"]
	delete(mcpFields, "AARSM_TOOL_ARGS")
	checkFields(t, e, mcpFields)
	if got, _ := e["AARSM_TOOL_ARGS"].(string); len(got) > MaxValueBytes || !strings.HasPrefix(got, args) || !strings.HasSuffix(got, " more)") {
		t.Errorf("AARSM_TOOL_ARGS = %q, want %q and the rest capped", got, args)
	}
	if !strings.Contains(e["MESSAGE"].(string), "MCP server postmark-mcp/1.0.16, tool sendEmail") {
		t.Errorf("MESSAGE %q does not name the server and the tool", e["MESSAGE"])
	}
	e = j.WaitFor(t, 1, "AARSM_PID=1002")[0]
	for name := range mcpFields {
		if v, ok := e[name]; ok {
			t.Errorf("%s = %#v in the entry of a process that is no MCP server", name, v)
		}
	}
	if _, ok := e["AARSM_TOOL_ARGS"]; ok || strings.Contains(e["MESSAGE"].(string), "MCP") {
		t.Errorf("entry of a process that is no MCP server: %v", e)
	}
}

// An unmonitored-process report: its own sentence and fields, counted
// apart from the decisions.
func TestUnmonitoredReport(t *testing.T) {
	var out strings.Builder
	l, err := New(Options{Format: FormatJSON, Out: &out})
	if err != nil {
		t.Fatal(err)
	}
	v := Verdict{Decision: judge.Alert, Priority: policy.PriorityWarning, PID: 42, Comm: "bun", Exe: "/opt/bun",
		Unmonitored: Unmonitored{Stack: "BoringSSL (static, stripped)", Reason: "carries BoringSSL but exports no SSL_write symbol: /opt/bun"}}
	if err := l.Log(v); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{`"AARSM_UNMONITORED":"1"`, `"AARSM_STACK":"BoringSSL (static, stripped)"`,
		`"AARSM_UNMONITORED_REASON":"carries BoringSSL`, `"MESSAGE":"pid 42 (bun, /opt/bun) does TLS through BoringSSL (static, stripped), which AARSM cannot read: not monitored`} {
		if !strings.Contains(got, want) {
			t.Errorf("entry lacks %s: %s", want, got)
		}
	}
	if strings.Contains(got, "AARSM_POLICY") || strings.Contains(got, "AARSM_RULES") {
		t.Errorf("entry names a policy: %s", got)
	}
	if st := l.Stats(); st.Unmonitored != 1 || st.Alerted != 0 || st.Written != 1 {
		t.Errorf("stats %+v", st)
	}
}
