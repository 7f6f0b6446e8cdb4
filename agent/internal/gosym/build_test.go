package gosym

import (
	"bytes"
	"debug/elf"
	stdgosym "debug/gosym"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

// The Go toolchains the tests build the client with: this machine's and
// older releases fetched through the module proxy (golang.org/toolchain,
// ~70 MB each, kept in the module cache). AARSM_GO_TOOLCHAINS replaces the
// list: names (go1.N.P), "local", or paths of a go command. The default
// has the oldest release with the register ABI (1.17, the 1.16 table
// format), one 1.20+ format release and 1.16 (refused: stack ABI).
const defaultGoToolchains = "local go1.22.12 go1.17.13 go1.16.15"

func goToolchains() []string {
	if s := os.Getenv("AARSM_GO_TOOLCHAINS"); s != "" {
		return strings.Fields(s)
	}
	return strings.Fields(defaultGoToolchains)
}

// localGo is this machine's go command: from PATH, else where the Debian
// machine images keep it (as the Makefile finds it).
func localGo() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go"
}

// goToolchain returns the go command of a toolchain: the local one, a
// path, or a release the Go module proxy serves (fetched once). A
// toolchain that cannot be had fails the test: the releases it checks are
// the supported range.
func goToolchain(t testing.TB, name string) string {
	t.Helper()
	local := localGo()
	switch {
	case name == "local":
		return local
	case strings.HasPrefix(name, "/"):
		if _, err := os.Stat(name); err != nil {
			t.Fatalf("toolchain %s: %v", name, err)
		}
		return name
	}
	modcache, err := exec.Command(local, "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	gocmd := filepath.Join(strings.TrimSpace(string(modcache)), "golang.org", "toolchain@v0.0.1-"+name+".linux-amd64", "bin", "go")
	if _, err := os.Stat(gocmd); err == nil {
		return gocmd
	}
	// The local go fetches it (and then fails on GOFLAGS an old release
	// does not know, which does not matter).
	cmd := exec.Command(local, "version")
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+name)
	out, err := cmd.CombinedOutput()
	if _, serr := os.Stat(gocmd); serr != nil {
		t.Fatalf("toolchain %s could not be fetched from the Go module proxy: %v\n%s", name, err, out)
	}
	return gocmd
}

// goClient is one build of testdata/goclient.
type goClient struct {
	path    string
	variant string // plain, stripped, pie, pie-stripped, cgo, no-sections
	version string // of the toolchain: go1.22.12
	symbols string // the unstripped build of the same code, for its ELF symbols
}

// buildGoClients builds the client with one toolchain in each variant.
func buildGoClients(t *testing.T, toolchain string) []goClient {
	t.Helper()
	gocmd := goToolchain(t, toolchain)
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "goclient", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module goclient\n\ngo 1.16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "GOFLAGS=-trimpath", "GOTOOLCHAIN=local", "GOPROXY=off", "GO111MODULE=on", "GOWORK=off")
	run := func(extraEnv []string, args ...string) (string, error) {
		cmd := exec.Command(gocmd, args...)
		cmd.Dir = dir
		cmd.Env = append(append([]string{}, env...), extraEnv...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %w\n%s", gocmd, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	version, err := run(nil, "env", "GOVERSION")
	if err != nil {
		t.Fatal(err)
	}
	nocgo := []string{"CGO_ENABLED=0"}
	var out []goClient
	add := func(variant, symbols string, extraEnv []string, flags ...string) {
		path := filepath.Join(dir, variant)
		if _, err := run(extraEnv, append(append([]string{"build", "-o", path}, flags...), ".")...); err != nil {
			t.Fatalf("build %s: %v", variant, err)
		}
		if symbols == "" {
			symbols = path
		} else {
			symbols = filepath.Join(dir, symbols)
		}
		out = append(out, goClient{path: path, variant: variant, version: version, symbols: symbols})
	}
	add("plain", "", nocgo)
	add("stripped", "plain", nocgo, "-ldflags=-s -w")
	add("pie", "", nocgo, "-buildmode=pie")
	if toolchain == "local" {
		add("pie-stripped", "pie", nocgo, "-buildmode=pie", "-ldflags=-s -w")
		if _, err := exec.LookPath("gcc"); err == nil {
			// External linking: C start-up code before runtime.text.
			add("cgo", "", []string{"CGO_ENABLED=1"}, "-ldflags=-linkmode=external")
		}
		// The stripped build without its section headers.
		data, err := os.ReadFile(filepath.Join(dir, "stripped"))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "no-sections")
		if err := os.WriteFile(path, dropSectionHeaders(data), 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, goClient{path: path, variant: "no-sections", version: version, symbols: filepath.Join(dir, "plain")})
	}
	return out
}

