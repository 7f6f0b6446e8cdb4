package probe

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/bpf/ssl"
)

// Holding a write: the sensor stops a process (SIGSTOP from the probe,
// before the write runs) when a process in scope starts a write that may
// carry mail — an HTTP POST/PUT/PATCH or an SMTP envelope command — or
// writes on a connection marked with Watch. The event arrives with Held
// set; the process stays stopped until Release, or is killed.

// SetHolds turns holding on or off. With scopeAll every process is in
// scope; otherwise only processes in the cgroups given to SetScope, and
// the writes of the others are not even copied (an enforcing agent has
// nothing to do with them): they cost the probe and a map lookup.
func (s *Sensor) SetHolds(enabled, scopeAll bool) error {
	if enabled && !s.opts.Holds {
		return fmt.Errorf("hold writes: the sensor was loaded without Options.Holds")
	}
	cfg := ssl.SensorConfig{}
	if enabled {
		cfg.Holds = 1
	}
	if scopeAll {
		cfg.ScopeAll = 1
	} else if enabled {
		cfg.ScopeOnly = 1
	}
	if err := s.objs.Settings.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("write sensor settings: %w", err)
	}
	return nil
}

// SetScope replaces the cgroups whose processes are in scope.
func (s *Sensor) SetScope(cgroups []uint64) error {
	want := map[uint64]bool{}
	for _, id := range cgroups {
		want[id] = true
	}
	var key uint64
	var val uint8
	var stale []uint64
	it := s.objs.Scope.Iterate()
	for it.Next(&key, &val) {
		if !want[key] {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read scope: %w", err)
	}
	for _, id := range stale {
		if err := s.objs.Scope.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove cgroup %d from scope: %w", id, err)
		}
	}
	for id := range want {
		if err := s.objs.Scope.Put(id, uint8(1)); err != nil {
			return fmt.Errorf("add cgroup %d to scope: %w", id, err)
		}
	}
	return nil
}

// Watch marks (or unmarks) a connection whose every write is held: one in
// the middle of a message that may be mail.
func (s *Sensor) Watch(pid uint32, sslPtr uint64, on bool) error {
	key := ssl.SensorConnKey{Pid: pid, Ssl: sslPtr}
	var err error
	if on {
		err = s.objs.Watch.Put(&key, uint8(1))
	} else if err = s.objs.Watch.Delete(&key); errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("watch connection of pid %d: %w", pid, err)
	}
	return nil
}

// Release lets the held write of thread tid (of process pid) proceed: the
// hold record goes first, so that the guard does not kill the thread, then
// SIGCONT.
func (s *Sensor) Release(pid, tid uint32) error {
	if err := s.objs.Holds.Delete(tid); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("release hold of pid %d thread %d: %w", pid, tid, err)
	}
	if err := unix.Kill(int(pid), unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("resume pid %d: %w", pid, err)
	}
	return nil
}

// Forget drops the hold record of a thread whose process is being killed.
func (s *Sensor) Forget(tid uint32) {
	_ = s.objs.Holds.Delete(tid)
}

// Hold is a write waiting for judgement.
type Hold struct {
	PID, TID uint32
	SSL      uint64
	Mono     uint64
}

// Holds lists the writes held now.
func (s *Sensor) Holds() ([]Hold, error) {
	var tid uint32
	var h ssl.SensorHold
	var out []Hold
	it := s.objs.Holds.Iterate()
	for it.Next(&tid, &h) {
		out = append(out, Hold{PID: h.Pid, TID: tid, SSL: h.Ssl, Mono: h.Ts})
	}
	if err := it.Err(); err != nil {
		return out, fmt.Errorf("read holds: %w", err)
	}
	return out, nil
}
