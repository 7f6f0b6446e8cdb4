package pkgid

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// maxLinks bounds the symbolic links followed to resolve one path, as the
// kernel's own bound does (ELOOP).
const maxLinks = 40

// errLoop is returned for a path with too many symbolic links.
var errLoop = errors.New("too many levels of symbolic links")

// rootFS reads files as a process sees them: paths are inside its root
// directory (/proc/PID/root), and symbolic links are resolved inside it
// too, so that an absolute link target in a container names the
// container's file, not the host's.
type rootFS struct {
	root string // the agent's path of the process's "/"; "" is "/"
}

// real returns the path through which the agent opens p (absolute, as
// the process sees it).
func (r rootFS) real(p string) string {
	if r.root == "" {
		return p
	}
	return filepath.Join(r.root, p)
}

// resolve returns p (absolute, clean or not) with every symbolic link
// resolved inside the root, as the process sees it. Every component must
// exist.
func (r rootFS) resolve(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("resolve %s: not an absolute path", p)
	}
	done := "/"
	rest := p
	links := 0
	for rest != "" {
		var comp string
		comp, rest, _ = strings.Cut(rest, "/")
		switch comp {
		case "", ".":
			continue
		case "..":
			done = path.Dir(done)
			continue
		}
		next := path.Join(done, comp)
		fi, err := os.Lstat(r.real(next))
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			done = next
			continue
		}
		links++
		if links > maxLinks {
			return "", fmt.Errorf("resolve %s: %w", p, errLoop)
		}
		target, err := os.Readlink(r.real(next))
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", p, err)
		}
		if path.IsAbs(target) {
			done = "/"
		}
		rest = target + "/" + rest
	}
	return done, nil
}

// stat returns the file information of p (following links), as the
// process sees it.
func (r rootFS) stat(p string) (fs.FileInfo, error) {
	if rp, err := r.resolve(p); err == nil {
		p = rp
	}
	return os.Stat(r.real(p))
}

func (r rootFS) isDir(p string) bool {
	fi, err := r.stat(p)
	return err == nil && fi.IsDir()
}

func (r rootFS) isFile(p string) bool {
	fi, err := r.stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// readFile reads at most max bytes of the file p; cut reports a longer
// file.
func (r rootFS) readFile(p string, max int64) (data []byte, cut bool, err error) {
	rp, err := r.resolve(p)
	if err != nil {
		return nil, false, err
	}
	f, err := os.Open(r.real(rp))
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err = io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", p, err)
	}
	if int64(len(data)) > max {
		return data[:max], true, nil
	}
	return data, false, nil
}

// readDir lists at most max entries of the directory p, sorted by name.
func (r rootFS) readDir(p string, max int) ([]fs.DirEntry, error) {
	rp, err := r.resolve(p)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(r.real(rp))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := f.ReadDir(max)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("list %s: %w", p, err)
	}
	sortEntries(entries)
	return entries, nil
}

// statKey identifies a version of a file: replacing or rewriting it
// changes the key.
type statKey struct {
	Dev, Ino uint64
	Size     int64
	Mtime    int64 // ns
	Ctime    int64 // ns
}

// keyOf returns the key of the file at the agent's path p (following
// links, including /proc's magic links).
func keyOf(p string) (statKey, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return statKey{}, fmt.Errorf("stat %s: %w", p, err)
	}
	return statKey{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		Mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec,
		Ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
	}, nil
}
