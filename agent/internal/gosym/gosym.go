// Package gosym finds, in any Go executable on the host, stripped or not,
// where to place uprobes for crypto/tls's (*Conn).Write and (*Conn).Read,
// and where their arguments and results are. Pure user space: it reads
// files, loads nothing.
//
// Go links its own TLS stack statically and exports no symbol, so the
// functions are found by name in the Go function table (.gopclntab,
// pclntab.go), which stripping (-ldflags=-s -w, strip(1)) keeps: the
// runtime needs it. The toolchain's version comes from the build info blob
// ("\xff Go buildinf:", debug/buildinfo), which stripping keeps too, and
// chooses the register ABI (abi.go). Function tables of Go 1.16 and later
// are read (magic 0xfffffffa: 1.16-1.17, 0xfffffff0: 1.18-1.19,
// 0xfffffff1: 1.20+); registers are known for Go 1.17 to 1.26 on amd64.
//
// uretprobes must never be used on Go: they replace the return address on
// the stack, and a goroutine's stack is moved when it grows. The result of
// a call is read at each of the function's RET instructions instead
// (Func.Returns), each probed as an ordinary uprobe.
//
// Use: FindTLS(f, r) with the executable's *elf.File and its file. On
// success TLS.Write.Body and TLS.Read.Body are the file offsets where the
// arguments are read (once per call; Offset is the entry, which a call
// whose stack grows runs twice), TLS.*.Returns the RETs' file offsets,
// TLS.ABI the registers;
// TLS.Binary the version, build info (modules) and facts for the log. On
// an error, report the process unmonitored (the error says why, and
// TLS.Binary what was read).
package gosym

import (
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"runtime/debug"

	"golang.org/x/arch/x86/x86asm"
)

// The functions probed.
const (
	SymWrite = "crypto/tls.(*Conn).Write"
	SymRead  = "crypto/tls.(*Conn).Read"
	SymClose = "crypto/tls.(*Conn).Close"
)

var (
	ErrNotGo = errors.New("not a go executable")
	ErrNoTLS = errors.New("go executable without crypto/tls")
	// ErrCode: a function found does not look as the table says Go
	// compiles it (no stack check against g, a jump out of it, an
	// instruction that does not decode): refused rather than probed.
	ErrCode = errors.New("unexpected go function code")
)

// Binary is what examining a Go executable tells.
type Binary struct {
	// Version and Experiments: of the toolchain that built it.
	Version     Version
	Experiments []string
	// BuildInfo: GoVersion, Path, Main, Deps, Settings, for the log. Nil
	// when the blob is missing or damaged (the version is then unknown:
	// such a binary is refused).
	BuildInfo *debug.BuildInfo
	// Format of the function table.
	Format Format
	// Text: runtime.text, the base of the function table's entry
	// offsets (1.18+ formats; 0 for the 1.16 format's absolute entries).
	Text           uint64
	PIE            bool // ET_DYN
	Stripped       bool // no .symtab
	SectionHeaders bool // has section headers

	tab pclnTable
}

// Func is a function found, with its probe sites.
type Func struct {
	Name       string
	Entry, End uint64 // virtual addresses: [Entry, End)
	Offset     uint64 // file offset of the entry: where its uprobe attaches
	// Returns: the file offset of each RET instruction in the function.
	Returns []uint64
	// Exits: the file offsets of jumps out of the function (tail calls),
	// which leave without a RET.
	Exits []uint64
	// StackCheck: the function starts by comparing the stack pointer with
	// g's stack guard through R14, as ABIInternal code does.
	StackCheck bool
	// Body: the file offset of the instruction after the stack check's
	// branch (to the stack growth path), where the argument probe belongs.
	// The entry runs twice in a call whose goroutine's stack must grow
	// first (the growth path calls runtime.morestack, which moves the
	// stack, then jumps back to the entry); Body runs once per call, with
	// the arguments still in their registers. 0 without a stack check.
	Body uint64
}

