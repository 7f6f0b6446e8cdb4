package act

import (
	"context"
	"errors"
	"fmt"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/aarsm/aarsm/agent/internal/act/vault"
	"github.com/aarsm/aarsm/agent/internal/policy"
)

// Target is the process a verdict is about.
type Target struct {
	PID       uint32
	StartTime uint64 // clock ticks since boot, as in /proc/PID/stat
	// CgroupID is the process's cgroup v2 id as the sensor saw it; used for
	// the quarantine when the process is in no unit, or its unit cannot be
	// read any more.
	CgroupID uint64
	// CgroupPath, if known, is the process's cgroup v2 path (below the
	// mount, as in /proc/PID/cgroup) as the caller read it: its unit is
	// found there rather than by reading /proc/PID/cgroup again, and it is
	// kept with a quarantine of CgroupID, to find the cgroup again after a
	// reboot.
	CgroupPath string
}

// Plan is what to do about one verdict.
type Plan struct {
	// Actions are the verdict's effects, in any order and possibly
	// repeated; an unknown effect is reported as an error.
	Actions []policy.Effect
	// QuarantineFor is how long a "quarantine" cuts the process's unit
	// (or cgroup) off the network and keeps Keep; 0 means neither.
	QuarantineFor time.Duration
	// Keep is the copy of the blocked message a "quarantine" keeps in the
	// vault for QuarantineFor (its id and times are set by Execute).
	Keep *vault.Entry
	// StopUnit also stops the process's systemd unit after a "terminate".
	StopUnit bool
}

// Done is one response carried out: its effect and what it did.
type Done struct {
	Effect policy.Effect
	// Detail says what was done, as space-separated key=value pairs:
	// "sockets=2" (block; "sockets=2 kept_accepted=1" when it spared
	// connections local clients made to the process: BlockSockets), "pid=4242" or "stop-unit=x.service"
	// (terminate), "cgroup=1234 unit=x.service until=2026-11-02T10:00:00Z"
	// (quarantine); empty for alert.
	Detail string
}

// String returns the effect, a space and the detail, e.g. "block
// sockets=2", or the effect alone when there is no detail.
func (d Done) String() string {
	if d.Detail == "" {
		return string(d.Effect)
	}
	return string(d.Effect) + " " + d.Detail
}

