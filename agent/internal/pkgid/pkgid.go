// Package pkgid identifies the software a process runs: the npm package of
// a node script, the Python distribution of a module or script, or else the
// executable — with a content hash of the package directory or file, so
// that the same name and version with different code, or a new version
// upgraded in place, can be told apart. It reads the process through
// /proc (proc.FS) and its files through its root directory, so that
// processes in containers are identified by their own files.
//
// Results are cached: a repeated lookup of a process costs a read of its
// stat and cmdline and a stat of its manifest and entry file; the content
// hash is computed again only when one of those files changed (device,
// inode, size, mtime or ctime: npm gives every file the same mtime, and
// an in-place rewrite of the same size keeps the inode, so ctime is what
// tells).
package pkgid

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/aarsm/aarsm/agent/internal/proc"
)

// Kind is what sort of software a process runs.
type Kind uint8

// Kinds.
const (
	KindExe    Kind = iota // a native executable, or an interpreter without a script
	KindNPM                // a node script of an npm package (package.json with a name)
	KindPython             // a Python module or script of an installed distribution
	KindScript             // a node or Python script or module outside any package
)

func (k Kind) String() string {
	switch k {
	case KindExe:
		return "exe"
	case KindNPM:
		return "npm"
	case KindPython:
		return "python"
	case KindScript:
		return "script"
	}
	return "unknown"
}

// Hash is a content hash: sha256 over a package's files (each as its
// path relative to the package directory, a NUL, its size as 8 bytes
// big-endian and its contents, in the order of the sorted paths; a
// symbolic link as its target) or over one file's contents.
type Hash struct {
	Sum   string // "sha256:" and 64 hex digits; "" when nothing was read
	Files int    // files hashed
	Bytes int64  // bytes of content hashed
	// Cut: a bound (files or bytes) stopped the hashing; Sum covers the
	// first Files files in path order.
	Cut bool
}

// Identity is what a process runs. Paths are as the process sees them
// (inside its root directory).
type Identity struct {
	Kind    Kind
	Name    string // npm package name ("@scope/name") or distribution name
	Version string
	// Dir is the package directory: the npm package's (where its
	// package.json is), or the site directory of a Python distribution.
	Dir string
	// Manifest is the file whose change means a new version: the
	// package.json, the distribution's METADATA (or PKG-INFO), or the
	// entry file for scripts and executables.
	Manifest    string
	Entry       string // the script, module file or executable that runs
	Module      string // Python: the module of -m
	Interpreter string // node or python executable ("" for KindExe)
	Hash        Hash
	// Problem says what could not be read (the identity is then what
	// could be read); "" when nothing went wrong.
	Problem string
}

// String returns a short form: "npm:name@version", "python:name@version",
// "script:/path" or "exe:/path".
func (id Identity) String() string {
	switch id.Kind {
	case KindNPM, KindPython:
		if id.Version == "" {
			return id.Kind.String() + ":" + id.Name
		}
		return id.Kind.String() + ":" + id.Name + "@" + id.Version
	}
	return id.Kind.String() + ":" + id.Entry
}

// Process is what identification needs of a process.
type Process struct {
	// Root is the agent's path of the process's root directory
	// (/proc/PID/root); "" is "/".
	Root string
	// Exe is the executable as the process sees it; ExeFile is the path
	// through which the agent reads the running executable
	// (/proc/PID/exe), "" for Root+Exe.
	Exe, ExeFile string
	Args         []string // argv
	Cwd          string   // as the process sees it
	// Env holds the environment variables that matter (PATH, HOME,
	// PYTHONPATH, PYTHONNOUSERSITE, PYTHONSAFEPATH).
	Env map[string]string
}

// Bounds of /proc reads.
const (
	maxCmdline = 128 << 10
	maxEnviron = 1 << 20
)

// envKept are the environment variables ReadProcess keeps.
func envKept(name string) bool {
	switch name {
	case "PATH", "HOME", "PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONSAFEPATH":
		return true
	}
	return false
}

// ReadProcess reads pid's executable, argv, working directory and the
// environment variables that matter from /proc. The environment is
// optional (it is readable by the process's owner and root only).
func ReadProcess(fs proc.FS, pid uint32) (Process, error) {
	exe, err := fs.Exe(pid)
	if err != nil {
		return Process{}, err
	}
	cmdline, err := readBounded(fs.Path(pid, "cmdline"), maxCmdline)
	if err != nil {
		return Process{}, fmt.Errorf("read cmdline of pid %d: %w", pid, err)
	}
	cwd, err := os.Readlink(fs.Path(pid, "cwd"))
	if err != nil {
		return Process{}, fmt.Errorf("read cwd of pid %d: %w", pid, err)
	}
	p := Process{
		Root:    fs.RootPath(pid, "/"),
		Exe:     exe,
		ExeFile: fs.Path(pid, "exe"),
		Args:    splitNUL(cmdline),
		Cwd:     strings.TrimSuffix(cwd, " (deleted)"),
		Env:     map[string]string{},
	}
	if env, err := readBounded(fs.Path(pid, "environ"), maxEnviron); err == nil {
		for _, kv := range splitNUL(env) {
			if k, v, ok := strings.Cut(kv, "="); ok && envKept(k) {
				p.Env[k] = v
			}
		}
	}
	return p, nil
}

