package gosym

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"runtime"
	"testing"
)

// FuzzGoTables: FindTLS on damaged executables never panics, and
// allocates a bounded amount whatever the tables claim (sizes, counts,
// offsets). Seeds: the synthetic Go executable in each table format, with
// and without section headers, and with its header fields at extremes.
//
// The file is fuzzed as its five parts (ELF and program headers, text,
// function table, data with build info and moduledata, section headers),
// each put back at its place: each part is small (the zeros between them
// are not fuzzed), which keeps the fuzzer's minimizing of every new input
// short (it grows with the square of an input's length: on the whole
// 2 KiB file it took the minute it is allowed for each).
func FuzzGoTables(f *testing.F) {
	add := func(file []byte) {
		parts := fakeParts(file)
		f.Add(parts[0], parts[1], parts[2], parts[3], parts[4])
	}
	for _, tc := range []struct {
		format   Format
		version  string
		sections bool
	}{
		{Format120, "go1.22.12", true},
		{Format120, "go1.26.8", false},
		{Format118, "go1.19.8", true},
		{Format116, "go1.17.13", false},
	} {
		fg := defaultFakeGo()
		fg.format, fg.version, fg.sections = tc.format, tc.version, tc.sections
		data := fg.build()
		add(data)
		// nfunc, then the function table offset, at their largest.
		big := append([]byte{}, data...)
		binary.LittleEndian.PutUint64(big[fakeRodata+8:], 1<<62)
		add(big)
		big = append([]byte{}, data...)
		binary.LittleEndian.PutUint64(big[fakeRodata+64:], 1<<40)
		add(big)
	}
	f.Fuzz(func(t *testing.T, head, text, table, data, shdrs []byte) {
		file := fakeJoin(head, text, table, data, shdrs)
		r := bytes.NewReader(file)
		ef, err := elf.NewFile(r)
		if err != nil {
			return
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g, err := FindTLS(ef, r)
		runtime.ReadMemStats(&after)
		// debug/buildinfo allocates up to 10 MiB at once for a string the
		// blob says is that long; the scans' buffers are 1 MiB each.
		if n := after.TotalAlloc - before.TotalAlloc; n > 48<<20 {
			t.Errorf("%d MiB allocated", n>>20)
		}
		if err == nil && (g.Write.Offset == 0 || len(g.Write.Returns) == 0) {
			t.Errorf("found %+v without a probe site", g.Write)
		}
	})
}

// fakeParts cuts a synthetic file into its parts, each without its
// trailing zeros.
func fakeParts(file []byte) [5][]byte {
	var parts [5][]byte
	for i := range 4 {
		parts[i] = bytes.TrimRight(file[i*fakeSeg:(i+1)*fakeSeg], "\x00")
	}
	parts[4] = file[4*fakeSeg:]
	return parts
}

// fakeJoin puts the parts back at their places (each cut to its slot).
func fakeJoin(head, text, table, data, shdrs []byte) []byte {
	file := make([]byte, 4*fakeSeg+min(len(shdrs), 4096))
	for i, p := range [][]byte{head, text, table, data} {
		copy(file[i*fakeSeg:(i+1)*fakeSeg], p)
	}
	copy(file[4*fakeSeg:], shdrs)
	return file
}
