package gosym

import (
	"bytes"
	"debug/elf"
	stdgosym "debug/gosym"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// hostGoCandidates lists executables of 1 MiB or more in the directories
// where this machine keeps programs (PATH, Go toolchains, the Cloud SDK),
// at most limit, largest first. AARSM_GO_BINARIES names a file with one
// path a line to use instead.
func hostGoCandidates(t testing.TB, limit int) []string {
	t.Helper()
	if list := os.Getenv("AARSM_GO_BINARIES"); list != "" {
		data, err := os.ReadFile(list)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Fields(string(data))
	}
	dirs := filepath.SplitList(os.Getenv("PATH"))
	if out, err := exec.Command(localGo(), "env", "GOROOT").Output(); err == nil {
		root := strings.TrimSpace(string(out))
		dirs = append(dirs, filepath.Join(root, "bin"), filepath.Join(root, "pkg", "tool", "linux_amd64"))
	}
	dirs = append(dirs, "/usr/lib/google-cloud-sdk/bin")
	for _, pattern := range []string{"/usr/lib/go-*/bin", "/usr/lib/go-*/pkg/tool/linux_amd64"} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	if out, err := exec.Command(localGo(), "env", "GOMODCACHE").Output(); err == nil {
		m, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "golang.org", "toolchain@*", "bin"))
		dirs = append(dirs, m...)
	}
	type cand struct {
		path string
		size int64
	}
	seen := map[string]bool{}
	var cands []cand
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range entries {
			p, err := filepath.EvalSymlinks(filepath.Join(d, e.Name()))
			if err != nil || seen[p] {
				continue
			}
			seen[p] = true
			st, err := os.Stat(p)
			if err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 || st.Size() < 1<<20 {
				continue
			}
			cands = append(cands, cand{p, st.Size()})
		}
	}
	sort.Slice(cands, func(i, j int) bool { return cands[i].size > cands[j].size })
	var out []string
	for _, c := range cands {
		if len(out) == limit {
			break
		}
		out = append(out, c.path)
	}
	return out
}

// TestGoTLSHostBinaries runs FindTLS over the Go executables of this
// machine: none may fail on its tables or code; each one found has RETs
// that decode as RETs and agrees with debug/gosym (and with .symtab when
// it has one); each one said to lack crypto/tls lacks its name.
func TestGoTLSHostBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the machine's executables")
	}
	counts := map[string]int{}
	for _, path := range hostGoCandidates(t, 400) {
		fh, err := os.Open(path)
		if err != nil {
			continue
		}
		f, err := elf.NewFile(fh)
		if err != nil {
			fh.Close()
			continue
		}
		g, err := FindTLS(f, fh)
		outcome := "found"
		switch {
		case errors.Is(err, ErrNotGo):
			outcome = "not go"
		case errors.Is(err, ErrNoTLS):
			outcome = "go, no crypto/tls"
			if s := pclntabSection(f); s != nil {
				data, _ := s.Data()
				if bytes.Contains(data, []byte("\x00"+SymWrite+"\x00")) {
					t.Errorf("%s: no crypto/tls, but its table names %s", path, SymWrite)
				}
			}
		case errors.Is(err, ErrStackABI), errors.Is(err, ErrTooNew), errors.Is(err, ErrNoRegABI):
			outcome = "go, release refused"
		case err != nil:
			outcome = "error"
			t.Errorf("%s (%v): %v", path, g.Binary.Version, err)
		default:
			checkHostGoTLS(t, path, f, fh, g)
		}
		counts[outcome]++
		t.Logf("%-10v %-7v stripped=%-5v pie=%-5v %s: %s", g.Binary.Version, g.Binary.Format, g.Binary.Stripped, g.Binary.PIE, outcome, path)
		fh.Close()
	}
	t.Logf("outcomes: %v", counts)
}

