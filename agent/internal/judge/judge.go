// Package judge decides what to do with an e-mail message: a pure function
// of the loaded policies, the parsed message, the sending process and an
// explicit bulk-counting state. It does no I/O and reads no clock, so the
// enforcement stage can call it on the hot path and tests need no kernel.
package judge

import (
	"html"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aarsm/aarsm/agent/internal/judge/detect"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// Rule names, as reported in Verdict.Rules and Finding.Rule.
const (
	RuleUnknownRecipient     = "unknown_recipient_domain"
	RuleUnauthorizedBcc      = "unauthorized_bcc_recipients"
	RuleUndeclaredRecipients = "undeclared_recipients"
	RuleExternalForwarding   = "external_email_forwarding"
	RuleBulkToUnknown        = "bulk_email_to_unknown_domains"
	RuleAPIKeys              = "block_api_keys_in_emails"    //nolint:gosec // G101: a rule name, not a credential
	RuleCredentials          = "block_credentials_in_emails" //nolint:gosec // G101: a rule name, not a credential
	RuleSensitiveAttachments = "quarantine_sensitive_attachments"
	RuleUnreadableMail       = "unreadable_mail_requests"
	RuleUnseenDestinations   = "unseen_destinations"
	RuleRugPull              = "rug_pull"
)

// ruleOrder is the order rules are reported in.
var ruleOrder = []string{
	RuleUnauthorizedBcc, RuleUndeclaredRecipients, RuleUnknownRecipient, RuleExternalForwarding, RuleBulkToUnknown,
	RuleUnreadableMail, RuleAPIKeys, RuleCredentials, RuleSensitiveAttachments, RuleRugPull, RuleUnseenDestinations,
}

// Context describes the process that sends the message. Scope blocks match
// on its Target (ScopeTarget); PID and StartTime key the bulk counters.
type Context struct {
	// Target is what scope blocks match: Exe, Comm, Unit, CgroupPath
	// (the cgroup v2 path) and MCPServer (leave it empty: Judge takes
	// MCP.ServerName).
	policy.Target
	PID       uint32
	StartTime uint64 // process start time (boot ticks); tells a reused PID apart
	CgroupID  uint64 // the id (inode) of the cgroup v2 directory CgroupPath
	Dest      string // host:port the message is addressed to, or "" when unknown
	// MCP is the MCP context of the sender: nil when the process is no
	// MCP server the agent has seen. With a tool call in flight
	// (MCP.Call), undeclared_recipients applies, and
	// unauthorized_bcc_recipients authorizes a Bcc when the call declared
	// it and its domain is allowed.
	MCP *MCP
	// Baseline is set when the message leaves what the sender's package
	// was seen to do (rules unseen_destinations, rug_pull).
	Baseline *Baseline
}

// Decision is the outcome for the message, in increasing severity. It is
// the one decision type of the agent: the journal records it as
// AARSM_VERDICT (String).
type Decision int

// Decisions.
const (
	Allow Decision = iota // no violation
	Alert                 // let it go, report it
	Block                 // stop it
)

// String returns "allow", "alert" or "block", or "decision(N)" for a
// value that is none of them.
func (d Decision) String() string {
	//exhaustive:enforce
	switch d {
	case Allow:
		return "allow"
	case Alert:
		return "alert"
	case Block:
		return "block"
	}
	return "decision(" + strconv.Itoa(int(d)) + ")"
}

// Valid reports whether d is Allow, Alert or Block.
func (d Decision) Valid() bool { return d >= Allow && d <= Block }

// Finding is one violation of one rule of one policy.
type Finding struct {
	Policy string
	Rule   string
	Value  string // the offending value: an address, a redacted secret, a file name
	Where  string // where it was found or why: "bcc", "text_body", "attachment:id_rsa"...
}

// Verdict is the judge's answer.
type Verdict struct {
	Decision Decision
	// Actions are the effects to carry out now, in policy.EffectOrder.
	// Monitor-mode policies contribute policy.EffectAlert only.
	Actions []policy.Effect
	// Intended are the effects enforce mode would have carried out; equal
	// to Actions unless Monitor.
	Intended []policy.Effect
	// Policy is the policy that decided (the first with the most severe
	// decision); Policies lists every policy with a violation.
	Policy   string
	Policies []string
	// Rules are the rules violated and Violations the offending values,
	// across all policies, without repetition.
	Rules      []string
	Violations []string
	Findings   []Finding
	// Priority is the syslog severity of the alert: the most severe
	// alert_priority among the violated policies.
	Priority      policy.Priority
	Quarantine    bool
	QuarantineFor time.Duration
	// Monitor is set when every violated policy is in monitor mode, so the
	// verdict only reports.
	Monitor bool
}

// maxFindings bounds the findings kept per policy (a message to 10,000
// unknown recipients reports the first ones).
const maxFindings = 64

// maxScanBytes bounds how much of each text or attachment the secret
// detectors read.
const maxScanBytes = 4 << 20

// Judge evaluates msg against every policy of set that applies to ctx.
// state holds the bulk counters and is updated (it may be nil: then only a
// single message over the recipient threshold trips the bulk rule); now is
// the time of the message. Judge is safe for concurrent use when state is
// shared, as BulkState locks itself.
func Judge(set *policy.Set, msg *mail.Message, ctx Context, state *BulkState, now time.Time) Verdict {
	var v Verdict
	if set == nil || msg == nil || len(set.Policies) == 0 {
		return v
	}
	ev := evaluation{msg: msg}
	monitorOnly := true
	target := ctx.ScopeTarget()
	for _, p := range set.Policies {
		if !p.Applies(target) {
			continue
		}
		fs := ev.policyFindings(p, ctx, state, now)
		var alertOnly bool
		fs, alertOnly = withBaseline(p, ctx.Baseline, fs)
		if len(fs) == 0 {
			continue
		}
		effects := p.Effects
		if alertOnly {
			// The only findings are at a level that reports (a
			// destination the package never used, at "alert").
			effects = []policy.Effect{policy.EffectAlert}
		}
		for _, f := range fs {
			if f.Rule == RuleSensitiveAttachments {
				effects = union(effects, []policy.Effect{policy.EffectBlock, policy.EffectQuarantine})
				break
			}
		}
		actual := effects
		if p.Mode == policy.ModeMonitor {
			actual = []policy.Effect{policy.EffectAlert}
		} else {
			monitorOnly = false
		}
		d := Alert
		if slices.Contains(actual, policy.EffectBlock) {
			d = Block
		}
		if d > v.Decision {
			v.Decision = d
			v.Policy = p.Name
		}
		if len(v.Policies) == 0 || p.Priority < v.Priority {
			v.Priority = p.Priority
		}
		v.Policies = append(v.Policies, p.Name)
		v.Actions = union(v.Actions, actual)
		v.Intended = union(v.Intended, effects)
		if slices.Contains(actual, policy.EffectQuarantine) {
			v.Quarantine = true
			v.QuarantineFor = max(v.QuarantineFor, p.QuarantineFor)
		}
		v.Findings = append(v.Findings, fs...)
	}
	if v.Decision == Allow {
		return Verdict{}
	}
	v.Monitor = monitorOnly
	v.Actions = ordered(v.Actions)
	v.Intended = ordered(v.Intended)
	seenRule := map[string]bool{}
	seenVal := map[string]bool{}
	for _, f := range v.Findings {
		seenRule[f.Rule] = true
		if !seenVal[f.Value] {
			seenVal[f.Value] = true
			v.Violations = append(v.Violations, f.Value)
		}
	}
	for _, r := range ruleOrder {
		if seenRule[r] {
			v.Rules = append(v.Rules, r)
		}
	}
	return v
}

// evaluation caches what several policies need from one message.
type evaluation struct {
	msg        *mail.Message
	rcpts      []mail.Address
	blind      []mail.Address
	haveRcpt   bool
	markers    []string
	haveMark   bool
	secrets    []located
	scanned    detect.Kinds
	sensitive  []located
	haveSens   bool
	undecl     []undeclared
	haveUndecl bool
}

type located struct {
	f     detect.Finding
	where string
}

func (e *evaluation) recipients() []mail.Address {
	if !e.haveRcpt {
		e.rcpts = e.msg.Recipients()
		e.blind = e.msg.BlindRecipients()
		e.haveRcpt = true
	}
	return e.rcpts
}

func (e *evaluation) forwardMarkers() []string {
	if !e.haveMark {
		e.markers = e.msg.ForwardMarkers()
		e.haveMark = true
	}
	return e.markers
}

// scan runs the detectors of kinds not scanned yet over every text of the
// message.
func (e *evaluation) scan(kinds detect.Kinds) []located {
	todo := kinds &^ e.scanned
	if todo == 0 {
		return e.secrets
	}
	e.scanned |= todo
	m := e.msg
	add := func(text, where string) {
		if text == "" {
			return
		}
		if len(text) > maxScanBytes {
			text = text[:maxScanBytes]
		}
		for _, f := range detect.Scan(text, todo, maxFindings) {
			e.secrets = append(e.secrets, located{f: f, where: where})
		}
	}
	add(m.Subject, "subject")
	add(m.TextBody, "text_body")
	add(m.HTMLBody, "html_body")
	if strings.Contains(m.HTMLBody, "&") {
		// Character references could hide a secret ("AKIA&#x51;...").
		add(html.UnescapeString(m.HTMLBody), "html_body")
	}
	for _, x := range m.Extra {
		add(x, "template_or_header")
	}
	// Custom headers of a MIME (SMTP) message are not among Extra: an
	// "Authorization: Bearer ..." header carries a secret all the same.
	// Subject and address headers are scanned (or parsed) already.
	for _, k := range slices.Sorted(maps.Keys(m.Headers)) {
		switch strings.ToLower(k) {
		case "subject", "from", "to", "cc", "bcc", "reply-to", "sender", "resent-to", "resent-cc", "resent-bcc":
			continue
		}
		for _, v := range m.Headers[k] {
			add(v, "header:"+k)
		}
	}
	for _, a := range m.Attachments {
		add(string(a.Content[:min(len(a.Content), maxScanBytes)]), "attachment:"+attachmentName(a))
	}
	return e.secrets
}

func (e *evaluation) sensitiveAttachments() []located {
	if e.haveSens {
		return e.sensitive
	}
	e.haveSens = true
	for _, a := range e.msg.Attachments {
		name := attachmentName(a)
		if r := detect.SensitiveAttachment(a.Name, a.ContentType, a.Content); r != "" {
			e.sensitive = append(e.sensitive, located{f: detect.Finding{Detector: r}, where: name})
			continue
		}
		// Decoded content that trips a detector makes the file sensitive.
		body := string(a.Content[:min(len(a.Content), maxScanBytes)])
		if fs := detect.Scan(body, detect.KindAll, 1); len(fs) > 0 {
			e.sensitive = append(e.sensitive, located{f: detect.Finding{Detector: "contains " + fs[0].Detector}, where: name})
		}
	}
	return e.sensitive
}

func attachmentName(a mail.Attachment) string {
	if a.Name != "" {
		return a.Name
	}
	if a.ContentType != "" {
		return "(" + a.ContentType + ")"
	}
	return "(unnamed)"
}

// withBaseline adds the baseline's findings to fs; alertOnly reports
// whether every finding is one the policy only reports.
func withBaseline(p *policy.Policy, b *Baseline, fs []Finding) (out []Finding, alertOnly bool) {
	found, alert := baselineFindings(p, b, func(rule, value, where string) {
		if len(fs) < maxFindings {
			fs = append(fs, Finding{Policy: p.Name, Rule: rule, Value: value, Where: where})
		}
	})
	if !found {
		return fs, false
	}
	for _, f := range fs {
		if f.Rule != RuleUnseenDestinations && f.Rule != RuleRugPull {
			return fs, false
		}
	}
	return fs, alert
}

func (e *evaluation) policyFindings(p *policy.Policy, ctx Context, state *BulkState, now time.Time) []Finding {
	var out []Finding
	add := func(rule, value, where string) {
		if len(out) < maxFindings {
			out = append(out, Finding{Policy: p.Name, Rule: rule, Value: value, Where: where})
		}
	}
	r := p.Rules
	call := ctx.call()
	if r.UnreadableMail && e.msg.Unreadable != "" && !e.msg.Partial {
		add(RuleUnreadableMail, e.msg.Unreadable, e.msg.Endpoint)
	}
	if r.UndeclaredRecipients && call != nil {
		for _, u := range e.undeclaredRecipients(call) {
			add(RuleUndeclaredRecipients, u.addr, u.where)
		}
	}
	if r.UnknownRecipients || r.UnauthorizedBcc || r.ExternalForwarding || r.BulkToUnknown {
		rcpts := e.recipients()
		if r.UnauthorizedBcc {
			for _, a := range e.blind {
				switch {
				case call == nil && p.IsInternal(a.Domain()):
					// Without a tool call, a Bcc is authorized by
					// its domain alone: an internal one.
				case call != nil && call.Declared.Has(a.Addr) && p.IsAllowed(a.Domain()):
					// An MCP server's Bcc that the tool call asked
					// for, to an internal or whitelisted domain.
				case call != nil && !call.Declared.Has(a.Addr):
					add(RuleUnauthorizedBcc, a.Addr, "bcc, not in the tool call's arguments")
				default:
					add(RuleUnauthorizedBcc, a.Addr, "bcc")
				}
			}
		}
		unknown := 0
		for _, a := range rcpts {
			if !p.IsAllowed(a.Domain()) {
				unknown++
				if r.UnknownRecipients {
					add(RuleUnknownRecipient, a.Addr, "recipient")
				}
			}
		}
		if r.ExternalForwarding {
			var marks string
			for _, a := range rcpts {
				if p.IsInternal(a.Domain()) {
					continue
				}
				// Content is only examined for a message that leaves.
				if marks == "" {
					m := e.forwardMarkers()
					if len(m) == 0 {
						break
					}
					marks = strings.Join(m, ",")
				}
				add(RuleExternalForwarding, a.Addr, marks)
			}
		}
		if r.BulkToUnknown && unknown > 0 {
			msgs, n := 1, unknown
			if state != nil {
				msgs, n = state.observe(bulkKey{pid: ctx.PID, start: ctx.StartTime, policy: p.Name}, p.Bulk, now, unknown, !e.msg.Partial)
			}
			if msgs > p.Bulk.MaxMessages || n > p.Bulk.MaxRecipients {
				add(RuleBulkToUnknown,
					strconv.Itoa(msgs)+" messages, "+strconv.Itoa(n)+" recipients to unknown domains within "+p.Bulk.Window.String(),
					"process "+strconv.FormatUint(uint64(ctx.PID), 10))
			}
		}
	}
	var kinds detect.Kinds
	if r.APIKeys {
		kinds |= detect.KindAPIKey
	}
	if r.Credentials {
		kinds |= detect.KindCredential
	}
	if kinds != 0 {
		for _, s := range e.scan(kinds) {
			if s.f.Kind&kinds == 0 {
				continue
			}
			rule := RuleAPIKeys
			if s.f.Kind == detect.KindCredential {
				rule = RuleCredentials
			}
			add(rule, s.f.Detector+":"+s.f.Redacted, s.where)
		}
	}
	if r.SensitiveAttachments {
		for _, s := range e.sensitiveAttachments() {
			add(RuleSensitiveAttachments, s.where, s.f.Detector)
		}
	}
	return out
}

// ordered returns the effects of l in policy.EffectOrder.
func ordered(l []policy.Effect) []policy.Effect {
	out := make([]policy.Effect, 0, len(l))
	for _, e := range policy.EffectOrder() {
		if slices.Contains(l, e) {
			out = append(out, e)
		}
	}
	return out
}

// union returns a new slice with the elements of a then those of b not in a.
func union(a, b []policy.Effect) []policy.Effect {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
