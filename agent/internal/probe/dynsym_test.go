package probe

import (
	"debug/elf"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The GNU hash lookup finds exactly what reading the whole dynamic symbol
// table finds, on the binaries the agent meets.
func TestDynamicFunctionsByHash(t *testing.T) {
	libssl := systemLibssl(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node: %v (apt-get install -y nodejs)", err)
	}
	names := append([]string{"malloc", "SSL_CTX_new", "no_such_function", "BIO_new"}, tlsSymbols...)
	for _, path := range []string{libssl, filepath.Join(filepath.Dir(libssl), "libcrypto.so.3"), node, "/bin/ls", "/bin/sh"} {
		f, err := elf.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := lookupGNUHash(f, names)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		want := map[string]uint64{}
		syms, _ := f.DynamicSymbols()
		for _, s := range syms {
			for _, n := range names {
				if s.Name == n && s.Section != elf.SHN_UNDEF && elf.ST_TYPE(s.Info) == elf.STT_FUNC {
					want[n] = s.Value
				}
			}
		}
		f.Close()
		if len(got) != len(want) {
			t.Errorf("%s: hash lookup %v, symbol table %v", path, got, want)
		}
		for n, v := range want {
			if got[n] != v {
				t.Errorf("%s %s: hash lookup %#x, symbol table %#x", path, n, got[n], v)
			}
		}
	}
}

func TestReaderContains(t *testing.T) {
	data := strings.Repeat("x", 100) + "ssl/ssl_lib.c" + strings.Repeat("y", 50)
	for chunk := 1; chunk < 130; chunk += 7 {
		if !readerContains(strings.NewReader(data), []byte("ssl/ssl_lib.c"), chunk) {
			t.Errorf("chunk %d: pattern not found", chunk)
		}
		if readerContains(strings.NewReader(data), []byte("ssl/ssl_lib.h"), chunk) {
			t.Errorf("chunk %d: absent pattern found", chunk)
		}
	}
}

// BenchmarkFindTLSFunctions: node's TLS functions through the GNU hash
// table beside reading its whole dynamic symbol table, in one run.
func BenchmarkFindTLSFunctions(b *testing.B) {
	node, err := exec.LookPath("node")
	if err != nil {
		b.Fatalf("node: %v (apt-get install -y nodejs)", err)
	}
	f, err := elf.Open(node)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.Run("gnu-hash", func(b *testing.B) {
		for b.Loop() {
			if _, err := lookupGNUHash(f, tlsSymbols); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("symbol-table", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.DynamicSymbols(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