// Executor carries out plans. The zero value can kill and destroy
// sockets; Quarantine and Systemd enable the other responses.
type Executor struct {
	// Quarantine, if set, is where "quarantine" adds cgroups.
	Quarantine *Quarantine
	// Vault, if set, is where "quarantine" keeps the message (Plan.Keep).
	Vault *vault.Writer
	// Systemd, if set, is the manager StopUnit talks to (see DialSystemd).
	Systemd *sdbus.Conn
	// CgroupMount is the cgroup v2 mount; empty means CgroupMount().
	CgroupMount string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Execute does the plan's actions to t and returns, for the journal
// (AARSM_ACTIONS and AARSM_ACTION_DETAILS), each response actually carried
// out, in the order done: e.g. {quarantine "message=ID"}, {quarantine
// "cgroup=1234 unit=x.service until=2026-11-02T10:00:00Z"}, {block
// "sockets=2"}, {terminate "pid=4242"}, {terminate "stop-unit=x.service"},
// {alert ""}. Every response is attempted even if an earlier one failed;
// the errors are joined.
//
// Order: the message is handed to the vault (written in the background:
// nothing here waits on the disk), then the network quarantine (while the
// process, and with it its unit, can still be looked up, and so that it
// cannot open a new connection once its sockets are gone), then the sockets are destroyed (block:
// BlockSockets, which keeps the connections local clients made to the process), then the
// process is killed (terminate), then its unit's stop is queued
// (Plan.StopUnit with terminate; not waited for), then "alert" is recorded (raising it is the caller's).
// Resuming a held process is the caller's job, after Execute.
func (e *Executor) Execute(ctx context.Context, p Plan, t Target) ([]Done, error) {
	var done []Done
	var errs []error
	want := make(map[policy.Effect]bool)
	for _, a := range p.Actions {
		//exhaustive:enforce
		switch a {
		case policy.EffectAlert, policy.EffectBlock, policy.EffectTerminate, policy.EffectQuarantine:
			want[a] = true
		default:
			errs = append(errs, fmt.Errorf("pid %d: unknown action %q", t.PID, a))
		}
	}
	// Read the unit before anything can kill the process.
	unit, unitErr := t.unit()

	if want[policy.EffectQuarantine] && p.QuarantineFor > 0 && p.Keep != nil {
		s, err := e.keep(p, t)
		if err != nil {
			errs = append(errs, err)
		} else {
			done = append(done, Done{policy.EffectQuarantine, s})
		}
	}
	if want[policy.EffectQuarantine] && p.QuarantineFor > 0 {
		s, err := e.quarantine(p, t, unit, unitErr)
		if err != nil {
			errs = append(errs, err)
		} else {
			done = append(done, Done{policy.EffectQuarantine, s})
		}
	}
	if want[policy.EffectBlock] {
		cut, err := BlockSockets(t.PID)
		if err != nil {
			errs = append(errs, fmt.Errorf("block: %w", err))
		}
		if err == nil || cut.Destroyed > 0 {
			done = append(done, Done{policy.EffectBlock, cut.Detail()})
		}
	}
	if want[policy.EffectTerminate] {
		if err := Kill(t.PID, t.StartTime); err != nil {
			errs = append(errs, fmt.Errorf("terminate: %w", err))
		} else {
			done = append(done, Done{policy.EffectTerminate, fmt.Sprintf("pid=%d", t.PID)})
		}
		if p.StopUnit {
			if s, err := e.stopUnit(ctx, t, unit, unitErr); err != nil {
				errs = append(errs, err)
			} else if s != "" {
				done = append(done, Done{policy.EffectTerminate, s})
			}
		}
	}
	if want[policy.EffectAlert] {
		done = append(done, Done{Effect: policy.EffectAlert})
	}
	return done, errors.Join(errs...)
}

// keep hands the message to the vault.
func (e *Executor) keep(p Plan, t Target) (string, error) {
	if e.Vault == nil {
		return "", fmt.Errorf("quarantine message of pid %d: no vault configured", t.PID)
	}
	id, err := e.Vault.Submit(p.Keep, e.now(), p.QuarantineFor)
	if err != nil {
		return "", fmt.Errorf("quarantine message of pid %d: %w", t.PID, err)
	}
	return "message=" + id, nil
}

func (e *Executor) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Executor) quarantine(p Plan, t Target, unit Unit, unitErr error) (string, error) {
	if e.Quarantine == nil {
		return "", fmt.Errorf("quarantine pid %d: no quarantine configured", t.PID)
	}
	until := e.now().Add(p.QuarantineFor).UTC()
	id, path, unitName := t.CgroupID, "", ""
	mnt := e.CgroupMount
	if mnt == "" {
		m, err := CgroupMount()
		if err != nil {
			return "", fmt.Errorf("quarantine pid %d: %w", t.PID, err)
		}
		mnt = m
	}
	if unitErr == nil {
		if uid, err := CgroupID(mnt, unit.Cgroup); err == nil {
			id, path, unitName = uid, unit.Cgroup, unit.Name
		}
	}
	if path == "" && t.CgroupPath != "" {
		// The path read from /proc may be newer than the sensor's id.
		if pid, err := CgroupID(mnt, t.CgroupPath); err == nil && pid == id {
			path = t.CgroupPath
		}
	}
	if id == 0 {
		return "", fmt.Errorf("quarantine pid %d: cgroup unknown", t.PID)
	}
	if err := e.Quarantine.Add(id, path, until); err != nil {
		return "", fmt.Errorf("quarantine pid %d: %w", t.PID, err)
	}
	s := fmt.Sprintf("cgroup=%d", id)
	if unitName != "" {
		s += " unit=" + unitName
	}
	return s + " until=" + until.Format(time.RFC3339), nil
}

func (e *Executor) stopUnit(ctx context.Context, t Target, unit Unit, unitErr error) (string, error) {
	if errors.Is(unitErr, ErrNoUnit) || errors.Is(unitErr, ErrGone) {
		// Nothing to stop (a process outside any unit, or gone with its
		// kill): not a failure of the response, and no action taken.
		return "", nil
	}
	if unitErr != nil {
		return "", fmt.Errorf("stop unit of pid %d: %w", t.PID, unitErr)
	}
	if e.Systemd == nil {
		return "", fmt.Errorf("stop unit %s of pid %d: no systemd connection", unit.Name, t.PID)
	}
	if unit.Manager != "" {
		return "", fmt.Errorf("stop unit %s of pid %d: a unit of %s, not of the system manager", unit.Name, t.PID, unit.Manager)
	}
	// Never stop the agent's own unit.
	if self, err := LookupUnit(uint32(selfPID())); err == nil && self.Cgroup == unit.Cgroup {
		return "", fmt.Errorf("stop unit %s of pid %d: it is the agent's own unit", unit.Name, t.PID)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := QueueStopUnit(ctx, e.Systemd, unit.Name); err != nil {
		return "", fmt.Errorf("pid %d: %w", t.PID, err)
	}
	return "stop-unit=" + unit.Name, nil
}

// unit is the systemd unit of the target: from its cgroup path if the
// caller knew it, else from /proc/PID/cgroup.
func (t Target) unit() (Unit, error) {
	if t.CgroupPath == "" {
		return LookupUnit(t.PID)
	}
	u, ok := ParseUnit(t.CgroupPath)
	if !ok {
		return Unit{}, fmt.Errorf("unit of pid %d (cgroup %q): %w", t.PID, t.CgroupPath, ErrNoUnit)
	}
	return u, nil
}
