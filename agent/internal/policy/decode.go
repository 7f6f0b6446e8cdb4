package policy

import (
	"fmt"
	"math/big"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"

	"github.com/aarsm/aarsm/agent/internal/parse/mail"
)

const blockPolicy = "email_security_policy"

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{{Type: blockPolicy, LabelNames: []string{"name"}}, {Type: blockAgent}},
}

var policySchema = &hcl.BodySchema{
	Attributes: append([]hcl.AttributeSchema{{Name: "description"}, {Name: "mode"}}, holdAttributes...),
	Blocks: []hcl.BlockHeaderSchema{
		{Type: "scope"},
		{Type: "allowed_destinations"},
		{Type: "blocked_actions"},
		{Type: "bulk_email"},
		{Type: "content_protection"},
		{Type: "response"},
	},
}

var singletonBlocks = []string{"allowed_destinations", "blocked_actions", "bulk_email", "content_protection", "response"}

var blockSchemas = map[string]*hcl.BodySchema{
	"scope": {Attributes: []hcl.AttributeSchema{
		{Name: "executables"}, {Name: "commands"}, {Name: "systemd_units"},
		{Name: "cgroups"}, {Name: "mcp_servers"},
	}},
	"allowed_destinations": {Attributes: []hcl.AttributeSchema{
		{Name: "internal_domains"}, {Name: "whitelisted_external"},
	}},
	"blocked_actions": {Attributes: []hcl.AttributeSchema{
		{Name: "unauthorized_bcc_recipients"}, {Name: "external_email_forwarding"},
		{Name: "bulk_email_to_unknown_domains"}, {Name: "unknown_recipient_domains"},
		{Name: "unreadable_mail_requests"},
	}},
	"bulk_email": {Attributes: []hcl.AttributeSchema{
		{Name: "max_messages"}, {Name: "max_recipients"}, {Name: "window"},
	}},
	"content_protection": {Attributes: []hcl.AttributeSchema{
		{Name: "block_api_keys_in_emails"}, {Name: "block_credentials_in_emails"},
		{Name: "quarantine_sensitive_attachments"},
	}},
	"response": {Attributes: []hcl.AttributeSchema{
		{Name: "violation_action"}, {Name: "alert_priority"}, {Name: "quarantine_duration"},
	}},
}

var policyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// decodeFile decodes the policies (and the agent block) of one parsed file
// into set.
func (set *Set) decodeFile(f *hcl.File) ([]*Policy, hcl.Diagnostics) {
	content, diags := f.Body.Content(rootSchema)
	var out []*Policy
	for _, b := range content.Blocks {
		if b.Type == blockAgent {
			diags = append(diags, set.decodeAgent(b)...)
			continue
		}
		p, d := decodePolicy(b)
		diags = append(diags, d...)
		if p != nil && !d.HasErrors() {
			out = append(out, p)
		}
	}
	return out, diags
}

