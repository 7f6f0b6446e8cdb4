// Package boring finds BoringSSL's SSL_write and SSL_read in an x86-64
// executable that links BoringSSL statically and exports no symbol for
// them: Bun, and the single-file executables Bun builds (Claude Code).
// Pure user space: it reads the file, loads nothing.
//
// Without symbols the functions are found through what BoringSSL's error
// reporting leaves in the code. Every OPENSSL_PUT_ERROR(SSL, reason) in
// ssl/ssl_lib.cc compiles to a call of ERR_put_error(ERR_LIB_SSL, 0,
// reason, __FILE__, __LINE__): the address of the string "…/ssl/ssl_lib.cc"
// (an immediate, or RIP-relative in position-independent code) next to the
// immediates 16, the reason and the line. Each such site is attributed to
// the function around it (functions start on a 16-byte boundary after INT3
// padding, and are the target of a direct call), and the functions are
// recognised by the set of reasons they report:
//
//   - SSL_write: UNINITIALIZED, SSL_HANDSHAKE_FAILURE and BAD_LENGTH in
//     this order of lines (and SHOULD_NOT_HAVE_BEEN_CALLED, the QUIC check,
//     in newer releases), nothing else;
//   - SSL_read (with SSL_peek inlined): SHOULD_NOT_HAVE_BEEN_CALLED a few
//     lines above SSL_write's, calling the function that reports only
//     UNINITIALIZED and SSL_HANDSHAKE_FAILURE (ssl_read_impl), or
//     reporting them itself when that was inlined too.
//
// Anything else, more than one candidate, or a candidate whose code does
// not decode to the sites, is "BoringSSL build not recognised": never a
// guess. Cost: one sequential read of the code (1 MiB at a time) and one
// of the read-only data; memory: 2 MiB of buffers and 1/64 of the code's
// size in bitmaps of call targets.
package boring

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

var (
	// ErrNotBoringSSL: the file carries no BoringSSL TLS library (no
	// ssl/ssl_lib.cc in its read-only data).
	ErrNotBoringSSL = errors.New("no boringssl in file")
	// ErrUnrecognised: BoringSSL is there but its functions were not found
	// with certainty.
	ErrUnrecognised = errors.New("boringssl build not recognised")
)

// Reasons reported by ssl_lib.cc (include/openssl/ssl.h, err.h).
const (
	libSSL                 = 16  // ERR_LIB_SSL
	reasonNotCalled        = 66  // ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED
	reasonBadLength        = 111 // SSL_R_BAD_LENGTH
	reasonHandshakeFailure = 215 // SSL_R_SSL_HANDSHAKE_FAILURE
	reasonUninitialized    = 226 // SSL_R_UNINITIALIZED
)

// Bounds.
const (
	chunk       = 1 << 20 // bytes read at a time
	maxNameLen  = 512     // of the __FILE__ string
	maxStrings  = 4       // copies of the file name (one per BoringSSL linked in)
	maxSites    = 4096    // error sites of ssl_lib.cc
	maxBack     = 16 << 10
	maxFuncScan = 8 << 10 // bytes decoded from an entry
	maxSiteInst = 8       // instructions from the file argument to the call
)

// Func is a function found.
type Func struct {
	Name   string
	Addr   uint64 // virtual address of the entry
	Offset uint64 // file offset of the entry: where its uprobe attaches
}

// Build describes the BoringSSL found, for the log.
type Build struct {
	ID     string // GNU build ID of the file, hex
	Source string // the __FILE__ of ssl_lib.cc as compiled
	// WriteLines: the lines of SSL_write's error sites (they move with
	// the release).
	WriteLines []int
}

func (b Build) String() string {
	s := "boringssl " + b.Source
	if len(b.WriteLines) > 0 {
		s += fmt.Sprintf(" (SSL_write errors at lines %v)", b.WriteLines)
	}
	if b.ID != "" {
		s += " build-id " + b.ID
	}
	return s
}

// Result: the functions found.
type Result struct {
	Write Func // SSL_write(SSL *ssl, const void *buf, int num)
	Read  Func // SSL_read(SSL *ssl, void *buf, int num)
	Build Build
}

type segment struct {
	addr, off, size uint64
}

// site is one OPENSSL_PUT_ERROR of ssl_lib.cc.
type site struct {
	addr         uint64
	reason, line int
}

