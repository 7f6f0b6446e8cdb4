package policy

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseSource feeds arbitrary text to the policy parser and decoder:
// it must never panic, every error must carry a message, and printing the
// diagnostics must work.
func FuzzParseSource(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/broken", "../../../hcl/policies"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.hcl"))
		for _, name := range files {
			if b, err := os.ReadFile(name); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`email_security_policy "x" { mode = "monitor" }`))
	f.Fuzz(func(t *testing.T, src []byte) {
		set, diags := ParseSource("fuzz.hcl", src)
		if set == nil {
			t.Fatal("nil set")
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
		for _, p := range set.Policies {
			if p.Name == "" || p.Effects == nil || p.Bulk.Window <= 0 || p.QuarantineFor <= 0 {
				t.Fatalf("incomplete policy %+v", p)
			}
		}
	})
}
