package packagetest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testCgroup is a cgroup v2 directory made for one container; removed,
// with anything left in it, when the test ends.
type testCgroup struct {
	path string
	fd   int
}

func newCgroup(t *testing.T) *testCgroup {
	t.Helper()
	mount, err := cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(mount, "aarsm-pkgtest-"+hex.EncodeToString(suffix))
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatalf("make cgroup: %v", err)
	}
	fd, err := syscall.Open(path, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open cgroup: %v", err)
	}
	cg := &testCgroup{path: path, fd: fd}
	// Registered before the container's own cleanup, so it runs after it.
	t.Cleanup(func() { cg.closeFD(); cg.remove(t) })
	return cg
}

func (cg *testCgroup) closeFD() {
	if cg.fd >= 0 {
		syscall.Close(cg.fd)
		cg.fd = -1
	}
}

// remove kills what is left in the tree (cgroup.kill) and removes the
// directories, children first.
func (cg *testCgroup) remove(t *testing.T) {
	_ = os.WriteFile(filepath.Join(cg.path, "cgroup.kill"), []byte("1"), 0o644)
	var dirs []string
	_ = filepath.WalkDir(cg.path, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	deadline := time.Now().Add(10 * time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		eventually(t, time.Until(deadline), "cgroup "+dirs[i]+" removed", func() (bool, string) {
			err := os.Remove(dirs[i])
			return err == nil || os.IsNotExist(err), fmt.Sprint(err)
		})
	}
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted (on this
// machine's hybrid layout /sys/fs/cgroup/unified).
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		for i, fl := range fields {
			if fl == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" {
				return fields[4], nil
			}
		}
	}
	return "", fmt.Errorf("no cgroup2 mount in /proc/self/mountinfo")
}

// privateBPFFS mounts a bpffs instance of its own (every bpffs mount is a
// new, empty one) for a container's /sys/fs/bpf: what the agent in the
// container pins there is not the host's, and goes when it is unmounted.
func privateBPFFS(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp(workDir, "bpffs-")
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("bpf", dir, "bpf", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
		os.Remove(dir)
	})
	return dir
}
