package policy

import (
	"time"

	"github.com/hashicorp/hcl/v2"
)

// The behavioural baseline ("trust but verify"): what each package was
// seen to do (destinations, recipient domains) per build; the agent block
// says whether the agent learns or checks, a policy how much a deviation
// weighs.

// BaselineMode is the agent's use of the baseline.
type BaselineMode string

// Baseline modes.
const (
	BaselineLearn   BaselineMode = "learn"   // every package learns; nothing is flagged
	BaselineEnforce BaselineMode = "enforce" // packages learn only in a window; deviations are flagged
	BaselineOff     BaselineMode = "off"     // no baseline kept
)

// DefaultBaselineFirstLearn is how long a package first seen by an
// enforcing agent learns.
const DefaultBaselineFirstLearn = time.Hour

// BaselineSettings are the agent block's baseline settings.
type BaselineSettings struct {
	Mode       BaselineMode  // "" means BaselineLearn
	FirstLearn time.Duration // -1: never (baseline_first_learn = "0s")
}

// Level is how much a finding weighs in a policy.
type Level string

// Levels.
const (
	LevelOff   Level = "off"   // not checked
	LevelAlert Level = "alert" // reported; the message goes
	LevelBlock Level = "block" // the policy's violation_action
)

// levelAttribute is a string attribute of blocked_actions that sets the
// level of a detection.
type levelAttribute struct {
	name  string
	level func(*Rules) *Level
}

var levelAttributes = []levelAttribute{
	{"unseen_destinations", func(r *Rules) *Level { return &r.UnseenDestinations }},
	{"rug_pull", func(r *Rules) *Level { return &r.RugPull }},
}

var baselineModes = []string{string(BaselineLearn), string(BaselineEnforce), string(BaselineOff)}

var levels = []string{string(LevelOff), string(LevelAlert), string(LevelBlock)}

func decodeLevels(attrs hcl.Attributes, r *Rules) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, la := range levelAttributes {
		a := attrs[la.name]
		if a == nil {
			continue
		}
		s, d := stringAttr(a)
		diags = append(diags, d...)
		if d.HasErrors() {
			continue
		}
		switch Level(s) {
		case LevelOff, LevelAlert, LevelBlock:
			*la.level(r) = Level(s)
		default:
			diags = append(diags, unknownValue(a, la.name, s, levels))
		}
	}
	return diags
}

func decodeBaselineSettings(attrs hcl.Attributes, b *BaselineSettings) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a := attrs["baseline"]; a != nil {
		s, d := stringAttr(a)
		diags = append(diags, d...)
		switch BaselineMode(s) {
		case BaselineLearn, BaselineEnforce, BaselineOff:
			b.Mode = BaselineMode(s)
		default:
			if !d.HasErrors() {
				diags = append(diags, unknownValue(a, "baseline", s, baselineModes))
			}
		}
	}
	if a := attrs["baseline_first_learn"]; a != nil {
		var d time.Duration
		diags = append(diags, durationAttr(a, 0, 30*24*time.Hour, &d)...)
		b.FirstLearn = d
		if d == 0 {
			b.FirstLearn = -1
		}
	}
	return diags
}

// Baseline returns the baseline settings in force (defaults filled in).
func (set *Set) Baseline() BaselineSettings {
	b := set.Agent.Baseline
	if b.Mode == "" {
		b.Mode = BaselineLearn
	}
	if b.FirstLearn == 0 {
		b.FirstLearn = DefaultBaselineFirstLearn
	}
	return b
}
