package enforce

import (
	"bytes"
	"maps"
	"slices"

	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/parse/mail"
	"github.com/aarsm/aarsm/agent/internal/probe"
)

// quarantineCopy is what the vault keeps of a blocked message whose
// verdict quarantines (act.Plan.Keep): the message whole, and why, from
// whom and to where it was stopped. The message is copied: the vault
// writes it in the background, while the parser goes on with the
// connection's buffers.
//
// Only the vault gets the message's content; the journal gets the verdict
// and the entry's id (AARSM_ACTION_DETAILS "quarantine message=ID").
func quarantineCopy(ev *probe.Event, j judged) *vault.Entry {
	v := j.verdict
	return &vault.Entry{
		Header: vault.Header{
			Policy:     v.Policy,
			Rules:      slices.Clone(v.Rules),
			Violations: slices.Clone(v.Violations),
			PID:        ev.PID,
			Comm:       ev.Comm(),
			Exe:        j.ctx.Exe,
			Unit:       j.ctx.Unit,
			Cgroup:     j.ctx.CgroupPath,
			Dest:       j.ctx.Dest,
		},
		Message: cloneMessage(j.msg),
	}
}

// cloneMessage copies m deeply enough that nothing it holds is shared
// with the parser (strings are immutable; slices and maps are copied).
func cloneMessage(m *mail.Message) *mail.Message {
	if m == nil {
		return nil
	}
	c := *m
	c.From = slices.Clone(m.From)
	c.To = slices.Clone(m.To)
	c.Cc = slices.Clone(m.Cc)
	c.Bcc = slices.Clone(m.Bcc)
	c.ReplyTo = slices.Clone(m.ReplyTo)
	c.EnvelopeTo = slices.Clone(m.EnvelopeTo)
	c.Extra = slices.Clone(m.Extra)
	if m.Attachments != nil {
		c.Attachments = make([]mail.Attachment, len(m.Attachments))
		for i, a := range m.Attachments {
			a.Content = bytes.Clone(a.Content)
			c.Attachments[i] = a
		}
	}
	if m.Headers != nil {
		c.Headers = maps.Clone(m.Headers)
		for k, vs := range c.Headers {
			c.Headers[k] = slices.Clone(vs)
		}
	}
	return &c
}
