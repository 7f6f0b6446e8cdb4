package policy

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// The response block of a policy: what a violation makes the agent do (the
// action, whose effects policy.go lists), the priority of its alert, how
// long a quarantined copy is kept.

var responseSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
	{Name: "violation_action"}, {Name: "alert_priority"}, {Name: "quarantine_duration"},
}}

func decodeResponse(p *Policy, _ *hcl.Block, c *hcl.BodyContent) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a := c.Attributes["violation_action"]; a != nil {
		s, d := stringAttr(a)
		diags = append(diags, d...)
		if !Action(s).valid() {
			if !d.HasErrors() {
				names := make([]string, 0, len(Actions()))
				for _, x := range Actions() {
					names = append(names, string(x))
				}
				diags = append(diags, unknownValue(a, "violation_action", s, names))
			}
		} else {
			p.Action = Action(s)
		}
	}
	if a := c.Attributes["alert_priority"]; a != nil {
		s, d := stringAttr(a)
		diags = append(diags, d...)
		if pr, ok := priorityNames[s]; ok {
			p.Priority = pr
		} else if !d.HasErrors() {
			diags = append(diags, unknownValue(a, "alert_priority", s, []string{"low", "medium", "high", "critical"}))
		}
	}
	diags = append(diags, durationAttr(c.Attributes["quarantine_duration"], time.Second, 365*24*time.Hour, &p.QuarantineFor)...)
	return diags
}
