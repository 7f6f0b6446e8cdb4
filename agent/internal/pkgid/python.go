package pkgid

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"io"
	"path"
	"slices"
	"strings"
)

// Bounds of Python metadata reading.
const (
	maxSiteEntries = 8192    // entries of a site directory listed
	maxRecord      = 4 << 20 // bytes of a RECORD read
	maxMetadata    = 64 << 10
	maxTopLevel    = 64 << 10
	maxSysPath     = 64 // sys.path entries considered
)

// isPython reports interpreter names: python, python3, python3.11 (and
// pythonw, python3.13t, python3.12d).
func isPython(base string) bool {
	v, ok := strings.CutPrefix(base, "python")
	if !ok {
		return false
	}
	v = strings.TrimRight(v, "dmtw")
	major, minor, dot := strings.Cut(v, ".")
	return strings.Trim(major, "0123456789") == "" && (!dot || minor != "" && strings.Trim(minor, "0123456789") == "")
}

// pythonArgs is what a python command line runs.
type pythonArgs struct {
	module, script string
	command        bool // -c, or stdin
	ignoreEnv      bool // -E or -I: PYTHON* variables ignored
	noUserSite     bool // -s or -I
	safePath       bool // -P or -I: no script directory or cwd in sys.path
}

// parsePythonArgs reads python's options: single-letter flags may be
// combined ("-uBm mod"); -m, -c, -X and -W take the rest of the argument
// or the next one.
func parsePythonArgs(args []string) pythonArgs {
	var a pythonArgs
	for i := 1; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "-" || arg == "--" && i+1 >= len(args):
			a.command = true
			return a
		case arg == "--":
			a.script = args[i+1]
			return a
		case strings.HasPrefix(arg, "--"):
			if arg == "--check-hash-based-pycs" {
				i++
			}
			continue
		case strings.HasPrefix(arg, "-") && len(arg) > 1:
			for j := 1; j < len(arg); j++ {
				switch arg[j] {
				case 'E':
					a.ignoreEnv = true
				case 's':
					a.noUserSite = true
				case 'P':
					a.safePath = true
				case 'I':
					a.ignoreEnv, a.noUserSite, a.safePath = true, true, true
				case 'm', 'c', 'X', 'W':
					value := arg[j+1:]
					if value == "" && i+1 < len(args) {
						i++
						value = args[i]
					}
					switch arg[j] {
					case 'm':
						a.module = value
						a.command = value == "" // python reports the error
						return a
					case 'c':
						a.command = true
						return a
					}
					j = len(arg)
				}
			}
		default:
			a.script = arg
			return a
		}
	}
	a.command = true // the REPL
	return a
}

// python identifies a python process: the distribution of its module or
// script, or the module or script itself.
func (r *Resolver) python(root rootFS, p Process) candidate {
	a := parsePythonArgs(p.Args)
	if a.command || a.module == "" && a.script == "" {
		return r.exe(root, p, "")
	}
	env := p.Env
	if a.ignoreEnv {
		env = map[string]string{"PATH": p.Env["PATH"], "HOME": p.Env["HOME"]}
	}
	if env["PYTHONNOUSERSITE"] != "" {
		a.noUserSite = true
	}
	if env["PYTHONSAFEPATH"] != "" {
		a.safePath = true
	}
	var first string // sys.path[0]
	var script, named string
	if a.script != "" {
		named = abs(p.Cwd, a.script)
		s, err := root.resolve(named)
		if err != nil {
			c := r.exe(root, p, "script "+a.script+": "+err.Error())
			c.id.Interpreter = p.Exe
			return c
		}
		script, first = s, path.Dir(s)
	} else {
		first = p.Cwd
	}
	var sysPath []string
	if !a.safePath {
		sysPath = append(sysPath, first)
	}
	for _, d := range strings.Split(env["PYTHONPATH"], ":") {
		if d != "" {
			sysPath = append(sysPath, abs(p.Cwd, d))
		}
	}
	sysPath = append(sysPath, pythonSitePath(root, p, a.noUserSite)...)
	sysPath = resolveDirs(root, sysPath)

	if a.module != "" {
		return r.pythonModule(root, p, a.module, sysPath)
	}
	return r.pythonScript(root, p, script, named, sysPath)
}

