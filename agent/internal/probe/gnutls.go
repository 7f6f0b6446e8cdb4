package probe

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io"

	"golang.org/x/arch/x86/x86asm"
)

// GnuTLS 3.6.3 and later: gnutls_record_send(session, data, size) is
//
//	xor %r8d,%r8d; xor %ecx,%ecx; jmp gnutls_record_send2@plt
//
// a tail call through the PLT to gnutls_record_send2(session, data, size,
// pad, flags), which applications may also call directly. The probe could
// sit on the jmp (emulated), but its hold guard would then go on the PLT
// entry, an indirect jump the kernel single-steps (~30 µs per call here,
// BenchmarkWriteCost's "fail-closed" gnutls row before this). When the PLT
// slot is gnutls_record_send2 and the file defines it, the write probe goes
// on gnutls_record_send2 instead: its prologue is PUSHes (emulated, probe
// and guard both), its first three arguments are gnutls_record_send's, and
// it sees the direct callers of gnutls_record_send2 as well. A build that
// calls it otherwise (inlined, no PLT) keeps the probe on
// gnutls_record_send.
//
// Retries: after GNUTLS_E_AGAIN or GNUTLS_E_INTERRUPTED (a non-blocking
// socket that is full, a signal) GnuTLS wants the same call again, and the
// probe sees the same bytes a second time; GnuTLS has no SSL_get_error to
// tell the stream so. Blocking clients (wget, gnutls-cli) retry only after a signal; a
// return probe to catch them would cost a uretprobe on every write.
const symGnuSend2 = "gnutls_record_send2"

// followGnuSend moves the write probe of gnutls_record_send to
// gnutls_record_send2 when the one only jumps to the other (see above).
func followGnuSend(f *elf.File, r io.ReaderAt, info *elfInfo) {
	p, ok := info.places[symGnuSend]
	if !ok {
		return
	}
	jmp, ok := decodeAt(r, p.site)
	rel, isRel := jmp.Args[0].(x86asm.Rel)
	if !ok || jmp.Op != x86asm.JMP || !isRel {
		return
	}
	stub := uint64(int64(p.site) + int64(jmp.Len) + int64(rel))
	if sym, ok := pltTarget(f, r, stub); !ok || sym != symGnuSend2 {
		return
	}
	funcs, err := dynamicFunctions(f, []string{symGnuSend2})
	if err != nil || funcs[symGnuSend2] == 0 {
		return
	}
	off, ok := fileOffset(f, funcs[symGnuSend2])
	if !ok {
		return
	}
	delete(info.symbols, symGnuSend)
	delete(info.places, symGnuSend)
	info.symbols[symGnuSend2] = off
	info.places[symGnuSend2] = placeWrite(r, off)
}

// pltTarget returns the symbol whose PLT entry is at file offset off: the
// entry's "jmp *slot(%rip)" (after an endbr64, with or without bnd) reads
// a GOT slot that a JUMP_SLOT relocation names.
func pltTarget(f *elf.File, r io.ReaderAt, off uint64) (string, bool) {
	var endbr [4]byte
	if _, err := r.ReadAt(endbr[:], int64(off)); err == nil && bytes.Equal(endbr[:], []byte{0xf3, 0x0f, 0x1e, 0xfa}) {
		off += 4
	}
	inst, ok := decodeAt(r, off)
	if !ok || inst.Op != x86asm.JMP {
		return "", false
	}
	mem, ok := inst.Args[0].(x86asm.Mem)
	if !ok || mem.Base != x86asm.RIP || mem.Index != 0 {
		return "", false
	}
	pc, ok := virtualAddress(f, off)
	if !ok {
		return "", false
	}
	slot := uint64(int64(pc) + int64(inst.Len) + mem.Disp)
	// x86-64 PLT relocations: entries of 24 bytes, with addend (offset,
	// info, addend).
	relocs := f.Section(".rela.plt")
	if relocs == nil || relocs.Size > 1<<20 || f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return "", false
	}
	data, err := relocs.Data()
	if err != nil {
		return "", false
	}
	le := binary.LittleEndian
	for i := 0; i+24 <= len(data); i += 24 {
		if le.Uint64(data[i:]) != slot {
			continue
		}
		info := le.Uint64(data[i+8:])
		if elf.R_X86_64(elf.R_TYPE64(info)) != elf.R_X86_64_JMP_SLOT {
			return "", false
		}
		syms, err := f.DynamicSymbols()
		idx := int(elf.R_SYM64(info))
		if err != nil || idx < 1 || idx > len(syms) {
			return "", false
		}
		return syms[idx-1].Name, true
	}
	return "", false
}

// virtualAddress converts a file offset in a loaded segment to its
// virtual address.
func virtualAddress(f *elf.File, off uint64) (uint64, bool) {
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && off >= p.Off && off < p.Off+p.Filesz {
			return off - p.Off + p.Vaddr, true
		}
	}
	return 0, false
}
