package gosym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Go's function table, .gopclntab, read in place. Stripping (-ldflags=-s
// -w, strip(1)) removes .symtab and DWARF but never this table: the
// runtime needs it for stack traces and garbage collection. debug/gosym
// reads it too, but builds a Func with its name string for every function
// of the binary (tens of thousands, tens of MB for a large binary) to find
// two; this reads only the function name table, the function table and the
// two functions' name offsets, through fixed buffers.
//
// Layout (runtime/symtab.go pcHeader, cmd/link/internal/ld/pcln.go), all
// offsets from the header:
//
//	magic uint32, 0, 0, minLC uint8 (1 on amd64), ptrSize uint8 (8)
//	nfunc, nfiles uintptr
//	textStart uintptr          1.18+ only (0 since 1.26: moduledata.text)
//	funcnameOffset, cuOffset, filetabOffset, pctabOffset, pclnOffset uintptr
//
// funcnametab ([funcnameOffset, cuOffset)) holds NUL-terminated names. The
// function table at pclnOffset has nfunc+1 entries, the last one the end of
// the text: in 1.16 (entry uintptr, funcoff uintptr), from 1.18
// (entryoff uint32, funcoff uint32) with entry = text start + entryoff.
// funcoff leads, from pclnOffset, to the function's _func, whose name
// offset into funcnametab follows its entry (8 bytes in, in 1.16; 4 from
// 1.18).

// Format is the table's format, by its magic number.
type Format uint32

const (
	Format12  Format = 0xfffffffb // Go 1.2-1.15: not read
	Format116 Format = 0xfffffffa // Go 1.16-1.17
	Format118 Format = 0xfffffff0 // Go 1.18-1.19
	Format120 Format = 0xfffffff1 // Go 1.20 and later
)

func (p Format) String() string {
	switch p {
	case Format12:
		return "go1.2"
	case Format116:
		return "go1.16"
	case Format118:
		return "go1.18"
	case Format120:
		return "go1.20"
	}
	return fmt.Sprintf("unknown (%#x)", uint32(p))
}

// Releases says which Go releases write the format.
func (p Format) Releases() (first, last Version) {
	switch p {
	case Format12:
		return Version{1, 2, 0}, Version{1, 15, 0}
	case Format116:
		return Version{1, 16, 0}, Version{1, 17, 0}
	case Format118:
		return Version{1, 18, 0}, Version{1, 19, 0}
	case Format120:
		return Version{1, 20, 0}, Version{1, 1000, 0}
	}
	return Version{}, Version{}
}

// Limits of examining a Go binary: whatever its tables say, the reader
// allocates at most a few MiB, and each of Examine and Lookup reads at
// most goReadBudget bytes.
const (
	goChunk       = 1 << 20   // buffer of the scans
	goMaxFunc     = 1 << 20   // largest function decoded
	goMaxNameLen  = 256       // longest function name looked up
	goMaxScan     = 1 << 30   // bytes of one segment scanned for a table
	goReadBudget  = 768 << 20 // bytes one examination may read in all
	goModuleBytes = 192       // moduledata up to and including etext
)

var (
	ErrTables     = errors.New("damaged go tables")
	ErrNoPclntab  = errors.New("no go function table")
	errReadBudget = errors.New("read budget exhausted")
	errTextStart  = errors.New("no text start for the go function table")
	ErrFormat12   = errors.New("go1.2-1.15 function table is not read")
)

// pclnTable is where a binary's function table is and what its header says.
type pclnTable struct {
	format Format
	off    uint64 // file offset of the header
	vaddr  uint64 // its virtual address
	size   uint64 // bytes from off that may belong to it (section, or rest of the segment)
	nfunc  uint64
	// From the header: funcnametab, cutab and function table offsets.
	funcname, cu, pcln uint64
	textStart          uint64 // the header's (1.18-1.25; 0 in the file from 1.26)
}

func (t pclnTable) entrySize() uint64 {
	if t.format == Format116 {
		return 16
	}
	return 8
}

// nameOffField is where the name offset is in a _func.
func (t pclnTable) nameOffField() uint64 {
	if t.format == Format116 {
		return 8
	}
	return 4
}