func checkHostGoTLS(t *testing.T, path string, f *elf.File, fh *os.File, g TLS) {
	t.Helper()
	syms, _ := f.Symbols() // none when stripped
	var tab *stdgosym.Table
	if s := pclntabSection(f); s != nil {
		data, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		if tab, err = stdgosym.NewTable(nil, stdgosym.NewLineTable(data, g.Binary.Text)); err != nil {
			t.Errorf("%s: debug/gosym: %v", path, err)
		}
	}
	for _, fn := range []Func{g.Write, g.Read} {
		if fn.Name == "" {
			continue
		}
		for _, r := range fn.Returns {
			if inst, ok := decodeAt(fh, r); !ok || inst.Op != x86asm.RET {
				t.Errorf("%s %s: %#x is %v", path, fn.Name, r, inst)
			}
		}
		if tab != nil {
			if sf := tab.LookupFunc(fn.Name); sf == nil || sf.Entry != fn.Entry || sf.End != fn.End {
				t.Errorf("%s %s: debug/gosym %+v, found %#x-%#x", path, fn.Name, sf, fn.Entry, fn.End)
			}
		}
		for _, s := range syms {
			if s.Name == fn.Name && s.Value != fn.Entry {
				t.Errorf("%s %s: symbol at %#x, found %#x", path, fn.Name, s.Value, fn.Entry)
			}
		}
	}
}

// BenchmarkGoTLSLookup: FindTLS on the largest Go executable with
// crypto/tls on this machine (from opening the ELF file), beside
// debug/gosym building its table and looking the two functions up.
func BenchmarkGoTLSLookup(b *testing.B) {
	var path string
	for _, p := range hostGoCandidates(b, 400) {
		fh, err := os.Open(p)
		if err != nil {
			continue
		}
		f, err := elf.NewFile(fh)
		if err == nil {
			if _, err = FindTLS(f, fh); err == nil {
				path = p
			}
		}
		fh.Close()
		if path != "" {
			break
		}
	}
	if path == "" {
		b.Skip("no Go executable with crypto/tls on this machine")
	}
	st, _ := os.Stat(path)
	b.Logf("%s: %d MB", path, st.Size()>>20)
	fh, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	b.Run("FindTLS", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			f, err := elf.NewFile(fh)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := FindTLS(f, fh); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("FindTLS-no-sections", func(b *testing.B) {
		copyPath := filepath.Join(b.TempDir(), "no-sections")
		if err := writeNoSections(path, copyPath); err != nil {
			b.Fatal(err)
		}
		fh, err := os.Open(copyPath)
		if err != nil {
			b.Fatal(err)
		}
		defer fh.Close()
		b.ReportAllocs()
		for b.Loop() {
			f, err := elf.NewFile(fh)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := FindTLS(f, fh); err != nil {
				b.Fatal(err)
			}
		}
	})
	// What every other executable costs: node (C++, 100 MB, section
	// headers) is told apart by its section table.
	if node, err := exec.LookPath("node"); err == nil {
		b.Run("not-go-node", func(b *testing.B) {
			nh, err := os.Open(node)
			if err != nil {
				b.Fatal(err)
			}
			defer nh.Close()
			b.ReportAllocs()
			for b.Loop() {
				f, err := elf.NewFile(nh)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := FindTLS(f, nh); !errors.Is(err, ErrNotGo) {
					b.Fatalf("node: %v", err)
				}
			}
		})
	}
	b.Run("debug-gosym", func(b *testing.B) {
		b.ReportAllocs()
		f, err := elf.NewFile(fh)
		if err != nil {
			b.Fatal(err)
		}
		g, err := FindTLS(f, fh)
		if err != nil {
			b.Fatal(err)
		}
		s := pclntabSection(f)
		if s == nil {
			b.Skip("no function table section")
		}
		for b.Loop() {
			data, err := s.Data()
			if err != nil {
				b.Fatal(err)
			}
			tab, err := stdgosym.NewTable(nil, stdgosym.NewLineTable(data, g.Binary.Text))
			if err != nil {
				b.Fatal(err)
			}
			if tab.LookupFunc(SymWrite) == nil || tab.LookupFunc(SymRead) == nil {
				b.Fatal("not found")
			}
		}
	})
}

// writeNoSections writes a copy of the file at path without its section
// headers to dst.
func writeNoSections(path, dst string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, dropSectionHeaders(data), 0o600)
}
