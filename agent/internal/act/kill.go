package act

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/proc"
)

// ErrGone means the process no longer exists.
var ErrGone = errors.New("process is gone")

// ErrReused means the PID now names another process (its start time
// differs from the one given): nothing was signalled.
var ErrReused = errors.New("pid reused by another process")

// Kill sends SIGKILL to pid if its start time (clock ticks since boot, field
// 22 of /proc/PID/stat) is startTime. It does not wait for the process to
// die. A stopped process is killed too.
func Kill(pid uint32, startTime uint64) error {
	if err := Signal(pid, startTime, unix.SIGKILL); err != nil {
		return fmt.Errorf("kill: %w", err)
	}
	return nil
}

// Continue sends SIGCONT to pid if its start time is startTime.
func Continue(pid uint32, startTime uint64) error {
	if err := Signal(pid, startTime, unix.SIGCONT); err != nil {
		return fmt.Errorf("continue: %w", err)
	}
	return nil
}

// Signal sends sig to pid if its start time is startTime. The process is
// pinned with a pidfd before its start time is read, and the signal goes
// through that pidfd: if the PID is reused after the check, the signal
// still reaches the process that was checked (or nobody, if it died).
// Errors wrap ErrGone or ErrReused when those are the reason.
func Signal(pid uint32, startTime uint64, sig unix.Signal) error {
	fd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("pid %d: pidfd_open: %w", pid, err)
	}
	defer unix.Close(fd)
	st, err := proc.FS{}.StartTime(pid)
	if err != nil {
		if proc.Gone(err) {
			return fmt.Errorf("pid %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	if st != startTime {
		return fmt.Errorf("pid %d: started at %d, not %d: %w", pid, st, startTime, ErrReused)
	}
	if err := unix.PidfdSendSignal(fd, sig, nil, 0); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("pid %d: %w", pid, ErrGone)
		}
		return fmt.Errorf("pid %d: send %v: %w", pid, sig, err)
	}
	return nil
}
