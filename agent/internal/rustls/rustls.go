// Package rustls finds, in a stripped x86-64 executable that links rustls
// 0.23 statically (Codex, Deno), the places where each TLS record's
// plaintext is handed to the cipher: the call of
// MessageEncrypter::encrypt(&mut self, msg: OutboundPlainMessage, seq) in
// RecordLayer::encrypt_outgoing. Pure user space: it reads the file,
// loads nothing.
//
// The plaintext entry rustls offers (<ConnectionCommon as
// PlaintextSink>::write) is reached through a vtable and inlined into its
// callers; encrypt_outgoing is the one place every record passes, and its
// call of the encrypter is a dyn call that cannot be inlined away:
//
//	self.message_encrypter.encrypt(plain, seq).unwrap()  // record_layer.rs
//
// The unwrap leaves a panic location (record_layer.rs:117:14 in 0.23.40
// and 0.23.46) in the read-only data, referenced from the code next to the
// call. At the call (System V, sret first): rdi the result, rsi the
// encrypter (one per connection and direction: the stream key), rdx a
// pointer to the OutboundPlainMessage, rcx the sequence number. The call
// is compiled as
//
//	mov 0x10(%B),%rsi ; mov 0x18(%B),%A ; ... ; call *0x18(%A)
//
// (B the RecordLayer: the Box<dyn MessageEncrypter> at 0x10; rsi may be
// loaded through another register), and only
// such calls within a short distance before a reference to the location
// are taken. A rustls release not in the table, no site, or too many, is
// "not recognised": never a guess.
//
// The message layout the probe reads (measured on both builds, rustc's
// choice, not a stable ABI): payload OutboundChunks at 0x00 (word 0 zero:
// Single, slice at 0x08/0x10; else Multiple: chunks pointer 0x00, count
// 0x08, start 0x10, end 0x18), content type tag at 0x20 (3:
// ApplicationData).
//
// Cost: one sequential read of the code, 1 MiB at a time, one of the
// read-only data and of the relocations; memory: a few MiB.
package rustls

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"golang.org/x/arch/x86/x86asm"
)

var (
	// ErrNotRustls: the file carries no rustls (no record_layer.rs of a
	// rustls crate in its read-only data).
	ErrNotRustls = errors.New("no rustls in file")
	// ErrUnrecognised: rustls is there but its encrypt call was not found
	// with certainty.
	ErrUnrecognised = errors.New("rustls build not recognised")
)

// unwrapLine: the line and column of the unwrap of encrypt's result in
// record_layer.rs, per rustls release (read in the release's source).
var unwrapLine = map[string][2]uint32{
	"0.23.40": {117, 14},
	"0.23.46": {117, 14},
}

// Bounds.
const (
	chunk      = 1 << 20
	maxPath    = 512  // of the source path
	maxRefs    = 64   // code references to the location
	maxSites   = 16   // encrypt calls
	window     = 2048 // bytes before a reference searched for the call
	maxPrelude = 40   // bytes decoded before a call
)

// Site is one call of the encrypter.
type Site struct {
	Addr   uint64 // virtual address of the call instruction
	Offset uint64 // its file offset: where the uprobe attaches
}

// Result: what was found.
type Result struct {
	Version string // rustls release, "0.23.46"
	Sites   []Site
}

func (r Result) String() string {
	return fmt.Sprintf("rustls %s (%d encrypt calls)", r.Version, len(r.Sites))
}

// Find locates the encrypt calls of the rustls linked into f (read through
// r).
func Find(f *elf.File, r io.ReaderAt) (Result, error) {
	if f.Machine != elf.EM_X86_64 {
		return Result{}, ErrNotRustls
	}
	str, path, err := findPath(f)
	if err != nil {
		return Result{}, err
	}
	version := crateVersion(path)
	lc, ok := unwrapLine[version]
	if !ok {
		return Result{}, fmt.Errorf("%w: rustls %q is not a release whose record layer was read", ErrUnrecognised, version)
	}
	loc, err := findLocation(f, str, uint64(len(path)), lc)
	if err != nil {
		return Result{}, fmt.Errorf("rustls %s: %w", version, err)
	}
	text := f.Section(".text")
	if text == nil || text.Type == elf.SHT_NOBITS {
		return Result{}, fmt.Errorf("%w: no .text", ErrUnrecognised)
	}
	refs, err := findRefs(text, loc)
	if err != nil {
		return Result{}, err
	}
	if len(refs) == 0 {
		return Result{}, fmt.Errorf("%w: rustls %s: record_layer.rs:%d:%d is not referenced from the code", ErrUnrecognised, version, lc[0], lc[1])
	}
	var sites []Site
	seen := map[uint64]bool{}
	for _, ref := range refs {
		for _, c := range callsBefore(text, ref) {
			if seen[c] {
				continue
			}
			seen[c] = true
			sites = append(sites, Site{Addr: c, Offset: c - text.Addr + text.Offset})
		}
	}
	if len(sites) == 0 || len(sites) > maxSites {
		return Result{}, fmt.Errorf("%w: rustls %s: %d encrypt calls next to record_layer.rs:%d:%d", ErrUnrecognised, version, len(sites), lc[0], lc[1])
	}
	slices.SortFunc(sites, func(a, b Site) int { return int(int64(a.Addr - b.Addr)) })
	return Result{Version: version, Sites: sites}, nil
}