func decodePolicy(b *hcl.Block) (*Policy, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	p := &Policy{
		Name:      b.Labels[0],
		DeclRange: b.DefRange,
		Mode:      ModeEnforce,
		Rules: Rules{
			UnauthorizedBcc: true, ExternalForwarding: true, BulkToUnknown: true, UnknownRecipients: true,
			UnreadableMail: true, APIKeys: true, Credentials: true, SensitiveAttachments: true,
		},
		Bulk:          Bulk{MaxMessages: DefaultBulkMaxMessages, MaxRecipients: DefaultBulkMaxRecipients, Window: DefaultBulkWindow},
		Action:        DefaultAction,
		Priority:      DefaultPriority,
		QuarantineFor: DefaultQuarantineDuration,
	}
	if !policyName.MatchString(p.Name) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid policy name",
			Detail:   fmt.Sprintf("%q is not a valid policy name: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit.", p.Name),
			Subject:  labelRange(b, 0),
		})
	}
	content, d := b.Body.Content(policySchema)
	diags = append(diags, d...)

	if a := content.Attributes["description"]; a != nil {
		p.Description, d = stringAttr(a)
		diags = append(diags, d...)
	}
	if a := content.Attributes["mode"]; a != nil {
		s, d := stringAttr(a)
		diags = append(diags, d...)
		switch Mode(s) {
		case ModeEnforce, ModeMonitor:
			p.Mode = Mode(s)
		default:
			if !d.HasErrors() {
				diags = append(diags, unknownValue(a, "mode", s, []string{string(ModeEnforce), string(ModeMonitor)}))
			}
		}
	}

	diags = append(diags, decodeHolds(content.Attributes, &p.Holds)...)

	seen := map[string]*hcl.Block{}
	var hasDestinations bool
	for _, sb := range content.Blocks {
		if first, dup := seen[sb.Type]; dup && slices.Contains(singletonBlocks, sb.Type) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("Duplicate %s block", sb.Type),
				Detail: fmt.Sprintf("Only one %s block is allowed in a policy; the first one is at %s.",
					sb.Type, first.DefRange.String()),
				Subject: sb.DefRange.Ptr(),
			})
			continue
		}
		seen[sb.Type] = sb
		bc, d := sb.Body.Content(blockSchemas[sb.Type])
		diags = append(diags, d...)
		switch sb.Type {
		case "scope":
			s, d := decodeScope(sb, bc)
			diags = append(diags, d...)
			p.Scopes = append(p.Scopes, s)
		case "allowed_destinations":
			hasDestinations = true
			var int_, wl []string
			int_, d = domainsAttr(bc.Attributes["internal_domains"])
			diags = append(diags, d...)
			wl, d = domainsAttr(bc.Attributes["whitelisted_external"])
			diags = append(diags, d...)
			p.Internal = NewDomainSet(int_...)
			p.Whitelisted = NewDomainSet(wl...)
		case "blocked_actions":
			diags = append(diags, boolAttr(bc.Attributes["unauthorized_bcc_recipients"], &p.Rules.UnauthorizedBcc)...)
			diags = append(diags, boolAttr(bc.Attributes["external_email_forwarding"], &p.Rules.ExternalForwarding)...)
			diags = append(diags, boolAttr(bc.Attributes["bulk_email_to_unknown_domains"], &p.Rules.BulkToUnknown)...)
			diags = append(diags, boolAttr(bc.Attributes["unknown_recipient_domains"], &p.Rules.UnknownRecipients)...)
			diags = append(diags, boolAttr(bc.Attributes["unreadable_mail_requests"], &p.Rules.UnreadableMail)...)
		case "bulk_email":
			diags = append(diags, intAttr(bc.Attributes["max_messages"], 1, 1_000_000, &p.Bulk.MaxMessages)...)
			diags = append(diags, intAttr(bc.Attributes["max_recipients"], 1, 1_000_000, &p.Bulk.MaxRecipients)...)
			diags = append(diags, durationAttr(bc.Attributes["window"], time.Second, 7*24*time.Hour, &p.Bulk.Window)...)
		case "content_protection":
			diags = append(diags, boolAttr(bc.Attributes["block_api_keys_in_emails"], &p.Rules.APIKeys)...)
			diags = append(diags, boolAttr(bc.Attributes["block_credentials_in_emails"], &p.Rules.Credentials)...)
			diags = append(diags, boolAttr(bc.Attributes["quarantine_sensitive_attachments"], &p.Rules.SensitiveAttachments)...)
		case "response":
			if a := bc.Attributes["violation_action"]; a != nil {
				s, d := stringAttr(a)
				diags = append(diags, d...)
				if Action(s).Effects() == nil {
					if !d.HasErrors() {
						names := make([]string, 0, len(actionEffects))
						for _, x := range Actions() {
							names = append(names, string(x))
						}
						diags = append(diags, unknownValue(a, "violation_action", s, names))
					}
				} else {
					p.Action = Action(s)
				}
			}
			if a := bc.Attributes["alert_priority"]; a != nil {
				s, d := stringAttr(a)
				diags = append(diags, d...)
				if pr, ok := priorityNames[s]; ok {
					p.Priority = pr
				} else if !d.HasErrors() {
					diags = append(diags, unknownValue(a, "alert_priority", s, []string{"low", "medium", "high", "critical"}))
				}
			}
			diags = append(diags, durationAttr(bc.Attributes["quarantine_duration"], time.Second, 365*24*time.Hour, &p.QuarantineFor)...)
		}
	}
	p.Effects = p.Action.Effects()

	if p.Rules.UnknownRecipients && p.Internal.Len()+p.Whitelisted.Len() == 0 {
		what := "has no allowed_destinations block"
		if hasDestinations {
			what = "allows no domain"
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "Every recipient is external",
			Detail: fmt.Sprintf("Policy %q %s, so every recipient of every message is an unknown_recipient_domain violation. "+
				"List your domains in allowed_destinations, or set blocked_actions.unknown_recipient_domains = false.", p.Name, what),
			Subject: b.DefRange.Ptr(),
		})
	}
	return p, diags
}

