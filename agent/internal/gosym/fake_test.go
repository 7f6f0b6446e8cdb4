package gosym

import (
	"bytes"
	"encoding/binary"
)

// A small synthetic Go executable: the tables a Go linker writes, for two
// functions, in a few KiB. The fuzz target starts from it (a real binary
// is megabytes), and the -short tests use it for what they cannot build:
// the 1.16 table format, missing section headers, damaged fields.

type fakeGo struct {
	format   Format
	version  string // build info's Go version
	sections bool   // write section headers
	// code of each function, named, in text order.
	funcs []fakeFunc
}

type fakeFunc struct {
	name string
	code []byte
}

// The layout: headers, then text, rodata (the table) and data (build
// info, moduledata at +0x100), 512 bytes each at most: a small seed
// fuzzes and minimizes fast.
const (
	fakeBase   = 0x400000
	fakeText   = 0x200 // file offset and vaddr-fakeBase of each
	fakeRodata = 0x400
	fakeData   = 0x600
	fakeEnd    = 0x800
	fakeSeg    = 0x200
)

// fakeCode is a function as Go compiles one: the stack check, a frame, a
// conditional early return, the morestack call and jump back.
func fakeCode() []byte {
	return []byte{
		0x49, 0x3b, 0x66, 0x10, // cmp rsp,[r14+0x10]
		0x76, 0x0f, // jbe morestack
		0x55,             // push rbp
		0x48, 0x89, 0xe5, // mov rbp,rsp
		0x48, 0x85, 0xc0, // test rax,rax
		0x75, 0x02, // jne +2
		0x5d, 0xc3, // pop rbp; ret
		0x31, 0xc0, // xor eax,eax
		0x5d, 0xc3, // pop rbp; ret
		0xe8, 0x00, 0x00, 0x00, 0x00, // call (morestack)
		0xeb, 0xe4, // jmp entry (-28)
		0xcc, 0xcc, // padding
	}
}

func defaultFakeGo() fakeGo {
	return fakeGo{
		format:   Format120,
		version:  "go1.22.12",
		sections: true,
		funcs: []fakeFunc{
			{"main.main", fakeCode()},
			{SymWrite, fakeCode()},
			{SymRead, fakeCode()},
		},
	}
}

// entries returns each function's vaddr and the end of the text.
func (g fakeGo) entries() ([]uint64, uint64) {
	var out []uint64
	pc := uint64(fakeBase + fakeText)
	for _, f := range g.funcs {
		out = append(out, pc)
		pc += uint64(len(f.code))
	}
	return out, pc
}