type function struct {
	entry uint64
	sites []site
	calls []uint64 // direct call targets in the function
}

func (fn *function) reasons() []int {
	var r []int
	for _, s := range fn.sites {
		if !slices.Contains(r, s.reason) {
			r = append(r, s.reason)
		}
	}
	sort.Ints(r)
	return r
}

func (fn *function) line(reason int) int {
	l := -1
	for _, s := range fn.sites {
		if s.reason == reason && (l < 0 || s.line < l) {
			l = s.line
		}
	}
	return l
}

// Find locates SSL_write and SSL_read in the ELF file f read through r
// (the file f was read from). ErrNotBoringSSL: nothing to find.
// ErrUnrecognised (wrapped with why): BoringSSL whose functions could not
// be told with certainty; report the process unmonitored.
func Find(f *elf.File, r io.ReaderAt) (Result, error) {
	var res Result
	if f.Machine != elf.EM_X86_64 || f.Class != elf.ELFCLASS64 {
		return res, fmt.Errorf("elf machine %s: %w", f.Machine, ErrNotBoringSSL)
	}
	var code, data []segment
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Filesz == 0 {
			continue
		}
		s := segment{addr: p.Vaddr, off: p.Off, size: p.Filesz}
		if p.Flags&elf.PF_X != 0 {
			code = append(code, s)
		} else {
			data = append(data, s)
		}
	}
	names, source, err := findFileName(r, data)
	if err != nil {
		return res, err
	}
	res.Build = Build{ID: buildID(f), Source: source}
	targets := newCallTargets(code)
	sites, err := findSites(r, code, names, f.Type == elf.ET_DYN, targets)
	if err != nil {
		return res, err
	}
	if len(sites) == 0 {
		return res, fmt.Errorf("no error site of %s in the code: %w", source, ErrUnrecognised)
	}
	funcs := group(r, code, sites)
	write, err := pickWrite(funcs)
	if err != nil {
		return res, err
	}
	read, err := pickRead(funcs, write)
	if err != nil {
		return res, err
	}
	for _, c := range []struct {
		name string
		fn   *function
	}{{"SSL_write", write}, {"SSL_read", read}} {
		if err := targets.check(c.name, c.fn); err != nil {
			return res, err
		}
	}
	for _, s := range write.sites {
		res.Build.WriteLines = append(res.Build.WriteLines, s.line)
	}
	sort.Ints(res.Build.WriteLines)
	res.Write = Func{Name: "SSL_write", Addr: write.entry, Offset: fileOffset(code, write.entry)}
	res.Read = Func{Name: "SSL_read", Addr: read.entry, Offset: fileOffset(code, read.entry)}
	return res, nil
}

// findFileName returns the virtual addresses of every NUL-terminated
// string that names ssl/ssl_lib.cc in the read-only segments.
func findFileName(r io.ReaderAt, data []segment) ([]uint64, string, error) {
	needle := []byte("ssl/ssl_lib.cc\x00")
	var addrs []uint64
	source := ""
	buf := make([]byte, chunk+maxNameLen)
	for _, seg := range data {
		for pos := uint64(0); pos < seg.size; pos += chunk {
			// Read maxNameLen bytes before the chunk too: the start of a
			// name that ends in it.
			start := uint64(0)
			if pos >= maxNameLen {
				start = pos - maxNameLen
			}
			n := min(seg.size-start, uint64(len(buf)))
			b := buf[:n]
			if got, err := r.ReadAt(b, int64(seg.off+start)); got < len(b) {
				return nil, "", fmt.Errorf("read data at %#x: %w", seg.off+start, orEOF(err))
			}
			lo := int(pos - start) // where this chunk's own bytes begin
			for i := max(0, lo-(len(needle)-1)); ; {
				j := bytes.Index(b[i:], needle)
				if j < 0 {
					break
				}
				end := i + j + len(needle) - 1 // the NUL
				i = end
				if end < lo || end >= lo+chunk {
					continue // the chunk of its NUL reports it
				}
				s := bytes.LastIndexByte(b[:end], 0) + 1
				if s == 0 && start > 0 || end-s >= maxNameLen {
					continue // no NUL before it in the window: not a C string
				}
				if name := string(b[s:end]); name != "ssl/ssl_lib.cc" && !strings.HasSuffix(name, "/ssl/ssl_lib.cc") {
					continue // another file whose name ends so (ossl_lib.cc)
				}
				if len(addrs) == maxStrings {
					return nil, "", fmt.Errorf("more than %d copies of ssl_lib.cc: %w", maxStrings, ErrUnrecognised)
				}
				addrs = append(addrs, seg.addr+start+uint64(s))
				if source == "" {
					source = string(b[s:end])
				}
			}
		}
	}
	if len(addrs) == 0 {
		return nil, "", ErrNotBoringSSL
	}
	return addrs, source, nil
}

