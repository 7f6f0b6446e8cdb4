package journal

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/aarsm/aarsm/agent/internal/policy"
)

// EgressMessageID is the MESSAGE_ID of every egress entry: the id of the
// AARSM egress entry in systemd/aarsm.catalog. Keep the two equal.
const EgressMessageID = "64e04d0ecb8e478bbfaa1d06f145671b"

// Journal fields of an egress entry besides those it shares with a
// verdict (AARSM_VERDICT, AARSM_POLICY, AARSM_PID, AARSM_COMM, AARSM_EXE,
// AARSM_UNIT, AARSM_CGROUP, AARSM_CGROUP_ID, AARSM_DEST).
const (
	FieldEgressHook     = "AARSM_EGRESS_HOOK"
	FieldEgressProtocol = "AARSM_EGRESS_PROTOCOL"
)

// Egress is the record of one destination an egress_policy did not allow,
// for one process: refused (Blocked) or, in monitor mode, let through and
// reported.
type Egress struct {
	Blocked  bool            // AARSM_VERDICT: "block" or "alert"
	Policies []string        // AARSM_POLICY: the egress policies that decided, comma-separated
	Hook     string          // AARSM_EGRESS_HOOK: "connect4", "connect6", "sendmsg4" or "sendmsg6"
	Protocol string          // AARSM_EGRESS_PROTOCOL: "tcp", "udp" or "" when unknown
	Dest     netip.AddrPort  // AARSM_DEST
	PID      int             // AARSM_PID
	Comm     string          // AARSM_COMM
	Exe      string          // AARSM_EXE
	Unit     string          // AARSM_UNIT
	Cgroup   string          // AARSM_CGROUP
	CgroupID uint64          // AARSM_CGROUP_ID
	Priority policy.Priority // PRIORITY
}

// Sentence is the MESSAGE of e: "egress blocked: pid 42 (curl,
// /usr/bin/curl) to 10.1.2.3:443 (connect4, policy mail-mcp)".
func (e Egress) Sentence() string {
	var b strings.Builder
	if e.Blocked {
		b.WriteString("egress blocked")
	} else {
		b.WriteString("egress not allowed (monitor)")
	}
	fmt.Fprintf(&b, ": pid %d", e.PID)
	var who []string
	for _, s := range []string{e.Comm, e.Exe} {
		if s != "" {
			who = append(who, s)
		}
	}
	if e.Unit != "" {
		who = append(who, "unit "+e.Unit)
	}
	if len(who) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(who, ", "))
	}
	fmt.Fprintf(&b, " to %s (%s", e.Dest, e.Hook)
	if len(e.Policies) > 0 {
		fmt.Fprintf(&b, ", policy %s", strings.Join(e.Policies, ","))
	}
	b.WriteString(")")
	return b.String()
}

// Fields returns the entry for e in a fixed order, values sanitised.
func (e Egress) Fields() []Field {
	fs := make([]Field, 0, 16)
	add := func(name, value string) { fs = append(fs, Field{name, Sanitize(value)}) }
	addOpt := func(name, value string) {
		if value != "" {
			add(name, value)
		}
	}
	verdict := "alert"
	if e.Blocked {
		verdict = "block"
	}
	add(FieldMessage, e.Sentence())
	add(FieldMessageID, EgressMessageID)
	add(FieldPriority, strconv.Itoa(int(e.Priority)))
	add(FieldSyslogIdentifier, SyslogIdentifier)
	add(FieldVerdict, verdict)
	addOpt(FieldPolicy, joinList(e.Policies))
	add(FieldEgressHook, e.Hook)
	addOpt(FieldEgressProtocol, e.Protocol)
	add(FieldDest, e.Dest.String())
	add(FieldPID, strconv.Itoa(e.PID))
	addOpt(FieldComm, e.Comm)
	addOpt(FieldExe, e.Exe)
	addOpt(FieldUnit, e.Unit)
	addOpt(FieldCgroup, e.Cgroup)
	if e.CgroupID != 0 {
		add(FieldCgroupID, strconv.FormatUint(e.CgroupID, 10))
	}
	return fs
}

// LogEgress records e. It is counted as a block or an alert.
func (l *Logger) LogEgress(e Egress) error {
	if !e.Priority.Valid() {
		return fmt.Errorf("log egress: %w: priority %d is outside 0-7", ErrInvalidVerdict, int(e.Priority))
	}
	if e.Blocked {
		l.blocked.Add(1)
	} else {
		l.alerted.Add(1)
	}
	if err := l.sink.write(e.Fields(), l.now()); err != nil {
		l.failed.Add(1)
		return fmt.Errorf("log egress: %w", err)
	}
	l.written.Add(1)
	return nil
}