// pythonSitePath returns the standard library and site directories of
// the interpreter, in sys.path order: the venv of argv[0] if any, else
// the prefix of the executable (Debian's dist-packages and the usual
// site-packages), with the user site first unless disabled.
func pythonSitePath(root rootFS, p Process, noUserSite bool) []string {
	exe, err := root.resolve(p.Exe)
	if err != nil {
		exe = p.Exe
	}
	prefix := path.Dir(path.Dir(exe))
	version := pythonVersion(root, exe, prefix)
	lib := "python" + version
	out := []string{path.Join(prefix, "lib", lib), path.Join(prefix, "lib", lib, "lib-dynload")}

	// A venv is found from the path the interpreter was started by
	// (its link in the venv's bin), not from the executable it links to.
	var venv string
	if len(p.Args) > 0 {
		if inv := pythonInvocation(root, p); inv != "" {
			if cfg := path.Join(path.Dir(path.Dir(inv)), "pyvenv.cfg"); root.isFile(cfg) {
				venv = path.Dir(cfg)
			}
		}
	}
	system := true
	if venv != "" {
		out = append(out, path.Join(venv, "lib", lib, "site-packages"))
		data, _, _ := root.readFile(path.Join(venv, "pyvenv.cfg"), maxMetadata)
		system = false
		for line := range strings.SplitSeq(string(data), "\n") {
			k, v, _ := strings.Cut(line, "=")
			if strings.TrimSpace(k) == "include-system-site-packages" && strings.EqualFold(strings.TrimSpace(v), "true") {
				system = true
			}
		}
	} else if !noUserSite && p.Env["HOME"] != "" {
		out = append(out, path.Join(p.Env["HOME"], ".local/lib", lib, "site-packages"))
	}
	if system {
		out = append(out,
			path.Join(prefix, "local/lib", lib, "dist-packages"),
			path.Join(prefix, "lib/python3/dist-packages"),
			path.Join(prefix, "lib", lib, "dist-packages"),
			path.Join(prefix, "lib", lib, "site-packages"),
		)
	}
	return out
}

// pythonInvocation returns the path argv[0] names (found in PATH when a
// bare name), without resolving its last link.
func pythonInvocation(root rootFS, p Process) string {
	a0 := p.Args[0]
	if strings.Contains(a0, "/") {
		return abs(p.Cwd, a0)
	}
	for _, d := range strings.Split(p.Env["PATH"], ":") {
		if d == "" {
			continue
		}
		c := path.Join(abs(p.Cwd, d), a0)
		if root.isFile(c) {
			return c
		}
	}
	return ""
}

// pythonVersion returns "3.11" from the executable's name, or from the
// prefix's lib/python3.* directories.
func pythonVersion(root rootFS, exe, prefix string) string {
	base := strings.TrimRight(path.Base(exe), "dmtw")
	if v, ok := strings.CutPrefix(base, "python"); ok && strings.Contains(v, ".") {
		return v
	}
	entries, _ := root.readDir(path.Join(prefix, "lib"), maxSiteEntries)
	for i := len(entries) - 1; i >= 0; i-- {
		n := entries[i].Name()
		if v, ok := strings.CutPrefix(n, "python3."); ok && v != "" && strings.Trim(v, "0123456789") == "" {
			return "3." + v
		}
	}
	return "3"
}

// resolveDirs keeps the existing directories, links resolved, without
// duplicates, at most maxSysPath.
func resolveDirs(root rootFS, dirs []string) []string {
	var out []string
	for _, d := range dirs {
		rd, err := root.resolve(d)
		if err != nil || !root.isDir(rd) || slices.Contains(out, rd) {
			continue
		}
		out = append(out, rd)
		if len(out) == maxSysPath {
			break
		}
	}
	return out
}

// pythonModule identifies "python -m module".
func (r *Resolver) pythonModule(root rootFS, p Process, module string, sysPath []string) candidate {
	top, _, _ := strings.Cut(module, ".")
	// Python takes the first regular package or module on sys.path; a
	// namespace package (a directory without __init__.py) only when
	// there is none.
	var site, found, namespace, nsSite string
	for _, d := range sysPath {
		if f := moduleIn(root, d, top); f != "" {
			site, found = d, f
			break
		}
		if namespace == "" && root.isDir(path.Join(d, top)) {
			namespace, nsSite = path.Join(d, top), d
		}
	}
	if found == "" {
		site, found = nsSite, namespace
	}
	if found == "" {
		c := r.exe(root, p, "module "+module+" not found")
		c.id.Interpreter, c.id.Module = p.Exe, module
		return c
	}
	entry := moduleFile(root, site, module, found)
	if c, ok := r.distribution(root, p, site, []string{top}, entry); ok {
		c.id.Module = module
		return c
	}
	return r.script(root, p, entry, module, "")
}