func (g fakeGo) build() []byte {
	le := binary.LittleEndian
	file := make([]byte, fakeEnd)
	// Text.
	entries, etext := g.entries()
	for i, f := range g.funcs {
		copy(file[entries[i]-fakeBase:], f.code)
	}
	text := uint64(fakeBase + fakeText)
	// The function table.
	var names bytes.Buffer
	nameOffs := make([]uint32, len(g.funcs))
	for i, f := range g.funcs {
		nameOffs[i] = uint32(names.Len())
		names.WriteString(f.name)
		names.WriteByte(0)
	}
	hdr := 72
	es := 8
	if g.format == Format116 {
		hdr, es = 64, 16
	}
	funcname := uint64(hdr)
	cu := funcname + uint64(names.Len())
	cu = (cu + 7) &^ 7
	pcln := cu + 8 // an empty cutab, filetab and pctab of 8 bytes
	tab := make([]byte, 0, 1024)
	tab = le.AppendUint32(tab, uint32(g.format))
	tab = append(tab, 0, 0, 1, 8)
	tab = le.AppendUint64(tab, uint64(len(g.funcs)))
	tab = le.AppendUint64(tab, 0)
	if g.format != Format116 {
		tab = le.AppendUint64(tab, 0) // textStart: 0, as Go 1.26 writes it
	}
	for _, off := range []uint64{funcname, cu, cu, cu, pcln} {
		tab = le.AppendUint64(tab, off)
	}
	tab = append(tab, names.Bytes()...)
	for uint64(len(tab)) < pcln {
		tab = append(tab, 0)
	}
	funcRecs := uint64((len(g.funcs) + 1) * es)
	recSize := uint64(16)
	for i := 0; i <= len(g.funcs); i++ {
		entry := etext
		if i < len(g.funcs) {
			entry = entries[i]
		}
		funcoff := funcRecs + uint64(i)*recSize
		if g.format == Format116 {
			tab = le.AppendUint64(tab, entry)
			tab = le.AppendUint64(tab, funcoff)
		} else {
			tab = le.AppendUint32(tab, uint32(entry-text))
			tab = le.AppendUint32(tab, uint32(funcoff))
		}
	}
	for i := range g.funcs {
		if g.format == Format116 {
			tab = le.AppendUint64(tab, entries[i])
			tab = le.AppendUint32(tab, nameOffs[i])
			tab = le.AppendUint32(tab, 0)
		} else {
			tab = le.AppendUint32(tab, uint32(entries[i]-text))
			tab = le.AppendUint32(tab, nameOffs[i])
			tab = le.AppendUint64(tab, 0)
		}
	}
	copy(file[fakeRodata:], tab)
	tabAddr := uint64(fakeBase + fakeRodata)
	// Build info (the 1.18+ inline form), then moduledata at +0x100.
	bi := append([]byte("\xff Go buildinf:"), 8, 2)
	bi = append(bi, make([]byte, 16)...)
	bi = binary.AppendUvarint(bi, uint64(len(g.version)))
	bi = append(bi, g.version...)
	mod := "path\tfake/cmd\nmod\tfake/cmd\t(devel)\t\n"
	framed := "0w\xaf\f\x92t\b\x02A\xe1\xc1\a\xe6\xd6\x18\xe6" + mod + "\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2"
	bi = binary.AppendUvarint(bi, uint64(len(framed)))
	bi = append(bi, framed...)
	copy(file[fakeData:], bi)
	md := make([]byte, goModuleBytes)
	le.PutUint64(md[0:], tabAddr)
	le.PutUint64(md[8:], tabAddr+funcname)
	le.PutUint64(md[16:], cu-funcname)
	le.PutUint64(md[128:], tabAddr+pcln)
	le.PutUint64(md[136:], uint64(len(g.funcs)+1))
	le.PutUint64(md[160:], entries[0])
	le.PutUint64(md[168:], etext)
	le.PutUint64(md[176:], text)
	le.PutUint64(md[184:], etext)
	copy(file[fakeData+0x100:], md)

	// ELF header and program headers.
	copy(file, "\x7fELF\x02\x01\x01")
	le.PutUint16(file[16:], 2)  // ET_EXEC
	le.PutUint16(file[18:], 62) // EM_X86_64
	le.PutUint32(file[20:], 1)
	le.PutUint64(file[24:], entries[0])
	le.PutUint64(file[32:], 64) // phoff
	le.PutUint16(file[52:], 64)
	le.PutUint16(file[54:], 56)
	le.PutUint16(file[56:], 3)
	le.PutUint16(file[58:], 64)
	for i, p := range []struct {
		flags uint32
		off   uint64
	}{{5, fakeText}, {4, fakeRodata}, {6, fakeData}} {
		ph := file[64+56*i:]
		le.PutUint32(ph[0:], 1) // PT_LOAD
		le.PutUint32(ph[4:], p.flags)
		le.PutUint64(ph[8:], p.off)
		le.PutUint64(ph[16:], fakeBase+p.off)
		le.PutUint64(ph[24:], fakeBase+p.off)
		le.PutUint64(ph[32:], fakeSeg)
		le.PutUint64(ph[40:], fakeSeg)
		le.PutUint64(ph[48:], 16)
	}
	if !g.sections {
		return file
	}
	// Section headers: null, .text, .gopclntab, .go.buildinfo, .shstrtab.
	shstr := "\x00.text\x00.gopclntab\x00.go.buildinfo\x00.shstrtab\x00"
	strOff := len(file)
	file = append(file, shstr...)
	for len(file)%8 != 0 {
		file = append(file, 0)
	}
	shoff := len(file)
	sh := func(name, typ uint32, flags, addr, off, size uint64) {
		b := make([]byte, 64)
		le.PutUint32(b[0:], name)
		le.PutUint32(b[4:], typ)
		le.PutUint64(b[8:], flags)
		le.PutUint64(b[16:], addr)
		le.PutUint64(b[24:], off)
		le.PutUint64(b[32:], size)
		le.PutUint64(b[48:], 1)
		file = append(file, b...)
	}
	sh(0, 0, 0, 0, 0, 0)
	sh(1, 1, 6, text, fakeText, etext-text)
	sh(7, 1, 2, tabAddr, fakeRodata, uint64(len(tab)))
	sh(18, 1, 3, fakeBase+fakeData, fakeData, uint64(len(bi)))
	sh(32, 3, 0, 0, uint64(strOff), uint64(len(shstr)))
	le.PutUint64(file[40:], uint64(shoff))
	le.PutUint16(file[60:], 5)
	le.PutUint16(file[62:], 4)
	return file
}
