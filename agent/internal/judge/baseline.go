package judge

import "github.com/aarsm/aarsm/agent/internal/policy"

// Baseline is what the behavioural baseline says of a message's sender
// (the package it runs, per build): set by the agent only when the message
// goes where the package was never seen to send.
type Baseline struct {
	// Package is the build sending now, e.g. "npm:postmark-mcp@1.0.17
	// sha256:…"; Previous, for a rug pull, the build the baseline learned.
	Package  string
	Previous string
	// RugPull: the package's baseline was learned under another version or
	// content than it runs now, and this message leaves it.
	RugPull bool
	// Unseen are the destination (host:port) and recipient domains no
	// build of the package was seen to use.
	Unseen []string
}

// baselineFindings reports a baseline deviation at the policy's level for
// it; alertOnly is true when that level only reports.
func baselineFindings(p *policy.Policy, b *Baseline, add func(rule, value, where string)) (found, alertOnly bool) {
	if b == nil || len(b.Unseen) == 0 {
		return false, false
	}
	rule, level, where := RuleUnseenDestinations, p.Rules.UnseenDestinations, b.Package
	if b.RugPull {
		rule, level, where = RuleRugPull, p.Rules.RugPull, b.Package+" (learned: "+b.Previous+")"
	}
	if level == policy.LevelOff || level == "" {
		return false, false
	}
	for _, v := range b.Unseen {
		add(rule, v, where)
	}
	return true, level == policy.LevelAlert
}
