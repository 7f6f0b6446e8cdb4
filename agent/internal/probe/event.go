package probe

import (
	"bytes"
	"fmt"
	"os"
	"unsafe"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/bpf/ssl"
)

// Kind is what an event reports. The values are those of enum
// aarsm_event_kind in bpf/include/aarsm.h.
type Kind uint8

const (
	KindWrite       Kind = 1  // plaintext about to be encrypted (SSL_write, SSL_write_ex)
	KindRead        Kind = 2  // plaintext just decrypted (SSL_read, SSL_read_ex)
	KindWriteFailed Kind = 3  // the previous write on this thread and SSL* failed; it will be retried
	KindFree        Kind = 4  // SSL_free: the connection is gone
	KindExec        Kind = 5  // a process replaced its image
	KindExit        Kind = 6  // a process exited
	KindMmap        Kind = 7  // an unexamined file was mapped executable (handled by the sensor)
	KindCgroup      Kind = 8  // a cgroup was created: Cgroup and Filename (its path); in scope until judged
	KindStdin       Kind = 9  // a watched process read its stdin (WatchStdio): Data, Len; SSL is the fd (0)
	KindStdout      Kind = 10 // a watched process wrote its stdout (WatchStdio): Data, Len; SSL is the fd (1)
	KindSockIn      Kind = 11 // an HTTP candidate (WatchHTTP) read a loopback connection of a port it listens on: Data, Len; SSL names the socket
	KindSockOut     Kind = 12 // an HTTP candidate wrote such a connection: Data, Len; SSL names the socket
	// KindConnect: a process opened a TCP connection to a TLS port (SSL
	// is the port), first time for its image (bpf/include/unmonitored.h;
	// handled by the sensor: AARSM_UNMONITORED).
	KindConnect Kind = 32
)

func (k Kind) String() string {
	switch k {
	case KindWrite:
		return "write"
	case KindRead:
		return "read"
	case KindWriteFailed:
		return "write-failed"
	case KindFree:
		return "free"
	case KindExec:
		return "exec"
	case KindExit:
		return "exit"
	case KindMmap:
		return "mmap"
	case KindCgroup:
		return "cgroup"
	case KindStdin:
		return "stdin"
	case KindStdout:
		return "stdout"
	case KindSockIn:
		return "sock-in"
	case KindSockOut:
		return "sock-out"
	case KindConnect:
		return "connect"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event flags: enum aarsm_event_flags in bpf/include/aarsm.h.
const (
	flagTruncated   = 1 << 0
	flagUnknownFile = 1 << 1
	flagHeld        = 1 << 2
	flagScoped      = 1 << 3
)

// The records are the C structs of bpf/include/aarsm.h, written in host
// byte order. decode reads them as the Go types bpf2go generates from those
// structs (bpf/ssl/sensor_x86_bpfel.go, structs.HostLayout), field by name:
// no offset or size below is written by hand, so a change of the C structs
// reaches the decoder at the next `make generate`, and a field renamed or
// retyped there stops the build here. TestEventLayoutMatchesC checks the
// generated types against the compiled object's BTF, and
// TestDecodeReadsEveryField that every field they have is decoded.
type (
	cHeader = ssl.SensorEventHeader // struct event_header
	cData   = ssl.SensorDataEvent   // struct data_event: header, then the plaintext
	cFile   = ssl.SensorFileEvent   // struct file_event: header, then the file
)

const (
	headerSize   = int(unsafe.Sizeof(cHeader{}))      // sizeof(struct event_header): 64
	dataOffset   = int(unsafe.Offsetof(cData{}.Data)) // offsetof(struct data_event, data): 64
	fileEventLen = int(unsafe.Sizeof(cFile{}))        // sizeof(struct file_event): 336
	// MaxData is the most plaintext one event carries (MAX_DATA in aarsm.h).
	MaxData = len(cData{}.Data)
)

// view is the record raw as a *T (one of the types above), nil if raw is
// shorter than a T. It points into raw where raw is aligned for T, as ring
// buffer records are (at 8 bytes), and to a copy otherwise.
func view[T any](raw []byte) *T {
	var zero T
	if len(raw) < int(unsafe.Sizeof(zero)) {
		return nil
	}
	p := unsafe.Pointer(unsafe.SliceData(raw)) //nolint:gosec // G103: a record of the generated type's own layout (TestEventLayoutMatchesC)
	if uintptr(p)%unsafe.Alignof(zero) != 0 {
		t := new(T)
		copy(bytesOf(t), raw)
		return t
	}
	return (*T)(p)
}

// bytesOf is the memory of *p.
func bytesOf[T any](p *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), unsafe.Sizeof(*p)) //nolint:gosec // G103: the bytes of a plain struct of fixed size
}