// moduleIn returns the file or directory of a regular top-level module
// top in dir: a package with __init__.py, a .py file or an extension.
func moduleIn(root rootFS, dir, top string) string {
	pkg := path.Join(dir, top)
	if root.isFile(path.Join(pkg, "__init__.py")) {
		return pkg
	}
	if f := pkg + ".py"; root.isFile(f) {
		return f
	}
	entries, _ := root.readDir(dir, maxSiteEntries)
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, top+".") && strings.HasSuffix(n, ".so") {
			return path.Join(dir, n)
		}
	}
	return ""
}

// moduleFile returns the file "-m module" runs: the submodule's .py, or
// a package's __main__.py; else what was found.
func moduleFile(root rootFS, site, module, found string) string {
	rel := strings.ReplaceAll(module, ".", "/")
	for _, f := range []string{
		path.Join(site, rel+".py"),
		path.Join(site, rel, "__main__.py"),
	} {
		if root.isFile(f) {
			return f
		}
	}
	return found
}

// pythonScript identifies "python script" (script: links resolved; named:
// as the command line names it, made absolute).
func (r *Resolver) pythonScript(root rootFS, p Process, script, named string, sysPath []string) candidate {
	// A script inside a site directory belongs to the distribution that
	// installed its top-level directory; a script elsewhere (a console
	// script in bin) to the distribution whose RECORD lists it.
	for _, d := range sysPath {
		rel, ok := strings.CutPrefix(script, d+"/")
		if !ok {
			continue
		}
		top, _, _ := strings.Cut(rel, "/")
		top = strings.TrimSuffix(top, ".py")
		if c, ok := r.distribution(root, p, d, []string{top}, script); ok {
			return c
		}
	}
	// A package's script run by path from a site directory the
	// interpreter was not told of (a copied or vendored installation):
	// the distribution there that installed the script's directory.
	if site := path.Dir(path.Dir(script)); !slices.Contains(sysPath, site) && site != "/" {
		if c, ok := r.distribution(root, p, site, []string{path.Base(path.Dir(script))}, script); ok {
			return c
		}
	}
	if path.Base(path.Dir(named)) != "bin" && path.Base(path.Dir(script)) != "bin" {
		return r.script(root, p, script, "", "")
	}
	// A console script: the module its wrapper imports, in the
	// distribution that installed it.
	if module := consoleScriptModule(root, script); module != "" {
		top, _, _ := strings.Cut(module, ".")
		for _, d := range sysPath {
			if moduleIn(root, d, top) == "" {
				continue
			}
			if c, ok := r.distribution(root, p, d, []string{top}, script); ok {
				return c
			}
			break
		}
	}
	for _, d := range sysPath {
		if c, ok := r.distributionOfFile(root, p, d, script, named); ok {
			return c
		}
	}
	return r.script(root, p, script, "", "")
}

// consoleScriptModule returns the module a pip console-script wrapper
// imports its entry point from ("from mcp_server_git import main").
func consoleScriptModule(root rootFS, script string) string {
	data, _, err := root.readFile(script, 4096)
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "from ")
		if !ok {
			continue
		}
		module, _, ok := strings.Cut(rest, " import ")
		if ok && module != "__future__" && module != "" && !strings.ContainsAny(module, " \t/") {
			return module
		}
	}
	return ""
}

// distInfo is an installed distribution's metadata directory.
type distInfo struct {
	dir    string // the .dist-info or .egg-info directory
	egg    bool
	record []string // RECORD (or installed-files.txt) paths, relative to the site directory
}

// distributions lists the metadata directories of a site directory.
func distributions(root rootFS, site string) []distInfo {
	entries, _ := root.readDir(site, maxSiteEntries)
	var out []distInfo
	for _, e := range entries {
		n := e.Name()
		switch {
		case strings.HasSuffix(n, ".dist-info"):
			out = append(out, distInfo{dir: path.Join(site, n)})
		case strings.HasSuffix(n, ".egg-info") && root.isDir(path.Join(site, n)):
			out = append(out, distInfo{dir: path.Join(site, n), egg: true})
		}
	}
	return out
}