// dropSectionHeaders zeroes e_shoff, e_shnum and e_shstrndx of an ELF64.
func dropSectionHeaders(data []byte) []byte {
	out := append([]byte{}, data...)
	clear(out[40:48])
	clear(out[60:64])
	return out
}

func openELF(t testing.TB, path string) (*elf.File, *os.File) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	f, err := elf.NewFile(fh)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f, fh
}

// elfSymbols returns the value and size of each of names in .symtab.
func elfSymbols(t testing.TB, path string, names ...string) map[string]elf.Symbol {
	t.Helper()
	f, _ := openELF(t, path)
	syms, err := f.Symbols()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	out := map[string]elf.Symbol{}
	for _, s := range syms {
		for _, n := range names {
			if s.Name == n {
				out[n] = s
			}
		}
	}
	return out
}

// TestGoTLSBuilds builds the client with each toolchain and variant and
// checks what FindTLS returns against the ELF symbols of the unstripped
// build, debug/gosym's reading of the same table, and binutils' objdump.
func TestGoTLSBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Go programs, fetches toolchains")
	}
	for _, tc := range goToolchains() {
		t.Run(tc, func(t *testing.T) {
			for _, c := range buildGoClients(t, tc) {
				t.Run(c.variant, func(t *testing.T) { checkGoClient(t, c) })
			}
		})
	}
}

func checkGoClient(t *testing.T, c goClient) {
	f, fh := openELF(t, c.path)
	g, err := FindTLS(f, fh)
	v, _, perr := ParseVersion(c.version)
	if perr != nil {
		t.Fatal(perr)
	}
	if g.Binary.Version != v {
		t.Errorf("version %v, toolchain %s", g.Binary.Version, c.version)
	}
	if g.Binary.BuildInfo == nil || g.Binary.BuildInfo.Path != "goclient" {
		t.Errorf("build info %+v", g.Binary.BuildInfo)
	}
	if first, last := g.Binary.Format.Releases(); v.Release().Less(first) || last.Less(v.Release()) {
		t.Errorf("format %v for %v", g.Binary.Format, v)
	}
	t.Logf("%s %s: format %v, text %#x, stripped %v, pie %v, headers %v; err %v",
		c.version, c.variant, g.Binary.Format, g.Binary.Text, g.Binary.Stripped, g.Binary.PIE, g.Binary.SectionHeaders, err)
	funcs := map[string]Func{SymWrite: g.Write, SymRead: g.Read}
	if v.Less(Version{1, 17, 0}) {
		if !errors.Is(err, ErrStackABI) {
			t.Fatalf("err %v, want ErrStackABI", err)
		}
		// The table is read all the same.
		var lerr error
		if funcs, lerr = g.Binary.Lookup(f, fh, SymWrite, SymRead); lerr != nil {
			t.Fatal(lerr)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	syms := elfSymbols(t, c.symbols, SymWrite, SymRead, "runtime.text")
	for _, name := range []string{SymWrite, SymRead} {
		fn := funcs[name]
		sym, ok := syms[name]
		if !ok {
			t.Fatalf("%s: no symbol %s", c.symbols, name)
		}
		off, _ := FileOffset(f, sym.Value)
		if fn.Entry != sym.Value || fn.Offset != off || fn.End < sym.Value+sym.Size || fn.End > sym.Value+sym.Size+64 {
			t.Errorf("%s: entry %#x-%#x at %#x, symbol %#x+%d at %#x", name, fn.Entry, fn.End, fn.Offset, sym.Value, sym.Size, off)
		}
		if len(fn.Returns) == 0 || len(fn.Exits) != 0 ||
			(!v.Less(Version{1, 17, 0}) && (!fn.StackCheck || fn.Body <= fn.Offset || fn.Body > fn.Offset+16)) {
			t.Errorf("%s: returns %#x, exits %#x, stack check %v, body %#x", name, fn.Returns, fn.Exits, fn.StackCheck, fn.Body)
		}
		for _, r := range fn.Returns {
			if inst, ok := decodeAt(fh, r); !ok || inst.Op != x86asm.RET || r < fn.Offset || r >= fn.Offset+fn.End-fn.Entry {
				t.Errorf("%s: %#x is %v, not a RET of the function", name, r, inst)
			}
		}
		if c.variant == "plain" || c.variant == "pie" {
			checkObjdumpReturns(t, c.path, f, fn)
		}
	}
	if c.variant == "plain" || c.variant == "pie" || c.variant == "cgo" {
		checkDebugGosym(t, f, syms["runtime.text"].Value, funcs)
	}
	if err == nil {
		traceGoClient(t, c.path, g)
	}
}

// checkDebugGosym reads the same table with debug/gosym (which builds
// every function) and compares.
func checkDebugGosym(t *testing.T, f *elf.File, text uint64, funcs map[string]Func) {
	t.Helper()
	data, err := pclntabSection(f).Data()
	if err != nil {
		t.Fatal(err)
	}
	tab, err := stdgosym.NewTable(nil, stdgosym.NewLineTable(data, text))
	if err != nil {
		t.Fatal(err)
	}
	for name, fn := range funcs {
		sf := tab.LookupFunc(name)
		if sf == nil || sf.Entry != fn.Entry || sf.End != fn.End {
			t.Errorf("%s: debug/gosym %+v, found %#x-%#x", name, sf, fn.Entry, fn.End)
		}
	}
}

// checkObjdumpReturns disassembles the function with binutils' objdump (a
// decoder independent of x86asm) and compares the RETs.
func checkObjdumpReturns(t *testing.T, path string, f *elf.File, fn Func) {
	t.Helper()
	objdump, err := exec.LookPath("objdump")
	if err != nil {
		t.Logf("no objdump: RETs not cross-checked")
		return
	}
	out, err := exec.Command(objdump, "-d", "--no-show-raw-insn",
		fmt.Sprintf("--start-address=%#x", fn.Entry), fmt.Sprintf("--stop-address=%#x", fn.End), path).Output()
	if err != nil {
		t.Fatalf("objdump: %v", err)
	}
	var want []uint64
	re := regexp.MustCompile(`^\s*([0-9a-f]+):\s+ret`)
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			addr, _ := strconv.ParseUint(m[1], 16, 64)
			off, _ := FileOffset(f, addr)
			want = append(want, off)
		}
	}
	if fmt.Sprint(want) != fmt.Sprint(fn.Returns) {
		t.Errorf("%s: RETs %#x, objdump %#x", fn.Name, fn.Returns, want)
	}
}