var (
	crateMark  = []byte("/rustls-0.")
	recordFile = []byte("/src/record_layer.rs")
)

// findPath returns the address and text of ".../rustls-0.x.y/src/record_layer.rs".
func findPath(f *elf.File) (uint64, string, error) {
	sec := f.Section(".rodata")
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return 0, "", ErrNotRustls
	}
	buf := make([]byte, chunk+maxPath)
	for pos := uint64(0); pos < sec.Size; pos += chunk {
		n, err := sec.ReadAt(buf, int64(pos))
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, "", fmt.Errorf("read .rodata: %w", err)
		}
		b := buf[:n]
		for i := 0; ; {
			j := bytes.Index(b[i:], recordFile)
			if j < 0 {
				break
			}
			end := i + j + len(recordFile)
			start := i + j
			for start > 0 && i+j-start < maxPath && b[start-1] > 0x20 && b[start-1] < 0x7f {
				start--
			}
			p := b[start:end]
			if k := bytes.LastIndex(p, crateMark); k >= 0 && uint64(start) < chunk {
				return sec.Addr + pos + uint64(start), string(p), nil
			}
			i = end
		}
	}
	return 0, "", ErrNotRustls
}

// crateVersion: "0.23.46" from ".../rustls-0.23.46/src/record_layer.rs".
func crateVersion(path string) string {
	i := bytes.LastIndex([]byte(path), crateMark)
	v := path[i+len("/rustls-"):]
	if j := bytes.IndexByte([]byte(v), '/'); j >= 0 {
		v = v[:j]
	}
	return v
}

// findLocation returns the address of the core::panic::Location {file,
// line, col}: the file pointer is either in place (static, or relocated
// relatively with the value kept) or the addend of a relative relocation.
func findLocation(f *elf.File, str, strLen uint64, lc [2]uint32) (uint64, error) {
	var want [16]byte
	binary.LittleEndian.PutUint64(want[:], strLen)
	binary.LittleEndian.PutUint32(want[8:], lc[0])
	binary.LittleEndian.PutUint32(want[12:], lc[1])
	var found []uint64
	// In place.
	for _, name := range []string{".data.rel.ro", ".rodata", ".data"} {
		sec := f.Section(name)
		if sec == nil || sec.Type == elf.SHT_NOBITS {
			continue
		}
		buf := make([]byte, chunk+24)
		for pos := uint64(0); pos < sec.Size; pos += chunk {
			n, err := sec.ReadAt(buf, int64(pos))
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("read %s: %w", name, err)
			}
			for i := 0; i+24 <= n && i < chunk; i += 8 {
				if binary.LittleEndian.Uint64(buf[i:]) == str && bytes.Equal(buf[i+8:i+24], want[:]) {
					found = append(found, sec.Addr+pos+uint64(i))
				}
			}
		}
	}
	// Through R_X86_64_RELATIVE relocations.
	if relocs := f.Section(".rela.dyn"); relocs != nil && len(found) == 0 {
		buf := make([]byte, chunk/24*24)
		var tail [16]byte
		for pos := uint64(0); pos < relocs.Size; pos += uint64(len(buf)) {
			n, err := relocs.ReadAt(buf, int64(pos))
			if err != nil && !errors.Is(err, io.EOF) {
				return 0, fmt.Errorf("read .rela.dyn: %w", err)
			}
			for i := 0; i+24 <= n; i += 24 {
				if uint32(binary.LittleEndian.Uint64(buf[i+8:])) != uint32(elf.R_X86_64_RELATIVE) || binary.LittleEndian.Uint64(buf[i+16:]) != str {
					continue
				}
				at := binary.LittleEndian.Uint64(buf[i:])
				if readVirt(f, at+8, tail[:]) && tail == want {
					found = append(found, at)
				}
			}
		}
	}
	if len(found) != 1 {
		return 0, fmt.Errorf("%w: %d panic locations record_layer.rs:%d:%d", ErrUnrecognised, len(found), lc[0], lc[1])
	}
	return found[0], nil
}

