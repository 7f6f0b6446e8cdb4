package probe

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
)

// Finding a few exported functions without reading the whole dynamic
// symbol table: node's has 75,000 entries and 5 MiB of names, which
// debug/elf would turn into as many Go strings on every examination (and
// a process is held while its new executable is examined). The GNU hash
// table (.gnu.hash, which every current linker writes) leads to each name
// in a few reads; files without one fall back to debug/elf.

// errNoGNUHash: the file has no usable .gnu.hash section.
var errNoGNUHash = errors.New("no gnu hash table")

// dynamicFunctions returns the value (virtual address) of each of names
// that the file defines as a function in its dynamic symbol table.
func dynamicFunctions(f *elf.File, names []string) (map[string]uint64, error) {
	found, err := lookupGNUHash(f, names)
	if !errors.Is(err, errNoGNUHash) {
		return found, err
	}
	found = map[string]uint64{}
	syms, err := f.DynamicSymbols()
	if err != nil && !errors.Is(err, elf.ErrNoSymbols) {
		return nil, err
	}
	for _, s := range syms {
		if s.Section == elf.SHN_UNDEF || elf.ST_TYPE(s.Info) != elf.STT_FUNC {
			continue
		}
		for _, want := range names {
			if s.Name == want {
				found[want] = s.Value
			}
		}
	}
	return found, nil
}

func gnuHash(name string) uint32 {
	h := uint32(5381)
	for i := 0; i < len(name); i++ {
		h = h*33 + uint32(name[i])
	}
	return h
}

const sym64Size = 24 // sizeof(Elf64_Sym)

func lookupGNUHash(f *elf.File, names []string) (map[string]uint64, error) {
	var hashSec, symSec *elf.Section
	for _, s := range f.Sections {
		switch s.Type {
		case elf.SHT_GNU_HASH:
			hashSec = s
		case elf.SHT_DYNSYM:
			symSec = s
		}
	}
	if hashSec == nil || symSec == nil || f.Class != elf.ELFCLASS64 || int(symSec.Link) >= len(f.Sections) {
		return nil, errNoGNUHash
	}
	strSec := f.Sections[symSec.Link]
	// debug/elf leaves a compressed section of an unknown compression
	// without a reader (its ReadAt would panic): any file a process maps
	// comes here, so such a file goes the way of debug/elf, which refuses it.
	if hashSec.ReaderAt == nil || symSec.ReaderAt == nil || strSec.ReaderAt == nil {
		return nil, errNoGNUHash
	}
	le := binary.LittleEndian
	var hdr [16]byte
	if _, err := hashSec.ReadAt(hdr[:], 0); err != nil {
		return nil, errNoGNUHash
	}
	nbuckets, symoffset, bloomSize := le.Uint32(hdr[0:]), le.Uint32(hdr[4:]), le.Uint32(hdr[8:])
	if nbuckets == 0 {
		return nil, errNoGNUHash
	}
	buckets := 16 + uint64(bloomSize)*8
	chains := buckets + uint64(nbuckets)*4
	nsyms := symSec.Size / sym64Size
	u32 := func(off uint64) (uint32, bool) {
		var b [4]byte
		if _, err := hashSec.ReadAt(b[:], int64(off)); err != nil {
			return 0, false
		}
		return le.Uint32(b[:]), true
	}
	found := map[string]uint64{}
	var sym [sym64Size]byte
	nameBuf := make([]byte, 64)
	for _, name := range names {
		h := gnuHash(name)
		idx, ok := u32(buckets + uint64(h%nbuckets)*4)
		if !ok || idx == 0 {
			continue
		}
		for i := idx; uint64(i) < nsyms && i >= symoffset; i++ {
			h2, ok := u32(chains + uint64(i-symoffset)*4)
			if !ok {
				break
			}
			if h|1 == h2|1 && symbolIs(symSec, strSec, i, name, sym[:], nameBuf) {
				info, shndx := sym[4], le.Uint16(sym[6:])
				if elf.SectionIndex(shndx) != elf.SHN_UNDEF && elf.ST_TYPE(info) == elf.STT_FUNC {
					found[name] = le.Uint64(sym[8:])
				}
				break
			}
			if h2&1 != 0 {
				break
			}
		}
	}
	return found, nil
}

// symbolIs reads symbol i into sym and reports whether it is called name.
func symbolIs(symSec, strSec *elf.Section, i uint32, name string, sym, buf []byte) bool {
	if _, err := symSec.ReadAt(sym, int64(i)*sym64Size); err != nil {
		return false
	}
	off := int64(binary.LittleEndian.Uint32(sym))
	n, err := strSec.ReadAt(buf[:len(name)+1], off)
	if n < len(name)+1 && !(errors.Is(err, io.EOF) && n == len(name)) {
		return false
	}
	return bytes.Equal(buf[:len(name)], []byte(name)) && (n == len(name) || buf[len(name)] == 0)
}

// readerContains reports whether r holds pattern, reading chunk bytes at a
// time (a pattern across two chunks is found too).
func readerContains(r io.Reader, pattern []byte, chunk int) bool {
	return readerFind(r, [][]byte{pattern}, chunk)[0]
}
