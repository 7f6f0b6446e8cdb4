package policy

import (
	"fmt"
	"regexp"

	"github.com/hashicorp/hcl/v2"
)

// Decoding of a policy file: its email_security_policy blocks and its
// agent block (holds.go). Each block inside a policy is decoded by its own
// function: scope (decode_scope.go); allowed_destinations,
// blocked_actions, content_protection and bulk_email (decode_rules.go);
// response (decode_response.go). The attribute values are read by the
// helpers of decode_attr.go.

// The blocks of a policy file.
const (
	blockPolicy       = "email_security_policy"
	blockAgent        = "agent"
	blockScope        = "scope"
	blockDestinations = "allowed_destinations"
	blockRules        = "blocked_actions"
	blockContent      = "content_protection"
	blockBulk         = "bulk_email"
	blockResponse     = "response"
)

var rootSchema = &hcl.BodySchema{
	Blocks: []hcl.BlockHeaderSchema{{Type: blockPolicy, LabelNames: []string{"name"}}, {Type: blockAgent},
		{Type: blockEgress, LabelNames: []string{"name"}}},
}

// policyBlock is a block an email_security_policy may hold.
type policyBlock struct {
	name       string
	repeatable bool // else at most one per policy
	schema     *hcl.BodySchema
	decode     func(p *Policy, b *hcl.Block, c *hcl.BodyContent) hcl.Diagnostics
}

// policyBlocks, in the order of the policy's schema.
var policyBlocks = []policyBlock{
	{blockScope, true, scopeSchema, decodeScope},
	{blockDestinations, false, destinationsSchema, decodeDestinations},
	{blockRules, false, rulesSchema(blockedActions, true), decodeRules(blockedActions)},
	{blockBulk, false, bulkSchema, decodeBulk},
	{blockContent, false, rulesSchema(contentProtection, false), decodeRules(contentProtection)},
	{blockResponse, false, responseSchema, decodeResponse},
}

var policySchema = func() *hcl.BodySchema {
	s := &hcl.BodySchema{Attributes: append([]hcl.AttributeSchema{{Name: "description"}, {Name: "mode"}}, holdAttributes...)}
	for _, pb := range policyBlocks {
		s.Blocks = append(s.Blocks, hcl.BlockHeaderSchema{Type: pb.name})
	}
	return s
}()

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
		if b.Type == blockEgress {
			e, d := decodeEgress(b)
			diags = append(diags, d...)
			if !d.HasErrors() {
				set.Egress = append(set.Egress, e)
			}
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

// decodePolicy decodes an email_security_policy block: its name and
// attributes, then its blocks in source order, each by its policyBlock.
func decodePolicy(b *hcl.Block) (*Policy, hcl.Diagnostics) {
	p := newPolicy(b)
	diags := checkPolicyName(b)
	content, d := b.Body.Content(policySchema)
	diags = append(diags, d...)
	diags = append(diags, decodePolicyAttributes(p, content.Attributes)...)
	diags = append(diags, decodeHolds(content.Attributes, &p.Holds)...)

	seen := map[string]*hcl.Block{}
	for _, sb := range content.Blocks {
		pb := findPolicyBlock(sb.Type)
		if pb == nil {
			continue // not in the schema: Content reported it
		}
		if first, dup := seen[sb.Type]; dup && !pb.repeatable {
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
		bc, d := sb.Body.Content(pb.schema)
		diags = append(diags, d...)
		diags = append(diags, pb.decode(p, sb, bc)...)
	}
	p.Effects = p.Action.Effects() // the one use of effects here: actionEffects (policy.go) knows them
	diags = append(diags, checkDestinations(p, b, seen[blockDestinations] != nil)...)
	return p, diags
}

func findPolicyBlock(name string) *policyBlock {
	for i := range policyBlocks {
		if policyBlocks[i].name == name {
			return &policyBlocks[i]
		}
	}
	return nil
}

// newPolicy is the policy of block b before its content is read: every
// setting at its default.
func newPolicy(b *hcl.Block) *Policy {
	return &Policy{
		Name:      b.Labels[0],
		DeclRange: b.DefRange,
		Mode:      ModeEnforce,
		Rules: Rules{
			UnauthorizedBcc: true, UndeclaredRecipients: true, ExternalForwarding: true, BulkToUnknown: true, UnknownRecipients: true,
			UnreadableMail: true, APIKeys: true, Credentials: true, SensitiveAttachments: true,
			UnseenDestinations: LevelAlert, RugPull: LevelBlock,
		},
		Bulk:          Bulk{MaxMessages: DefaultBulkMaxMessages, MaxRecipients: DefaultBulkMaxRecipients, Window: DefaultBulkWindow},
		Action:        DefaultAction,
		Priority:      DefaultPriority,
		QuarantineFor: DefaultQuarantineDuration,
	}
}

func checkPolicyName(b *hcl.Block) hcl.Diagnostics {
	if policyName.MatchString(b.Labels[0]) {
		return nil
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Invalid policy name",
		Detail:   fmt.Sprintf("%q is not a valid policy name: use 1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit.", b.Labels[0]),
		Subject:  labelRange(b, 0),
	}}
}

// decodePolicyAttributes reads the policy's own attributes but the hold
// settings (decodeHolds).
func decodePolicyAttributes(p *Policy, attrs hcl.Attributes) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a := attrs["description"]; a != nil {
		var d hcl.Diagnostics
		p.Description, d = stringAttr(a)
		diags = append(diags, d...)
	}
	if a := attrs["mode"]; a != nil {
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
	return diags
}

// checkDestinations warns about a policy under which every recipient is
// unknown: no allowed_destinations block (hasBlock false), or one that
// allows no domain, while unknown_recipient_domains is on.
func checkDestinations(p *Policy, b *hcl.Block, hasBlock bool) hcl.Diagnostics {
	if !p.Rules.UnknownRecipients || p.Internal.Len()+p.Whitelisted.Len() > 0 {
		return nil
	}
	what := "has no " + blockDestinations + " block"
	if hasBlock {
		what = "allows no domain"
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagWarning,
		Summary:  "Every recipient is external",
		Detail: fmt.Sprintf("Policy %q %s, so every recipient of every message is an unknown_recipient_domain violation. "+
			"List your domains in "+blockDestinations+", or set "+blockRules+".unknown_recipient_domains = false.", p.Name, what),
		Subject: b.DefRange.Ptr(),
	}}
}

func labelRange(b *hcl.Block, i int) *hcl.Range {
	if i < len(b.LabelRanges) {
		return b.LabelRanges[i].Ptr()
	}
	return b.DefRange.Ptr()
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
