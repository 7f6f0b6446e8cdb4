package probe

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/aarsm/aarsm/agent/internal/gosym"
	"github.com/aarsm/aarsm/agent/internal/proc"
)

// Processes whose TLS AARSM cannot read (AARSM_UNMONITORED). Two ways
// find them:
//
//   - examining a file tells which TLS stack it carries when it exports
//     nothing the sensor probes (classifyStack): a process that runs or
//     maps such a file is reported with that stack;
//   - a process that opens a TCP connection to a TLS port (443, or
//     Options.TLSPorts) while none of the files it maps is probed is
//     reported with the stack of one of its files, else "unknown"
//     (bpf/ssl/ssl.c, tls_connect).
//
// Each (executable, stack) is reported once (OnUnmonitored, the journal),
// with the first process seen; the last few reports are kept for status.

// The stacks named in reports.
const (
	StackBoringSSL     = "BoringSSL (static, stripped)"
	StackRustls        = "rustls"
	StackGo            = "go"
	StackOpenSSLStatic = "OpenSSL static without symbols"
	StackNSS           = "NSS"
	StackUnknown       = "unknown"
)

// Unmonitored is a process doing TLS that the sensor cannot read.
type Unmonitored struct {
	PID    uint32
	Exe    string // its executable ("?" when unreadable)
	Stack  string // the TLS stack (Stack*), or StackUnknown
	Reason string // why it is not read, for a person
	First  time.Time
}

// MaxUnmonitored is how many reports Sensor.Unmonitored keeps (the last).
const MaxUnmonitored = 64

// maxUnmonitoredKeys bounds the (executable, stack) pairs remembered as
// reported; past it the oldest half is forgotten (they may be reported
// again).
const maxUnmonitoredKeys = 4096

type unmonKey struct{ exe, stack string }

// unmonState is the sensor's record of reports (under Sensor.mu).
type unmonState struct {
	seen   map[unmonKey]uint64 // → order of report
	order  uint64
	recent []Unmonitored // ring of MaxUnmonitored
	next   int
}

// rodataMarks are what the read-only data of a file without TLS exports
// shows of a TLS stack linked into it.
type rodataMarks struct {
	openssl, boring, rustls bool
}

// The fingerprints looked for in read-only data.
var (
	// The source file name OpenSSL's (and BoringSSL's, ssl_lib.cc) TLS
	// library records in its errors; libcrypto alone does not carry it.
	markOpenSSL = []byte("ssl/ssl_lib.c")
	// BoringSSL's version string ("BoringSSL"; OpenSSL_version).
	markBoring = []byte("BoringSSL")
	// rustls' source paths in panic locations (crate registry or vendored
	// copy): kept by stripped release builds.
	markRustls1 = []byte("/rustls-0.")
	markRustls2 = []byte("rustls/src/")
)

// scanRodata reads .rodata once for every fingerprint.
func scanRodata(f *elf.File) rodataMarks {
	sec := f.Section(".rodata")
	if sec == nil || sec.Type == elf.SHT_NOBITS || sec.Size > 256<<20 {
		return rodataMarks{}
	}
	found := readerFind(sec.Open(), [][]byte{markOpenSSL, markBoring, markRustls1, markRustls2}, 1<<20)
	return rodataMarks{openssl: found[0], boring: found[1], rustls: found[2] || found[3]}
}

// readerFind reports which of patterns r holds, reading chunk bytes at a
// time (a pattern across two chunks is found too).
func readerFind(r io.Reader, patterns [][]byte, chunk int) []bool {
	longest := 0
	for _, p := range patterns {
		longest = max(longest, len(p))
	}
	found := make([]bool, len(patterns))
	left := len(patterns)
	buf := make([]byte, chunk+longest)
	carry := 0
	for {
		n, err := io.ReadFull(r, buf[carry:])
		for i, p := range patterns {
			if !found[i] && bytes.Contains(buf[:carry+n], p) {
				found[i] = true
				left--
			}
		}
		if err != nil || left == 0 {
			return found
		}
		keep := min(longest-1, carry+n)
		copy(buf, buf[carry+n-keep:carry+n])
		carry = keep
	}
}

// classifyStack names the TLS stack of a file that exports no function
// the sensor probes, and why it is not read; "" when it shows none. A Go
// executable is classified by its build info and function table alone:
// its read-only data holds any string its code names (the agent's own
// holds these fingerprints).
func classifyStack(f *elf.File) (stack, why string, marks rodataMarks) {
	if names, err := f.DynString(elf.DT_SONAME); err == nil {
		for _, n := range names {
			// NSS's TLS library: its sockets are written with NSPR's
			// PR_Write, which the sensor does not probe. (libnss3 alone
			// is certificates and crypto, not TLS.)
			if strings.HasPrefix(n, "libssl3.so") {
				return StackNSS, "NSS (libssl3) is not probed", rodataMarks{}
			}
		}
	}
	marks = scanRodata(f)
	switch {
	case marks.boring:
		return StackBoringSSL, "carries BoringSSL but exports no SSL_write symbol", marks
	case marks.openssl:
		return StackOpenSSLStatic, "carries OpenSSL but exports no SSL_write symbol (statically linked and stripped)", marks
	case marks.rustls:
		return StackRustls, "rustls is not probed", marks
	}
	return "", "", marks
}

