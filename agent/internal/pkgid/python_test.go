package pkgid

import (
	"slices"
	"strings"
	"testing"
)

// distInfo files as pip writes them for a wheel.
func wheel(site, module, dist, version string, extra map[string]string) map[string]string {
	info := strings.ReplaceAll(dist, "-", "_") + "-" + version + ".dist-info"
	files := map[string]string{
		site + "/" + module + "/__init__.py":            "",
		site + "/" + module + "/__main__.py":            "from . import server\nserver.main()\n",
		site + "/" + module + "/server.py":              "def main(): pass\n",
		site + "/" + module + "/__pycache__/server.pyc": "bytecode",
		site + "/" + info + "/METADATA":                 "Metadata-Version: 2.1\nName: " + dist + "\nVersion: " + version + "\nSummary: Send mail\n\nLong description.\nName: not-this\n",
		site + "/" + info + "/INSTALLER":                "pip\n",
		site + "/" + info + "/WHEEL":                    "Wheel-Version: 1.0\n",
		site + "/" + info + "/entry_points.txt":         "[console_scripts]\n" + dist + " = " + module + ".server:main\n",
		site + "/" + info + "/RECORD": module + "/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n" +
			module + "/__main__.py,sha256=x,38\n" + module + "/server.py,sha256=y,17\n" +
			module + "/__pycache__/server.cpython-311.pyc,,\n" +
			info + "/METADATA,sha256=z,99\n" + info + "/INSTALLER,sha256=w,4\n" + info + "/RECORD,,\n" +
			"../../../bin/" + dist + ",sha256=v,200\n",
	}
	for k, v := range extra {
		files[k] = v
	}
	return files
}

