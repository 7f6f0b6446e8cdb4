package testenv

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroup is a fresh cgroup v2 directory for one test.
type Cgroup struct {
	path  string
	mount string
	id    uint64
}

// NewCgroup creates <cgroup2 mount>/aarsm-test-<random> (the cgroup2 mount
// is read from /proc/self/mountinfo: /sys/fs/cgroup on a pure v2 system,
// e.g. /sys/fs/cgroup/unified on a hybrid one). At cleanup every process
// left in it is killed by PID and the directory is removed. Needs root.
func NewCgroup(t testing.TB) *Cgroup {
	t.Helper()
	RequireRoot(t)
	mnt, err := cgroup2Mount()
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatalf("testenv: random cgroup name: %v", err)
	}
	p := filepath.Join(mnt, "aarsm-test-"+hex.EncodeToString(rnd[:]))
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatalf("testenv: create cgroup: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		_ = os.Remove(p)
		t.Fatalf("testenv: stat cgroup: %v", err)
	}
	c := &Cgroup{path: p, mount: mnt, id: st.Ino}
	t.Cleanup(func() {
		if err := c.destroy(); err != nil {
			t.Errorf("testenv: remove cgroup %s: %v", c.path, err)
		}
	})
	return c
}

// cgroup2Mount returns the mount point of the cgroup2 hierarchy.
func cgroup2Mount() (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// 36 25 0:31 / /sys/fs/cgroup/unified rw,... shared:9 - cgroup2 cgroup2 rw
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fsType, _, _ := strings.Cut(post, " ")
		fields := strings.Fields(pre)
		if fsType == "cgroup2" && len(fields) >= 5 {
			return unescapeMountPath(fields[4]), nil
		}
	}
	return "", errors.New("no cgroup2 mount in /proc/self/mountinfo (mount -t cgroup2 none /sys/fs/cgroup/unified)")
}

// unescapeMountPath undoes the octal escapes (\040 etc.) of mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ID returns the cgroup ID: the inode number of the directory, which is
// what bpf_get_current_cgroup_id() returns for tasks in it.
func (c *Cgroup) ID() uint64 { return c.id }

// Path returns the cgroup directory.
func (c *Cgroup) Path() string { return c.path }

// Name returns the path relative to the cgroup2 mount, as it appears in
// the "0::" line of /proc/<pid>/cgroup, e.g. "/aarsm-test-0a1b2c3d4e5f".
func (c *Cgroup) Name() string {
	rel, err := filepath.Rel(c.mount, c.path)
	if err != nil {
		return c.path
	}
	return "/" + rel
}

// Add moves the process pid into the cgroup.
func (c *Cgroup) Add(pid int) error {
	if err := writeCgroupProcs(c.path, pid); err != nil {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, c.Name(), err)
	}
	return nil
}

func writeCgroupProcs(dir string, pid int) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// Start starts cmd directly inside the cgroup (clone3 with
// CLONE_INTO_CGROUP via SysProcAttr.UseCgroupFD), so the process never
// runs anywhere else. Other SysProcAttr fields of cmd are kept.
func (c *Cgroup) Start(cmd *exec.Cmd) error { return StartIn(c.path, cmd) }

// StartIn starts cmd directly inside the cgroup v2 directory dir (one of
// a Cgroup's children, say), as Cgroup.Start does.
func StartIn(dir string, cmd *exec.Cmd) error {
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open cgroup %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = fd
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s in cgroup %s: %w", filepath.Base(cmd.Path), dir, err)
	}
	return nil
}

// PIDs returns the processes in the cgroup (not in child cgroups).
func (c *Cgroup) PIDs() ([]int, error) { return readCgroupProcs(c.path) }

func readCgroupProcs(dir string) ([]int, error) {
	data, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil, fmt.Errorf("read cgroup.procs: %w", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse cgroup.procs entry %q: %w", f, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// destroy kills every process in the cgroup tree by PID and removes the
// directories, children first.
func (c *Cgroup) destroy() error {
	var dirs []string
	err := filepath.WalkDir(c.path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("walk cgroup: %w", err)
	}
	// Deepest first.
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })

	self := os.Getpid()
	deadline := time.Now().Add(10 * time.Second)
	for {
		alive := 0
		for _, d := range dirs {
			pids, err := readCgroupProcs(d)
			if err != nil {
				return err
			}
			for _, pid := range pids {
				alive++
				if pid == self {
					// Never kill the test binary: move it back to the root.
					if err := writeCgroupProcs(c.mount, pid); err != nil {
						return fmt.Errorf("move test process out: %w", err)
					}
					continue
				}
				if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
					return fmt.Errorf("kill pid %d: %w", pid, err)
				}
			}
		}
		if alive == 0 {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("processes still in cgroup after 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, d := range dirs {
		var err error
		for i := 0; i < 100; i++ {
			if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			if !errors.Is(err, unix.EBUSY) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			return fmt.Errorf("rmdir %s: %w", d, err)
		}
	}
	return nil
}
