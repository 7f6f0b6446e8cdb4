// Package journal is the last stage of the AARSM pipeline: it records one
// structured verdict per judged message.
//
// A Verdict becomes one journal entry with the MESSAGE_ID of the AARSM
// catalog (systemd/aarsm.catalog) and upper-case AARSM_* fields, so
//
//	journalctl MESSAGE_ID=1e6d0debf976458f86720059eece6864 AARSM_VERDICT=block
//
// lists the blocked messages. A Logger writes verdicts to one of three
// sinks chosen by --log-format: the systemd journal (its native protocol,
// spoken directly on the journald socket, whose path can be changed), JSON
// lines on an io.Writer with the same field names, or "auto" (the journal
// when its socket answers, else JSON). Allow decisions are counted, and
// logged only when asked for.
//
// Operational logs of the agent are not this package's concern.
package journal

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/judge/detect"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// MessageID is the MESSAGE_ID of every verdict entry: the id of the AARSM
// verdict entry in systemd/aarsm.catalog. Keep the two equal.
const MessageID = "1e6d0debf976458f86720059eece6864"

// SyslogIdentifier is the SYSLOG_IDENTIFIER of every verdict entry, so
// "journalctl -t aarsm" finds them.
const SyslogIdentifier = "aarsm"

// MaxValueBytes bounds each field value, in bytes. journalctl -o json shows
// a value over 4 KiB as null unless --all is given, so values are capped
// well below that: a longer value keeps its first bytes (cut at a UTF-8
// boundary) followed by "…(+N more)", N being the number of bytes left out,
// and the whole stays within MaxValueBytes.
const MaxValueBytes = 2048

// Journal field names of a verdict entry. journald drops fields whose names
// are not upper case. systemd/aarsm.catalog explains each AARSM_* field;
// keep the two in step (the enforce tests check a real entry against the
// catalog).
const (
	FieldMessage          = "MESSAGE"
	FieldMessageID        = "MESSAGE_ID"
	FieldPriority         = "PRIORITY"
	FieldSyslogIdentifier = "SYSLOG_IDENTIFIER"
	FieldVerdict          = "AARSM_VERDICT"
	FieldActions          = "AARSM_ACTIONS"
	FieldActionDetails    = "AARSM_ACTION_DETAILS"
	FieldPolicy           = "AARSM_POLICY"
	FieldRules            = "AARSM_RULES"
	FieldViolations       = "AARSM_VIOLATIONS"
	FieldPID              = "AARSM_PID"
	FieldComm             = "AARSM_COMM"
	FieldExe              = "AARSM_EXE"
	FieldUnit             = "AARSM_UNIT"
	FieldCgroup           = "AARSM_CGROUP"
	FieldCgroupID         = "AARSM_CGROUP_ID"
	FieldDest             = "AARSM_DEST"
	FieldPeer             = "AARSM_PEER"
	FieldRecipients       = "AARSM_RECIPIENTS"
	FieldLatencyUS        = "AARSM_LATENCY_US"
	FieldMCPServer        = "AARSM_MCP_SERVER"
	FieldMCPPackage       = "AARSM_MCP_PACKAGE"
	FieldMCPClient        = "AARSM_MCP_CLIENT"
	FieldTool             = "AARSM_TOOL"
	FieldToolCallID       = "AARSM_TOOL_CALL_ID"
	FieldToolArgs         = "AARSM_TOOL_ARGS"
	FieldBaseline         = "AARSM_BASELINE"
	FieldBaselinePackage  = "AARSM_BASELINE_PACKAGE"
	FieldBaselinePrevious = "AARSM_BASELINE_PREVIOUS"
	// The fields of an unmonitored-process report (Verdict.Unmonitored).
	FieldUnmonitored       = "AARSM_UNMONITORED"
	FieldStack             = "AARSM_STACK"
	FieldUnmonitoredReason = "AARSM_UNMONITORED_REASON"
	// FieldTimestamp is added by the JSON sink only (journald stamps its
	// entries itself): RFC 3339 in UTC with microseconds.
	FieldTimestamp = "TIMESTAMP"
)

// ErrInvalidVerdict is returned (wrapped) for a verdict that cannot be
// recorded: an unknown decision or a priority that is no syslog severity.
var ErrInvalidVerdict = errors.New("invalid verdict")