// findSites records the code's call targets, and scans it for the file name passed as ERR_put_error's
// fourth argument (RCX): "mov $imm32, %ecx" in a fixed-address executable,
// "lea rel32(%rip), %rcx" in position-independent code (pic), and reads
// the reason and line after each.
func findSites(r io.ReaderAt, code []segment, names []uint64, pic bool, targets *callTargets) ([]site, error) {
	var sites []site
	var imms [][]byte
	for _, a := range names {
		if a < 1<<32 && !pic {
			imms = append(imms, binary.LittleEndian.AppendUint32([]byte{0xb9}, uint32(a)))
		}
	}
	lea := []byte{0x8d, 0x0d} // after REX.W (0x48): searched from the rarer byte
	const tail = 64           // bytes after a hit decoded to find the call
	buf := make([]byte, chunk+tail)
	for _, seg := range code {
		for pos := uint64(0); pos < seg.size; pos += chunk {
			n := min(seg.size-pos, uint64(len(buf)))
			b := buf[:n]
			if got, err := r.ReadAt(b, int64(seg.off+pos)); got < len(b) {
				return nil, fmt.Errorf("read code at %#x: %w", seg.off+pos, orEOF(err))
			}
			limit := min(len(b), chunk)
			targets.scan(b, seg.addr+pos, min(limit, len(b)-4))
			var hits []int
			for _, imm := range imms {
				for i := 0; i < limit; {
					j := bytes.Index(b[i:], imm)
					if j < 0 || i+j >= limit {
						break
					}
					hits = append(hits, i+j)
					i += j + 1
				}
			}
			for i := 1; pic && i < limit; {
				j := bytes.Index(b[i:], lea)
				if j < 0 || i+j >= limit || i+j+6 > len(b) {
					break
				}
				at := i + j - 1
				i += j + 1
				if b[at] != 0x48 {
					continue
				}
				rel := int32(binary.LittleEndian.Uint32(b[at+3:]))
				target := seg.addr + pos + uint64(at) + 7 + uint64(int64(rel))
				if slices.Contains(names, target) {
					hits = append(hits, at)
				}
			}
			for _, h := range hits {
				s, ok := readSite(b[h:])
				if !ok {
					continue
				}
				if len(sites) == maxSites {
					return nil, fmt.Errorf("more than %d error sites: %w", maxSites, ErrUnrecognised)
				}
				s.addr = seg.addr + pos + uint64(h)
				sites = append(sites, s)
			}
		}
	}
	sort.Slice(sites, func(i, j int) bool { return sites[i].addr < sites[j].addr })
	return sites, nil
}

// readSite decodes from the file argument to the call (or jump to a
// shared call) and reads the library (EDI), reason (EDX) and line (R8D).
func readSite(b []byte) (site, bool) {
	s := site{reason: -1, line: -1}
	lib := -1
	for i, pc := 0, 0; i < maxSiteInst && pc < len(b); i++ {
		inst, err := x86asm.Decode(b[pc:], 64)
		if err != nil {
			return s, false
		}
		pc += inst.Len
		switch inst.Op {
		case x86asm.CALL, x86asm.JMP:
			return s, lib == libSSL && s.reason >= 0 && s.line > 0
		case x86asm.MOV:
			reg, ok := inst.Args[0].(x86asm.Reg)
			imm, ok2 := inst.Args[1].(x86asm.Imm)
			if !ok || !ok2 {
				continue
			}
			switch reg {
			case x86asm.EDI:
				lib = int(imm)
			case x86asm.EDX:
				s.reason = int(imm)
			case x86asm.R8L:
				s.line = int(imm)
			}
		case x86asm.XOR:
			if a, ok := inst.Args[0].(x86asm.Reg); ok && a == x86asm.EDX && inst.Args[1] == x86asm.EDX {
				s.reason = 0
			}
		}
	}
	return s, false
}

