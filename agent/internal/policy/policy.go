// Package policy loads AARSM e-mail security policies: HCL files whose
// schema is the case study's policy.yaml translated one to one
// (email_security_policy blocks), plus optional scope, bulk and mode
// settings. See hcl/REFERENCE.md in the repository for the language.
//
// Loading compiles everything the judge needs (domain sets, scope
// matchers, durations) so that judging is allocation-light. A Set is
// immutable once returned and safe for concurrent use.
package policy

import (
	"path"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// DefaultDir is where the agent reads policies from.
const DefaultDir = "/etc/aarsm/policy.d"

// Set is every policy loaded from a directory or a list of files, in load
// order (files in the order given, or sorted by name for a directory; blocks
// in source order).
type Set struct {
	Policies []*Policy
	// Egress are the egress_policy blocks (egress.go), in load order.
	Egress []*EgressPolicy
	// Agent is the agent block, if any.
	Agent Agent
	// Files are the files read, in order.
	Files []string
	// Sources maps file names to parsed files, for printing diagnostics
	// with source snippets (WriteDiagnostics).
	Sources map[string]*hcl.File
}

// Mode says whether a policy enforces its response or only reports.
type Mode string

// Modes.
const (
	ModeEnforce Mode = "enforce"
	ModeMonitor Mode = "monitor"
)

// Action is a violation_action value.
type Action string

// The violation actions.
const (
	ActionAlert              Action = "alert"
	ActionBlock              Action = "block"
	ActionBlockAndAlert      Action = "block_and_alert"
	ActionQuarantine         Action = "quarantine"
	ActionQuarantineAndAlert Action = "quarantine_and_alert"
	ActionTerminate          Action = "terminate"
	ActionTerminateAndAlert  Action = "terminate_and_alert"
)

// Effect is one thing a violation makes the agent do. Effects are the one
// vocabulary of responses: a policy's violation_action lists them, the
// judge's verdict carries them, act carries them out and the journal's
// AARSM_ACTIONS names them.
type Effect string

// The effects, in the order verdicts list them (EffectOrder).
const (
	EffectBlock      Effect = "block"      // stop the message (fail the write)
	EffectQuarantine Effect = "quarantine" // keep a root-only copy and cut the sender off the network, for quarantine_duration
	EffectTerminate  Effect = "terminate"  // kill the sending process
	EffectAlert      Effect = "alert"      // raise an alert at the policy's priority
)

// EffectOrder returns every effect in the order verdicts list them.
func EffectOrder() []Effect {
	return []Effect{EffectBlock, EffectQuarantine, EffectTerminate, EffectAlert}
}

// actionEffects lists each action's effects, in the order they are done.
var actionEffects = map[Action][]Effect{
	ActionAlert:              {EffectAlert},
	ActionBlock:              {EffectBlock},
	ActionBlockAndAlert:      {EffectBlock, EffectAlert},
	ActionQuarantine:         {EffectBlock, EffectQuarantine},
	ActionQuarantineAndAlert: {EffectBlock, EffectQuarantine, EffectAlert},
	ActionTerminate:          {EffectBlock, EffectTerminate},
	ActionTerminateAndAlert:  {EffectBlock, EffectTerminate, EffectAlert},
}

// Actions returns every valid violation_action value, sorted by severity.
func Actions() []Action {
	return []Action{ActionAlert, ActionBlock, ActionBlockAndAlert, ActionQuarantine,
		ActionQuarantineAndAlert, ActionTerminate, ActionTerminateAndAlert}
}

// valid reports whether a is a violation_action value.
func (a Action) valid() bool {
	_, ok := actionEffects[a]
	return ok
}

// Effects returns the effects of a (a new slice), or nil for an unknown
// action.
func (a Action) Effects() []Effect {
	return slices.Clone(actionEffects[a])
}

// Priority is a syslog severity, the journal's PRIORITY (the values of
// log/syslog's LOG_EMERG .. LOG_DEBUG); a smaller number is more severe.
type Priority int

// The syslog severities.
const (
	PriorityEmerg   Priority = iota // LOG_EMERG
	PriorityAlert                   // LOG_ALERT
	PriorityCrit                    // LOG_CRIT
	PriorityErr                     // LOG_ERR
	PriorityWarning                 // LOG_WARNING
	PriorityNotice                  // LOG_NOTICE
	PriorityInfo                    // LOG_INFO
	PriorityDebug                   // LOG_DEBUG
)

// The alert_priority values and the syslog severities they map to.
const (
	PriorityCritical = PriorityCrit
	PriorityHigh     = PriorityErr
	PriorityMedium   = PriorityWarning
	PriorityLow      = PriorityNotice
)

var priorityNames = map[string]Priority{
	"low": PriorityLow, "medium": PriorityMedium, "high": PriorityHigh, "critical": PriorityCritical,
}

// Valid reports whether p is a syslog severity (0-7).
func (p Priority) Valid() bool { return p >= PriorityEmerg && p <= PriorityDebug }

// String returns the alert_priority name of p ("low" .. "critical"), or
// "unknown" for a severity no alert_priority maps to.
func (p Priority) String() string {
	for k, v := range priorityNames {
		if v == p {
			return k
		}
	}
	return "unknown"
}

// Defaults for optional settings.
const (
	DefaultAction             = ActionBlockAndAlert
	DefaultPriority           = PriorityHigh
	DefaultQuarantineDuration = 24 * time.Hour
	DefaultBulkMaxMessages    = 20
	DefaultBulkMaxRecipients  = 50
	DefaultBulkWindow         = time.Hour
)

// Policy is one compiled email_security_policy block.
type Policy struct {
	Name        string
	Description string
	// DeclRange is where the block is declared (for reports).
	DeclRange hcl.Range
	Mode      Mode
	// Scopes: the policy applies to a process matching any of them; no
	// scope means every process.
	Scopes []Scope

	Internal    DomainSet // allowed_destinations.internal_domains
	Whitelisted DomainSet // allowed_destinations.whitelisted_external

	Rules Rules
	Bulk  Bulk

	// Holds are the hold settings written in the policy (Set.Holds
	// gives those in force).
	Holds HoldSettings

	Action        Action
	Effects       []Effect // Action.Effects()
	Priority      Priority
	QuarantineFor time.Duration
}

// Rules are the detections a policy enables.
type Rules struct {
	UnauthorizedBcc      bool // blocked_actions.unauthorized_bcc_recipients
	UndeclaredRecipients bool // blocked_actions.undeclared_recipients (senders with MCP context only)
	ExternalForwarding   bool // blocked_actions.external_email_forwarding
	BulkToUnknown        bool // blocked_actions.bulk_email_to_unknown_domains
	UnknownRecipients    bool // blocked_actions.unknown_recipient_domains
	UnreadableMail       bool // blocked_actions.unreadable_mail_requests
	APIKeys              bool // content_protection.block_api_keys_in_emails
	Credentials          bool // content_protection.block_credentials_in_emails
	SensitiveAttachments bool // content_protection.quarantine_sensitive_attachments
	// The baseline's findings (senders whose package has a baseline):
	// blocked_actions.unseen_destinations (default alert) and rug_pull
	// (default block).
	UnseenDestinations Level
	RugPull            Level
}

// Bulk are the bulk_email thresholds: more than MaxMessages messages, or
// more than MaxRecipients recipients, to domains outside both lists within
// Window is a violation.
type Bulk struct {
	MaxMessages   int
	MaxRecipients int
	Window        time.Duration
}

// IsAllowed reports whether a normalised domain is internal or
// whitelisted (equal to, or a subdomain of, a listed domain).
func (p *Policy) IsAllowed(domain string) bool {
	return p.Internal.Contains(domain) || p.Whitelisted.Contains(domain)
}

// IsInternal reports whether a normalised domain is internal.
func (p *Policy) IsInternal(domain string) bool { return p.Internal.Contains(domain) }

// Applies reports whether the policy applies to a process.
func (p *Policy) Applies(t Target) bool {
	if len(p.Scopes) == 0 {
		return true
	}
	for i := range p.Scopes {
		if p.Scopes[i].Match(t) {
			return true
		}
	}
	return false
}

// DomainSet is a set of normalised domains matched with their subdomains.
type DomainSet struct {
	set  map[string]struct{}
	list []string
}

// NewDomainSet builds a set from already normalised domains.
func NewDomainSet(domains ...string) DomainSet {
	d := DomainSet{set: make(map[string]struct{}, len(domains))}
	for _, s := range domains {
		if _, ok := d.set[s]; !ok {
			d.set[s] = struct{}{}
			d.list = append(d.list, s)
		}
	}
	return d
}

// Contains reports whether domain (normalised, as mail.NormalizeDomain
// returns it) equals or is a subdomain of a member. It does not allocate.
func (d DomainSet) Contains(domain string) bool {
	if len(d.set) == 0 {
		return false
	}
	for domain != "" {
		if _, ok := d.set[domain]; ok {
			return true
		}
		i := strings.IndexByte(domain, '.')
		if i < 0 {
			return false
		}
		domain = domain[i+1:]
	}
	return false
}

// List returns the domains in the order written.
func (d DomainSet) List() []string { return d.list }

// Len returns the number of domains.
func (d DomainSet) Len() int { return len(d.list) }

// Target describes the process a message comes from, for scope matching.
type Target struct {
	Exe        string // executable path
	Comm       string // task name (15 bytes at most)
	Unit       string // systemd unit, e.g. "postmark-mcp.service"
	CgroupPath string // cgroup v2 path, e.g. "/system.slice/postmark-mcp.service"
	MCPServer  string // MCP server name (serverInfo of initialize), when known
}

// Scope selects processes. Every list given must match (AND); within a
// list any entry may match (OR). An empty list is not checked.
type Scope struct {
	Executables   []string // glob patterns (path.Match); "dir/**" matches anything under dir
	Commands      []string // glob patterns on comm
	SystemdUnits  []string // glob patterns; "name" also matches "name.service"
	CgroupPrefix  []string // path prefixes, matched at "/" boundaries
	MCPServers    []string // glob patterns, case-insensitive
	DeclRange     hcl.Range
	hasCondition  bool
	lowerServers  []string
	unitsExpanded []string
}

// Match reports whether t matches the scope.
func (s *Scope) Match(t Target) bool {
	if len(s.Executables) > 0 && !anyMatch(s.Executables, t.Exe, matchExe) {
		return false
	}
	if len(s.Commands) > 0 && !anyMatch(s.Commands, t.Comm, globMatch) {
		return false
	}
	if len(s.SystemdUnits) > 0 && !anyMatch(s.unitsExpanded, t.Unit, globMatch) {
		return false
	}
	if len(s.CgroupPrefix) > 0 && !anyMatch(s.CgroupPrefix, t.CgroupPath, matchCgroup) {
		return false
	}
	if len(s.MCPServers) > 0 && !anyMatch(s.lowerServers, strings.ToLower(t.MCPServer), globMatch) {
		return false
	}
	return s.hasCondition
}

func anyMatch(patterns []string, v string, f func(p, v string) bool) bool {
	if v == "" {
		return false
	}
	for _, p := range patterns {
		if f(p, v) {
			return true
		}
	}
	return false
}

func globMatch(p, v string) bool {
	ok, err := path.Match(p, v)
	return ok && err == nil
}

func matchExe(p, v string) bool {
	if dir, ok := strings.CutSuffix(p, "/**"); ok {
		return strings.HasPrefix(v, dir+"/")
	}
	return globMatch(p, v)
}

func matchCgroup(p, v string) bool {
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return true
	}
	return v == p || strings.HasPrefix(v, p+"/")
}

// UnitPatterns returns the systemd_units patterns as matched: each, and
// "name.service" for a name without a suffix.
func (s *Scope) UnitPatterns() []string { return s.unitsExpanded }

// compile fills the derived fields of a scope.
func (s *Scope) compile() {
	s.hasCondition = len(s.Executables)+len(s.Commands)+len(s.SystemdUnits)+len(s.CgroupPrefix)+len(s.MCPServers) > 0
	s.lowerServers = s.lowerServers[:0]
	for _, m := range s.MCPServers {
		s.lowerServers = append(s.lowerServers, strings.ToLower(m))
	}
	s.unitsExpanded = s.unitsExpanded[:0]
	for _, u := range s.SystemdUnits {
		s.unitsExpanded = append(s.unitsExpanded, u)
		if !strings.Contains(path.Base(u), ".") {
			s.unitsExpanded = append(s.unitsExpanded, u+".service")
		}
	}
}