// Verdict is the record of one judged message. The comment of each field
// names its journal field; lists are joined with commas. Empty strings and
// lists, a zero cgroup id and an invalid peer are left out of the entry;
// PID and latency are always present.
type Verdict struct {
	// Message is MESSAGE, a sentence a person reads. Empty means the
	// sentence built by Sentence.
	Message string
	// Reason is the human description of the violation used by Sentence,
	// e.g. "unauthorized Bcc phan@giftshop.club". Not a field of its own.
	Reason   string
	Priority policy.Priority // PRIORITY
	Decision judge.Decision  // AARSM_VERDICT, as Decision.String
	// Actions are the effects carried out (AARSM_ACTIONS), each once.
	Actions []policy.Effect
	// ActionDetails say what each response did (AARSM_ACTION_DETAILS),
	// as act.Done.String gives it: "block sockets=1", "terminate pid=42".
	ActionDetails []string
	Policy        string   // AARSM_POLICY
	Rules         []string // AARSM_RULES
	Violations    []string // AARSM_VIOLATIONS: the offending values
	PID           int      // AARSM_PID (the agent's PID namespace)
	Comm          string   // AARSM_COMM
	Exe           string   // AARSM_EXE
	Unit          string   // AARSM_UNIT
	Cgroup        string   // AARSM_CGROUP: the cgroup v2 path, "/..."
	CgroupID      uint64   // AARSM_CGROUP_ID: the id (inode) of that cgroup
	// Dest is AARSM_DEST, host:port: where the message was addressed.
	Dest string
	// Peer is AARSM_PEER: the remote address of the TCP connection the
	// data was written to, when known.
	Peer       netip.AddrPort
	Recipients []string // AARSM_RECIPIENTS
	// Latency is AARSM_LATENCY_US: the time from the TLS write to the
	// verdict, in whole microseconds.
	Latency time.Duration
	// MCP is what the agent knows of the sender as an MCP server (the
	// AARSM_MCP_* and AARSM_TOOL* fields): zero for a process that is
	// none.
	MCP MCP
	// Baseline is AARSM_BASELINE ("rug_pull", "unseen_destination"),
	// AARSM_BASELINE_PACKAGE and AARSM_BASELINE_PREVIOUS: set when the
	// message left what the sender's package was seen to do.
	Baseline Baseline
	// Unmonitored, when its Stack is set, makes the entry the report of
	// a process doing TLS that AARSM cannot read (AARSM_UNMONITORED=1,
	// AARSM_STACK, AARSM_UNMONITORED_REASON) rather than a verdict on
	// data: Decision is then Alert, and no policy or rule is named.
	Unmonitored Unmonitored
}

// Unmonitored are the fields of an unmonitored-process report.
type Unmonitored struct {
	Stack  string // the TLS stack, e.g. "BoringSSL (static, stripped)", "unknown"
	Reason string // why it is not read
}

// Baseline are the fields of a verdict on a baseline deviation; each is
// left out when empty.
type Baseline struct {
	Kind     string // "rug_pull" or "unseen_destination"
	Package  string // the build sending now
	Previous string // the build the baseline learned (rug pull)
}

// BaselineOf returns the journal fields of a baseline deviation (nil:
// none).
func BaselineOf(b *judge.Baseline) Baseline {
	if b == nil {
		return Baseline{}
	}
	out := Baseline{Kind: "unseen_destination", Package: b.Package}
	if b.RugPull {
		out.Kind, out.Previous = "rug_pull", b.Previous
	}
	return out
}

// MCP are the fields of a verdict on mail sent by an MCP server; each is
// left out of the entry when empty.
type MCP struct {
	// Server is AARSM_MCP_SERVER: "name/version" of its serverInfo.
	Server string
	// Package is AARSM_MCP_PACKAGE: the package identity and content
	// hash, "npm:postmark-mcp@1.0.16 sha256:…".
	Package string
	// Client is AARSM_MCP_CLIENT: the AI application that started it.
	Client string
	// Tool, ToolCallID and ToolArgs are AARSM_TOOL, AARSM_TOOL_CALL_ID
	// and AARSM_TOOL_ARGS: the tool call the message is attributed to,
	// its JSON-RPC id as JSON text, and its arguments redacted and cut
	// (mcp.RedactArgs: secrets replaced, at most 1 KiB).
	Tool       string
	ToolCallID string
	ToolArgs   string
}

