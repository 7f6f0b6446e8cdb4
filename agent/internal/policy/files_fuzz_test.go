package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzPolicyDir loads a policy directory of two arbitrary files, as
// "aarsm run" and SIGHUP do: names are checked across files (a duplicate
// points at both), a broken file is diagnosed and the valid one kept,
// and the diagnostics print with their snippets.
func FuzzPolicyDir(f *testing.F) {
	company, _ := os.ReadFile("../../../hcl/policies/company.hcl")
	def, _ := os.ReadFile("../../../hcl/policies/default.hcl")
	f.Add(company, def)
	f.Add(company, company)
	f.Add([]byte(`email_security_policy "x" { mode = "enforce" }`), []byte("email_security_policy \"x\" {\n  mode = 1\n}\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, a, b []byte) {
		for i, src := range [][]byte{a, b} {
			if err := os.WriteFile(filepath.Join(dir, []string{"a.hcl", "b.hcl"}[i]), src, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		set, diags := Load(dir)
		if set == nil {
			t.Fatal("nil set")
		}
		names := map[string]bool{}
		for _, p := range set.Policies {
			if names[p.Name] {
				t.Fatalf("policy %q loaded twice", p.Name)
			}
			names[p.Name] = true
		}
		for _, d := range diags {
			if d.Summary == "" {
				t.Fatalf("diagnostic without summary: %+v", d)
			}
		}
		var buf bytes.Buffer
		if err := WriteDiagnostics(&buf, set.Sources, diags); err != nil {
			t.Fatal(err)
		}
	})
}
