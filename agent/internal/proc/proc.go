// Package proc reads what the agent needs to know about a process from /proc:
// its executable, the files it maps executable, its cgroup and its start
// time (so that a reused PID is never mistaken for the process seen before).
package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Root is the procfs mount point. Every function takes it explicitly through
// FS so that tests can point at a fake tree; the zero FS means "/proc".
type FS struct {
	Root string
}

func (f FS) root() string {
	if f.Root == "" {
		return "/proc"
	}
	return f.Root
}

// Path returns the path of name inside /proc/PID.
func (f FS) Path(pid uint32, name string) string {
	return filepath.Join(f.root(), strconv.FormatUint(uint64(pid), 10), name)
}

// Mapping is one line of /proc/PID/maps that maps a file.
type Mapping struct {
	Start, End uint64
	Exec       bool
	Offset     uint64
	Major      uint32
	Minor      uint32
	Inode      uint64
	Path       string // as the process sees it (its own mount namespace)
	Deleted    bool
}

// KernelDev is the device number in the kernel's internal encoding
// (major << 20 | minor), the one BPF programs read from a superblock.
func (m Mapping) KernelDev() uint32 { return m.Major<<20 | m.Minor }

// Maps returns the file mappings of pid. With execOnly, only executable ones.
func (f FS) Maps(pid uint32, execOnly bool) ([]Mapping, error) {
	data, err := os.ReadFile(f.Path(pid, "maps"))
	if err != nil {
		return nil, fmt.Errorf("read maps of pid %d: %w", pid, err)
	}
	var out []Mapping
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		m, ok := parseMapsLine(string(line))
		if !ok || (execOnly && !m.Exec) {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// parseMapsLine parses "start-end perms offset maj:min inode path".
func parseMapsLine(line string) (Mapping, bool) {
	var m Mapping
	fields := strings.Fields(line)
	if len(fields) < 6 || !strings.HasPrefix(fields[5], "/") {
		return m, false
	}
	start, end, ok := strings.Cut(fields[0], "-")
	if !ok {
		return m, false
	}
	var err error
	if m.Start, err = strconv.ParseUint(start, 16, 64); err != nil {
		return m, false
	}
	if m.End, err = strconv.ParseUint(end, 16, 64); err != nil {
		return m, false
	}
	m.Exec = len(fields[1]) >= 3 && fields[1][2] == 'x'
	if m.Offset, err = strconv.ParseUint(fields[2], 16, 64); err != nil {
		return m, false
	}
	maj, min, ok := strings.Cut(fields[3], ":")
	if !ok {
		return m, false
	}
	major, err1 := strconv.ParseUint(maj, 16, 32)
	minor, err2 := strconv.ParseUint(min, 16, 32)
	if err1 != nil || err2 != nil {
		return m, false
	}
	m.Major, m.Minor = uint32(major), uint32(minor)
	if m.Inode, err = strconv.ParseUint(fields[4], 10, 64); err != nil || m.Inode == 0 {
		return m, false
	}
	m.Path = strings.Join(fields[5:], " ")
	if p, found := strings.CutSuffix(m.Path, " (deleted)"); found {
		m.Path, m.Deleted = p, true
	}
	return m, true
}

// MapFile returns a path through which the agent can open the file of m as
// mapped by pid, whatever mount namespace pid lives in.
func (f FS) MapFile(pid uint32, m Mapping) string {
	return f.Path(pid, fmt.Sprintf("map_files/%x-%x", m.Start, m.End))
}

// RootPath returns path as seen from pid's root directory.
func (f FS) RootPath(pid uint32, path string) string {
	return filepath.Join(f.Path(pid, "root"), path)
}

// Exe returns the path of pid's executable, as the process sees it.
func (f FS) Exe(pid uint32) (string, error) {
	p, err := os.Readlink(f.Path(pid, "exe"))
	if err != nil {
		return "", fmt.Errorf("read exe of pid %d: %w", pid, err)
	}
	return strings.TrimSuffix(p, " (deleted)"), nil
}

// Comm returns pid's command name.
func (f FS) Comm(pid uint32) (string, error) {
	b, err := os.ReadFile(f.Path(pid, "comm"))
	if err != nil {
		return "", fmt.Errorf("read comm of pid %d: %w", pid, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// StartTime returns pid's start time in clock ticks since boot (field 22 of
// /proc/PID/stat): together with the PID it names one process for good.
func (f FS) StartTime(pid uint32) (uint64, error) {
	v, err := f.statField(pid, 22)
	if err != nil {
		return 0, fmt.Errorf("start time: %w", err)
	}
	return v, nil
}

// PPID returns the pid of pid's parent (field 4 of /proc/PID/stat).
func (f FS) PPID(pid uint32) (uint32, error) {
	v, err := f.statField(pid, 4)
	if err != nil {
		return 0, fmt.Errorf("parent: %w", err)
	}
	return uint32(v), nil
}

// statField reads numeric field n (from 1, as proc(5) counts) of
// /proc/PID/stat, n > 2.
func (f FS) statField(pid uint32, n int) (uint64, error) {
	b, err := os.ReadFile(f.Path(pid, "stat"))
	if err != nil {
		return 0, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	// The command name is in parentheses and may contain anything.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse stat of pid %d: no command name", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	// fields[0] is field 3 (state).
	if len(fields) < n-2 {
		return 0, fmt.Errorf("parse stat of pid %d: %d fields", pid, len(fields))
	}
	v, err := strconv.ParseUint(fields[n-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stat of pid %d: field %d: %w", pid, n, err)
	}
	return v, nil
}

// CgroupPath returns pid's cgroup v2 path ("0::/path" in /proc/PID/cgroup).
func (f FS) CgroupPath(pid uint32) (string, error) {
	file, err := os.Open(f.Path(pid, "cgroup"))
	if err != nil {
		return "", fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read cgroup of pid %d: %w", pid, err)
	}
	return "", fmt.Errorf("pid %d has no cgroup v2 entry", pid)
}

// PIDs lists the processes (thread group leaders) in /proc.
func (f FS) PIDs() ([]uint32, error) {
	entries, err := os.ReadDir(f.root())
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	pids := make([]uint32, 0, len(entries))
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if n, err := strconv.ParseUint(e.Name(), 10, 32); err == nil {
			pids = append(pids, uint32(n))
		}
	}
	return pids, nil
}

// Gone reports whether err means that the process no longer exists.
func Gone(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH)
}

// FileID identifies a file: device (kernel encoding) and inode.
type FileID struct {
	Dev uint32
	Ino uint64
}

func (id FileID) String() string {
	return fmt.Sprintf("%d:%d:%d", id.Dev>>20, id.Dev&(1<<20-1), id.Ino)
}

// StatID returns the FileID of path, following symbolic links (including
// the magic links of /proc).
func StatID(path string) (FileID, unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return FileID{}, st, fmt.Errorf("stat %s: %w", path, err)
	}
	dev := unix.Major(st.Dev)<<20 | unix.Minor(st.Dev)
	return FileID{Dev: dev, Ino: st.Ino}, st, nil
}

// MappedID returns the identity the kernel gives the file at path once it
// is mapped: the device and inode of /proc/PID/maps and of the inode BPF
// programs read from a mapped file. Through stacked overlays (a container
// root, e.g. systemd-nspawn --overlay) it can differ from what stat says,
// while uprobes attach to the same inode under both. It maps one page of
// the file, readable only, for a moment.
func MappedID(path string) (FileID, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileID{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	mem, err := unix.Mmap(int(f.Fd()), 0, 1, unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		return FileID{}, fmt.Errorf("map %s: %w", path, err)
	}
	defer func() { _ = unix.Munmap(mem) }()
	// The mapping's address, to find it in /proc/self/maps.
	addr := uint64(uintptr(unsafe.Pointer(&mem[0]))) //nolint:gosec // G103: the address is only compared, never dereferenced
	maps, err := FS{}.Maps(uint32(os.Getpid()), false)
	if err != nil {
		return FileID{}, err
	}
	for _, m := range maps {
		if m.Start == addr {
			return FileID{Dev: m.KernelDev(), Ino: m.Inode}, nil
		}
	}
	return FileID{}, fmt.Errorf("map %s: the mapping is not in /proc/self/maps", path)
}