// MCPOf returns the journal fields of an MCP context (nil: none).
func MCPOf(m *judge.MCP) MCP {
	if m == nil {
		return MCP{}
	}
	out := MCP{Client: m.Client}
	if m.ServerName != "" {
		out.Server = m.ServerName
		if m.ServerVersion != "" {
			out.Server += "/" + m.ServerVersion
		}
	}
	out.Package = strings.TrimSpace(m.Package + " " + m.PackageHash)
	if c := m.Call; c != nil {
		out.Tool, out.ToolCallID, out.ToolArgs = c.Tool, c.ID, c.Args
	}
	return out
}

// Validate reports whether v can be recorded.
func (v Verdict) Validate() error {
	if !v.Decision.Valid() {
		return fmt.Errorf("%w: decision %v is not allow, alert or block", ErrInvalidVerdict, v.Decision)
	}
	if !v.Priority.Valid() {
		return fmt.Errorf("%w: priority %d is outside 0-7", ErrInvalidVerdict, int(v.Priority))
	}
	return nil
}

// Sentence returns the MESSAGE for v: Message when set, else a sentence
// such as "blocked mail from pid 4242 (node, /usr/bin/node, unit
// postmark-mcp.service) to api.postmarkapp.com:443: unauthorized Bcc
// phan@giftshop.club (policy company, rules unauthorized_bcc_recipients)".
func (v Verdict) Sentence() string {
	if v.Message != "" {
		return v.Message
	}
	var b strings.Builder
	if u := v.Unmonitored; u.Stack != "" {
		fmt.Fprintf(&b, "pid %d (%s) does TLS through %s, which AARSM cannot read: not monitored", v.PID, strings.Trim(v.Comm+", "+v.Exe, ", "), u.Stack)
		if u.Reason != "" {
			fmt.Fprintf(&b, " (%s)", u.Reason)
		}
		return b.String()
	}
	//exhaustive:enforce
	switch v.Decision {
	case judge.Block:
		b.WriteString("blocked mail")
	case judge.Alert:
		b.WriteString("alert on mail")
	default:
		b.WriteString("allowed mail")
	}
	fmt.Fprintf(&b, " from pid %d", v.PID)
	var who []string
	for _, s := range []string{v.Comm, v.Exe} {
		if s != "" {
			who = append(who, s)
		}
	}
	if v.Unit != "" {
		who = append(who, "unit "+v.Unit)
	}
	if v.MCP.Server != "" {
		who = append(who, "MCP server "+v.MCP.Server)
	}
	if v.MCP.Tool != "" {
		who = append(who, "tool "+v.MCP.Tool)
	}
	if len(who) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(who, ", "))
	}
	if v.Dest != "" {
		fmt.Fprintf(&b, " to %s", v.Dest)
	}
	switch {
	case v.Reason != "":
		fmt.Fprintf(&b, ": %s", v.Reason)
	case len(v.Violations) > 0:
		fmt.Fprintf(&b, ": violations %s", strings.Join(v.Violations, ", "))
	}
	var why []string
	if v.Policy != "" {
		why = append(why, "policy "+v.Policy)
	}
	if len(v.Rules) > 0 {
		why = append(why, "rules "+strings.Join(v.Rules, ","))
	}
	if len(why) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(why, ", "))
	}
	return b.String()
}

// Field is one name and (sanitised) value of an entry.
type Field struct {
	Name, Value string
}