// parsePclnHeader validates the header at file offset off, with size bytes
// of table at most.
func parsePclnHeader(r io.ReaderAt, off, vaddr, size uint64) (pclnTable, error) {
	var h [72]byte
	if size < 64 {
		return pclnTable{}, fmt.Errorf("function table of %d bytes: %w", size, ErrTables)
	}
	n, err := r.ReadAt(h[:], int64(off))
	if n < 64 {
		return pclnTable{}, fmt.Errorf("read function table header: %w", orEOF(err))
	}
	le := binary.LittleEndian
	t := pclnTable{format: Format(le.Uint32(h[0:])), off: off, vaddr: vaddr, size: size}
	switch t.format {
	case Format116, Format118, Format120:
	case Format12:
		return t, ErrFormat12
	default:
		return t, fmt.Errorf("function table magic %#x: %w", uint32(t.format), ErrTables)
	}
	if h[4] != 0 || h[5] != 0 || h[6] != 1 || h[7] != 8 {
		return t, fmt.Errorf("function table header %x (want amd64: quantum 1, 8-byte pointers): %w", h[4:8], ErrTables)
	}
	word := func(i int) uint64 { return le.Uint64(h[8+8*i:]) }
	t.nfunc = word(0)
	fields := h[24:64]
	hdrSize := uint64(64)
	if t.format != Format116 {
		if n < 72 || size < 72 {
			return t, fmt.Errorf("read function table header: %w", orEOF(err))
		}
		t.textStart = word(2)
		fields = h[32:72]
		hdrSize = 72
	}
	t.funcname = le.Uint64(fields[0:])
	t.cu = le.Uint64(fields[8:])
	filetab, pctab := le.Uint64(fields[16:]), le.Uint64(fields[24:])
	t.pcln = le.Uint64(fields[32:])
	// The linker writes the tables in this order, each after the previous.
	if t.funcname < hdrSize || t.cu < t.funcname || filetab < t.cu || pctab < filetab ||
		t.pcln < pctab || t.pcln >= size {
		return t, fmt.Errorf("function table offsets %#x %#x %#x %#x %#x in %d bytes: %w",
			t.funcname, t.cu, filetab, pctab, t.pcln, size, ErrTables)
	}
	if t.nfunc == 0 || t.nfunc > (size-t.pcln)/t.entrySize()-1 {
		return t, fmt.Errorf("function table of %d functions in %d bytes: %w", t.nfunc, size-t.pcln, ErrTables)
	}
	return t, nil
}

// findPclntab locates the function table: its section, or, in a file
// without section headers, a valid header found by its magic in the loaded
// segments that are not code first, then in code.
func findPclntab(f *elf.File, r io.ReaderAt) (pclnTable, error) {
	if s := pclntabSection(f); s != nil {
		return parsePclnHeader(r, s.Offset, s.Addr, s.Size)
	}
	var first error
	for _, code := range []bool{false, true} {
		for _, p := range f.Progs {
			if p.Type != elf.PT_LOAD || (p.Flags&elf.PF_X != 0) != code || p.Filesz < 64 {
				continue
			}
			t, err := scanPclntab(r, p)
			if err == nil {
				return t, nil
			}
			if first == nil && !errors.Is(err, ErrNoPclntab) {
				first = err
			}
		}
	}
	if first != nil {
		return pclnTable{}, first
	}
	return pclnTable{}, ErrNoPclntab
}

// pclntabSection is the table's section: .gopclntab, or in PIE built by
// Go before 1.26 .data.rel.ro.gopclntab.
func pclntabSection(f *elf.File) *elf.Section {
	for _, name := range []string{".gopclntab", ".data.rel.ro.gopclntab"} {
		if s := f.Section(name); s != nil && s.Type != elf.SHT_NOBITS {
			return s
		}
	}
	return nil
}

// scanPclntab looks for a valid function table header in a segment. The
// linker aligns the table; 4 bytes is the least of any version.
func scanPclntab(r io.ReaderAt, p *elf.Prog) (pclnTable, error) {
	size := min(p.Filesz, goMaxScan)
	buf := make([]byte, min(size, goChunk)+8)
	var bad error
	for base := uint64(0); base < size; base += goChunk {
		n, err := r.ReadAt(buf[:min(uint64(len(buf)), size-base)], int64(p.Off+base))
		if n < 8 {
			if err != nil && !errors.Is(err, io.EOF) {
				return pclnTable{}, fmt.Errorf("scan for the function table: %w", err)
			}
			break
		}
		for i := 0; i+8 <= n && uint64(i) < goChunk; i += 4 {
			if buf[i+1] != 0xff || buf[i+2] != 0xff || buf[i+3] != 0xff || buf[i+4] != 0 || buf[i+5] != 0 || buf[i+6] != 1 || buf[i+7] != 8 {
				continue
			}
			switch Format(binary.LittleEndian.Uint32(buf[i:])) {
			case Format116, Format118, Format120, Format12:
			default:
				continue
			}
			at := base + uint64(i)
			t, err := parsePclnHeader(r, p.Off+at, p.Vaddr+at, p.Filesz-at)
			if err == nil {
				return t, nil
			}
			if errors.Is(err, errReadBudget) {
				return pclnTable{}, err
			}
			bad = err
		}
	}
	if bad != nil {
		return pclnTable{}, bad
	}
	return pclnTable{}, ErrNoPclntab
}

