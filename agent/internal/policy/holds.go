package policy

import (
	"fmt"
	"time"

	"github.com/hashicorp/hcl/v2"
)

// Holds: while the agent judges a write that may carry mail, or examines a
// file a process is about to run, the kernel keeps the process stopped.
// Every hold ends by its deadline whatever the agent does: judged, or by
// the fail mode of the policies whose scope holds the process.

// FailMode is what happens to a hold that nobody judged by its deadline.
type FailMode string

// Fail modes.
const (
	// FailOpen resumes the process: its write goes out unjudged (and the
	// journal says so). Nothing on the host is ever frozen by the agent.
	FailOpen FailMode = "open"
	// FailClosed kills the process and destroys its sockets: nothing of
	// the held write leaves.
	FailClosed FailMode = "closed"
)

// Defaults and bounds of the hold settings.
const (
	// DefaultExecHoldTimeout: examining a new executable (node's symbol
	// table is 90 MB) takes up to about a second on a loaded host.
	DefaultExecHoldTimeout = 5 * time.Second
	// DefaultWriteHoldTimeout: a write is judged in well under a
	// millisecond; its response (a unit stop over D-Bus) in tens.
	DefaultWriteHoldTimeout = time.Second
	DefaultFailMode         = FailOpen
	minHoldTimeout          = 10 * time.Millisecond
	maxHoldTimeout          = time.Minute
)

// HoldSettings are the hold deadlines and fail mode. A zero field means
// "not set here" (inherited: policy → agent block → default).
type HoldSettings struct {
	FailMode     FailMode
	ExecTimeout  time.Duration
	WriteTimeout time.Duration
}

// inherit fills the fields not set in h from parent.
func (h HoldSettings) inherit(parent HoldSettings) HoldSettings {
	if h.FailMode == "" {
		h.FailMode = parent.FailMode
	}
	if h.ExecTimeout == 0 {
		h.ExecTimeout = parent.ExecTimeout
	}
	if h.WriteTimeout == 0 {
		h.WriteTimeout = parent.WriteTimeout
	}
	return h
}

// Combine returns the settings of a process held under both h and o: the
// stricter of each (fail closed wins, the shorter deadline wins).
func (h HoldSettings) Combine(o HoldSettings) HoldSettings {
	if o.FailMode == FailClosed {
		h.FailMode = FailClosed
	}
	if o.ExecTimeout < h.ExecTimeout {
		h.ExecTimeout = o.ExecTimeout
	}
	if o.WriteTimeout < h.WriteTimeout {
		h.WriteTimeout = o.WriteTimeout
	}
	return h
}

// DefaultHoldSettings are the settings when neither an agent block nor a
// policy says otherwise.
func DefaultHoldSettings() HoldSettings {
	return HoldSettings{FailMode: DefaultFailMode, ExecTimeout: DefaultExecHoldTimeout, WriteTimeout: DefaultWriteHoldTimeout}
}

// Agent is the agent block: settings of the agent itself, at most one in
// the whole policy directory.
type Agent struct {
	Holds    HoldSettings
	Baseline BaselineSettings
	// DeclRange is where the block is, nil when there is none.
	DeclRange *hcl.Range
}

// Holds returns the hold settings in force for policy p.
func (set *Set) Holds(p *Policy) HoldSettings {
	return p.Holds.inherit(set.Agent.Holds.inherit(DefaultHoldSettings()))
}

var holdAttributes = []hcl.AttributeSchema{{Name: "fail_mode"}, {Name: "exec_hold_timeout"}, {Name: "write_hold_timeout"}}

var agentSchema = &hcl.BodySchema{Attributes: append(append([]hcl.AttributeSchema{}, holdAttributes...),
	hcl.AttributeSchema{Name: "baseline"}, hcl.AttributeSchema{Name: "baseline_first_learn"})}

// decodeHolds reads the hold attributes of a policy or agent block.
func decodeHolds(attrs hcl.Attributes, h *HoldSettings) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a := attrs["fail_mode"]; a != nil {
		s, d := stringAttr(a)
		diags = append(diags, d...)
		switch FailMode(s) {
		case FailOpen, FailClosed:
			h.FailMode = FailMode(s)
		default:
			if !d.HasErrors() {
				diags = append(diags, unknownValue(a, "fail_mode", s, []string{string(FailOpen), string(FailClosed)}))
			}
		}
	}
	diags = append(diags, durationAttr(attrs["exec_hold_timeout"], minHoldTimeout, maxHoldTimeout, &h.ExecTimeout)...)
	diags = append(diags, durationAttr(attrs["write_hold_timeout"], minHoldTimeout, maxHoldTimeout, &h.WriteTimeout)...)
	return diags
}

// decodeAgent decodes an agent block into set, refusing a second one.
func (set *Set) decodeAgent(b *hcl.Block) hcl.Diagnostics {
	if set.Agent.DeclRange != nil {
		return hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "Duplicate agent block",
			Detail:   fmt.Sprintf("Only one agent block is allowed in the policy directory; the first one is at %s.", set.Agent.DeclRange.String()),
			Subject:  b.DefRange.Ptr(),
		}}
	}
	content, diags := b.Body.Content(agentSchema)
	var h HoldSettings
	diags = append(diags, decodeHolds(content.Attributes, &h)...)
	var bs BaselineSettings
	diags = append(diags, decodeBaselineSettings(content.Attributes, &bs)...)
	if diags.HasErrors() {
		return diags
	}
	rng := b.DefRange
	set.Agent = Agent{Holds: h, Baseline: bs, DeclRange: &rng}
	return diags
}