func labelRange(b *hcl.Block, i int) *hcl.Range {
	if i < len(b.LabelRanges) {
		return b.LabelRanges[i].Ptr()
	}
	return b.DefRange.Ptr()
}

func decodeScope(b *hcl.Block, c *hcl.BodyContent) (Scope, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	s := Scope{DeclRange: b.DefRange}
	globs := func(name string, dst *[]string, check func(string) string) {
		a := c.Attributes[name]
		if a == nil {
			return
		}
		items, d := stringListAttr(a)
		diags = append(diags, d...)
		for _, it := range items {
			msg := ""
			if it.val == "" {
				msg = "must not be empty"
			} else if _, err := path.Match(it.val, ""); err != nil {
				msg = "is not a valid glob pattern: " + err.Error()
			} else if check != nil {
				msg = check(it.val)
			}
			if msg != "" {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Invalid " + name + " entry",
					Detail:   fmt.Sprintf("%q %s.", it.val, msg),
					Subject:  it.rng.Ptr(),
				})
				continue
			}
			*dst = append(*dst, it.val)
		}
	}
	globs("executables", &s.Executables, func(v string) string {
		if !strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "*") {
			return "must be an absolute path or pattern"
		}
		return ""
	})
	globs("commands", &s.Commands, func(v string) string {
		if !strings.ContainsAny(v, "*?[") && len(v) > 15 {
			return "is longer than 15 bytes and can never match a comm (the kernel truncates it); use executables instead"
		}
		return ""
	})
	globs("systemd_units", &s.SystemdUnits, nil)
	globs("cgroups", &s.CgroupPrefix, func(v string) string {
		if !strings.HasPrefix(v, "/") {
			return `must be an absolute cgroup path such as "/system.slice/mcp.service"`
		}
		return ""
	})
	globs("mcp_servers", &s.MCPServers, nil)
	s.compile()
	if !s.hasCondition && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Empty scope block",
			Detail:   "A scope block needs at least one of executables, commands, systemd_units, cgroups or mcp_servers. Remove the block to apply the policy to every process.",
			Subject:  b.DefRange.Ptr(),
		})
	}
	return s, diags
}

// ---- attribute helpers ----

func typeError(a *hcl.Attribute, want string, detail string) *hcl.Diagnostic {
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Incorrect attribute value type",
		Detail:   fmt.Sprintf("Inappropriate value for attribute %q: %s required%s.", a.Name, want, detail),
		Subject:  a.Expr.Range().Ptr(),
		Context:  a.Range.Ptr(),
	}
}