// findTextStart finds the address the 1.18+ function table's entry
// offsets are from (runtime.text). The header stopped carrying it in Go
// 1.26, and the .text section starts before it when an external linker
// put C start-up code first (cgo), so the runtime's own record comes
// first: moduledata, which starts with a pointer to the table and holds
// text 176 bytes in (the same layout from 1.16 to 1.26), found in the
// writable segments and checked against the table. Then the header's
// field, then .text.
func findTextStart(f *elf.File, r io.ReaderAt, t pclnTable) (uint64, error) {
	if t.format == Format116 {
		return 0, nil // absolute entries
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_W == 0 || p.Filesz < goModuleBytes {
			continue
		}
		text, err := scanModuledata(r, p, t)
		if err == nil {
			return text, nil
		}
		if errors.Is(err, errReadBudget) {
			return 0, err
		}
	}
	if t.textStart != 0 {
		return t.textStart, nil
	}
	if s := f.Section(".text"); s != nil && s.Addr != 0 {
		return s.Addr, nil
	}
	return 0, errTextStart
}

// scanModuledata looks in a writable segment for the runtime's moduledata
// of table t and returns its text field.
func scanModuledata(r io.ReaderAt, p *elf.Prog, t pclnTable) (uint64, error) {
	le := binary.LittleEndian
	size := min(p.Filesz, goMaxScan)
	buf := make([]byte, min(size, goChunk)+goModuleBytes)
	// The first function's offset from text: moduledata.minpc is text plus it.
	var e0 [4]byte
	if _, err := r.ReadAt(e0[:], int64(t.off+t.pcln)); err != nil {
		return 0, fmt.Errorf("read function table: %w", err)
	}
	first := uint64(le.Uint32(e0[:]))
	align := (8 - p.Vaddr%8) % 8
	for base := align; base < size; base += goChunk {
		n, err := r.ReadAt(buf[:min(uint64(len(buf)), size-base)], int64(p.Off+base))
		if n < goModuleBytes {
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("scan for moduledata: %w", err)
			}
			break
		}
		for i := 0; i+goModuleBytes <= n && i < goChunk; i += 8 {
			if le.Uint64(buf[i:]) != t.vaddr {
				continue
			}
			m := buf[i : i+goModuleBytes]
			// funcnametab, ftab (pointer, length) and minpc, text, etext.
			if le.Uint64(m[8:]) != t.vaddr+t.funcname || le.Uint64(m[128:]) != t.vaddr+t.pcln ||
				le.Uint64(m[136:]) != t.nfunc+1 {
				continue
			}
			minpc, text, etext := le.Uint64(m[160:]), le.Uint64(m[176:]), le.Uint64(m[184:])
			if text == 0 || minpc != text+first || etext < minpc {
				continue
			}
			return text, nil
		}
	}
	return 0, errTextStart
}

// findFuncNames returns the offsets in funcnametab of each of names, as a
// whole NUL-terminated string.
func findFuncNames(r io.ReaderAt, t pclnTable, names []string) (map[uint32]string, error) {
	found := map[uint32]string{}
	longest := 0
	for _, n := range names {
		if len(n) == 0 || len(n) > goMaxNameLen {
			return nil, fmt.Errorf("function name of %d bytes", len(n))
		}
		longest = max(longest, len(n))
	}
	start, end := t.off+t.funcname, t.off+min(t.cu, t.size)
	if end-start > uint64(^uint32(0)) {
		return nil, fmt.Errorf("function name table of %d bytes: %w", end-start, ErrTables)
	}
	keep := longest + 1 // a NUL and a name may straddle two reads
	buf := make([]byte, keep+int(min(end-start, goChunk)))
	// buf[0:keep] carries the end of the previous read; before the first,
	// NULs: the table's first name has no NUL before it.
	// One scan for the names' common prefix after a NUL, each name checked
	// where it is found.
	prefix := names[0]
	for _, n := range names[1:] {
		i := 0
		for i < len(prefix) && i < len(n) && prefix[i] == n[i] {
			i++
		}
		prefix = prefix[:i]
	}
	pat := append([]byte{0}, prefix...)
	for pos := start; pos < end; pos += goChunk {
		want := min(uint64(goChunk), end-pos)
		n, err := r.ReadAt(buf[keep:keep+int(want)], int64(pos))
		if uint64(n) < want {
			return nil, fmt.Errorf("read function names: %w", orEOF(err))
		}
		window := buf[:keep+n]
		for i := 0; ; {
			j := bytes.Index(window[i:], pat)
			if j < 0 {
				break
			}
			at := window[i+j+1:]
			for _, name := range names {
				if len(at) > len(name) && at[len(name)] == 0 && string(at[:len(name)]) == name {
					// The window starts keep bytes before pos.
					found[uint32(pos-start+uint64(i+j+1)-uint64(keep))] = name
				}
			}
			i += j + 1
		}
		copy(buf, window[len(window)-keep:])
	}
	// The last name ends at the table's end with its NUL; one that the
	// table cuts short is no name.
	return found, nil
}