// Event is one record of the sensor. An Event handed to a handler, and its
// Data, are only valid during the call: copy what must outlive it.
type Event struct {
	Kind   Kind
	PID    uint32
	TID    uint32
	Mono   uint64 // CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns)
	Cgroup uint64 // cgroup v2 id
	SSL    uint64 // the SSL* of the connection
	comm   [len(cHeader{}.Comm)]byte

	// Write and read events.
	Len       uint32 // true length of the call
	Buf       uint64 // write events: the caller's buffer (ReadRest)
	Truncated bool   // Len > len(Data)
	Held      bool   // the process is stopped until Release (or a kill); exec and mmap events too
	Scoped    bool   // the process is in an enforcing policy's hold scope (writes and reads)
	Data      []byte

	// Exec events.
	PPID        uint32
	File        proc.FileID
	Filename    string
	UnknownFile bool
}

// Comm returns the command name of the calling thread.
func (e *Event) Comm() string {
	n := bytes.IndexByte(e.comm[:], 0)
	if n < 0 {
		n = len(e.comm)
	}
	return string(e.comm[:n])
}

// decode fills e from a raw ring buffer record. Data aliases raw.
func (e *Event) decode(raw []byte) error {
	h := view[cHeader](raw)
	if h == nil {
		return fmt.Errorf("short event: %d bytes", len(raw))
	}
	*e = Event{
		Kind:   Kind(h.Kind),
		PID:    h.Pid,
		TID:    h.Tid,
		Len:    h.Len,
		Mono:   h.Ts,
		Cgroup: h.Cgroup,
		SSL:    h.Ssl,
		comm:   *(*[len(h.Comm)]byte)(bytesOf(&h.Comm)),
		Buf:    h.Buf,
	}
	switch e.Kind {
	case KindWrite, KindRead, KindStdin, KindStdout, KindSockIn, KindSockOut:
		e.Data = raw[dataOffset:]
		e.Truncated = h.Flags&flagTruncated != 0
		e.Held = h.Flags&flagHeld != 0
		e.Scoped = h.Flags&flagScoped != 0
		if uint32(len(e.Data)) > e.Len {
			return fmt.Errorf("%s event: %d bytes of data for a call of %d", e.Kind, len(e.Data), e.Len)
		}
	case KindExec, KindMmap, KindCgroup:
		f := view[cFile](raw)
		if f == nil {
			return fmt.Errorf("short %s event: %d bytes", e.Kind, len(raw))
		}
		e.File = proc.FileID{Ino: f.Ino, Dev: f.Dev}
		e.PPID = f.Ppid
		name := bytesOf(&f.Filename)
		if n := bytes.IndexByte(name, 0); n >= 0 {
			name = name[:n]
		}
		e.Filename = string(name)
		e.UnknownFile = h.Flags&flagUnknownFile != 0
		e.Held = h.Flags&flagHeld != 0
	case KindWriteFailed, KindFree, KindExit, KindConnect:
	default:
		return fmt.Errorf("unknown event kind %d", h.Kind)
	}
	return nil
}

// ReadRest makes Data the whole buffer of a held write the sensor could
// copy only the start of (Truncated): the process is stopped, so the rest
// is read from its memory (mem: /proc/PID/mem, allowed by the unit's
// CAP_SYS_PTRACE and any system-call filter) as the call will send it. At
// most max bytes are kept in all; what lies beyond stays counted by Len.
// Data no longer aliases the ring buffer afterwards.
//
// A stdio event (KindStdin, KindStdout: a pipe read or write that ended
// moments ago) is read the same way without a hold: the buffer is most
// likely intact still, and a JSON-RPC message over 16 KiB (a tool call
// with a mail body) is otherwise lost to its decoder. So is a socket event
// (KindSockIn, KindSockOut) of an HTTP candidate.
func (e *Event) ReadRest(mem string, max int) error {
	held := e.Kind == KindWrite && e.Held
	stdio := e.Kind == KindStdin || e.Kind == KindStdout || e.Kind == KindSockIn || e.Kind == KindSockOut
	if !(held || stdio) || !e.Truncated || e.Buf == 0 {
		return nil
	}
	n := min(int(e.Len), max)
	if n <= len(e.Data) {
		return nil
	}
	full := make([]byte, n)
	have := copy(full, e.Data)
	f, err := os.Open(mem)
	if err != nil {
		return fmt.Errorf("read the rest of a %s of pid %d: %w", e.Kind, e.PID, err)
	}
	defer f.Close()
	got, err := f.ReadAt(full[have:], int64(e.Buf)+int64(have))
	e.Data = full[:have+got]
	e.Truncated = int(e.Len) > len(e.Data)
	if err != nil {
		return fmt.Errorf("read the rest of pid %d's %s (%d of %d bytes): %w", e.PID, e.Kind, len(e.Data), e.Len, err)
	}
	return nil
}