func TestPython(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"usr/bin/python3.11": "\x7fELF python",
		"usr/bin/python3":    "->python3.11",
		// The standard library.
		"usr/lib/python3.11/json/__init__.py": "",
		"usr/lib/python3.11/json/tool.py":     "",
		"usr/lib/python3.11/os.py":            "",
		// Debian's system packages: an egg-info directory.
		"usr/lib/python3/dist-packages/httpx/__init__.py":                   "",
		"usr/lib/python3/dist-packages/httpx-0.26.0.egg-info/PKG-INFO":      "Metadata-Version: 2.1\nName: httpx\nVersion: 0.26.0\n",
		"usr/lib/python3/dist-packages/httpx-0.26.0.egg-info/top_level.txt": "httpx\n",
		// A console script wrapper as pip writes it.
		"usr/local/bin/mail-tools": "#!/usr/bin/python3\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom mailtools.server import main\nif __name__ == '__main__':\n    sys.exit(main())\n",
		"usr/local/bin/other-tool": "#!/usr/bin/python3\nprint(1)\n",
		// A venv with its own site-packages.
		"srv/venv/pyvenv.cfg":     "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.11.2\n",
		"srv/venv/bin/python":     "->/usr/bin/python3.11",
		"srv/venv/bin/python3":    "->python",
		"srv/app/main.py":         "import mailtools\n",
		"home/u/mods/single.py":   "",
		"home/u/mods/nsonly/x.py": "",
	}
	for k, v := range wheel("usr/local/lib/python3.11/dist-packages", "mailtools", "mail-tools", "1.9.4", nil) {
		files[k] = v
	}
	for k, v := range wheel("srv/venv/lib/python3.11/site-packages", "mailtools", "mail-tools", "2.0.0", nil) {
		files[k] = v
	}
	for k, v := range wheel("home/u/.local/lib/python3.11/site-packages", "usertool", "user-tool", "0.1", nil) {
		files[k] = v
	}
	// A single-module distribution without top_level.txt: RECORD says.
	files["home/u/mods/single-3.0.dist-info/METADATA"] = "Name: single\nVersion: 3.0\n"
	files["home/u/mods/single-3.0.dist-info/RECORD"] = "single.py,,\nsingle-3.0.dist-info/METADATA,,\n"
	tree(t, root, files)

	env := map[string]string{"PATH": "/usr/local/bin:/usr/bin", "HOME": "/home/u"}
	site := "/usr/local/lib/python3.11/dist-packages"
	for _, tc := range []struct {
		name     string
		exe      string
		args     []string
		cwd      string
		env      map[string]string
		want     string
		dir      string
		entry    string
		module   string
		problem  string
		hashSize int
	}{
		{"-m package", "/usr/bin/python3.11", []string{"python3", "-m", "mailtools"}, "/", env,
			"python:mail-tools@1.9.4", site, site + "/mailtools/__main__.py", "mailtools", "", 4},
		{"-m submodule, combined flags", "/usr/bin/python3.11", []string{"python3", "-u", "-Bm", "mailtools.server", "--port", "1"}, "/", env,
			"python:mail-tools@1.9.4", site, site + "/mailtools/server.py", "mailtools.server", "", 4},
		{"-m with -X option", "/usr/bin/python3.11", []string{"python3", "-X", "utf8", "-W", "ignore", "-m", "mailtools"}, "/", env,
			"python:mail-tools@1.9.4", site, site + "/mailtools/__main__.py", "mailtools", "", 4},
		{"script in site", "/usr/bin/python3.11", []string{"python3", site + "/mailtools/server.py"}, "/", env,
			"python:mail-tools@1.9.4", site, site + "/mailtools/server.py", "", "", 4},
		{"console script", "/usr/bin/python3.11", []string{"/usr/bin/python3", "/usr/local/bin/mail-tools"}, "/", env,
			"python:mail-tools@1.9.4", site, "/usr/local/bin/mail-tools", "", "", 4},
		{"venv by argv[0]", "/usr/bin/python3.11", []string{"/srv/venv/bin/python3", "-m", "mailtools"}, "/", env,
			"python:mail-tools@2.0.0", "/srv/venv/lib/python3.11/site-packages", "/srv/venv/lib/python3.11/site-packages/mailtools/__main__.py", "mailtools", "", 4},
		{"venv by PATH", "/usr/bin/python3.11", []string{"python", "-m", "mailtools"}, "/", map[string]string{"PATH": "/srv/venv/bin:/usr/bin"},
			"python:mail-tools@2.0.0", "/srv/venv/lib/python3.11/site-packages", "/srv/venv/lib/python3.11/site-packages/mailtools/__main__.py", "mailtools", "", 4},
		{"user site", "/usr/bin/python3.11", []string{"python3", "-m", "usertool"}, "/", env,
			"python:user-tool@0.1", "/home/u/.local/lib/python3.11/site-packages", "/home/u/.local/lib/python3.11/site-packages/usertool/__main__.py", "usertool", "", 4},
		{"egg-info", "/usr/bin/python3.11", []string{"python3", "-m", "httpx"}, "/", env,
			"python:httpx@0.26.0", "/usr/lib/python3/dist-packages", "/usr/lib/python3/dist-packages/httpx", "httpx", "", 2},
		{"PYTHONPATH, RECORD only", "/usr/bin/python3.11", []string{"python3", "-m", "single"}, "/", map[string]string{"PYTHONPATH": "home/u/mods"},
			"python:single@3.0", "/home/u/mods", "/home/u/mods/single.py", "single", "", 2},
		{"cwd on sys.path", "/usr/bin/python3.11", []string{"python3", "-m", "single"}, "/home/u/mods", env,
			"python:single@3.0", "/home/u/mods", "/home/u/mods/single.py", "single", "", 2},
		{"standard library", "/usr/bin/python3.11", []string{"python3", "-m", "json.tool"}, "/", env,
			"script:/usr/lib/python3.11/json/tool.py", "", "/usr/lib/python3.11/json/tool.py", "json.tool", "", 1},
		{"namespace package", "/usr/bin/python3.11", []string{"python3", "-m", "nsonly.x"}, "/home/u/mods", env,
			"script:/home/u/mods/nsonly/x.py", "", "/home/u/mods/nsonly/x.py", "nsonly.x", "", 1},
		{"plain script", "/usr/bin/python3.11", []string{"python3", "main.py"}, "/srv/app", env,
			"script:/srv/app/main.py", "", "/srv/app/main.py", "", "", 1},
		{"bin script of no distribution", "/usr/bin/python3.11", []string{"python3", "/usr/local/bin/other-tool"}, "/", env,
			"script:/usr/local/bin/other-tool", "", "/usr/local/bin/other-tool", "", "", 1},
		{"-I ignores PYTHONPATH", "/usr/bin/python3.11", []string{"python3", "-I", "-m", "single"}, "/", map[string]string{"PYTHONPATH": "/home/u/mods"},
			"exe:/usr/bin/python3.11", "", "/usr/bin/python3.11", "", "module single not found", 1},
		{"-s ignores the user site", "/usr/bin/python3.11", []string{"python3", "-s", "-m", "usertool"}, "/", env,
			"exe:/usr/bin/python3.11", "", "/usr/bin/python3.11", "", "module usertool not found", 1},
		{"-c", "/usr/bin/python3.11", []string{"python3", "-c", "import mailtools"}, "/", env,
			"exe:/usr/bin/python3.11", "", "/usr/bin/python3.11", "", "", 1},
		{"missing script", "/usr/bin/python3.11", []string{"python3", "gone.py"}, "/", env,
			"exe:/usr/bin/python3.11", "", "/usr/bin/python3.11", "", "gone.py", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(procFS(), Options{})
			id, err := r.Identify(Process{Root: root, Exe: tc.exe, Args: tc.args, Cwd: tc.cwd, Env: tc.env})
			if err != nil {
				t.Fatal(err)
			}
			if id.String() != tc.want || id.Dir != tc.dir || id.Entry != tc.entry || (id.Kind != KindExe && id.Module != tc.module) {
				t.Fatalf("got %s dir %q entry %q module %q (problem %q)", id, id.Dir, id.Entry, id.Module, id.Problem)
			}
			if !strings.Contains(id.Problem, tc.problem) || (tc.problem == "") != (id.Problem == "") {
				t.Fatalf("problem %q", id.Problem)
			}
			if id.Hash.Files != tc.hashSize || id.Hash.Cut || !strings.HasPrefix(id.Hash.Sum, "sha256:") {
				t.Fatalf("hash %+v", id.Hash)
			}
			if id.Kind == KindPython && (!strings.HasSuffix(id.Manifest, "/METADATA") && !strings.HasSuffix(id.Manifest, "/PKG-INFO") || id.Interpreter != tc.exe) {
				t.Fatalf("manifest %s interpreter %s", id.Manifest, id.Interpreter)
			}
		})
	}
}