// goStack is the stack reported for a Go executable whose crypto/tls
// cannot be probed (err from examineGo).
func goStack(err error) (stack, why string) {
	if errors.Is(err, gosym.ErrStackABI) || errors.Is(err, gosym.ErrTooNew) || errors.Is(err, gosym.ErrNoRegABI) {
		return StackGo + " (unsupported version)", err.Error()
	}
	return StackGo, err.Error()
}

// noteUnmonitored reports pid, running exe, once per (exe, stack).
func (s *Sensor) noteUnmonitored(pid uint32, stack, why string) {
	if pid == uint32(os.Getpid()) {
		return
	}
	exe, err := s.opts.Proc.Exe(pid)
	if err != nil {
		exe = "?"
	}
	u := Unmonitored{PID: pid, Exe: exe, Stack: stack, Reason: why, First: time.Now()}
	k := unmonKey{exe, stack}
	s.mu.Lock()
	st := &s.unmon
	if st.seen == nil {
		st.seen = map[unmonKey]uint64{}
	}
	if _, dup := st.seen[k]; dup {
		s.mu.Unlock()
		return
	}
	if len(st.seen) >= maxUnmonitoredKeys {
		for key, o := range st.seen {
			if o < st.order-maxUnmonitoredKeys/2 {
				delete(st.seen, key)
			}
		}
	}
	st.order++
	st.seen[k] = st.order
	if len(st.recent) < MaxUnmonitored {
		st.recent = append(st.recent, u)
	} else {
		st.recent[st.next] = u
		st.next = (st.next + 1) % MaxUnmonitored
	}
	s.mu.Unlock()
	s.log.Warn("process does TLS that AARSM cannot read; not monitored", "pid", pid, "exe", exe, "stack", stack, "reason", why)
	if s.opts.OnUnmonitored != nil {
		s.opts.OnUnmonitored(u)
	}
}

// Unmonitored returns the last processes reported unmonitored (at most
// MaxUnmonitored), oldest first. Safe to call from any goroutine.
func (s *Sensor) Unmonitored() []Unmonitored {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.unmon
	out := make([]Unmonitored, 0, len(st.recent))
	out = append(out, st.recent[st.next:]...)
	return append(out, st.recent[:st.next]...)
}

// processFiles is what examining a process found of its files.
type processFiles struct {
	probed bool
	stacks []Target // files with a stack that cannot be probed
}

func (p *processFiles) add(t Target) {
	if t.Probed() {
		p.probed = true
	}
	if t.Stack != "" {
		for _, o := range p.stacks {
			if o.Stack == t.Stack {
				return
			}
		}
		p.stacks = append(p.stacks, t)
	}
}

// target returns what examining file id found.
func (s *Sensor) target(id proc.FileID) (Target, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.files[id]
	if !ok {
		return Target{}, false
	}
	return *t, true
}

// checkConnect looks at a process that connected to a TLS port: if none
// of its files is probed, its TLS is not read.
func (s *Sensor) checkConnect(pid uint32, port uint16) {
	var files processFiles
	if _, alive := s.examineProcessFiles(pid, proc.FileID{}, &files); !alive {
		return // gone: nothing to tell
	}
	if files.probed {
		return
	}
	if len(files.stacks) > 0 {
		return // reported by examineProcessFiles, with its stack
	}
	s.noteUnmonitored(pid, StackUnknown, fmt.Sprintf("connected to TCP port %d; no file it runs or maps is probed", port))
}

// setTLSPorts fills the kernel's list of TLS ports.
func (s *Sensor) setTLSPorts() error {
	ports := s.opts.TLSPorts
	if ports == nil {
		ports = []uint16{443}
	}
	for _, p := range ports {
		if err := s.objs.TlsPorts.Put(p, uint8(1)); err != nil {
			return fmt.Errorf("set TLS port %d: %w", p, err)
		}
	}
	return nil
}

// attachConnect lists the TLS ports and attaches tls_connect. A kernel
// without the tracepoint (before 4.16) only finds unmonitored processes
// by their files.
func (s *Sensor) attachConnect() error {
	if err := s.setTLSPorts(); err != nil {
		return err
	}
	l, err := link.Tracepoint("sock", "inet_sock_set_state", s.objs.TlsConnect, nil)
	if errors.Is(err, os.ErrNotExist) {
		s.log.Warn("no tracepoint sock/inet_sock_set_state: processes doing TLS through an unknown library are not reported", "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("attach tracepoint sock/inet_sock_set_state: %w", err)
	}
	s.links = append(s.links, l)
	return nil
}