// readBounded reads at most max bytes of a /proc file.
func readBounded(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return data, nil
}

// splitNUL splits NUL-terminated strings (cmdline, environ).
func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// Options bound a Resolver. The zero value gives the defaults.
type Options struct {
	MaxFiles   int   // files hashed per package; default 10000
	MaxBytes   int64 // bytes hashed per package or file; default 64 MiB
	MaxEntries int   // processes and packages cached; default 4096
	// NoExeHash: executables (KindExe) are identified by path only, their
	// Hash left empty: the caller hashes them off its hot path
	// (ExeHasher). Packages and scripts are hashed as usual.
	NoExeHash bool
}

func (o Options) withDefaults() Options {
	if o.MaxFiles <= 0 {
		o.MaxFiles = 10000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 64 << 20
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = 4096
	}
	return o
}

// Resolver identifies processes and caches what it found. It is safe for
// concurrent use.
type Resolver struct {
	fs   proc.FS
	opts Options

	mu      sync.Mutex
	procs   map[procKey]procEntry
	content map[contentKey]Identity
	stats   Stats
}

// Stats count a resolver's work.
type Stats struct {
	Lookups  uint64 // Lookup calls
	ProcHits uint64 // answered from the process cache
	Hashes   uint64 // content hashes computed (package content cache misses)
}

type procKey struct {
	pid   uint32
	start uint64
}

// procEntry is a cached identification of one process, valid while its
// cmdline and the keys of its manifest and entry are unchanged.
type procEntry struct {
	cmdline  string
	files    [2]string // agent paths of the manifest and entry
	keys     [2]statKey
	identity Identity
}

// contentKey names one version of a package or file, whichever process
// runs it: paths as processes see them, and the files' keys (the device
// tells mount namespaces apart).
type contentKey struct {
	kind                 Kind
	manifest, entry, dir string
	manKey, entKey       statKey
}

// New returns a resolver reading /proc through fs.
func New(fs proc.FS, o Options) *Resolver {
	return &Resolver{
		fs: fs, opts: o.withDefaults(),
		procs:   make(map[procKey]procEntry),
		content: make(map[contentKey]Identity),
	}
}

// Stats returns the resolver's counters.
func (r *Resolver) Stats() Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

// Forget drops what is cached of pid.
func (r *Resolver) Forget(pid uint32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.procs {
		if k.pid == pid {
			delete(r.procs, k)
		}
	}
}

// Lookup identifies the process pid.
func (r *Resolver) Lookup(pid uint32) (Identity, error) {
	start, err := r.fs.StartTime(pid)
	if err != nil {
		return Identity{}, fmt.Errorf("identify pid %d: %w", pid, err)
	}
	cmdline, err := readBounded(r.fs.Path(pid, "cmdline"), maxCmdline)
	if err != nil {
		return Identity{}, fmt.Errorf("identify pid %d: %w", pid, err)
	}
	key := procKey{pid, start}
	r.mu.Lock()
	r.stats.Lookups++
	e, ok := r.procs[key]
	r.mu.Unlock()
	if ok && e.cmdline == string(cmdline) && e.valid() {
		r.mu.Lock()
		r.stats.ProcHits++
		r.mu.Unlock()
		return e.identity, nil
	}
	p, err := ReadProcess(r.fs, pid)
	if err != nil {
		return Identity{}, fmt.Errorf("identify pid %d: %w", pid, err)
	}
	id, files, keys := r.identify(p)
	if files[0] != "" {
		r.mu.Lock()
		evictOne(r.procs, r.opts.MaxEntries)
		r.procs[key] = procEntry{cmdline: string(cmdline), files: files, keys: keys, identity: id}
		r.mu.Unlock()
	}
	return id, nil
}

func (e procEntry) valid() bool {
	for i, f := range e.files {
		if f == "" {
			continue
		}
		k, err := keyOf(f)
		if err != nil || k != e.keys[i] {
			return false
		}
	}
	return true
}

// evictOne makes room for one entry in a map at its bound.
func evictOne[K comparable, V any](m map[K]V, bound int) {
	if len(m) < bound {
		return
	}
	for k := range maps.Keys(m) {
		delete(m, k)
		if len(m) < bound {
			return
		}
	}
}