// readRecord reads the files a distribution installed, relative to the
// site directory: RECORD's first column, or an egg's
// installed-files.txt (relative to the egg-info directory).
func (d *distInfo) readRecord(root rootFS) []string {
	if d.record != nil {
		return d.record
	}
	d.record = []string{}
	if d.egg {
		data, _, err := root.readFile(path.Join(d.dir, "installed-files.txt"), maxRecord)
		if err != nil {
			return d.record
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				d.record = append(d.record, path.Clean(path.Join(path.Base(d.dir), line)))
			}
		}
		return d.record
	}
	data, _, err := root.readFile(path.Join(d.dir, "RECORD"), maxRecord)
	if err != nil {
		return d.record
	}
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			continue
		}
		if len(rec) > 0 && rec[0] != "" {
			d.record = append(d.record, path.Clean(rec[0]))
		}
	}
	return d.record
}

// owns reports whether the distribution installed the top-level module or
// package top: top_level.txt names it, or RECORD lists a file under it.
func (d *distInfo) owns(root rootFS, top string) bool {
	if data, _, err := root.readFile(path.Join(d.dir, "top_level.txt"), maxTopLevel); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if strings.TrimSpace(line) == top {
				return true
			}
		}
	}
	for _, f := range d.readRecord(root) {
		if f == top+".py" || strings.HasPrefix(f, top+"/") || strings.HasPrefix(f, top+".") && strings.HasSuffix(f, ".so") {
			return true
		}
	}
	return false
}

// distribution finds the distribution in site that installed one of the
// top-level names.
func (r *Resolver) distribution(root rootFS, p Process, site string, tops []string, entry string) (candidate, bool) {
	dists := distributions(root, site)
	for i := range dists {
		for _, top := range tops {
			if dists[i].owns(root, top) {
				return r.distCandidate(root, p, site, &dists[i], entry), true
			}
		}
	}
	return candidate{}, false
}

// distributionOfFile finds the distribution of site whose RECORD lists
// file, or its other name (a console script: "../../../bin/name").
func (r *Resolver) distributionOfFile(root rootFS, p Process, site, file, other string) (candidate, bool) {
	dists := distributions(root, site)
	for i := range dists {
		for _, f := range dists[i].readRecord(root) {
			if j := path.Join(site, f); j == file || j == other {
				return r.distCandidate(root, p, site, &dists[i], file), true
			}
		}
	}
	return candidate{}, false
}

// distCandidate makes the identity of an installed distribution: name and
// version from METADATA (PKG-INFO for eggs), its files from RECORD (left
// out: files outside the site directory, bytecode, and the records of
// the installation itself, which differ between installers).
func (r *Resolver) distCandidate(root rootFS, p Process, site string, d *distInfo, entry string) candidate {
	metaName := "METADATA"
	if d.egg {
		metaName = "PKG-INFO"
	}
	meta := path.Join(d.dir, metaName)
	name, version := readMetadata(root, meta)
	if name == "" {
		// "name-1.0.dist-info"
		base := strings.TrimSuffix(strings.TrimSuffix(path.Base(d.dir), ".dist-info"), ".egg-info")
		name, version, _ = strings.Cut(base, "-")
	}
	c := candidate{
		id: Identity{
			Kind: KindPython, Name: name, Version: version, Dir: site, Manifest: meta,
			Entry: entry, Interpreter: p.Exe,
		},
		manifest: root.real(meta), entry: root.real(entry),
	}
	if !root.isFile(meta) {
		c.manifest = root.real(d.dir)
	}
	infoDir := path.Base(d.dir)
	var files []string
	for _, f := range d.readRecord(root) {
		switch {
		case f == ".." || strings.HasPrefix(f, "../") || path.IsAbs(f),
			strings.Contains("/"+f+"/", "/__pycache__/"), strings.HasSuffix(f, ".pyc"),
			path.Dir(f) == infoDir && slices.Contains([]string{"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}, path.Base(f)):
			continue
		}
		files = append(files, f)
	}
	if len(files) > 0 {
		c.hashBase, c.hashFiles = root.real(site), files
	} else {
		// No RECORD: the metadata directory itself.
		c.hashDir = root.real(d.dir)
	}
	return c
}

// readMetadata reads Name and Version from a METADATA or PKG-INFO header.
func readMetadata(root rootFS, p string) (name, version string) {
	data, _, err := root.readFile(p, maxMetadata)
	if err != nil {
		return "", ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "name":
			name = cut8(strings.TrimSpace(v), maxNameLen)
		case "version":
			version = cut8(strings.TrimSpace(v), maxVersionLen)
		}
	}
	return name, version
}
