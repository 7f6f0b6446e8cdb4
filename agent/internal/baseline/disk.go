package baseline

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/statefile"
)

// On disk, in the baseline directory (<state dir>/baseline, 0700, owned
// by the user the agent runs as: root):
//
//	baseline.json                  the file (0600), replaced whole: written to
//	                               .baseline.json.tmp-*, fsynced, renamed, the
//	                               directory fsynced
//	baseline.lock                  the lock (0600, empty): an exclusive flock(2)
//	                               taken by every writer for its read-modify-write
//	baseline.json.corrupt-<time>   a file that could not be read, moved aside
//	                               (the newest maxCorrupt are kept)
//
// The protocol between the agent and "aarsm baseline": every change of the
// file is a read-modify-write under the lock. The CLI reads the file, makes
// its change and writes it. The agent writes its observations every few
// seconds (Options.FlushInterval); before writing, and every
// RefreshInterval whether it has something to write or not, it compares the
// file's identity (device, inode, size, mtime, ctime) with the one it
// last read or wrote: when another process replaced the file, the agent
// reads it and merges its own observations since then into it (Store's
// merge), so that a "forget" or "learn" of the CLI is never undone by the
// agent and the agent's observations are never lost by a CLI change.
// Readers ("aarsm baseline show") need no lock: a rename is atomic.

const (
	fileName    = "baseline.json"
	lockName    = "baseline.lock"
	tmpPrefix   = ".baseline.json.tmp-"
	corruptMark = ".corrupt-"
	maxCorrupt  = 3
)

// How long the lock is waited for: by the agent's background writes (it
// tries again at its next round) and by Open, Flush, Close and the CLI.
const (
	agentLockTimeout = 250 * time.Millisecond
	otherLockTimeout = 10 * time.Second
)

// ErrLocked is returned when the lock could not be taken in time.
var ErrLocked = errors.New("baseline locked by another process")

// Dir returns the baseline directory of a state directory.
func Dir(stateDir string) string { return filepath.Join(stateDir, "baseline") }

// Path returns the baseline file of a baseline directory.
func Path(dir string) string { return filepath.Join(dir, fileName) }

// prepareDir creates dir (0700) if needed, refuses it when it is not a
// plain directory owned by the caller's user, and makes it 0700.
func prepareDir(dir string) error {
	if dir == "" {
		return errors.New("baseline: no directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create baseline directory: %w", err)
	}
	st, err := checkDir(dir)
	if err != nil {
		return err
	}
	if st.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // G302: a directory: 0700 is owner-only
			return fmt.Errorf("restrict baseline directory: %w", err)
		}
	}
	return nil
}

// checkDir refuses dir when it is a symbolic link, not a directory, or
// owned by another user than the caller's.
func checkDir(dir string) (fs.FileInfo, error) {
	st, err := os.Lstat(dir)
	if err != nil {
		return nil, fmt.Errorf("baseline directory: %w", err)
	}
	if st.Mode()&fs.ModeSymlink != 0 || !st.IsDir() {
		return nil, fmt.Errorf("baseline directory %s is not a plain directory", dir)
	}
	if err := checkOwner(dir, st); err != nil {
		return nil, err
	}
	return st, nil
}

func checkOwner(p string, st fs.FileInfo) error {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Geteuid() {
		return fmt.Errorf("baseline: %s is owned by uid %d, not %d", p, sys.Uid, os.Geteuid())
	}
	return nil
}

// lock takes the exclusive lock of dir, waiting at most timeout, and
// returns its release.
func lock(dir string, timeout time.Duration) (func(), error) {
	release, err := statefile.Lock(filepath.Join(dir, lockName), timeout, ErrLocked)
	if err != nil {
		return nil, fmt.Errorf("lock baseline: %w", err)
	}
	return release, nil
}

// fileID is what tells that the file was replaced or changed.
type fileID struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64
}

