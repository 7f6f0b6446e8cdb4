package enforce

import (
	"github.com/aarsm/aarsm/agent/internal/journal"
	"github.com/aarsm/aarsm/agent/internal/judge"
	"github.com/aarsm/aarsm/agent/internal/policy"
	"github.com/aarsm/aarsm/agent/internal/probe"
)

// reportUnmonitored writes the journal entry of a process doing TLS the
// sensor cannot read (probe.Unmonitored: once per executable and stack).
// It runs on the sensor's discovery goroutine; the Logger is safe for
// concurrent use.
func (a *Agent) reportUnmonitored(u probe.Unmonitored) {
	if a.opts.Verdicts == nil {
		return
	}
	v := journal.Verdict{
		Decision:    judge.Alert,
		Priority:    policy.PriorityWarning,
		PID:         int(u.PID),
		Exe:         u.Exe,
		Unmonitored: journal.Unmonitored{Stack: u.Stack, Reason: u.Reason},
	}
	if comm, err := a.procs.Comm(u.PID); err == nil {
		v.Comm = comm
	}
	if cg, err := a.procs.CgroupPath(u.PID); err == nil {
		v.Cgroup = cg
	}
	if err := a.opts.Verdicts.Log(v); err != nil {
		a.log.Warn("cannot record unmonitored process", "pid", u.PID, "err", err)
	}
}

// Unmonitored returns the last processes reported unmonitored, oldest
// first (bounded: probe.MaxUnmonitored).
func (a *Agent) Unmonitored() []probe.Unmonitored { return a.sensor.Unmonitored() }
