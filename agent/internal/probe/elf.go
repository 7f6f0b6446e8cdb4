package probe

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"strings"

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

	// GnuTLS (libgnutls.so.30). gnutls_record_send(session, data, size)
	// and gnutls_record_recv(session, data, size) take their arguments in
	// the registers of SSL_write_ex and SSL_read (rdi, rsi, rdx; the size
	// a size_t) and return an ssize_t: attach uses the OpenSSL programs,
	// the session pointer standing for the SSL*. gnutls_deinit(session)
	// ends the connection as SSL_free does.
	symGnuSend   = "gnutls_record_send"
	symGnuRecv   = "gnutls_record_recv"
	symGnuDeinit = "gnutls_deinit"
)

var tlsSymbols = []string{symWrite, symWriteEx, symRead, symReadEx, symGetError, symFree, symGnuSend, symGnuRecv, symGnuDeinit}

// writeSymbols are the functions whose plaintext is what a process sends.
var writeSymbols = []string{symWrite, symWriteEx, symGnuSend, symGnuSend2}

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
	// lib names the TLS library when its functions were found without
	// symbols ("boringssl"), build describes it; unprobed: why a library
	// that is there could not be probed.
	lib, build string
	unprobed   error
	// rustls: file offsets of the encrypt calls of a statically linked
	// rustls (rustls.go), probed with rustls_encrypt.
	rustls []uint64
	// stack names the TLS library the file carries or is, when it is
	// known and cannot be probed (Stack* values), and stackWhy why it
	// cannot; "" otherwise.
	stack, stackWhy string
}

func (i elfInfo) writes() bool {
	if len(i.rustls) > 0 {
		return true
	}
	for _, sym := range writeSymbols {
		if i.symbols[sym] != 0 {
			return true
		}
	}
	return false
}

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
	if (info.symbols[symWrite] != 0 || info.symbols[symWriteEx] != 0) && wrapsGnuTLS(f) {
		// GnuTLS's OpenSSL compatibility layer (libgnutls-openssl.so):
		// its SSL_write calls gnutls_record_send, which is probed in
		// libgnutls itself; probing both would report every call twice.
		for _, sym := range []string{symWrite, symWriteEx, symRead, symReadEx, symGetError, symFree} {
			delete(info.symbols, sym)
		}
	}
	// A Go executable's TLS is Go's own (crypto/tls): its strings may
	// name anything (the agent's own name OpenSSL's source files), so the
	// fingerprints of statically linked C stacks are not looked for.
	var isGo bool
	info.gotls, isGo, info.goErr = examineGo(f, r)
	if info.goErr != nil {
		info.stack, info.stackWhy = goStack(info.goErr)
	}
	if !info.writes() && !isGo {
		info.classifyC(f, r)
	}
	for _, sym := range writeSymbols {
		if off := info.symbols[sym]; off != 0 {
			info.places[sym] = placeWrite(r, off)
		}
	}
	followGnuSend(f, r, &info)
	return info, nil
}

// classifyC looks, in a file that exports no TLS function, for a C stack
// linked in statically: BoringSSL is located and probed when its build is
// recognised; what stays unprobed keeps its stack and why.
func (i *elfInfo) classifyC(f *elf.File, r io.ReaderAt) {
	var marks rodataMarks
	i.stack, i.stackWhy, marks = classifyStack(f)
	i.embedsOpenSSL = marks.openssl
	if marks.openssl || marks.boring {
		i.findBoringSSL(f, r)
	}
	if i.writes() {
		i.stack, i.stackWhy = "", ""
		return
	}
	i.findRustls(f, r)
	if len(i.rustls) > 0 {
		i.stack, i.stackWhy = "", ""
		return
	}
	if i.unprobed == nil {
		return
	}
	if i.stack == "" || marks.rustls {
		i.stack = StackRustls
		if !marks.rustls {
			i.stack = StackBoringSSL
		}
	}
	i.stackWhy = i.unprobed.Error()
}

// wrapsGnuTLS reports whether the file needs libgnutls (DT_NEEDED).
func wrapsGnuTLS(f *elf.File) bool {
	libs, err := f.ImportedLibraries()
	if err != nil {
		return false
	}
	for _, l := range libs {
		if strings.HasPrefix(l, "libgnutls.so") {
			return true
		}
	}
	return false
}

// fileOffset converts a virtual address of the file into the file offset
// the kernel's uprobes take (gosym.FileOffset, shared with the Go finder).
func fileOffset(f *elf.File, addr uint64) (uint64, bool) {
	return gosym.FileOffset(f, addr)
}