// TestGoVersions: the build info's version strings and the ABI table.
func TestGoVersions(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
		x    string
		abi  error
	}{
		{"go1.26.8", Version{1, 26, 8}, "", nil},
		{"go1.17", Version{1, 17, 0}, "", nil},
		{"go1.20", Version{1, 20, 0}, "", nil},
		{"go1.21rc2", Version{1, 21, 0}, "", nil},
		{"go1.22.12 X:boringcrypto", Version{1, 22, 12}, "boringcrypto", nil},
		{"go1.17.13 X:noregabi", Version{1, 17, 13}, "noregabi", ErrNoRegABI},
		{"devel go1.26-abcdef01 Tue Jan 6 10:00:00 2026 +0000", Version{1, 26, 0}, "", nil},
		{"go1.16.15", Version{1, 16, 15}, "", ErrStackABI},
		{"go1.12", Version{1, 12, 0}, "", ErrStackABI},
		{"go1.27.0", Version{1, 27, 0}, "", ErrTooNew},
		{"go2.0", Version{2, 0, 0}, "", ErrTooNew},
	} {
		v, x, err := ParseVersion(tc.in)
		if err != nil || v != tc.want || strings.Join(x, ",") != tc.x {
			t.Errorf("%q: %v %v %v", tc.in, v, x, err)
			continue
		}
		abi, err := ABIFor(v, x)
		if !errors.Is(err, tc.abi) || (err == nil && abi.Buf != RBX) {
			t.Errorf("%q: abi %+v, err %v, want %v", tc.in, abi, err, tc.abi)
		}
	}
	for _, bad := range []string{"", "go", "gox.y", "1.22", "go1", "go1.2.3.4", "go1.-2"} {
		if _, _, err := ParseVersion(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	// The table is ordered and without gaps.
	table := ABIs()
	for i := 1; i < len(table); i++ {
		if want := (Version{table[i-1].Last.Major, table[i-1].Last.Minor + 1, 0}); table[i].First != want {
			t.Errorf("row %d starts at %v, want %v", i, table[i].First, want)
		}
	}
}

// TestGoTLSFake: the synthetic binary in each table format, with and
// without section headers.
func TestGoTLSFake(t *testing.T) {
	for _, tc := range []struct {
		format   Format
		version  string
		sections bool
	}{
		{Format120, "go1.22.12", true},
		{Format120, "go1.26.8", false},
		{Format118, "go1.18.10", true},
		{Format116, "go1.17.13", true},
		{Format116, "go1.17.13", false},
	} {
		fg := defaultFakeGo()
		fg.format, fg.version, fg.sections = tc.format, tc.version, tc.sections
		data := fg.build()
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		g, err := FindTLS(f, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%v %s sections=%v: %v", tc.format, tc.version, tc.sections, err)
		}
		entries, _ := fg.entries()
		if g.Write.Entry != entries[1] || g.Read.Entry != entries[2] || g.Write.Offset != entries[1]-fakeBase ||
			len(g.Write.Returns) != 2 || g.Write.Returns[0] != g.Write.Offset+16 || !g.Write.StackCheck ||
			g.Write.Body != g.Write.Offset+6 {
			t.Errorf("%v: write %+v read %+v", tc.format, g.Write, g.Read)
		}
		if g.Binary.SectionHeaders != tc.sections || g.Binary.Format != tc.format {
			t.Errorf("%v: %+v", tc.format, g.Binary)
		}
	}
}

// TestGoTLSRefusals: what is refused, and as what.
func TestGoTLSRefusals(t *testing.T) {
	check := func(name string, fg fakeGo, edit func([]byte), want error) {
		t.Helper()
		data := fg.build()
		if edit != nil {
			edit(data)
		}
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := FindTLS(f, bytes.NewReader(data)); !errors.Is(err, want) {
			t.Errorf("%s: err %v, want %v", name, err, want)
		}
	}
	fg := defaultFakeGo()
	fg.version = "go1.16.15"
	fg.format = Format116
	check("go1.16", fg, nil, ErrStackABI)

	fg = defaultFakeGo()
	fg.version = "go1.22.1"
	fg.format = Format116
	check("version and format disagree", fg, nil, ErrTables)

	fg = defaultFakeGo()
	fg.funcs = fg.funcs[:1]
	check("no crypto/tls", fg, nil, ErrNoTLS)

	fg = defaultFakeGo()
	fg.funcs[1].code = append([]byte{0x90, 0x90, 0x90}, fakeCode()...)
	check("no stack check first", fg, nil, ErrCode)

	fg = defaultFakeGo()
	fg.funcs[1].code[27] = 0x40 // jmp +64: out of the function
	check("tail jump", fg, nil, ErrCode)

	fg = defaultFakeGo()
	check("bad magic", fg, func(b []byte) { b[fakeRodata] = 0 }, ErrTables)
	check("nfunc too large", fg, func(b []byte) { b[fakeRodata+13] = 0x10 }, ErrTables)
	check("pointer size", fg, func(b []byte) { b[fakeRodata+7] = 4 }, ErrTables)
	check("unsorted", fg, func(b []byte) {
		tab := fakeRodata + int(b[fakeRodata+64]) // pclnOffset (1.20 header: 8th word)
		b[tab+8] = 0xff
	}, ErrTables)

	fg = defaultFakeGo()
	fg.sections = false
	check("no table", fg, func(b []byte) { clear(b[fakeRodata : fakeRodata+8]) }, ErrNoPclntab)

	check("not go", fg, func(b []byte) { clear(b[fakeRodata : fakeRodata+8]); clear(b[fakeData : fakeData+16]) }, ErrNotGo)

	fg = defaultFakeGo()
	fg.version = "go1.30.1"
	check("too new", fg, nil, ErrTooNew)

	fg = defaultFakeGo()
	check("sections but neither .gopclntab nor .go.buildinfo", fg, func(b []byte) {
		b[fakeEnd+7+6] = 'X'
		b[fakeEnd+18+5] = 'X'
	}, ErrNotGo)
	// Build info but the table merged into another section (lld: Docker's
	// CLI): the table is found by its magic.
	check("sections, the table in another", fg, func(b []byte) { b[fakeEnd+7+6] = 'X' }, nil)
	check("the go1.2 format", fg, func(b []byte) { b[fakeRodata] = 0xfb }, ErrStackABI)
}

// TestGoRegisterOffsets: the pt_regs offsets are those of the
// user_regs_struct PTRACE_GETREGS fills (the same layout up to ss).
func TestGoRegisterOffsets(t *testing.T) {
	for _, tc := range []struct {
		r    Reg
		name string
		off  int
	}{
		{R14, "r14", 8}, {RBX, "bx", 40}, {RAX, "ax", 80}, {RCX, "cx", 88}, {RDI, "di", 112}, {NoReg, "none", -1},
	} {
		if tc.r.String() != tc.name || tc.r.PtRegsOffset() != tc.off {
			t.Errorf("%d: %s at %d, want %s at %d", tc.r, tc.r, tc.r.PtRegsOffset(), tc.name, tc.off)
		}
	}
}

// decodeAt decodes the instruction at file offset off of r.
func decodeAt(r io.ReaderAt, off uint64) (x86asm.Inst, bool) {
	var code [16]byte
	n, err := r.ReadAt(code[:], int64(off))
	if n == 0 || (err != nil && !errors.Is(err, io.EOF)) {
		return x86asm.Inst{}, false
	}
	inst, err := x86asm.Decode(code[:n], 64)
	return inst, err == nil
}
