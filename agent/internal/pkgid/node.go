package pkgid

import (
	"encoding/json"
	"path"
	"strings"
	"unicode/utf8"
)

// Bounds of package.json reading.
const (
	maxPackageJSON = 1 << 20
	maxWalkUp      = 64
	maxNameLen     = 214 // npm's own bound on package names
	maxVersionLen  = 256
)

func isNode(base string) bool { return base == "node" || base == "nodejs" }

// nodeOptsWithValue are node options whose value is the next argument
// when not given with "=".
func nodeOptWithValue(opt string) bool {
	switch opt {
	case "-r", "--require", "--import", "--loader", "--experimental-loader", "--input-type",
		"--env-file", "--title", "-C", "--conditions", "--inspect-port", "--debug-port",
		"--redirect-warnings", "--icu-data-dir", "--openssl-config", "--experimental-policy",
		"--diagnostic-dir", "--report-dir", "--report-directory", "--cpu-prof-dir", "--heap-prof-dir",
		"--secure-heap", "--secure-heap-min", "--disable-warning", "--watch-path", "--stack-trace-limit":
		return true
	}
	return false
}

// nodeScript returns the script argument of a node command line ("" for
// -e, -p, the REPL or stdin).
func nodeScript(args []string) string {
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if i+1 < len(args) {
				return args[i+1]
			}
			return ""
		case a == "-":
			return ""
		case a == "-e" || a == "--eval" || a == "-p" || a == "--print" || strings.HasPrefix(a, "--eval=") || strings.HasPrefix(a, "--print="):
			return ""
		case strings.HasPrefix(a, "-"):
			if !strings.Contains(a, "=") && nodeOptWithValue(a) {
				i++
			}
		default:
			return a
		}
	}
	return ""
}

// packageJSON is what AARSM reads of a package.json.
type packageJSON struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Main    string `json:"main"`
}

func readPackageJSON(root rootFS, p string) (packageJSON, bool) {
	data, cut, err := root.readFile(p, maxPackageJSON)
	if err != nil || cut {
		return packageJSON{}, false
	}
	var pj packageJSON
	if json.Unmarshal(data, &pj) != nil {
		return packageJSON{}, false
	}
	pj.Name, pj.Version = cut8(pj.Name, maxNameLen), cut8(pj.Version, maxVersionLen)
	return pj, true
}

// node identifies a node process: the script's npm package, or the script.
func (r *Resolver) node(root rootFS, p Process) candidate {
	arg := nodeScript(p.Args)
	if arg == "" {
		return r.exe(root, p, "")
	}
	script, err := nodeResolve(root, abs(p.Cwd, arg))
	if err != nil {
		c := r.exe(root, p, "script "+arg+": "+err.Error())
		c.id.Interpreter = p.Exe
		return c
	}
	dir, pj, ok := nearestPackage(root, path.Dir(script))
	if !ok {
		return r.script(root, p, script, "", "")
	}
	manifest := path.Join(dir, "package.json")
	return candidate{
		id: Identity{
			Kind: KindNPM, Name: pj.Name, Version: pj.Version, Dir: dir, Manifest: manifest,
			Entry: script, Interpreter: p.Exe,
		},
		manifest: root.real(manifest), entry: root.real(script), hashDir: root.real(dir),
	}
}

// nodeResolve finds the file node runs for a script path: the path with
// its links resolved (node_modules/.bin/x → the package's bin file), or
// with an extension added, or a directory's main or index.js.
func nodeResolve(root rootFS, p string) (string, error) {
	rp, err := root.resolve(p)
	if err != nil {
		for _, ext := range []string{".js", ".mjs", ".cjs", ".json", ".node"} {
			if rp, err2 := root.resolve(p + ext); err2 == nil && root.isFile(rp) {
				return rp, nil
			}
		}
		return "", err
	}
	if !root.isDir(rp) {
		return rp, nil
	}
	if pj, ok := readPackageJSON(root, path.Join(rp, "package.json")); ok && pj.Main != "" {
		if m, err := nodeResolve(root, path.Join(rp, pj.Main)); err == nil && !root.isDir(m) {
			return m, nil
		}
	}
	return root.resolve(path.Join(rp, "index.js"))
}

// nearestPackage walks up from dir to the nearest package.json that
// names a package (a package.json with only "type" in a subdirectory
// names none), stopping at a node_modules directory or the root.
func nearestPackage(root rootFS, dir string) (string, packageJSON, bool) {
	for range maxWalkUp {
		if path.Base(dir) == "node_modules" {
			break
		}
		if pj, ok := readPackageJSON(root, path.Join(dir, "package.json")); ok && pj.Name != "" {
			return dir, pj, true
		}
		if dir == "/" {
			break
		}
		dir = path.Dir(dir)
	}
	return "", packageJSON{}, false
}

// cut8 shortens s to at most n bytes without splitting a rune.
func cut8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
