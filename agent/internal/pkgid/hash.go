package pkgid

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// skipDir reports directories left out of a package's hash: nested
// packages (node_modules), Python's bytecode caches and version control.
func skipDir(name string) bool {
	switch name {
	case "node_modules", "__pycache__", ".git":
		return true
	}
	return false
}

// skipFile reports files left out of a package's hash: compiled bytecode,
// which Python writes next to the sources after installation.
func skipFile(name string) bool {
	return strings.HasSuffix(name, ".pyc")
}

func sortEntries(e []fs.DirEntry) {
	slices.SortFunc(e, func(a, b fs.DirEntry) int { return cmp.Compare(a.Name(), b.Name()) })
}

// maxDepth bounds the directory levels walked in a package.
const maxDepth = 64

// hashDir hashes the package directory dir (an agent path).
func hashDir(dir string, maxFiles int, maxBytes int64) (Hash, error) {
	w := walker{root: dir, maxFiles: maxFiles, budget: 4 * maxFiles}
	if err := w.walk("", 0); err != nil {
		return Hash{}, fmt.Errorf("hash %s: %w", dir, err)
	}
	h, err := hashFileList(dir, w.rels, maxFiles, maxBytes)
	h.Cut = h.Cut || w.cut
	return h, err
}

// walker lists the files of a package directory: directories in lexical
// order, so that the files found before a bound are always the same ones;
// at most maxFiles files and budget entries in all.
type walker struct {
	root     string
	maxFiles int
	budget   int
	rels     []string
	cut      bool
}

func (w *walker) walk(rel string, depth int) error {
	if depth > maxDepth {
		w.cut = true
		return nil
	}
	f, err := os.Open(filepath.Join(w.root, filepath.FromSlash(rel)))
	if err != nil {
		if rel == "" {
			return err
		}
		return nil // an unreadable subdirectory: left out
	}
	entries, err := f.ReadDir(w.budget + 1)
	_ = f.Close()
	if err != nil && !errors.Is(err, io.EOF) && rel == "" {
		return err
	}
	if len(entries) > w.budget {
		w.cut = true
		entries = entries[:w.budget]
	}
	w.budget -= len(entries)
	sortEntries(entries)
	for _, e := range entries {
		if w.cut && len(w.rels) == w.maxFiles {
			return nil
		}
		name := e.Name()
		child := name
		if rel != "" {
			child = rel + "/" + name
		}
		switch t := e.Type(); {
		case t.IsDir():
			if !skipDir(name) {
				if err := w.walk(child, depth+1); err != nil {
					return err
				}
			}
		case t.IsRegular() || t&fs.ModeSymlink != 0:
			if skipFile(name) {
				continue
			}
			if len(w.rels) == w.maxFiles {
				w.cut = true
				return nil
			}
			w.rels = append(w.rels, child)
		}
	}
	return nil
}

// hashFileList hashes the files rels (slash-separated, relative to base,
// an agent path) in sorted order. A path that leaves base, a missing file
// or a directory is hashed as its path alone.
func hashFileList(base string, rels []string, maxFiles int, maxBytes int64) (Hash, error) {
	rels = slices.Clone(rels)
	slices.Sort(rels)
	rels = slices.Compact(rels)
	sum := sha256.New()
	var h Hash
	for _, rel := range rels {
		if h.Files == maxFiles || h.Bytes >= maxBytes {
			h.Cut = true
			break
		}
		clean := path.Clean(rel)
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			continue
		}
		n, cut, err := hashEntry(sum, base, clean, maxBytes-h.Bytes)
		if err != nil {
			return Hash{}, err
		}
		h.Files++
		h.Bytes += n
		if cut {
			h.Cut = true
			break
		}
	}
	h.Sum = "sha256:" + hex.EncodeToString(sum.Sum(nil))
	return h, nil
}

// hashEntry adds one file to sum: its path, a NUL, its size and its
// contents (at most max bytes: cut is set when there were more). A
// symbolic link is hashed as its target, not followed.
func hashEntry(sum hash.Hash, base, rel string, max int64) (n int64, cut bool, err error) {
	p := filepath.Join(base, filepath.FromSlash(rel))
	sum.Write([]byte(rel))
	sum.Write([]byte{0})
	fi, err := os.Lstat(p)
	if err != nil {
		sum.Write([]byte("missing"))
		return 0, false, nil
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(p)
		if err != nil {
			return 0, false, fmt.Errorf("hash %s: %w", p, err)
		}
		sum.Write([]byte("link:" + target))
		return 0, false, nil
	}
	if !fi.Mode().IsRegular() {
		sum.Write([]byte("special"))
		return 0, false, nil
	}
	var size [8]byte
	binary.BigEndian.PutUint64(size[:], uint64(fi.Size()))
	sum.Write(size[:])
	f, err := os.Open(p)
	if err != nil {
		return 0, false, fmt.Errorf("hash %s: %w", p, err)
	}
	defer f.Close()
	n, err = io.Copy(sum, io.LimitReader(f, max))
	if err != nil {
		return n, false, fmt.Errorf("hash %s: %w", p, err)
	}
	return n, n < fi.Size(), nil
}

// hashFile hashes the contents of one file (an agent path; links
// followed), at most maxBytes of it.
func hashFile(p string, maxBytes int64) (Hash, error) {
	f, err := os.Open(p)
	if err != nil {
		return Hash{}, fmt.Errorf("hash %s: %w", p, err)
	}
	defer f.Close()
	sum := sha256.New()
	n, err := io.Copy(sum, io.LimitReader(f, maxBytes))
	if err != nil {
		return Hash{}, fmt.Errorf("hash %s: %w", p, err)
	}
	var more [1]byte
	m, _ := f.Read(more[:])
	return Hash{Sum: "sha256:" + hex.EncodeToString(sum.Sum(nil)), Files: 1, Bytes: n, Cut: m > 0}, nil
}