// TLS is where to probe crypto/tls in one binary.
type TLS struct {
	Binary Binary
	ABI    ABI
	Write  Func // crypto/tls.(*Conn).Write
	Read   Func // crypto/tls.(*Conn).Read; zero if the binary has none
	// Close: crypto/tls.(*Conn).Close, where a connection ends; zero if
	// the binary has none or it does not start with a stack check (the
	// connection is then forgotten when idle).
	Close Func
}

// Examine reads the build info and locates the function table of the
// ELF file f read through r (the file f was read from). ErrNotGo: neither
// is there. A file with section headers but neither a function table nor
// a build info section is not Go, and costs nothing more to tell; a file
// with build info but no table section (an external linker such as lld
// merged it into .data.rel.ro: Docker's CLI), or without section headers,
// is scanned for the table. A binary is returned with every error, filled
// as far as it was read (for the log: version, modules).
func Examine(f *elf.File, r io.ReaderAt) (Binary, error) {
	b := Binary{PIE: f.Type == elf.ET_DYN, SectionHeaders: len(f.Sections) > 0}
	b.Stripped = f.Section(".symtab") == nil
	if b.SectionHeaders && pclntabSection(f) == nil && f.Section(".go.buildinfo") == nil {
		return b, ErrNotGo
	}
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return b, fmt.Errorf("elf machine %s is not supported", f.Machine)
	}
	br := &budgetReader{r: r, left: goReadBudget}
	info, infoErr := buildinfo.Read(br)
	var versionErr error
	if infoErr == nil {
		b.BuildInfo = info
		b.Version, b.Experiments, versionErr = ParseVersion(info.GoVersion)
	}
	tab, err := findPclntab(f, br)
	switch {
	case err != nil && infoErr != nil && !b.SectionHeaders:
		return b, ErrNotGo
	case errors.Is(err, ErrFormat12):
		return b, fmt.Errorf("%w: %w", err, ErrStackABI)
	case err != nil:
		return b, fmt.Errorf("go function table: %w", err)
	}
	b.tab, b.Format = tab, tab.format
	if infoErr != nil {
		return b, fmt.Errorf("go build info: %w", infoErr)
	}
	if versionErr != nil {
		return b, fmt.Errorf("go build info: %w", versionErr)
	}
	if first, last := tab.format.Releases(); b.Version.Release().Less(first) || last.Less(b.Version.Release()) {
		return b, fmt.Errorf("%v with a function table of format %v: %w", b.Version, tab.format, ErrTables)
	}
	if b.Text, err = findTextStart(f, br, tab); err != nil {
		return b, err
	}
	return b, nil
}

// Lookup finds the functions called names in b, examined from f and r:
// their entries, ends and RETs. A name the table does not have is left out
// of the map.
func (b Binary) Lookup(f *elf.File, r io.ReaderAt, names ...string) (map[string]Func, error) {
	if b.tab.format == 0 {
		return nil, ErrNoPclntab
	}
	br := &budgetReader{r: r, left: goReadBudget}
	offs, err := findFuncNames(br, b.tab, names)
	if err != nil {
		return nil, err
	}
	out := map[string]Func{}
	if len(offs) == 0 {
		return out, nil
	}
	ranges, err := walkFunctab(br, b.tab, b.Text, offs)
	if err != nil {
		return nil, err
	}
	for _, fr := range ranges {
		if _, dup := out[fr.name]; dup {
			return nil, fmt.Errorf("two functions %s: %w", fr.name, ErrTables)
		}
		fn, err := decodeFunc(f, br, fr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fr.name, err)
		}
		out[fr.name] = fn
	}
	return out, nil
}

