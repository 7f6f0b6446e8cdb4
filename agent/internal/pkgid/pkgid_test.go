package pkgid

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
)

func procFS() proc.FS { return proc.FS{} }

// tree writes files under dir: "path": "content"; a content starting
// with "->" makes a symbolic link to the rest.
func tree(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(content, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// npmProject is a project with postmark-mcp installed, as npm lays it out.
func npmProject(t *testing.T, dir, version string) {
	tree(t, dir, map[string]string{
		"package.json":                                                           `{"name":"my-app","version":"0.0.1","dependencies":{"postmark-mcp":"^1.0.0"}}`,
		"node_modules/postmark-mcp/package.json":                                 `{"name":"postmark-mcp","version":"` + version + `","bin":{"postmark-mcp":"index.js"},"type":"module"}`,
		"node_modules/postmark-mcp/index.js":                                     "#!/usr/bin/env node\nimport './lib/server.js'\n",
		"node_modules/postmark-mcp/lib/server.js":                                "export const bcc = ''\n",
		"node_modules/postmark-mcp/node_modules/dep/package.json":                `{"name":"dep","version":"1.0.0"}`,
		"node_modules/postmark-mcp/node_modules/dep/index.js":                    "module.exports = 1\n",
		"node_modules/.bin/postmark-mcp":                                         "->../postmark-mcp/index.js",
		"node_modules/@modelcontextprotocol/server-everything/package.json":      `{"name":"@modelcontextprotocol/server-everything","version":"2025.9.25","main":"dist/index.js"}`,
		"node_modules/@modelcontextprotocol/server-everything/dist/index.js":     "console.log(1)\n",
		"node_modules/@modelcontextprotocol/server-everything/dist/package.json": `{"type":"module"}`,
		"node_modules/.bin/mcp-server-everything":                                "->../@modelcontextprotocol/server-everything/dist/index.js",
		"scripts/tool.js": "console.log('no package above but my-app')\n",
	})
}

func TestNode(t *testing.T) {
	dir := t.TempDir()
	npmProject(t, dir, "1.0.16")
	loose := t.TempDir()
	tree(t, loose, map[string]string{"server.js": "console.log(1)\n"})
	bin := t.TempDir()
	tree(t, bin, map[string]string{"node": "\x7fELF node"})
	node := bin + "/node"
	pm := filepath.Join(dir, "node_modules/postmark-mcp")
	ev := filepath.Join(dir, "node_modules/@modelcontextprotocol/server-everything")
	for _, tc := range []struct {
		name        string
		args        []string
		cwd         string
		kind        Kind
		pkg, entry  string
		dir         string
		problemLike string
	}{
		{"bin link", []string{"node", "node_modules/.bin/postmark-mcp"}, dir, KindNPM, "npm:postmark-mcp@1.0.16", pm + "/index.js", pm, ""},
		{"absolute path, options", []string{"/usr/bin/node", "--enable-source-maps", "-r", "dotenv/config", "--max-old-space-size=512", pm + "/index.js", "--port", "3"}, "/", KindNPM, "npm:postmark-mcp@1.0.16", pm + "/index.js", pm, ""},
		{"without extension", []string{"node", "lib/server"}, pm, KindNPM, "npm:postmark-mcp@1.0.16", pm + "/lib/server.js", pm, ""},
		{"package directory", []string{"node", "."}, ev, KindNPM, "npm:@modelcontextprotocol/server-everything@2025.9.25", ev + "/dist/index.js", ev, ""},
		{"scoped, type-only package.json below", []string{"node", "node_modules/.bin/mcp-server-everything"}, dir, KindNPM, "npm:@modelcontextprotocol/server-everything@2025.9.25", ev + "/dist/index.js", ev, ""},
		{"after --", []string{"node", "--", "scripts/tool.js"}, dir, KindNPM, "npm:my-app@0.0.1", dir + "/scripts/tool.js", dir, ""},
		{"script outside any package", []string{"node", "server.js"}, loose, KindScript, "script:" + loose + "/server.js", loose + "/server.js", "", ""},
		{"eval", []string{"node", "-e", "1"}, dir, KindExe, "exe:" + node, node, "", ""},
		{"REPL", []string{"node"}, dir, KindExe, "exe:" + node, node, "", ""},
		{"missing script", []string{"node", "nope.js"}, dir, KindExe, "exe:" + node, node, "", "nope.js"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := New(procFS(), Options{})
			id, err := r.Identify(Process{Exe: node, Args: tc.args, Cwd: tc.cwd})
			if err != nil {
				t.Fatal(err)
			}
			if id.Kind != tc.kind || id.String() != tc.pkg || id.Entry != tc.entry || id.Dir != tc.dir {
				t.Fatalf("got %s kind %s entry %s dir %s (%s)", id, id.Kind, id.Entry, id.Dir, id.Problem)
			}
			if !strings.Contains(id.Problem, tc.problemLike) || (tc.problemLike == "") != (id.Problem == "") {
				t.Fatalf("problem %q", id.Problem)
			}
			if !strings.HasPrefix(id.Hash.Sum, "sha256:") || id.Hash.Files == 0 || id.Hash.Cut {
				t.Fatalf("hash %+v", id.Hash)
			}
			if id.Kind == KindNPM && id.Manifest != id.Dir+"/package.json" {
				t.Fatalf("manifest %s", id.Manifest)
			}
		})
	}
}

func TestPackageHash(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	npmProject(t, a, "1.0.16")
	npmProject(t, b, "1.0.16")
	r := New(procFS(), Options{})
	idOf := func(dir string) Identity {
		t.Helper()
		id, err := r.Identify(Process{Exe: "/usr/bin/node", Args: []string{"node", "node_modules/.bin/postmark-mcp"}, Cwd: dir})
		if err != nil || id.Kind != KindNPM {
			t.Fatalf("%s: %v", id, err)
		}
		return id
	}
	ha := idOf(a).Hash
	// Same files elsewhere: same hash. Three files: package.json,
	// index.js, lib/server.js; nested node_modules left out.
	if hb := idOf(b).Hash; hb != ha || ha.Files != 3 {
		t.Fatalf("hashes %+v and %+v", ha, hb)
	}
	// The documented format, recomputed.
	pm := filepath.Join(a, "node_modules/postmark-mcp")
	sum := sha256.New()
	for _, rel := range []string{"index.js", "lib/server.js", "package.json"} {
		data, _ := os.ReadFile(filepath.Join(pm, rel))
		sum.Write([]byte(rel + "\x00"))
		var size [8]byte
		binary.BigEndian.PutUint64(size[:], uint64(len(data)))
		sum.Write(size[:])
		sum.Write(data)
	}
	if want := "sha256:" + hex.EncodeToString(sum.Sum(nil)); ha.Sum != want {
		t.Fatalf("hash %s, want %s", ha.Sum, want)
	}
	// Bytecode caches and nested packages do not count; code does.
	tree(t, b, map[string]string{
		"node_modules/postmark-mcp/node_modules/dep/extra.js": "x",
		"node_modules/postmark-mcp/lib/__pycache__/x.pyc":     "x",
		"node_modules/postmark-mcp/lib/y.pyc":                 "x",
	})
	r = New(procFS(), Options{})
	if hb := idOf(b).Hash; hb != ha {
		t.Fatalf("hash changed by left-out files: %+v", hb)
	}
	tree(t, b, map[string]string{"node_modules/postmark-mcp/lib/bcc.js": "export const to = 'phan@giftshop.club'\n"})
	r = New(procFS(), Options{})
	if hb := idOf(b).Hash; hb.Sum == ha.Sum || hb.Files != 4 {
		t.Fatalf("hash unchanged by a new file: %+v", hb)
	}
	// Bounds: files and bytes.
	r = New(procFS(), Options{MaxFiles: 2})
	if h := idOf(a).Hash; !h.Cut || h.Files != 2 {
		t.Fatalf("file bound: %+v", h)
	}
	r = New(procFS(), Options{MaxBytes: 10})
	if h := idOf(a).Hash; !h.Cut || h.Bytes != 10 {
		t.Fatalf("byte bound: %+v", h)
	}
}

func TestContentCache(t *testing.T) {
	dir := t.TempDir()
	npmProject(t, dir, "1.0.15")
	r := New(procFS(), Options{})
	p := Process{Exe: "/usr/bin/node", Args: []string{"node", "node_modules/.bin/postmark-mcp"}, Cwd: dir}
	first, _ := r.Identify(p)
	again, _ := r.Identify(p)
	if r.Stats().Hashes != 1 || again != first {
		t.Fatalf("stats %+v; %v, %v", r.Stats(), first, again)
	}
	// Upgraded in place as npm does it: same size, and npm's fixed
	// mtime. Only the ctime changes.
	pj := filepath.Join(dir, "node_modules/postmark-mcp/package.json")
	fi, _ := os.Stat(pj)
	time.Sleep(10 * time.Millisecond)
	data, _ := os.ReadFile(pj)
	if err := os.WriteFile(pj, []byte(strings.Replace(string(data), "1.0.15", "1.0.16", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(pj, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	up, _ := r.Identify(p)
	if up.Version != "1.0.16" || up.Hash.Sum == first.Hash.Sum || r.Stats().Hashes != 2 {
		t.Fatalf("after the upgrade: %s %+v, stats %+v", up, up.Hash, r.Stats())
	}
	// The cache is bounded.
	r = New(procFS(), Options{MaxEntries: 2})
	for range 3 {
		d := t.TempDir()
		npmProject(t, d, "1.0.0")
		r.Identify(Process{Exe: "/usr/bin/node", Args: []string{"node", "node_modules/.bin/postmark-mcp"}, Cwd: d})
	}
	if len(r.content) > 2 {
		t.Fatalf("%d content entries", len(r.content))
	}
}

// A process in another root (a container): absolute links resolve inside
// it, and paths are reported as the process sees them.
func TestOtherRoot(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{
		"usr/lib/node_modules/mail-mcp/package.json": `{"name":"mail-mcp","version":"3.1.4"}`,
		"usr/lib/node_modules/mail-mcp/cli.js":       "1",
		"usr/bin/mail-mcp":                           "->/usr/lib/node_modules/mail-mcp/cli.js",
		"usr/bin/node":                               "",
	})
	r := New(procFS(), Options{})
	id, err := r.Identify(Process{Root: root, Exe: "/usr/bin/node", Args: []string{"node", "/usr/bin/mail-mcp"}, Cwd: "/"})
	if err != nil || id.String() != "npm:mail-mcp@3.1.4" || id.Dir != "/usr/lib/node_modules/mail-mcp" || id.Entry != "/usr/lib/node_modules/mail-mcp/cli.js" {
		t.Fatalf("%s dir %s entry %s: %v %s", id, id.Dir, id.Entry, err, id.Problem)
	}
	// A native executable in that root.
	tree(t, root, map[string]string{"usr/local/bin/tool": "\x7fELF"})
	id, _ = r.Identify(Process{Root: root, Exe: "/usr/local/bin/tool", Args: []string{"tool"}, Cwd: "/"})
	want := sha256.Sum256([]byte("\x7fELF"))
	if id.String() != "exe:/usr/local/bin/tool" || id.Hash.Sum != "sha256:"+hex.EncodeToString(want[:]) || id.Hash.Files != 1 {
		t.Fatalf("%s %+v", id, id.Hash)
	}
}

func TestResolve(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{
		"a/b/file": "x",
		"abs":      "->/a/b",
		"rel":      "->a/b/../b",
		"loop1":    "->loop2",
		"loop2":    "->loop1",
		"up":       "->../../../../a",
	})
	r := rootFS{root: root}
	for _, tc := range []struct{ in, want string }{
		{"/abs/file", "/a/b/file"}, {"/rel/file", "/a/b/file"}, {"/a/./b//file", "/a/b/file"},
		{"/abs/../b/file", "/a/b/file"}, {"/up/b", "/a/b"}, {"/../../a", "/a"},
	} {
		if got, err := r.resolve(tc.in); err != nil || got != tc.want {
			t.Errorf("resolve(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	if _, err := r.resolve("/loop1"); !errors.Is(err, errLoop) {
		t.Errorf("loop: %v", err)
	}
	if _, err := r.resolve("/a/missing"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	if _, err := r.resolve("relative"); err == nil {
		t.Error("relative path accepted")
	}
}

func TestNodeScriptArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node", "x.js"}, "x.js"},
		{[]string{"node", "--inspect", "--require", "a", "--import=b", "-r", "c", "x.js", "-r"}, "x.js"},
		{[]string{"node", "--title", "t", "--", "--x.js"}, "--x.js"},
		{[]string{"node", "-p", "1"}, ""},
		{[]string{"node", "--eval=1"}, ""},
		{[]string{"node", "-"}, ""},
		{[]string{"node", "--"}, ""},
		{[]string{"node", "-r"}, ""},
		{nil, ""},
	} {
		if got := nodeScript(tc.args); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.args, got, tc.want)
		}
	}
	for name, want := range map[string]bool{"node": true, "nodejs": true, "node.exe": false, "nodemon": false} {
		if isNode(name) != want {
			t.Errorf("isNode(%s)", name)
		}
	}
}