// group attributes each site to the function around it: the nearest
// 16-byte boundary below it that follows INT3 padding, from which the
// code decodes onto the site. Sites that cannot be attributed are left
// out.
func group(r io.ReaderAt, code []segment, sites []site) []*function {
	byEntry := map[uint64]*function{}
	var funcs []*function
	win := make([]byte, maxBack)
	for _, s := range sites {
		seg, ok := segmentOf(code, s.addr)
		if !ok {
			continue
		}
		lo := max(seg.addr, s.addr-min(s.addr, maxBack))
		w := win[:s.addr-lo]
		if got, _ := r.ReadAt(w, int64(seg.off+lo-seg.addr)); got < len(w) {
			continue
		}
		entry := uint64(0)
		for a := s.addr &^ 15; a > lo; a -= 16 {
			i := a - lo
			if w[i-1] == 0xcc && (i == uint64(len(w)) || w[i] != 0xcc) {
				entry = a
				break
			}
		}
		if entry == 0 || !decodesOnto(w[entry-lo:]) {
			continue
		}
		fn := byEntry[entry]
		if fn == nil {
			fn = &function{entry: entry}
			byEntry[entry] = fn
			funcs = append(funcs, fn)
		}
		fn.sites = append(fn.sites, s)
	}
	for _, fn := range funcs {
		fn.calls = directCalls(r, code, fn.entry)
	}
	return funcs
}

// decodesOnto reports whether a linear decode of code ends exactly at its
// end (the site), without an INT3 on the way.
func decodesOnto(code []byte) bool {
	pc := 0
	for pc < len(code) {
		inst, err := x86asm.Decode(code[pc:], 64)
		if err != nil || inst.Op == x86asm.INT {
			return false
		}
		pc += inst.Len
	}
	return pc == len(code)
}

// directCalls decodes the function from entry to its first INT3 (at most
// maxFuncScan bytes) and returns its direct call targets.
func directCalls(r io.ReaderAt, code []segment, entry uint64) []uint64 {
	seg, ok := segmentOf(code, entry)
	if !ok {
		return nil
	}
	b := make([]byte, min(maxFuncScan, seg.addr+seg.size-entry))
	got, _ := r.ReadAt(b, int64(seg.off+entry-seg.addr))
	b = b[:got]
	var calls []uint64
	for pc := 0; pc < len(b); {
		inst, err := x86asm.Decode(b[pc:], 64)
		if err != nil || inst.Op == x86asm.INT {
			break
		}
		pc += inst.Len
		if rel, ok := inst.Args[0].(x86asm.Rel); ok && inst.Op == x86asm.CALL {
			calls = append(calls, entry+uint64(int64(pc)+int64(rel)))
		}
	}
	return calls
}