func value(a *hcl.Attribute) (cty.Value, hcl.Diagnostics) {
	v, diags := a.Expr.Value(nil)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	if v.IsNull() {
		return cty.NilVal, hcl.Diagnostics{&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Missing value",
			Detail:   fmt.Sprintf("Attribute %q must not be null.", a.Name),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	if !v.IsWhollyKnown() {
		return cty.NilVal, hcl.Diagnostics{typeError(a, "a literal value", "")}
	}
	return v, nil
}

func stringAttr(a *hcl.Attribute) (string, hcl.Diagnostics) {
	v, diags := value(a)
	if diags.HasErrors() {
		return "", diags
	}
	if v.Type() != cty.String {
		return "", hcl.Diagnostics{typeError(a, "string", ", got "+v.Type().FriendlyName())}
	}
	return v.AsString(), nil
}

func boolAttr(a *hcl.Attribute, dst *bool) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	v, diags := value(a)
	if diags.HasErrors() {
		return diags
	}
	if v.Type() != cty.Bool {
		return hcl.Diagnostics{typeError(a, "bool", ", got "+v.Type().FriendlyName())}
	}
	*dst = v.True()
	return nil
}

func intAttr(a *hcl.Attribute, lo, hi int, dst *int) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	v, diags := value(a)
	if diags.HasErrors() {
		return diags
	}
	if v.Type() != cty.Number {
		return hcl.Diagnostics{typeError(a, "number", ", got "+v.Type().FriendlyName())}
	}
	bf := v.AsBigFloat()
	if !bf.IsInt() || bf.Cmp(big.NewFloat(float64(lo))) < 0 || bf.Cmp(big.NewFloat(float64(hi))) > 0 {
		return hcl.Diagnostics{&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Value out of range",
			Detail:   fmt.Sprintf("Attribute %q must be a whole number from %d to %d, got %s.", a.Name, lo, hi, bf.Text('g', 10)),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	n, _ := bf.Int64()
	*dst = int(n)
	return nil
}

var dayPrefix = regexp.MustCompile(`^(\d+)d(.*)$`)

// ParseDuration parses a Go duration ("90m", "1h30m") with an optional
// leading day count ("7d", "1d12h").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if m := dayPrefix.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 32)
		if err != nil || n > 100000 {
			return 0, fmt.Errorf("invalid day count in %q", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = m[2]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("parse duration: %w", err)
	}
	return days + d, nil
}

func durationAttr(a *hcl.Attribute, lo, hi time.Duration, dst *time.Duration) hcl.Diagnostics {
	if a == nil {
		return nil
	}
	s, diags := stringAttr(a)
	if diags.HasErrors() {
		return diags
	}
	d, err := ParseDuration(s)
	if err != nil || d < lo || d > hi {
		why := fmt.Sprintf("must be between %s and %s", fmtDuration(lo), fmtDuration(hi))
		if err != nil {
			why = "is not a duration"
		}
		return hcl.Diagnostics{&hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid duration",
			Detail:   fmt.Sprintf("%q %s. Write a duration such as \"30m\", \"24h\" or \"7d\".", s, why),
			Subject:  a.Expr.Range().Ptr(),
		}}
	}
	*dst = d
	return nil
}

func fmtDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return strings.TrimSuffix(strings.TrimSuffix(d.String(), "0s"), "0m")
}

type item struct {
	val string
	rng hcl.Range
}