// funcRange is a function found in the table.
type funcRange struct {
	name       string
	entry, end uint64 // virtual addresses
}

// walkFunctab finds the functions whose name offset is in names.
func walkFunctab(r io.ReaderAt, t pclnTable, text uint64, names map[uint32]string) ([]funcRange, error) {
	le := binary.LittleEndian
	es := t.entrySize()
	tab := t.off + t.pcln
	entries := make([]byte, 4096*es)
	funcs := blockReader{r: r, lo: tab, hi: t.off + t.size, buf: make([]byte, 64<<10)}
	var out []funcRange
	entryAt := func(b []byte) uint64 {
		if t.format == Format116 {
			return le.Uint64(b)
		}
		return text + uint64(le.Uint32(b))
	}
	funcOffAt := func(b []byte) uint64 {
		if t.format == Format116 {
			return le.Uint64(b[8:])
		}
		return uint64(le.Uint32(b[4:]))
	}
	var prev uint64
	for i := uint64(0); i < t.nfunc; {
		// Read entries i .. i+k, one more than the functions, for the end.
		k := min(uint64(len(entries))/es-1, t.nfunc-i)
		b := entries[:(k+1)*es]
		if n, err := r.ReadAt(b, int64(tab+i*es)); n < len(b) {
			return nil, fmt.Errorf("read function table: %w", orEOF(err))
		}
		for j := uint64(0); j < k; j++ {
			e := b[j*es:]
			entry, next := entryAt(e), entryAt(e[es:])
			if entry < prev || next < entry {
				return nil, fmt.Errorf("function table not sorted at %d: %w", i+j, ErrTables)
			}
			prev = entry
			if len(names) == 0 {
				continue
			}
			nameOff, err := funcs.u32(tab + funcOffAt(e) + t.nameOffField())
			if err != nil {
				return nil, fmt.Errorf("function %d: %w", i+j, err)
			}
			if name, ok := names[nameOff]; ok {
				out = append(out, funcRange{name: name, entry: entry, end: next})
			}
		}
		i += k
	}
	return out, nil
}

// blockReader reads small values at offsets in [lo, hi) through one 64
// KiB block: the _func records are laid out in the function table's
// order, so walking the table reads each block once. (Records in another
// order cost a read each, until the read budget runs out.)
type blockReader struct {
	r      io.ReaderAt
	lo, hi uint64
	buf    []byte // a power of two long
	start  uint64
	n      int
}

func (b *blockReader) u32(off uint64) (uint32, error) {
	if off < b.lo || off+4 > b.hi || off+4 < off {
		return 0, fmt.Errorf("offset %#x outside the table: %w", off, ErrTables)
	}
	if off < b.start || off+4 > b.start+uint64(b.n) {
		b.start = off &^ (uint64(len(b.buf)) - 1)
		want := min(uint64(len(b.buf)), b.hi-b.start)
		n, err := b.r.ReadAt(b.buf[:want], int64(b.start))
		b.n = n
		if off+4 > b.start+uint64(n) {
			b.n = 0
			return 0, fmt.Errorf("read function record: %w", orEOF(err))
		}
	}
	return binary.LittleEndian.Uint32(b.buf[off-b.start:]), nil
}

// budgetReader fails reads once a total has been read: a hostile table
// cannot keep the examination reading.
type budgetReader struct {
	r    io.ReaderAt
	left int64
}

func (b *budgetReader) ReadAt(p []byte, off int64) (int, error) {
	if int64(len(p)) > b.left {
		return 0, errReadBudget
	}
	b.left -= int64(len(p))
	return b.r.ReadAt(p, off)
}

// orEOF names a short read that returned no error.
func orEOF(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
