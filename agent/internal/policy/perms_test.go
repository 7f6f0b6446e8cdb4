package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

func okPolicy(t *testing.T) []byte {
	t.Helper()
	src, err := os.ReadFile("../../../hcl/policies/default.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// A policy file or directory that another user could change is refused,
// with its path, mode and owner; a safe one loads; a sticky directory
// above (as /tmp) is fine, a group-writable one is not.
func TestUnsafePolicyPathsRefused(t *testing.T) {
	testenv.RequireRoot(t) // chown to another user
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, top, dir, file string)
		want  string // "" loads
	}{
		{"safe", func(t *testing.T, top, dir, file string) {}, ""},
		{"file world-writable", func(t *testing.T, top, dir, file string) { chmod(t, file, 0o666) }, "mode 0666"},
		{"file group-writable", func(t *testing.T, top, dir, file string) { chmod(t, file, 0o664) }, "writable by group or others"},
		{"file of another user", func(t *testing.T, top, dir, file string) { chown(t, file, 65534) }, "owned by uid 65534"},
		{"dir world-writable", func(t *testing.T, top, dir, file string) { chmod(t, dir, 0o777) }, "mode 0777"},
		{"dir sticky world-writable", func(t *testing.T, top, dir, file string) { chmod(t, dir, 0o1777) }, "mode 1777"},
		{"dir of another user", func(t *testing.T, top, dir, file string) { chown(t, dir, 65534) }, "owned by uid 65534"},
		{"parent group-writable", func(t *testing.T, top, dir, file string) { chmod(t, top, 0o775) }, "writable by group or others"},
		{"parent sticky", func(t *testing.T, top, dir, file string) { chmod(t, top, 0o1777) }, ""},
		{"link to an unsafe file", func(t *testing.T, top, dir, file string) {
			other := filepath.Join(top, "elsewhere.hcl")
			if err := os.WriteFile(other, okPolicy(t), 0o666); err != nil {
				t.Fatal(err)
			}
			chmod(t, other, 0o666)
			if err := os.Symlink(other, filepath.Join(dir, "b.hcl")); err != nil {
				t.Fatal(err)
			}
		}, "elsewhere.hcl"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			top := filepath.Join(t.TempDir(), "etc")
			dir := filepath.Join(top, "policy.d")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "a.hcl")
			if err := os.WriteFile(file, okPolicy(t), 0o644); err != nil {
				t.Fatal(err)
			}
			tc.setup(t, top, dir, file)
			_, diags := Load(dir)
			var out strings.Builder
			cerr := Check([]string{dir}, &out)
			if tc.want == "" {
				if diags.HasErrors() || cerr != nil {
					t.Fatalf("refused: %v / %v\n%s", diags, cerr, out.String())
				}
				return
			}
			if !diags.HasErrors() || !strings.Contains(diags.Error(), tc.want) || !strings.Contains(diags.Error(), "Unsafe policy path") {
				t.Errorf("Load: %v, want an error with %q", diags, tc.want)
			}
			if cerr == nil || !strings.Contains(out.String(), tc.want) {
				t.Errorf("Check: %v\n%s\nwant a failure with %q", cerr, out.String(), tc.want)
			}
		})
	}
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if m&0o1000 != 0 {
		m = m&0o777 | os.ModeSticky
	}
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

func chown(t *testing.T, p string, uid int) {
	t.Helper()
	if err := os.Chown(p, uid, -1); err != nil {
		t.Fatal(err)
	}
}