// A distribution's hash covers its files in RECORD, not the bytecode,
// the installer's records or the scripts outside the site directory.
func TestDistributionHash(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	tree(t, a, wheel("site", "mailtools", "mail-tools", "1.9.4", nil))
	tree(t, b, wheel("site", "mailtools", "mail-tools", "1.9.4", map[string]string{
		"site/mail_tools-1.9.4.dist-info/INSTALLER": "uv\n",
		"site/mailtools/__pycache__/server.pyc":     "other bytecode",
	}))
	r := New(procFS(), Options{})
	hash := func(dir string) Hash {
		id, _ := r.Identify(Process{Root: dir, Exe: "/usr/bin/python3.11", Args: []string{"python3", "-m", "mailtools"}, Cwd: "/site"})
		if id.String() != "python:mail-tools@1.9.4" {
			t.Fatalf("%s (%s)", id, id.Problem)
		}
		return id.Hash
	}
	ha := hash(a)
	if hb := hash(b); hb != ha || ha.Files != 4 {
		t.Fatalf("hashes %+v and %+v", ha, hb)
	}
	// New code in a file that is neither the manifest nor the entry is
	// seen by a resolver that has not cached the package (the cache
	// trusts METADATA and the entry file).
	tree(t, b, map[string]string{"site/mailtools/__init__.py": "BCC = 'phan@giftshop.club'\n"})
	r = New(procFS(), Options{})
	if hb := hash(b); hb.Sum == ha.Sum {
		t.Fatal("hash unchanged by new code")
	}
}

func TestPythonArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want pythonArgs
	}{
		{[]string{"python3", "-m", "a.b", "-m", "x"}, pythonArgs{module: "a.b"}},
		{[]string{"python3", "-ma"}, pythonArgs{module: "a"}},
		{[]string{"python3", "-Ium", "a"}, pythonArgs{module: "a", ignoreEnv: true, noUserSite: true, safePath: true}},
		{[]string{"python3", "-E", "-s", "x.py", "-m", "a"}, pythonArgs{script: "x.py", ignoreEnv: true, noUserSite: true}},
		{[]string{"python3", "-Xdev", "-W", "error", "--check-hash-based-pycs", "always", "x.py"}, pythonArgs{script: "x.py"}},
		{[]string{"python3", "-P", "--", "-x.py"}, pythonArgs{script: "-x.py", safePath: true}},
		{[]string{"python3", "-c", "print(1)", "x.py"}, pythonArgs{command: true}},
		{[]string{"python3", "-"}, pythonArgs{command: true}},
		{[]string{"python3"}, pythonArgs{command: true}},
		{[]string{"python3", "-m"}, pythonArgs{command: true}},
	} {
		if got := parsePythonArgs(tc.args); got != tc.want {
			t.Errorf("%q: %+v, want %+v", tc.args, got, tc.want)
		}
	}
	var yes, no []string
	for _, n := range []string{"python", "python3", "python3.11", "python3.13t", "pythonw", "python2.7", "python3.12d", "python3.", "python-config", "python3.11-config", "ipython", "py"} {
		if isPython(n) {
			yes = append(yes, n)
		} else {
			no = append(no, n)
		}
	}
	if !slices.Equal(yes, []string{"python", "python3", "python3.11", "python3.13t", "pythonw", "python2.7", "python3.12d"}) {
		t.Errorf("python names %q, not %q", yes, no)
	}
}