// stringListAttr decodes a list of strings, keeping the range of each
// element of a literal list for diagnostics.
func stringListAttr(a *hcl.Attribute) ([]item, hcl.Diagnostics) {
	if tup, ok := a.Expr.(*hclsyntax.TupleConsExpr); ok {
		var diags hcl.Diagnostics
		var out []item
		for _, e := range tup.Exprs {
			v, d := e.Value(nil)
			diags = append(diags, d...)
			if d.HasErrors() {
				continue
			}
			if v.IsNull() || !v.IsKnown() || v.Type() != cty.String {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Incorrect attribute value type",
					Detail:   fmt.Sprintf("Inappropriate value for attribute %q: every element must be a string.", a.Name),
					Subject:  e.Range().Ptr(),
					Context:  a.Range.Ptr(),
				})
				continue
			}
			out = append(out, item{val: v.AsString(), rng: e.Range()})
		}
		return out, diags
	}
	v, diags := value(a)
	if diags.HasErrors() {
		return nil, diags
	}
	lv, err := convert.Convert(v, cty.List(cty.String))
	if err != nil || lv.IsNull() {
		return nil, hcl.Diagnostics{typeError(a, "list of string", "")}
	}
	var out []item
	for it := lv.ElementIterator(); it.Next(); {
		_, e := it.Element()
		if e.IsNull() {
			return nil, hcl.Diagnostics{typeError(a, "list of string", "")}
		}
		out = append(out, item{val: e.AsString(), rng: a.Expr.Range()})
	}
	return out, nil
}

// domainsAttr decodes and normalises a list of domains.
func domainsAttr(a *hcl.Attribute) ([]string, hcl.Diagnostics) {
	if a == nil {
		return nil, nil
	}
	items, diags := stringListAttr(a)
	var out []string
	for _, it := range items {
		raw := strings.TrimSpace(it.val)
		d, ok := mail.NormalizeDomain(raw)
		msg := ""
		switch {
		case strings.Contains(raw, "*"):
			msg = "has a wildcard, which is not needed: a domain always includes its subdomains, so write \"" + strings.TrimLeft(raw, "@*.") + "\""
		case strings.Count(raw, "@") > 1 || (strings.Contains(raw, "@") && !strings.HasPrefix(raw, "@")):
			msg = "is an address, not a domain; write the domain, such as \"@company.com\""
		case !ok:
			msg = "is not a valid domain name; write a domain such as \"company.com\" or \"@company.com\""
		case !strings.Contains(d, "."):
			msg = "is a top-level domain; allowing it would allow the whole TLD"
		}
		if msg != "" {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Malformed domain",
				Detail:   fmt.Sprintf("%q in %s %s.", it.val, a.Name, msg),
				Subject:  it.rng.Ptr(),
			})
			continue
		}
		out = append(out, d)
	}
	return out, diags
}

func unknownValue(a *hcl.Attribute, what, got string, valid []string) *hcl.Diagnostic {
	detail := fmt.Sprintf("%q is not a valid %s. Valid values: %s.", got, what, quoteList(valid))
	if s := suggest(got, valid); s != "" {
		detail = fmt.Sprintf("%q is not a valid %s. Did you mean %q? Valid values: %s.", got, what, s, quoteList(valid))
	}
	return &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  "Unknown " + what,
		Detail:   detail,
		Subject:  a.Expr.Range().Ptr(),
	}
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// suggest returns the valid value closest to got, if close enough.
func suggest(got string, valid []string) string {
	best, bestD := "", 3
	for _, v := range valid {
		if d := editDistance(strings.ToLower(got), v); d < bestD {
			best, bestD = v, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// duplicateNames reports policies that share a name, pointing at both.
func duplicateNames(ps []*Policy) hcl.Diagnostics {
	var diags hcl.Diagnostics
	first := map[string]*Policy{}
	for _, p := range ps {
		f, dup := first[p.Name]
		if !dup {
			first[p.Name] = p
			continue
		}
		diags = append(diags,
			&hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate policy name",
				Detail:   fmt.Sprintf("A policy named %q is already defined at %s. Policy names must be unique across all policy files.", p.Name, f.DeclRange.String()),
				Subject:  p.DeclRange.Ptr(),
			},
			&hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Duplicate policy name",
				Detail:   fmt.Sprintf("The policy %q defined here is defined again at %s.", p.Name, p.DeclRange.String()),
				Subject:  f.DeclRange.Ptr(),
			})
	}
	return diags
}
