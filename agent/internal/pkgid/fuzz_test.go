package pkgid

import (
	"strings"
	"testing"
)

// FuzzCommandLine reads an arbitrary command line (any process chooses
// its own argv) as node's and python's: the script or module found is one
// of the arguments, never a panic.
func FuzzCommandLine(f *testing.F) {
	f.Add("node\x00--require\x00x.js\x00/usr/lib/node_modules/postmark-mcp/index.js")
	f.Add("python3\x00-uBm\x00mcp_server.main\x00--port\x008000")
	f.Add("python3\x00-X\x00dev\x00-W\x00error\x00--\x00script.py")
	f.Add("node\x00--eval=1\x00x")
	f.Fuzz(func(t *testing.T, cmdline string) {
		args := strings.Split(cmdline, "\x00")
		in := func(s string) bool {
			for _, a := range args {
				if strings.Contains(a, s) {
					return true
				}
			}
			return false
		}
		if s := nodeScript(args); s != "" && !in(s) {
			t.Fatalf("node script %q is no argument of %q", s, args)
		}
		p := parsePythonArgs(args)
		if p.script != "" && !in(p.script) || p.module != "" && !in(p.module) {
			t.Fatalf("python %+v from %q", p, args)
		}
		_ = isPython(args[0])
	})
}
