package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
)

// ErrInvalid is the one "invalid policy" error: Check returns it (wrapped)
// when a policy has errors, and so does the agent when its policy
// directory does not load.
var ErrInvalid = errors.New("invalid policy")

// maxFileSize bounds a policy file; policies are small.
const maxFileSize = 4 << 20

// Load reads every *.hcl file of dir (sorted by name, not recursing) and
// returns the policies. The Set is never nil; it holds every policy that
// decoded without error, so a caller may choose to run with it when diags
// has errors. An empty directory yields a warning.
func Load(dir string) (*Set, hcl.Diagnostics) {
	files, diags := expand([]string{dir})
	set, d := ParseFiles(files...)
	diags = append(diags, d...)
	if len(files) == 0 && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "No policy files",
			Detail:   fmt.Sprintf("No *.hcl file in %s: no message will be checked.", dir),
		})
	}
	return set, diags
}

// ParseFiles parses the given policy files, in order, and checks names
// across them. Like Load, it returns the valid policies with diagnostics.
func ParseFiles(paths ...string) (*Set, hcl.Diagnostics) {
	parser := hclparse.NewParser()
	set := &Set{}
	var diags hcl.Diagnostics
	for _, p := range paths {
		src, err := readFile(p)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read policy file",
				Detail:   fmt.Sprintf("Reading %s: %s.", p, unwrapPathError(err)),
			})
			continue
		}
		diags = append(diags, set.add(parser, p, src)...)
	}
	return set.finish(parser, diags)
}

// ParseSource parses policies from memory; name is used in diagnostics.
func ParseSource(name string, src []byte) (*Set, hcl.Diagnostics) {
	parser := hclparse.NewParser()
	set := &Set{}
	diags := set.add(parser, name, src)
	return set.finish(parser, diags)
}

func (set *Set) add(parser *hclparse.Parser, name string, src []byte) hcl.Diagnostics {
	set.Files = append(set.Files, name)
	f, diags := parser.ParseHCL(src, name)
	if f == nil || diags.HasErrors() {
		return diags
	}
	ps, d := set.decodeFile(f)
	set.Policies = append(set.Policies, ps...)
	return append(diags, d...)
}

func (set *Set) finish(parser *hclparse.Parser, diags hcl.Diagnostics) (*Set, hcl.Diagnostics) {
	set.Sources = parser.Files()
	diags = append(diags, duplicateEgressNames(set.Egress)...)
	dd := duplicateNames(set.Policies)
	if len(dd) > 0 {
		diags = append(diags, dd...)
		// Keep only the first of each name.
		seen := map[string]bool{}
		kept := set.Policies[:0]
		for _, p := range set.Policies {
			if !seen[p.Name] {
				seen[p.Name] = true
				kept = append(kept, p)
			}
		}
		set.Policies = kept
	}
	return set, diags
}

func readFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("open policy: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat policy: %w", err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("%s is a directory", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("file is larger than %d bytes", maxFileSize)
	}
	return b, nil
}

func unwrapPathError(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// expand turns paths into policy files: a directory gives its *.hcl files
// sorted by name, anything else is taken as a file.
func expand(paths []string) ([]string, hcl.Diagnostics) {
	var out []string
	var diags hcl.Diagnostics
	checked := map[string]bool{}
	unsafe := func(p string) bool {
		u := checkSafe(p, checked)
		if u != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Unsafe policy path",
				Detail:   fmt.Sprintf("Refused %s.", u.Error()),
			})
		}
		return u != nil
	}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read policy path",
				Detail:   fmt.Sprintf("Reading %s: %s.", p, unwrapPathError(err)),
			})
			continue
		}
		if unsafe(p) {
			continue
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  "Cannot read policy directory",
				Detail:   fmt.Sprintf("Reading %s: %s.", p, unwrapPathError(err)),
			})
			continue
		}
		var names []string
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".hcl") && !strings.HasPrefix(e.Name(), ".") && !e.IsDir() {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			if f := filepath.Join(p, n); !unsafe(f) {
				out = append(out, f)
			}
		}
	}
	return out, diags
}

// WriteDiagnostics prints diags with file, line, column and a source
// snippet (from files, e.g. Set.Sources), without colour.
func WriteDiagnostics(w io.Writer, files map[string]*hcl.File, diags hcl.Diagnostics) error {
	for _, d := range diags {
		var buf bytes.Buffer
		dw := hcl.NewDiagnosticTextWriter(&buf, files, 0, false)
		if err := dw.WriteDiagnostic(d); err != nil {
			return fmt.Errorf("write diagnostic: %w", err)
		}
		out := buf.String()
		if d.Subject != nil {
			// HCL names the line only; add the column.
			old := fmt.Sprintf("  on %s line %d", d.Subject.Filename, d.Subject.Start.Line)
			out = strings.Replace(out, old, fmt.Sprintf("%s, column %d", old, d.Subject.Start.Column), 1)
		}
		if _, err := io.WriteString(w, out); err != nil {
			return fmt.Errorf("write diagnostic: %w", err)
		}
	}
	return nil
}

// Check validates policy files and directories for `aarsm policy check`:
// it prints every diagnostic (all errors of all files in one run) and a
// one-line summary to out. It returns an error wrapping ErrInvalid when
// there are errors (including paths that cannot be read or hold no policy
// file), nil when the policies are valid (warnings allowed).
func Check(paths []string, out io.Writer) error {
	files, diags := expand(paths)
	set, d := ParseFiles(files...)
	diags = append(diags, d...)
	if len(files) == 0 && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "No policy files",
			Detail:   fmt.Sprintf("No *.hcl file found in %s.", strings.Join(paths, ", ")),
		})
	}
	if len(set.Files) > 0 && len(set.Policies)+len(set.Egress) == 0 && !diags.HasErrors() {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagWarning,
			Summary:  "No policies",
			Detail:   "The files hold no email_security_policy block.",
		})
	}
	if err := WriteDiagnostics(out, set.Sources, diags); err != nil {
		return err
	}
	nerr, nwarn := 0, 0
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			nerr++
		} else {
			nwarn++
		}
	}
	if nerr > 0 {
		if _, err := fmt.Fprintf(out, "policy check failed: %s, %s in %s\n",
			plural(nerr, "error"), plural(nwarn, "warning"), plural(len(files), "file")); err != nil {
			return fmt.Errorf("write summary: %w", err)
		}
		return fmt.Errorf("%w: %s", ErrInvalid, plural(nerr, "error"))
	}
	var names []string
	for _, p := range set.Policies {
		names = append(names, fmt.Sprintf("%s (%s, %s)", p.Name, p.Mode, p.Action))
	}
	for _, p := range set.Egress {
		names = append(names, fmt.Sprintf("%s (egress, %s)", p.Name, p.Mode))
	}
	warn := ""
	if nwarn > 0 {
		warn = ", " + plural(nwarn, "warning")
	}
	if _, err := fmt.Fprintf(out, "policy check ok: %s in %s%s: %s\n",
		plural(len(set.Policies)+len(set.Egress), "policy"), plural(len(files), "file"), warn, strings.Join(names, ", ")); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	if strings.HasSuffix(word, "y") {
		return fmt.Sprintf("%d %sies", n, strings.TrimSuffix(word, "y"))
	}
	return fmt.Sprintf("%d %ss", n, word)
}
