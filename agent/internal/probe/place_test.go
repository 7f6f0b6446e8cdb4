package probe

import (
	"os"
	"os/exec"
	"testing"
)

// Every binary the tests drive gets its write probes on an instruction the
// kernel emulates, with the argument registers untouched on the way there,
// and a guard on every way out of it.
func TestPlaceWriteProbes(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v (apt-get install -y nodejs)", err)
	}
	libgnutls := systemLibgnutls(t)
	for _, path := range []string{systemLibssl(t), node, libgnutls} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		info, err := examineELF(f)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		syms := []string{symWrite, symWriteEx}
		if path == libgnutls {
			// gnutls_record_send only jumps to gnutls_record_send2
			// through the PLT: probed there (gnutls.go).
			syms = []string{symGnuSend2}
			if _, ok := info.symbols[symGnuSend]; ok {
				t.Errorf("%s: both gnutls_record_send and gnutls_record_send2 probed: every call would be seen twice", path)
			}
		}
		for _, sym := range syms {
			entry := info.symbols[sym]
			p, ok := info.places[sym]
			if !ok {
				t.Fatalf("%s %s: not placed", path, sym)
			}
			t.Logf("%s %s: entry %#x, probe %+#x, guards %#x", path, sym, entry, p.site-entry, p.guards)
			site, ok := decodeAt(f, p.site)
			if !ok || !emulated(site) {
				t.Errorf("%s %s: probe on %v, not an emulated instruction", path, sym, site)
			}
			for off := entry; off < p.site; {
				inst, _ := decodeAt(f, off)
				if !keepsArguments(inst) {
					t.Errorf("%s %s: %v at %#x before the probe changes an argument", path, sym, inst, off)
				}
				off += uint64(inst.Len)
			}
			if len(p.guards) == 0 {
				t.Errorf("%s %s: no hold guard", path, sym)
			}
			for _, g := range p.guards {
				if g == p.site {
					t.Errorf("%s %s: guard on the probe itself", path, sym)
				}
				if inst, ok := decodeAt(f, g); !ok || !emulated(inst) {
					t.Errorf("%s %s: guard on %v, not an emulated instruction", path, sym, inst)
				}
			}
		}
	}
}

// A prologue that moves an argument register keeps the probe on the entry;
// a function that starts with a branch is guarded on both ways.
func TestPlaceWriteSynthetic(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   []byte
		site   uint64
		guards []uint64
	}{
		// sub $0x18,%rsp; test %edx,%edx; js +3; nop; nop; ret; push %rbx; ret
		{"emulated branch after the prologue", []byte{0x48, 0x83, 0xec, 0x18, 0x85, 0xd2, 0x78, 0x03, 0x90, 0x90, 0xc3, 0x53, 0xc3}, 6, []uint64{8, 11}},
		// mov %rsi,%rdi; push %rbx; nop; ret: rdi changes before the push
		{"argument moved first", []byte{0x48, 0x89, 0xf7, 0x53, 0x90, 0xc3}, 0, []uint64{3}},
		// push %rbp; mov %rsp,%rbp; push %r14; ret
		{"push first", []byte{0x55, 0x48, 0x89, 0xe5, 0x41, 0x56, 0xc3}, 0, []uint64{4}},
		// sub $8,%rsp; ret: nothing emulated; a line that returns needs no guard
		{"no emulated instruction", []byte{0x48, 0x83, 0xec, 0x08, 0xc3}, 0, nil},
	} {
		p := placeWrite(byteReader(tc.code), 0)
		if p.site != tc.site || !equalOffsets(p.guards, tc.guards) {
			t.Errorf("%s: probe %d guards %v, want %d %v", tc.name, p.site, p.guards, tc.site, tc.guards)
		}
	}
}

type byteReader []byte

func (b byteReader) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, os.ErrInvalid
	}
	n := copy(p, b[off:])
	return n, nil
}

func equalOffsets(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