// Identify identifies a process from what ReadProcess returns (or what a
// test makes up).
func (r *Resolver) Identify(p Process) (Identity, error) {
	if p.Exe == "" {
		return Identity{}, errors.New("identify: no executable")
	}
	id, _, _ := r.identify(p)
	return id, nil
}

// identify returns the identity of p with the agent paths of its
// manifest and entry and their keys.
func (r *Resolver) identify(p Process) (Identity, [2]string, [2]statKey) {
	root := rootFS{root: p.Root}
	if p.Env == nil {
		p.Env = map[string]string{}
	}
	if p.Cwd == "" {
		p.Cwd = "/"
	}
	var c candidate
	switch base := path.Base(p.Exe); {
	case isNode(base):
		c = r.node(root, p)
	case isPython(base):
		c = r.python(root, p)
	default:
		c = r.exe(root, p, "")
	}
	return r.finish(root, c)
}

// candidate is an identity before its content hash.
type candidate struct {
	id Identity
	// manifest and entry: agent paths of the files whose keys validate
	// the identity; hashDir, hashFiles or hashFile say what to hash.
	manifest, entry string
	hashDir         string   // agent path of a package directory
	hashBase        string   // agent path hashFiles are relative to
	hashFiles       []string // relative paths
	hashFile        string   // agent path of one file
}

// finish hashes the candidate's content, through the content cache.
func (r *Resolver) finish(root rootFS, c candidate) (Identity, [2]string, [2]statKey) {
	var files [2]string
	var keys [2]statKey
	files[0], files[1] = c.manifest, c.entry
	if files[1] == files[0] {
		files[1] = ""
	}
	for i, f := range files {
		if f == "" {
			continue
		}
		k, err := keyOf(f)
		if err != nil {
			if c.id.Problem == "" {
				c.id.Problem = err.Error()
			}
			return c.id, [2]string{}, keys
		}
		keys[i] = k
	}
	if files[0] == "" {
		return c.id, files, keys
	}
	ck := contentKey{kind: c.id.Kind, manifest: c.id.Manifest, entry: c.id.Entry, dir: c.id.Dir, manKey: keys[0], entKey: keys[1]}
	r.mu.Lock()
	cached, ok := r.content[ck]
	r.mu.Unlock()
	if ok {
		// The same package run by another process: its hash, with
		// this process's entry and interpreter.
		c.id.Hash = cached.Hash
		if c.id.Problem == "" {
			c.id.Problem = cached.Problem
		}
		return c.id, files, keys
	}
	var h Hash
	var err error
	switch {
	case c.hashDir != "":
		h, err = hashDir(c.hashDir, r.opts.MaxFiles, r.opts.MaxBytes)
	case c.hashBase != "":
		h, err = hashFileList(c.hashBase, c.hashFiles, r.opts.MaxFiles, r.opts.MaxBytes)
	case c.hashFile != "":
		h, err = hashFile(c.hashFile, r.opts.MaxBytes)
	}
	if err != nil && c.id.Problem == "" {
		c.id.Problem = err.Error()
	}
	c.id.Hash = h
	r.mu.Lock()
	r.stats.Hashes++
	evictOne(r.content, r.opts.MaxEntries)
	r.content[ck] = Identity{Hash: h, Problem: c.id.Problem}
	r.mu.Unlock()
	return c.id, files, keys
}

// exe identifies the executable itself (an interpreter without a script
// too); problem says why a script was not identified, if one was named.
func (r *Resolver) exe(root rootFS, p Process, problem string) candidate {
	file := p.ExeFile
	if file == "" {
		file = root.real(p.Exe)
	}
	c := candidate{
		id:       Identity{Kind: KindExe, Entry: p.Exe, Manifest: p.Exe, Problem: problem},
		manifest: file, entry: file, hashFile: file,
	}
	if r.opts.NoExeHash {
		c.hashFile = ""
	}
	return c
}

// script identifies a script or module outside any package.
func (r *Resolver) script(root rootFS, p Process, entry, module, problem string) candidate {
	c := candidate{
		id:       Identity{Kind: KindScript, Entry: entry, Manifest: entry, Module: module, Interpreter: p.Exe, Problem: problem},
		manifest: root.real(entry), entry: root.real(entry),
	}
	if root.isDir(entry) {
		c.hashDir = root.real(entry)
	} else {
		c.hashFile = root.real(entry)
	}
	return c
}

// abs returns p made absolute against cwd.
func abs(cwd, p string) string {
	if path.IsAbs(p) {
		return path.Clean(p)
	}
	return path.Join(cwd, p)
}