func readVirt(f *elf.File, addr uint64, b []byte) bool {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr+uint64(len(b)) <= p.Vaddr+p.Filesz {
			_, err := p.ReadAt(b, int64(addr-p.Vaddr))
			return err == nil
		}
	}
	return false
}

// findRefs returns the addresses of the RIP-relative LEAs of loc.
func findRefs(text *elf.Section, loc uint64) ([]uint64, error) {
	var refs []uint64
	buf := make([]byte, chunk+8)
	for pos := uint64(0); pos < text.Size; pos += chunk {
		n, err := text.ReadAt(buf, int64(pos))
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read .text: %w", err)
		}
		for i := 0; i+7 <= n && i < chunk; i++ {
			// The opcode first (IndexByte is vectorised): REX.W(R) 8d modrm.
			j := bytes.IndexByte(buf[i+1:n], 0x8d)
			if j < 0 {
				break
			}
			i += j
			if i+7 > n || i >= chunk || buf[i]&0xfb != 0x48 || buf[i+2]&0xc7 != 0x05 {
				continue
			}
			at := text.Addr + pos + uint64(i)
			if at+7+uint64(int64(int32(binary.LittleEndian.Uint32(buf[i+3:])))) == loc {
				if len(refs) == maxRefs {
					return nil, fmt.Errorf("%w: more than %d references to the panic location", ErrUnrecognised, maxRefs)
				}
				refs = append(refs, at)
			}
		}
	}
	return refs, nil
}

// callsBefore returns the encrypt calls in the window before ref.
func callsBefore(text *elf.Section, ref uint64) []uint64 {
	lo := text.Addr
	if ref-lo > window {
		lo = ref - window
	}
	b := make([]byte, ref-lo)
	if _, err := text.ReadAt(b, int64(lo-text.Addr)); err != nil {
		return nil
	}
	var calls []uint64
	for i := 0; i+3 <= len(b); i++ {
		// call *0x18(%reg): ff /2, mod 01, disp8 0x18 (an optional REX.B).
		if b[i] != 0xff || b[i+1]&0xf8 != 0x50 || b[i+1]&7 == 4 || b[i+2] != 0x18 {
			continue
		}
		base := i
		if i > 0 && b[i-1] == 0x41 {
			base = i - 1
		}
		if encryptCall(b, base) {
			calls = append(calls, lo+uint64(base))
		}
	}
	return calls
}

// encryptCall: does the call at b[c:] follow the loads of the
// encrypter (mov 0x10(B),%rsi, or through a register; mov 0x18(B),A)
// with A its base?
func encryptCall(b []byte, c int) bool {
	call, err := x86asm.Decode(b[c:], 64)
	if err != nil || call.Op != x86asm.CALL {
		return false
	}
	target, ok := call.Args[0].(x86asm.Mem)
	if !ok || target.Disp != 0x18 {
		return false
	}
	for s := max(0, c-maxPrelude); s < c; s++ {
		var insts []x86asm.Inst
		at := s
		for at < c {
			in, err := x86asm.Decode(b[at:], 64)
			if err != nil {
				break
			}
			insts = append(insts, in)
			at += in.Len
		}
		if at != c || !prelude(insts, target.Base) {
			continue
		}
		return true
	}
	return false
}

func prelude(insts []x86asm.Inst, a x86asm.Reg) bool {
	// The encrypter's data pointer, 0x10(B), reaches rsi directly or
	// through one register; its vtable, 0x18(B), is the call's base.
	var self x86asm.Reg // register holding 0x10(B)
	var rsi, vt bool
	var b x86asm.Reg
	for _, in := range insts {
		dst, _ := in.Args[0].(x86asm.Reg)
		m, isMem := in.Args[1].(x86asm.Mem)
		src, _ := in.Args[1].(x86asm.Reg)
		switch {
		case in.Op == x86asm.MOV && isMem && m.Disp == 0x10 && m.Index == 0 && m.Base != 0:
			if vt && m.Base != b {
				return false
			}
			self, b = dst, m.Base
			rsi = dst == x86asm.RSI
		case in.Op == x86asm.MOV && dst == a && isMem && m.Disp == 0x18 && m.Index == 0:
			if self != 0 && m.Base != b {
				return false
			}
			vt, b = true, m.Base
		case in.Op == x86asm.MOV && dst == x86asm.RSI:
			rsi = self != 0 && src == self
		}
	}
	return rsi && vt
}