// statFile returns the identity of dir's file; the zero fileID when there
// is none.
func statFile(dir string) (fileID, error) {
	var st unix.Stat_t
	err := unix.Lstat(Path(dir), &st)
	if errors.Is(err, unix.ENOENT) {
		return fileID{}, nil
	}
	if err != nil {
		return fileID{}, fmt.Errorf("stat %s: %w", Path(dir), err)
	}
	return fileID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// readFile reads and decodes dir's file: nil, nil when there is none.
// A file that cannot be decoded is an error wrapping ErrCorrupt; a
// symbolic link, something else than a regular file or a file of another
// owner is an error that does not.
func readFile(dir string) (*File, error) {
	p := Path(dir)
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("baseline: %s is a symbolic link", p)
	}
	if err != nil {
		return nil, fmt.Errorf("read baseline: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read baseline: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("baseline: %s is not a regular file", p)
	}
	if err := checkOwner(p, st); err != nil {
		return nil, err
	}
	if st.Size() > MaxFileBytes {
		return nil, fmt.Errorf("%s: %w: %d bytes, at most %d", p, ErrCorrupt, st.Size(), MaxFileBytes)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read baseline: %w", err)
	}
	bf, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return bf, nil
}

// writeFile replaces dir's file with data: a temporary file (0600),
// fsynced, renamed into place, the directory fsynced.
func writeFile(dir string, data []byte) error {
	if err := statefile.WriteAtomic(Path(dir), tmpPrefix, data); err != nil {
		return fmt.Errorf("write baseline: %w", err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync baseline directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync baseline directory: %w", err)
	}
	return nil
}

// moveAside renames a corrupt file to baseline.json.corrupt-<time>
// (0600) and removes the older such files but the newest maxCorrupt. It
// returns the new name.
func moveAside(dir string, now time.Time) (string, error) {
	name, err := statefile.MoveAside(Path(dir), now, maxCorrupt)
	if err != nil {
		return name, fmt.Errorf("move corrupt baseline aside: %w", err)
	}
	return name, nil
}

// removeTemps removes temporary files a writer that died left behind.
// The caller holds the lock.
func removeTemps(dir string) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, de := range des {
		if strings.HasPrefix(de.Name(), tmpPrefix) {
			_ = os.Remove(filepath.Join(dir, de.Name()))
		}
	}
}

// Read returns the baseline of dir as it is on disk, for people ("aarsm
// baseline show"): an empty File when there is no file (or no directory).
// Nothing is changed: a corrupt file is an error wrapping ErrCorrupt and
// is left where it is (the agent moves it aside when it reads it).
func Read(dir string) (*File, error) {
	if _, err := checkDir(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return NewFile(), nil
		}
		return nil, err
	}
	f, err := readFile(dir)
	if err != nil {
		return nil, err
	}
	if f == nil {
		f = NewFile()
	}
	return f, nil
}

// Update changes the baseline of dir whether an agent runs or not ("aarsm
// baseline forget" and "learn"): under the lock, it reads the file (an
// empty one when there is none), calls change and, when change returns
// nil, writes the result whole. A corrupt file is an error wrapping
// ErrCorrupt and is not changed. The directory is created if needed. A
// running agent sees the change within its RefreshInterval.
func Update(dir string, now time.Time, change func(*File) error) error {
	if err := prepareDir(dir); err != nil {
		return err
	}
	unlock, err := lock(dir, otherLockTimeout)
	if err != nil {
		return err
	}
	defer unlock()
	f, err := readFile(dir)
	if err != nil {
		return err
	}
	if f == nil {
		f = NewFile()
	}
	if err := change(f); err != nil {
		return err
	}
	f.Updated = now.UTC()
	data, err := f.Encode()
	if err != nil {
		return err
	}
	// What is written must read back: check it as Decode would.
	if _, err := Decode(data); err != nil {
		return fmt.Errorf("baseline change refused: %w", err)
	}
	return writeFile(dir, data)
}
