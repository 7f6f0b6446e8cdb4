package enforce

import (
	"errors"
	"slices"
	"time"

	"github.com/aarsm/aarsm/agent/internal/baseline"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// The behavioural baseline: per MCP server package and build, the
// destinations and recipient domains it was seen to use (package
// baseline). Messages of MCP servers are recorded while their package
// learns and checked otherwise; a deviation goes to the judge
// (judge.Baseline: rules unseen_destinations, rug_pull).

// openBaseline opens the store under the state directory; none without a
// state directory or with baseline = "off". A corrupt file is logged (the
// store moved it aside and starts empty).
func (a *Agent) openBaseline(set *policy.Set) {
	bs := set.Baseline()
	if a.opts.StateDir == "" || bs.Mode == policy.BaselineOff {
		return
	}
	st, err := baseline.Open(baseline.Dir(a.opts.StateDir), baseline.Options{
		Mode: baselineMode(bs.Mode), FirstLearn: bs.FirstLearn, Log: a.log,
	})
	if errors.Is(err, baseline.ErrCorrupt) {
		a.log.Error("the baseline file was corrupt: moved aside, starting an empty baseline", "err", err)
	} else if err != nil {
		a.log.Error("no behavioural baseline: it cannot be kept", "err", err)
		return
	}
	a.base = st
}

// applyBaseline puts the baseline settings of a reloaded policy set in
// force (an agent started with baseline = "off" keeps none until restart).
func (a *Agent) applyBaseline(set *policy.Set) {
	bs := set.Baseline()
	a.baseOff.Store(bs.Mode == policy.BaselineOff)
	if a.base != nil && bs.Mode != policy.BaselineOff {
		a.base.SetMode(baselineMode(bs.Mode))
	}
}

func baselineMode(m policy.BaselineMode) baseline.Mode {
	if m == policy.BaselineEnforce {
		return baseline.ModeEnforce
	}
	return baseline.ModeLearn
}

// baselineOf records (complete messages) or checks (messages in progress)
// a message of an MCP server against its package's baseline and returns
// the deviation, nil when none.
func (a *Agent) baselineOf(pid uint32, dest string, msg *mail.Message, early bool, now time.Time) *judge.Baseline {
	if a.base == nil || a.baseOff.Load() || dest == "" {
		return nil
	}
	s := a.pipe.MCP(pid)
	if s == nil || s.PackageErr != nil {
		return nil
	}
	key := baseline.KeyOf(s.Package)
	domains := recipientDomains(msg)
	var r baseline.Result
	if early {
		r = a.base.Check(key, dest, domains, now)
	} else {
		r = a.base.Observe(key, dest, domains, now)
	}
	if r.FirstChange && !r.Violation() {
		a.log.Info("a package changed since its baseline was learned, and keeps to it", "package", r.Key.String(), "previous", r.Previous.String())
	}
	if !r.Violation() {
		return nil
	}
	b := &judge.Baseline{Package: r.Key.String(), RugPull: r.Verdict == baseline.RugPull}
	if b.RugPull {
		b.Previous = r.Previous.String()
	}
	if r.UnseenDest != "" {
		b.Unseen = append(b.Unseen, r.UnseenDest)
	}
	b.Unseen = append(b.Unseen, r.UnseenDomains...)
	return b
}

// recipientDomains are the distinct domains of a message's recipients.
func recipientDomains(m *mail.Message) []string {
	var out []string
	for _, r := range m.Recipients() {
		if d := r.Domain(); d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out
}

// closeBaseline writes what the baseline learned.
func (a *Agent) closeBaseline() {
	if a.base == nil {
		return
	}
	if err := a.base.Close(); err != nil {
		a.log.Error("cannot save the behavioural baseline", "err", err)
	}
}