func pickWrite(funcs []*function) (*function, error) {
	var found []*function
	for _, fn := range funcs {
		rs := fn.reasons()
		if !isSubset([]int{reasonUninitialized, reasonHandshakeFailure, reasonBadLength}, rs) ||
			!isSubset(rs, []int{reasonNotCalled, reasonUninitialized, reasonHandshakeFailure, reasonBadLength}) {
			continue
		}
		if fn.line(reasonUninitialized) < fn.line(reasonHandshakeFailure) && fn.line(reasonHandshakeFailure) < fn.line(reasonBadLength) {
			found = append(found, fn)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no function reports SSL_write's errors: %w", ErrUnrecognised)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%d functions report SSL_write's errors: %w", len(found), ErrUnrecognised)
}

// readLines: SSL_read's (SSL_peek's) QUIC check is this many lines above
// SSL_write's first error at most.
const readLines = 64

func pickRead(funcs []*function, write *function) (*function, error) {
	top := write.line(reasonNotCalled)
	if top < 0 {
		top = write.line(reasonUninitialized)
	}
	impl := map[uint64]bool{} // ssl_read_impl candidates
	for _, fn := range funcs {
		if slices.Equal(fn.reasons(), []int{reasonHandshakeFailure, reasonUninitialized}) &&
			fn.line(reasonUninitialized) < fn.line(reasonHandshakeFailure) {
			impl[fn.entry] = true
		}
	}
	var found []*function
	for _, fn := range funcs {
		rs := fn.reasons()
		l := fn.line(reasonNotCalled)
		if fn == write || l < 0 || l >= top || l < top-readLines {
			continue
		}
		inlined := slices.Equal(rs, []int{reasonNotCalled, reasonHandshakeFailure, reasonUninitialized})
		calls := slices.Equal(rs, []int{reasonNotCalled}) && slices.ContainsFunc(fn.calls, func(c uint64) bool { return impl[c] })
		if inlined || calls {
			found = append(found, fn)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no function reports SSL_read's errors: %w", ErrUnrecognised)
	case 1:
		return found[0], nil
	}
	return nil, fmt.Errorf("%d functions report SSL_read's errors: %w", len(found), ErrUnrecognised)
}

// callTargets records, per code segment, the 16-byte aligned addresses
// that direct calls (E8) and jumps (E9) of the code target: one bit each,
// a bitmap of 1/128 of the code's size for each kind.
type callTargets struct {
	segs           []segment
	jumped, called [][]uint64 // E8 or E9; E8
}

func newCallTargets(code []segment) *callTargets {
	c := &callTargets{segs: code}
	for _, s := range code {
		n := (s.size/16 + 63) / 64
		c.jumped = append(c.jumped, make([]uint64, n))
		c.called = append(c.called, make([]uint64, n))
	}
	return c
}

// scan records the targets of the E8 and E9 in b, the code at addr
// (followed by 4 more bytes).
func (c *callTargets) scan(b []byte, addr uint64, limit int) {
	for _, op := range []byte{0xe8, 0xe9} {
		for i := 0; i < limit; i++ {
			j := bytes.IndexByte(b[i:limit], op)
			if j < 0 {
				break
			}
			i += j
			target := addr + uint64(i) + 5 + uint64(int64(int32(binary.LittleEndian.Uint32(b[i+1:]))))
			if target&15 != 0 {
				continue
			}
			for k, s := range c.segs {
				if target >= s.addr && target < s.addr+s.size {
					bit := (target - s.addr) / 16
					c.jumped[k][bit/64] |= 1 << (bit % 64)
					if op == 0xe8 {
						c.called[k][bit/64] |= 1 << (bit % 64)
					}
				}
			}
		}
	}
}

func (c *callTargets) is(maps [][]uint64, addr uint64) bool {
	for k, s := range c.segs {
		if addr >= s.addr && addr < s.addr+s.size && addr&15 == 0 {
			bit := (addr - s.addr) / 16
			return maps[k][bit/64]&(1<<(bit%64)) != 0
		}
	}
	return false
}

// check: the entry is called (or jumped to) directly, and nothing between
// it and the function's first site is called: else the entry is not
// where it was put.
func (c *callTargets) check(name string, fn *function) error {
	if !c.is(c.jumped, fn.entry) {
		return fmt.Errorf("%s candidate at %#x is never called directly: %w", name, fn.entry, ErrUnrecognised)
	}
	for a := fn.entry + 16; a <= fn.sites[0].addr; a += 16 {
		if c.is(c.called, a) {
			return fmt.Errorf("%s candidate at %#x: a call targets %#x inside it: %w", name, fn.entry, a, ErrUnrecognised)
		}
	}
	return nil
}

func segmentOf(segs []segment, addr uint64) (segment, bool) {
	for _, s := range segs {
		if addr >= s.addr && addr < s.addr+s.size {
			return s, true
		}
	}
	return segment{}, false
}

func fileOffset(segs []segment, addr uint64) uint64 {
	s, _ := segmentOf(segs, addr)
	return addr - s.addr + s.off
}

// isSubset reports whether every element of a is in b.
func isSubset(a, b []int) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}

func buildID(f *elf.File) string {
	s := f.Section(".note.gnu.build-id")
	if s == nil || s.Size > 256 {
		return ""
	}
	d, err := s.Data()
	if err != nil || len(d) < 16 {
		return ""
	}
	namesz := binary.LittleEndian.Uint32(d[0:])
	descsz := binary.LittleEndian.Uint32(d[4:])
	start := 12 + (namesz+3)&^3
	if uint64(start)+uint64(descsz) > uint64(len(d)) {
		return ""
	}
	return hex.EncodeToString(d[start : start+descsz])
}

func orEOF(err error) error {
	if err == nil {
		return io.ErrUnexpectedEOF
	}
	return err
}
