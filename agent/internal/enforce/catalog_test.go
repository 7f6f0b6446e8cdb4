package enforce

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/act"
	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// catalogField is one field the catalog explains.
type catalogField struct {
	name, text string
}

// optional reports whether the catalog says when the field is left out.
func (f catalogField) optional() bool { return strings.Contains(f.text, "Absent when") }

var catalogFieldLine = regexp.MustCompile(`^  ([A-Z][A-Z0-9_]*) +(.*)$`)

// readCatalog returns the fields listed in systemd/aarsm.catalog, in order:
// the lines "  NAME  text" after "The fields of this entry" of the verdict
// entry (the first), each with the more deeply indented lines that follow
// it.
func readCatalog(t *testing.T) []catalogField {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "..", "systemd", "aarsm.catalog"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []catalogField
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if in && strings.HasPrefix(l, "-- ") {
			break // the next entry (egress): not a verdict's
		}
		switch {
		case strings.HasPrefix(l, "The fields of this entry"):
			in = true
		case !in:
		case catalogFieldLine.MatchString(l):
			m := catalogFieldLine.FindStringSubmatch(l)
			out = append(out, catalogField{m[1], m[2]})
		case strings.HasPrefix(l, "    ") && len(out) > 0:
			out[len(out)-1].text += " " + strings.TrimSpace(l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 10 {
		t.Fatalf("the catalog lists %d fields: %v", len(out), out)
	}
	return out
}

// binaryPath is name's executable as /proc/PID/exe shows it.
func binaryPath(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatal(err)
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestVerdictMatchesCatalog reads every field of real block verdicts back
// from journald and checks each against what systemd/aarsm.catalog says
// of it: a real enforcing agent blocks the postmark-mcp backdoor's hidden
// Bcc, sent by real clients over TLS on loopback, once with the server's
// port in the Host header (node) and once with a Host naming no port
// (curl), so that AARSM_DEST is the Host's with 443 and AARSM_PEER is the
// real connection.
func TestVerdictMatchesCatalog(t *testing.T) {
	catalog := readCatalog(t)
	e := start(t)
	set, diags := policy.Load(companyPolicy(t))
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	company := set.Policies[0]
	server := netip.MustParseAddrPort(e.srv.Addr())
	mount, err := act.CgroupMount()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		client string
		host   string // a Host header to send instead of the client's own
		dest   string // the AARSM_DEST wanted
	}{
		{client: "node", dest: server.String()},
		{client: "curl", host: "api.postmarkapp.com", dest: "api.postmarkapp.com:443"},
	} {
		t.Run(tc.client, func(t *testing.T) {
			req := postmark(marker(t), `,"Bcc":"phan@giftshop.club"`)
			cmd := testenv.Node(t, e.ca, e.srv.URL(), req)
			if tc.host != "" {
				req.Header["Host"] = tc.host
				cmd = testenv.Curl(t, e.ca, e.srv.URL(), req)
			}
			if err := e.cg.Start(cmd); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			if ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); err == nil || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("%s not killed: %v", tc.client, err)
			}
			pid := cmd.Process.Pid
			v := e.jd.WaitFor(t, 1, "AARSM_VERDICT=block", "AARSM_PID="+strconv.Itoa(pid))[0]
			t.Logf("entry: %v", v)

			// Every field of the catalog is in the entry, or the catalog
			// says when it is not and that is the case here.
			absentHere := map[string]string{
				// The client runs in a test cgroup, no unit's (unless the
				// test itself runs in a unit: then the field is there).
				"AARSM_UNIT": "the client runs in no systemd unit",
			}
			for _, f := range []string{"AARSM_MCP_SERVER", "AARSM_MCP_PACKAGE", "AARSM_MCP_CLIENT", "AARSM_TOOL", "AARSM_TOOL_CALL_ID", "AARSM_TOOL_ARGS"} {
				absentHere[f] = "the client is no MCP server"
			}
			for _, f := range []string{"AARSM_BASELINE", "AARSM_BASELINE_PACKAGE", "AARSM_BASELINE_PREVIOUS"} {
				absentHere[f] = "the client has no baseline (no MCP server)"
			}
			for _, f := range []string{"AARSM_UNMONITORED", "AARSM_STACK", "AARSM_UNMONITORED_REASON"} {
				absentHere[f] = "the entry is a verdict, not an unmonitored-process report"
			}
			listed := map[string]bool{}
			for _, f := range catalog {
				listed[f.name] = true
				if _, ok := v[f.name]; ok {
					continue
				}
				why, expected := absentHere[f.name]
				switch {
				case !f.optional():
					t.Errorf("%s is not in the entry, and the catalog does not say when it may be absent", f.name)
				case !expected:
					t.Errorf("%s is not in the entry; the catalog says: %s", f.name, f.text)
				default:
					t.Logf("%s absent: %s", f.name, why)
				}
			}
			// Every AARSM_* field of the entry is in the catalog.
			for name := range v {
				if strings.HasPrefix(name, "AARSM_") && !listed[name] {
					t.Errorf("the entry has %s=%v, which the catalog does not explain", name, v[name])
				}
			}

			str := func(name string) string {
				s, ok := v[name].(string)
				if !ok && v[name] != nil {
					t.Errorf("%s = %#v, not a string", name, v[name])
				}
				return s
			}
			list := func(name string) []string {
				if s := str(name); s != "" {
					return strings.Split(s, ",")
				}
				return nil
			}
			check := func(name string, ok bool, want string) {
				t.Helper()
				if !ok {
					t.Errorf("%s = %q, want %s", name, str(name), want)
				}
			}

			check("MESSAGE_ID", str("MESSAGE_ID") == journal.MessageID, journal.MessageID)
			check("SYSLOG_IDENTIFIER", str("SYSLOG_IDENTIFIER") == journal.SyslogIdentifier, journal.SyslogIdentifier)
			check("MESSAGE", strings.Contains(str("MESSAGE"), fmt.Sprintf("blocked mail from pid %d", pid)) &&
				strings.Contains(str("MESSAGE"), " to "+tc.dest), "the sentence naming the pid and the destination")
			check("PRIORITY", str("PRIORITY") == strconv.Itoa(int(company.Priority)), fmt.Sprintf("the policy's alert_priority %q, %d", company.Priority, company.Priority))
			check("AARSM_VERDICT", str("AARSM_VERDICT") == judge.Block.String(), "block")

			actions := list("AARSM_ACTIONS")
			effects := make([]policy.Effect, 0, len(actions))
			for _, a := range actions {
				effects = append(effects, policy.Effect(a))
			}
			sorted := slices.Clone(effects)
			slices.Sort(sorted)
			want := slices.Clone(company.Effects)
			slices.Sort(want)
			check("AARSM_ACTIONS", slices.Equal(sorted, want) && len(slices.Compact(sorted)) == len(effects),
				fmt.Sprintf("the effects of %s, each once: %v", company.Action, company.Effects))

			details := list("AARSM_ACTION_DETAILS")
			for _, d := range details {
				effect, pairs, _ := strings.Cut(d, " ")
				ok := slices.Contains(effects, policy.Effect(effect)) && pairs != ""
				for _, kv := range strings.Fields(pairs) {
					ok = ok && strings.Contains(kv, "=")
				}
				check("AARSM_ACTION_DETAILS", ok, "items of an effect in AARSM_ACTIONS and key=value pairs")
			}
			check("AARSM_ACTION_DETAILS", slices.Contains(details, fmt.Sprintf("terminate pid=%d", pid)) &&
				slices.ContainsFunc(details, func(d string) bool { return strings.HasPrefix(d, "block sockets=") }),
				fmt.Sprintf("terminate pid=%d and block sockets=N", pid))

			check("AARSM_POLICY", str("AARSM_POLICY") == company.Name, company.Name)
			rules := list("AARSM_RULES")
			check("AARSM_RULES", slices.Contains(rules, judge.RuleUnauthorizedBcc), judge.RuleUnauthorizedBcc)
			check("AARSM_VIOLATIONS", slices.Contains(list("AARSM_VIOLATIONS"), "phan@giftshop.club"), "phan@giftshop.club")
			check("AARSM_PID", str("AARSM_PID") == strconv.Itoa(pid), fmt.Sprintf("the client's pid %d", pid))
			check("AARSM_COMM", str("AARSM_COMM") == tc.client, tc.client)
			exe := binaryPath(t, tc.client)
			check("AARSM_EXE", str("AARSM_EXE") == exe, exe)

			cg := str("AARSM_CGROUP")
			check("AARSM_CGROUP", cg == e.cg.Name() && strings.HasPrefix(cg, "/"), "the client's cgroup v2 path "+e.cg.Name())
			if unit := str("AARSM_UNIT"); unit != "" {
				check("AARSM_UNIT", slices.Contains(strings.Split(cg, "/"), unit), "a unit whose cgroup holds "+cg)
			}
			var st unix.Stat_t
			if err := unix.Stat(filepath.Join(mount, cg), &st); err != nil {
				t.Errorf("AARSM_CGROUP %q: %v", cg, err)
			}
			id := strconv.FormatUint(st.Ino, 10)
			check("AARSM_CGROUP_ID", str("AARSM_CGROUP_ID") == id && id == strconv.FormatUint(e.cg.ID(), 10),
				"the inode of "+filepath.Join(mount, cg)+", "+id)

			dest := str("AARSM_DEST")
			_, port, err := net.SplitHostPort(dest)
			check("AARSM_DEST", err == nil && port != "" && dest == tc.dest, "host:port "+tc.dest)
			check("AARSM_PEER", str("AARSM_PEER") == server.String(), "the server's address "+server.String())

			rcpts := list("AARSM_RECIPIENTS")
			check("AARSM_RECIPIENTS", slices.Contains(rcpts, "ceo@company.com") && slices.Contains(rcpts, "phan@giftshop.club"),
				"the To and the Bcc")
			us, err := strconv.ParseInt(str("AARSM_LATENCY_US"), 10, 64)
			check("AARSM_LATENCY_US", err == nil && us >= 0 && us < 30e6, "microseconds")
		})
	}
}
