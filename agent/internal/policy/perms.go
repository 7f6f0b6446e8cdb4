package policy

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// What the agent enforces is only as safe as the files it reads: a
// policy file, its directory or any directory above them that another
// user may write lets that user change the policy in force. Such a path
// is refused (an error diagnostic naming it, its mode and owner), at
// start, at reload and by "aarsm policy check":
//
//   - the owner must be root, or the user running the check (a
//     developer checking files of their own; the agent runs as root);
//   - a policy file and the policy directory must not be writable by
//     group or others;
//   - a directory above them may be, only with the sticky bit (as /tmp):
//     then others cannot rename or replace what is below.
//
// Symbolic links are followed: what is checked is where they lead.

// unsafePath says why a path must not be trusted; "" when it may.
type unsafePath struct {
	path, why string
}

func (u *unsafePath) Error() string { return u.path + ": " + u.why }

// checkOwnerMode checks one path; leaf is a policy file or the policy
// directory itself, as opposed to a directory above them.
func checkOwnerMode(p string, st fs.FileInfo, leaf bool) *unsafePath {
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	desc := fmt.Sprintf("mode %04o, owner uid %d, group gid %d", st.Mode().Perm()|stickyBits(st), sys.Uid, sys.Gid)
	if euid := uint32(os.Geteuid()); sys.Uid != 0 && sys.Uid != euid {
		return &unsafePath{p, fmt.Sprintf("owned by uid %d, not root (%s): another user can change the policies", sys.Uid, desc)}
	}
	if st.Mode().Perm()&0o022 == 0 {
		return nil
	}
	if !leaf && st.IsDir() && st.Mode()&fs.ModeSticky != 0 {
		return nil
	}
	return &unsafePath{p, fmt.Sprintf("writable by group or others (%s): another user can change the policies; chmod go-w it", desc)}
}

func stickyBits(st fs.FileInfo) fs.FileMode {
	if st.Mode()&fs.ModeSticky != 0 {
		return 0o1000
	}
	return 0
}

// checkSafe checks path (a policy file or directory) and every directory
// above where it really is. checked caches the directories above that
// passed.
func checkSafe(path string, checked map[string]bool) *unsafePath {
	real, st, ok := resolve(path)
	if !ok {
		return nil // reported by the reader
	}
	if u := checkOwnerMode(real, st, true); u != nil {
		if real != path {
			u.path = path + " (-> " + real + ")"
		}
		return u
	}
	for dir := filepath.Dir(real); !checked[dir]; dir = filepath.Dir(dir) {
		st, err := os.Stat(dir)
		if err != nil {
			return &unsafePath{dir, fmt.Sprintf("cannot be checked (%v) (it holds %s)", err, path)}
		}
		if u := checkOwnerMode(dir, st, false); u != nil {
			u.why += " (it holds " + path + ")"
			return u
		}
		checked[dir] = true
		if dir == "/" || dir == "." {
			break
		}
	}
	return nil
}

// resolve returns where path really is and its file information; false
// when it cannot be read (the reader reports why).
func resolve(path string) (string, fs.FileInfo, bool) {
	real, err := filepath.EvalSymlinks(path)
	if err == nil {
		real, err = filepath.Abs(real)
	}
	var st fs.FileInfo
	if err == nil {
		st, err = os.Stat(real)
	}
	return real, st, err == nil
}
