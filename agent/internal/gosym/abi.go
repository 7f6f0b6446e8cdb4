package gosym

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The register ABI of Go's crypto/tls, per Go release: where a BPF program
// finds the arguments of (*Conn).Write and (*Conn).Read at their entry and
// their results at each RET.
//
// Both are func (c *Conn) (b []byte) (int, error). Since Go 1.17 amd64
// functions use ABIInternal: integer arguments in RAX, RBX, RCX, RDI, RSI,
// R8, R9, R10, R11 in order (a slice takes three: pointer, length,
// capacity), integer results in the same registers from RAX, and R14 holds
// the current goroutine (g) throughout. Before 1.17 every argument and
// result is on the goroutine's stack: such binaries are refused, not
// guessed at. ABIInternal is unstable by design: a release newer than the
// last one the table was checked on is refused too (ErrTooNew), until a
// test of this package passes with it and the table's last release moves.
//
// Keys for the BPF side:
//   - the connection: the *tls.Conn pointer, the receiver (RAX at entry);
//     one Conn is one TLS connection for its whole life.
//   - pairing an entry with its RET: the goroutine, g (R14). The receiver
//     is gone by the RET (RAX then holds n), and the goroutine's stack may
//     have been moved between the two, so neither the stack pointer nor a
//     return address can pair them: that is why uretprobes must never be
//     used on Go. HTTP/2 reads and writes one Conn from two goroutines at
//     once, so the Conn alone cannot pair them either. A goroutine that
//     panics out of Read never reaches a RET: entries are kept in an LRU
//     map.

// Reg is an x86-64 general-purpose register.
type Reg uint8

const (
	NoReg Reg = iota
	RAX
	RBX
	RCX
	RDX
	RSI
	RDI
	R8
	R9
	R10
	R11
	R14
)

// String names the register as struct pt_regs does (ax, bx, ... r14).
func (r Reg) String() string {
	name, _ := r.ptRegs()
	return name
}

// PtRegsOffset is the byte offset of the register in the kernel's struct
// pt_regs on x86-64 (arch/x86/include/asm/ptrace.h), what a BPF program's
// ctx is; -1 for NoReg.
func (r Reg) PtRegsOffset() int {
	_, off := r.ptRegs()
	return off
}

func (r Reg) ptRegs() (string, int) {
	switch r {
	case RAX:
		return "ax", 80
	case RBX:
		return "bx", 40
	case RCX:
		return "cx", 88
	case RDX:
		return "dx", 96
	case RSI:
		return "si", 104
	case RDI:
		return "di", 112
	case R8:
		return "r8", 72
	case R9:
		return "r9", 64
	case R10:
		return "r10", 56
	case R11:
		return "r11", 48
	case R14:
		return "r14", 8
	}
	return "none", -1
}

// Version is a Go release, major.minor.patch (go1.22.12: 1, 22, 12).
type Version struct{ Major, Minor, Patch int }

func (v Version) String() string {
	return fmt.Sprintf("go%d.%d.%d", v.Major, v.Minor, v.Patch)
}

// Less orders releases; the patch counts.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	return v.Patch < w.Patch
}

// Release is the version without its patch: what the ABI table is keyed on.
func (v Version) Release() Version { return Version{v.Major, v.Minor, 0} }

// ParseVersion reads runtime.Version() as build info records it:
// "go1.22.12", "go1.20", "go1.21rc2", "go1.23.4 X:boringcrypto",
// "devel go1.27-abcdef01 Tue Jan 6 ...". It returns the experiments that
// follow " X:" too.
func ParseVersion(s string) (Version, []string, error) {
	s = strings.TrimPrefix(s, "devel ")
	word, rest, _ := strings.Cut(s, " ")
	var experiments []string
	if x, ok := strings.CutPrefix(strings.TrimSpace(rest), "X:"); ok {
		experiments = strings.Split(x, ",")
	}
	num, ok := strings.CutPrefix(word, "go")
	if !ok {
		return Version{}, nil, fmt.Errorf("go version %q: no go prefix", s)
	}
	// Cut what follows the numbers: rc2, beta1, -abcdef (devel).
	end := len(num)
	for i, c := range num {
		if (c < '0' || c > '9') && c != '.' {
			end = i
			break
		}
	}
	parts := strings.Split(num[:end], ".")
	if len(parts) < 2 || len(parts) > 3 {
		return Version{}, nil, fmt.Errorf("go version %q: not major.minor[.patch]", s)
	}
	var n [3]int
	for i, p := range parts {
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 || v > 1000 {
			return Version{}, nil, fmt.Errorf("go version %q: bad number %q", s, p)
		}
		n[i] = v
	}
	return Version{n[0], n[1], n[2]}, experiments, nil
}

// ABI is where the arguments and results of func (c *Conn) (b []byte)
// (int, error) are, for a range of Go releases.
type ABI struct {
	Name        string
	First, Last Version // releases it holds for, inclusive (patch 0: any patch)
	G           Reg     // the current goroutine, at the entry and at each RET
	// At the entry: the receiver, then b's pointer, length and capacity.
	Conn, Buf, Len, Cap Reg
	// At each RET: n, then the error interface (type word, data word; both
	// zero for a nil error).
	N, ErrType, ErrData Reg
}

var (
	ErrStackABI = errors.New("go before 1.17 passes arguments on the stack")
	ErrTooNew   = errors.New("go release newer than the register table")
	ErrNoRegABI = errors.New("go built without the register ABI")
)

// ABIs is the table, oldest first. The last release of each row is the
// newest it was checked on (build_test.go builds with each toolchain it can
// get and checks the registers under ptrace).
func ABIs() []ABI {
	return []ABI{{
		Name:  "ABIInternal amd64",
		First: Version{1, 17, 0}, Last: Version{1, 26, 0},
		G:    R14,
		Conn: RAX, Buf: RBX, Len: RCX, Cap: RDI,
		N: RAX, ErrType: RBX, ErrData: RCX,
	}}
}

// ABIFor returns the row for a release, or why there is none.
func ABIFor(v Version, experiments []string) (ABI, error) {
	for _, x := range experiments {
		if strings.HasPrefix(x, "noregabi") {
			return ABI{}, fmt.Errorf("%v X:%s: %w", v, x, ErrNoRegABI)
		}
	}
	table := ABIs()
	r := v.Release()
	if r.Less(table[0].First) {
		return ABI{}, fmt.Errorf("%v: %w", v, ErrStackABI)
	}
	for _, a := range table {
		if !r.Less(a.First) && !a.Last.Less(r) {
			return a, nil
		}
	}
	return ABI{}, fmt.Errorf("%v (table ends at %v): %w", v, table[len(table)-1].Last, ErrTooNew)
}