// decodeFunc reads the function's code and finds its RETs and exits.
// Go puts no data in its code (jump tables are in rodata), so a linear
// sweep from the entry to the next function decodes every instruction;
// the padding after the last one is INT3.
func decodeFunc(f *elf.File, r io.ReaderAt, fr funcRange) (Func, error) {
	fn := Func{Name: fr.name, Entry: fr.entry, End: fr.end}
	size := fr.end - fr.entry
	if size == 0 || size > goMaxFunc {
		return fn, fmt.Errorf("function of %d bytes: %w", size, ErrTables)
	}
	off, ok := FileOffset(f, fr.entry)
	last, ok2 := FileOffset(f, fr.end-1)
	if !ok || !ok2 || last != off+size-1 {
		return fn, fmt.Errorf("function at %#x-%#x is not in one code segment: %w", fr.entry, fr.end, ErrTables)
	}
	fn.Offset = off
	code := make([]byte, size)
	if n, err := r.ReadAt(code, int64(off)); n < len(code) {
		return fn, fmt.Errorf("read function code: %w", orEOF(err))
	}
	checkAt := -2
	for pc, i := 0, 0; pc < len(code); i++ {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil {
			return fn, fmt.Errorf("decode at +%#x: %w: %w", pc, err, ErrCode)
		}
		if i < 2 && checksStack(inst) {
			fn.StackCheck = true
			checkAt = i
		}
		if i == checkAt+1 && inst.Op == x86asm.JBE {
			fn.Body = off + uint64(pc+inst.Len)
		}
		switch inst.Op {
		case x86asm.RET:
			fn.Returns = append(fn.Returns, off+uint64(pc))
		case x86asm.JMP:
			if rel, ok := inst.Args[0].(x86asm.Rel); ok {
				target := int64(pc+inst.Len) + int64(rel)
				if target < 0 || target >= int64(size) {
					fn.Exits = append(fn.Exits, off+uint64(pc))
				}
			}
		}
		pc += inst.Len
	}
	return fn, nil
}

// FileOffset converts a virtual address of the file into the file offset
// the kernel's uprobes take, through the executable PT_LOAD segment that
// contains it.
func FileOffset(f *elf.File, addr uint64) (uint64, bool) {
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 {
			continue
		}
		if addr >= p.Vaddr && addr < p.Vaddr+p.Filesz {
			return addr - p.Vaddr + p.Off, true
		}
	}
	return 0, false
}

// checksStack reports whether inst is Go's stack bound check on amd64
// ABIInternal: CMPQ SP (or R12 = SP-frame), 16(R14), g.stackguard0.
func checksStack(inst x86asm.Inst) bool {
	if inst.Op != x86asm.CMP {
		return false
	}
	m, ok := inst.Args[1].(x86asm.Mem)
	if !ok || m.Base != x86asm.R14 || m.Disp != 16 || m.Index != 0 {
		return false
	}
	r, ok := inst.Args[0].(x86asm.Reg)
	return ok && (r == x86asm.RSP || r == x86asm.R12)
}

// FindTLS examines a Go executable for crypto/tls: the ELF file f, read
// from r. The binary's facts are returned with every error, for the log
// (version, modules). ErrNotGo, ErrNoTLS: nothing to probe. ErrStackABI,
// ErrTooNew, ErrNoRegABI: a Go release whose registers the table does not
// give. ErrTables, ErrCode (and read errors): damaged or unexpected
// tables or code. Any error: report the process unmonitored.
func FindTLS(f *elf.File, r io.ReaderAt) (TLS, error) {
	var g TLS
	var err error
	if g.Binary, err = Examine(f, r); err != nil {
		return g, err
	}
	if g.ABI, err = ABIFor(g.Binary.Version, g.Binary.Experiments); err != nil {
		return g, err
	}
	funcs, err := g.Binary.Lookup(f, r, SymWrite, SymRead, SymClose)
	if err != nil {
		return g, err
	}
	var ok bool
	if g.Write, ok = funcs[SymWrite]; !ok {
		return g, ErrNoTLS
	}
	g.Read = funcs[SymRead]
	if c := funcs[SymClose]; c.StackCheck && c.Body != 0 {
		g.Close = c
	}
	for _, fn := range []Func{g.Write, g.Read} {
		if fn.Name == "" {
			continue
		}
		switch {
		case !fn.StackCheck || fn.Body == 0:
			return g, fmt.Errorf("%s does not start with a stack check through R14 and its branch: %w", fn.Name, ErrCode)
		case len(fn.Returns) == 0:
			return g, fmt.Errorf("%s has no RET: %w", fn.Name, ErrCode)
		case len(fn.Exits) > 0:
			return g, fmt.Errorf("%s jumps out at %#x: %w", fn.Name, fn.Exits, ErrCode)
		}
	}
	return g, nil
}