// Fields returns the entry for v in a fixed order, every value sanitised
// (see Sanitize) and its secrets redacted: whatever the secret detectors
// find in any field (an API key in a subject quoted by MESSAGE, a token in
// an attachment's name among AARSM_VIOLATIONS) becomes
// "[redacted:DETECTOR NB]" (detect.Redact). It does not validate v.
func (v Verdict) Fields() []Field {
	fs := make([]Field, 0, 30)
	add := func(name, value string) {
		fs = append(fs, Field{name, Sanitize(detect.Redact(value))})
	}
	addOpt := func(name, value string) {
		if value != "" {
			add(name, value)
		}
	}
	add(FieldMessage, v.Sentence())
	add(FieldMessageID, MessageID)
	add(FieldPriority, strconv.Itoa(int(v.Priority)))
	add(FieldSyslogIdentifier, SyslogIdentifier)
	add(FieldVerdict, v.Decision.String())
	addOpt(FieldActions, joinList(v.Actions))
	addOpt(FieldActionDetails, joinList(v.ActionDetails))
	addOpt(FieldPolicy, v.Policy)
	addOpt(FieldRules, joinList(v.Rules))
	addOpt(FieldViolations, joinList(v.Violations))
	add(FieldPID, strconv.Itoa(v.PID))
	addOpt(FieldComm, v.Comm)
	addOpt(FieldExe, v.Exe)
	addOpt(FieldUnit, v.Unit)
	addOpt(FieldCgroup, v.Cgroup)
	if v.CgroupID != 0 {
		add(FieldCgroupID, strconv.FormatUint(v.CgroupID, 10))
	}
	addOpt(FieldDest, v.Dest)
	if v.Peer.IsValid() {
		add(FieldPeer, v.Peer.String())
	}
	addOpt(FieldRecipients, joinList(v.Recipients))
	add(FieldLatencyUS, strconv.FormatInt(v.Latency.Microseconds(), 10))
	addOpt(FieldMCPServer, v.MCP.Server)
	addOpt(FieldMCPPackage, v.MCP.Package)
	addOpt(FieldMCPClient, v.MCP.Client)
	addOpt(FieldTool, v.MCP.Tool)
	addOpt(FieldToolCallID, v.MCP.ToolCallID)
	addOpt(FieldToolArgs, v.MCP.ToolArgs)
	addOpt(FieldBaseline, v.Baseline.Kind)
	addOpt(FieldBaselinePackage, v.Baseline.Package)
	addOpt(FieldBaselinePrevious, v.Baseline.Previous)
	if u := v.Unmonitored; u.Stack != "" {
		add(FieldUnmonitored, "1")
		add(FieldStack, u.Stack)
		addOpt(FieldUnmonitoredReason, u.Reason)
	}
	return fs
}

// joinList joins the non-empty items with commas.
func joinList[S ~string](items []S) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return string(items[0])
	}
	var b strings.Builder
	for _, s := range items {
		if s == "" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(string(s))
	}
	return b.String()
}

// Sanitize makes s safe as a journal field value that journalctl -o json
// shows as a string: invalid UTF-8 bytes become \xNN, control characters
// other than tab and newline (NUL included) become \xNN or \uNNNN, and a
// value longer than MaxValueBytes is cut (see MaxValueBytes).
func Sanitize(s string) string {
	if clean(s) {
		return capValue(s)
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r < 0x20 && r != '\t' && r != '\n', r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r >= 0x80 && r <= 0x9f:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
		if b.Len() > 2*MaxValueBytes {
			// The rest is cut anyway: count it without escaping it.
			return capCounted(b.String(), len(s)-i)
		}
	}
	return capValue(b.String())
}

// clean reports whether s needs no escaping.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 {
			return cleanUTF8(s[i:])
		}
		if (c < 0x20 && c != '\t' && c != '\n') || c == 0x7f {
			return false
		}
	}
	return true
}

func cleanUTF8(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || (r < 0x20 && r != '\t' && r != '\n') || (r >= 0x7f && r <= 0x9f) {
			return false
		}
	}
	return true
}

func capValue(s string) string { return capCounted(s, 0) }

// capCounted cuts s to MaxValueBytes including the suffix; extra is a number
// of bytes already left out after s.
func capCounted(s string, extra int) string {
	if len(s) <= MaxValueBytes && extra == 0 {
		return s
	}
	// The suffix is longest when N is largest: size it for len(s)+extra.
	keep := MaxValueBytes - len(suffix(len(s)+extra))
	if keep > len(s) {
		keep = len(s)
	}
	for keep > 0 && keep < len(s) && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + suffix(len(s)-keep+extra)
}

func suffix(n int) string { return "…(+" + strconv.Itoa(n) + " more)" }
