package probe

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/bpf/ssl"
)

// The hold guard. A process stopped by the sensor waits for the agent; if
// the agent dies (kill -9, a crash), nobody would ever resume it. The
// agent therefore starts a small guard process that shares the hold and
// settings maps and a pipe whose write end only the agent holds. When the
// agent dies the kernel closes the pipe; the guard turns holding off and
// resumes every held process (failing open: the agent is not there to
// judge). On a clean exit the agent has released everything itself.

// GuardFiles returns the files a guard process needs, in order: the hold
// map and the settings map. The caller passes them to the guard (as
// ExtraFiles) and closes them.
func (s *Sensor) GuardFiles() ([]*os.File, error) {
	var files []*os.File
	for _, m := range []*ebpf.Map{s.objs.Holds, s.objs.Settings} {
		fd, err := unix.FcntlInt(uintptr(m.FD()), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, fmt.Errorf("duplicate map descriptor: %w", err)
		}
		files = append(files, os.NewFile(uintptr(fd), "aarsm-map"))
	}
	return files, nil
}

// RunGuard waits until agent reaches end of file (the agent is gone), then
// turns holding off and resumes every held process. holdsFD and settingsFD
// are the descriptors of GuardFiles in the guard process. It returns the
// number of processes resumed.
func RunGuard(holdsFD, settingsFD int, agent io.Reader) (int, error) {
	holds, err := ebpf.NewMapFromFD(holdsFD)
	if err != nil {
		return 0, fmt.Errorf("open hold map: %w", err)
	}
	defer holds.Close()
	settings, err := ebpf.NewMapFromFD(settingsFD)
	if err != nil {
		return 0, fmt.Errorf("open settings map: %w", err)
	}
	defer settings.Close()

	_, _ = io.Copy(io.Discard, agent) // returns when the agent is gone

	if err := settings.Put(uint32(0), &ssl.SensorConfig{}); err != nil {
		return 0, fmt.Errorf("turn holding off: %w", err)
	}
	var tid uint32
	var h ssl.SensorHold
	var held []ssl.SensorHold
	var tids []uint32
	it := holds.Iterate()
	for it.Next(&tid, &h) {
		held = append(held, h)
		tids = append(tids, tid)
	}
	var errs []error
	if err := it.Err(); err != nil {
		errs = append(errs, fmt.Errorf("read holds: %w", err))
	}
	n := 0
	for i, h := range held {
		// The record goes first, or the write guard would kill the thread.
		if err := holds.Delete(tids[i]); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("release hold of pid %d: %w", h.Pid, err))
			continue
		}
		if err := unix.Kill(int(h.Pid), unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("resume pid %d: %w", h.Pid, err))
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}
