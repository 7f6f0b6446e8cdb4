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
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
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
// are not upper case.
const (
	FieldMessage          = "MESSAGE"
	FieldMessageID        = "MESSAGE_ID"
	FieldPriority         = "PRIORITY"
	FieldSyslogIdentifier = "SYSLOG_IDENTIFIER"
	FieldVerdict          = "AARSM_VERDICT"
	FieldActions          = "AARSM_ACTIONS"
	FieldPolicy           = "AARSM_POLICY"
	FieldRules            = "AARSM_RULES"
	FieldViolations       = "AARSM_VIOLATIONS"
	FieldPID              = "AARSM_PID"
	FieldComm             = "AARSM_COMM"
	FieldExe              = "AARSM_EXE"
	FieldUnit             = "AARSM_UNIT"
	FieldCgroup           = "AARSM_CGROUP"
	FieldDest             = "AARSM_DEST"
	FieldRecipients       = "AARSM_RECIPIENTS"
	FieldLatencyUS        = "AARSM_LATENCY_US"
	// FieldTimestamp is added by the JSON sink only (journald stamps its
	// entries itself): RFC 3339 in UTC with microseconds.
	FieldTimestamp = "TIMESTAMP"
)

// Decision is the AARSM_VERDICT value.
type Decision string

// Decisions.
const (
	Allow Decision = "allow" // no violation
	Alert Decision = "alert" // the data went and was reported
	Block Decision = "block" // the write failed: the data did not leave
)

func (d Decision) valid() bool { return d == Allow || d == Alert || d == Block }

// Priority is a syslog severity, 0 (emerg) to 7 (debug): the PRIORITY field.
type Priority uint8

// Syslog severities.
const (
	PriEmerg Priority = iota
	PriAlert
	PriCrit
	PriErr
	PriWarning
	PriNotice
	PriInfo
	PriDebug
)

// ErrInvalidVerdict is returned (wrapped) for a verdict that cannot be
// recorded: an unknown decision or a priority outside 0-7.
var ErrInvalidVerdict = errors.New("invalid verdict")

// Verdict is the record of one judged message. The comment of each field
// names its journal field; lists are joined with commas. Empty strings and
// lists are left out of the entry; PID and latency are always present.
type Verdict struct {
	// Message is MESSAGE, a sentence a person reads. Empty means the
	// sentence built by Sentence.
	Message string
	// Reason is the human description of the violation used by Sentence,
	// e.g. "unauthorized Bcc phan@giftshop.club". Not a field of its own.
	Reason     string
	Priority   Priority // PRIORITY
	Decision   Decision // AARSM_VERDICT
	Actions    []string // AARSM_ACTIONS
	Policy     string   // AARSM_POLICY
	Rules      []string // AARSM_RULES
	Violations []string // AARSM_VIOLATIONS: the offending values
	PID        int      // AARSM_PID (the agent's PID namespace)
	Comm       string   // AARSM_COMM
	Exe        string   // AARSM_EXE
	Unit       string   // AARSM_UNIT
	Cgroup     string   // AARSM_CGROUP
	Dest       string   // AARSM_DEST, host:port
	Recipients []string // AARSM_RECIPIENTS
	// Latency is AARSM_LATENCY_US: the time from the TLS write to the
	// verdict, in whole microseconds.
	Latency time.Duration
}

// Validate reports whether v can be recorded.
func (v Verdict) Validate() error {
	if !v.Decision.valid() {
		return fmt.Errorf("%w: decision %q is not allow, alert or block", ErrInvalidVerdict, string(v.Decision))
	}
	if v.Priority > PriDebug {
		return fmt.Errorf("%w: priority %d is outside 0-7", ErrInvalidVerdict, v.Priority)
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
	switch v.Decision {
	case Block:
		b.WriteString("blocked mail")
	case Alert:
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
// (see Sanitize). It does not validate v.
func (v Verdict) Fields() []Field {
	fs := make([]Field, 0, 18)
	add := func(name, value string) {
		fs = append(fs, Field{name, Sanitize(value)})
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
	add(FieldVerdict, string(v.Decision))
	addOpt(FieldActions, joinList(v.Actions))
	addOpt(FieldPolicy, v.Policy)
	addOpt(FieldRules, joinList(v.Rules))
	addOpt(FieldViolations, joinList(v.Violations))
	add(FieldPID, strconv.Itoa(v.PID))
	addOpt(FieldComm, v.Comm)
	addOpt(FieldExe, v.Exe)
	addOpt(FieldUnit, v.Unit)
	addOpt(FieldCgroup, v.Cgroup)
	addOpt(FieldDest, v.Dest)
	addOpt(FieldRecipients, joinList(v.Recipients))
	add(FieldLatencyUS, strconv.FormatInt(v.Latency.Microseconds(), 10))
	return fs
}

// joinList joins the non-empty items with commas.
func joinList(items []string) string {
	switch len(items) {
	case 0:
		return ""
	case 1:
		return items[0]
	}
	kept := make([]string, 0, len(items))
	for _, s := range items {
		if s != "" {
			kept = append(kept, s)
		}
	}
	return strings.Join(kept, ",")
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
