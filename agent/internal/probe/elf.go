package probe

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/aarsm/aarsm/agent/internal/gosym"
)

// The TLS functions a target may export, and the program each one gets.
const (
	symWrite    = "SSL_write"
	symWriteEx  = "SSL_write_ex"
	symRead     = "SSL_read"
	symReadEx   = "SSL_read_ex"
	symGetError = "SSL_get_error"
	symFree     = "SSL_free"
)

var tlsSymbols = []string{symWrite, symWriteEx, symRead, symReadEx, symGetError, symFree}

// elfInfo is what examining a file tells.
type elfInfo struct {
	symbols map[string]uint64 // TLS functions defined by the file -> file offset of their entry
	// places: where the write functions' probes and hold guards go.
	places map[string]placement
	// embedsOpenSSL: no TLS symbol is exported but the file carries an
	// OpenSSL version string: a statically linked, stripped copy that
	// cannot be probed by symbol.
	embedsOpenSSL bool
	// gotls: where Go's crypto/tls is in a Go executable (nil: not Go, or
	// Go without crypto/tls); goErr: why a Go executable's crypto/tls
	// cannot be probed (an unsupported release, damaged tables).
	gotls *goTLS
	goErr error
	// stack names the TLS library when its functions were found without
	// symbols ("boringssl"), build describes it; unprobed: why a library
	// that is there could not be probed.
	stack, build string
	unprobed     error
}

func (i elfInfo) writes() bool { return i.symbols[symWrite] != 0 || i.symbols[symWriteEx] != 0 }

var errNotELF = errors.New("not an ELF file")

// examineELF reads the dynamic symbol table of the file at path.
func examineELF(r io.ReaderAt) (elfInfo, error) {
	info := elfInfo{symbols: map[string]uint64{}, places: map[string]placement{}}
	f, err := elf.NewFile(r)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) {
			return info, errNotELF
		}
		return info, fmt.Errorf("read elf: %w", err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return info, fmt.Errorf("elf machine %s is not supported", f.Machine)
	}
	funcs, err := dynamicFunctions(f, tlsSymbols)
	if err != nil {
		return info, fmt.Errorf("read dynamic symbols: %w", err)
	}
	for name, addr := range funcs {
		if off, ok := fileOffset(f, addr); ok {
			info.symbols[name] = off
		}
	}
	// A Go executable's TLS is Go's own (crypto/tls): its strings may
	// name anything (the agent's own name OpenSSL's source files), so the
	// fingerprints of statically linked C stacks are not looked for.
	var isGo bool
	info.gotls, isGo, info.goErr = examineGo(f, r)
	if !info.writes() && !isGo {
		info.embedsOpenSSL = carriesOpenSSL(f)
		if info.embedsOpenSSL {
			info.findBoringSSL(f, r)
		}
		if !info.writes() {
			info.findRustls(f)
		}
	}
	for _, sym := range []string{symWrite, symWriteEx} {
		if off := info.symbols[sym]; off != 0 {
			info.places[sym] = placeWrite(r, off)
		}
	}
	return info, nil
}

// carriesOpenSSL looks in read-only data for the source file name OpenSSL's
// TLS library records in its errors (libcrypto alone does not carry it).
func carriesOpenSSL(f *elf.File) bool {
	sec := f.Section(".rodata")
	if sec == nil || sec.Type == elf.SHT_NOBITS || sec.Size > 256<<20 {
		return false
	}
	return readerContains(sec.Open(), []byte("ssl/ssl_lib.c"), 1<<20)
}

// fileOffset converts a virtual address of the file into the file offset
// the kernel's uprobes take (gosym.FileOffset, shared with the Go finder).
func fileOffset(f *elf.File, addr uint64) (uint64, bool) {
	return gosym.FileOffset(f, addr)
}
