package policy

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// The blocks of a policy that say what a violation is: the domains mail
// may go to (allowed_destinations), the detections on or off
// (blocked_actions, content_protection), the bulk thresholds (bulk_email).

var destinationsSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "internal_domains"}, {Name: "whitelisted_external"},
}}

func decodeDestinations(p *Policy, _ *hcl.Block, c *hcl.BodyContent) hcl.Diagnostics {
	internal, diags := domainsAttr(c.Attributes["internal_domains"])
	whitelisted, d := domainsAttr(c.Attributes["whitelisted_external"])
	diags = append(diags, d...)
	p.Internal = NewDomainSet(internal...)
	p.Whitelisted = NewDomainSet(whitelisted...)
	return diags
}

// ruleAttribute is a bool attribute that turns one detection on or off.
type ruleAttribute struct {
	name string
	rule func(*Rules) *bool
}

var blockedActions = []ruleAttribute{
	{"unauthorized_bcc_recipients", func(r *Rules) *bool { return &r.UnauthorizedBcc }},
	{"undeclared_recipients", func(r *Rules) *bool { return &r.UndeclaredRecipients }},
	{"external_email_forwarding", func(r *Rules) *bool { return &r.ExternalForwarding }},
	{"bulk_email_to_unknown_domains", func(r *Rules) *bool { return &r.BulkToUnknown }},
	{"unknown_recipient_domains", func(r *Rules) *bool { return &r.UnknownRecipients }},
	{"unreadable_mail_requests", func(r *Rules) *bool { return &r.UnreadableMail }},
}

var contentProtection = []ruleAttribute{
	{"block_api_keys_in_emails", func(r *Rules) *bool { return &r.APIKeys }},
	{"block_credentials_in_emails", func(r *Rules) *bool { return &r.Credentials }},
	{"quarantine_sensitive_attachments", func(r *Rules) *bool { return &r.SensitiveAttachments }},
}

// rulesSchema is the schema of a block of rule attributes (and, for
// blocked_actions, of the level attributes).
func rulesSchema(attrs []ruleAttribute, withLevels bool) *hcl.BodySchema {
	s := &hcl.BodySchema{}
	for _, a := range attrs {
		s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: a.name})
	}
	if withLevels {
		for _, a := range levelAttributes {
			s.Attributes = append(s.Attributes, hcl.AttributeSchema{Name: a.name})
		}
	}
	return s
}

// decodeRules returns the decoder of a block of rule attributes.
func decodeRules(attrs []ruleAttribute) func(*Policy, *hcl.Block, *hcl.BodyContent) hcl.Diagnostics {
	return func(p *Policy, _ *hcl.Block, c *hcl.BodyContent) hcl.Diagnostics {
		var diags hcl.Diagnostics
		for _, a := range attrs {
			diags = append(diags, boolAttr(c.Attributes[a.name], a.rule(&p.Rules))...)
		}
		return append(diags, decodeLevels(c.Attributes, &p.Rules)...)
	}
}

var bulkSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "max_messages"}, {Name: "max_recipients"}, {Name: "window"},
}}

func decodeBulk(p *Policy, _ *hcl.Block, c *hcl.BodyContent) hcl.Diagnostics {
	diags := intAttr(c.Attributes["max_messages"], 1, 1_000_000, &p.Bulk.MaxMessages)
	diags = append(diags, intAttr(c.Attributes["max_recipients"], 1, 1_000_000, &p.Bulk.MaxRecipients)...)
	diags = append(diags, durationAttr(c.Attributes["window"], time.Second, 7*24*time.Hour, &p.Bulk.Window)...)
	return diags
}
