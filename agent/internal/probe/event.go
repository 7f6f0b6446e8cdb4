package probe

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/aarsm/aarsm/agent/internal/proc"
)

// Kind is what an event reports. The values are those of enum
// aarsm_event_kind in bpf/include/aarsm.h.
type Kind uint8

const (
	KindWrite       Kind = 1 // plaintext about to be encrypted (SSL_write, SSL_write_ex)
	KindRead        Kind = 2 // plaintext just decrypted (SSL_read, SSL_read_ex)
	KindWriteFailed Kind = 3 // the previous write on this thread and SSL* failed; it will be retried
	KindFree        Kind = 4 // SSL_free: the connection is gone
	KindExec        Kind = 5 // a process replaced its image
	KindExit        Kind = 6 // a process exited
	KindMmap        Kind = 7 // an unexamined file was mapped executable (handled by the sensor)
	KindCgroup      Kind = 8 // a cgroup was created: Cgroup and Filename (its path); in scope until judged
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
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

const (
	flagTruncated   = 1 << 0
	flagUnknownFile = 1 << 1
	flagHeld        = 1 << 2

	headerSize   = 64  // sizeof(struct event_header)
	fileEventLen = 336 // sizeof(struct file_event)
	// MaxData is the most plaintext one event carries (MAX_DATA in aarsm.h).
	MaxData = 16384
)

// Event is one record of the sensor. An Event handed to a handler, and its
// Data, are only valid during the call: copy what must outlive it.
type Event struct {
	Kind   Kind
	PID    uint32
	TID    uint32
	Mono   uint64 // CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns)
	Cgroup uint64 // cgroup v2 id
	SSL    uint64 // the SSL* of the connection
	comm   [16]byte

	// Write and read events.
	Len       uint32 // true length of the call
	Buf       uint64 // write events: the caller's buffer (ReadRest)
	Truncated bool   // Len > len(Data)
	Held      bool   // the process is stopped until Release (or a kill); exec and mmap events too
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
	if len(raw) < headerSize {
		return fmt.Errorf("short event: %d bytes", len(raw))
	}
	le := binary.LittleEndian
	*e = Event{
		Kind:   Kind(raw[0]),
		PID:    le.Uint32(raw[4:]),
		TID:    le.Uint32(raw[8:]),
		Len:    le.Uint32(raw[12:]),
		Mono:   le.Uint64(raw[16:]),
		Cgroup: le.Uint64(raw[24:]),
		SSL:    le.Uint64(raw[32:]),
	}
	flags := raw[1]
	copy(e.comm[:], raw[40:56])
	e.Buf = le.Uint64(raw[56:])
	switch e.Kind {
	case KindWrite, KindRead:
		e.Data = raw[headerSize:]
		e.Truncated = flags&flagTruncated != 0
		e.Held = flags&flagHeld != 0
		if uint32(len(e.Data)) > e.Len {
			return fmt.Errorf("%s event: %d bytes of data for a call of %d", e.Kind, len(e.Data), e.Len)
		}
	case KindExec, KindMmap, KindCgroup:
		if len(raw) < fileEventLen {
			return fmt.Errorf("short %s event: %d bytes", e.Kind, len(raw))
		}
		e.File = proc.FileID{Ino: le.Uint64(raw[64:]), Dev: le.Uint32(raw[72:])}
		e.PPID = le.Uint32(raw[76:])
		name := raw[80:fileEventLen]
		if n := bytes.IndexByte(name, 0); n >= 0 {
			name = name[:n]
		}
		e.Filename = string(name)
		e.UnknownFile = flags&flagUnknownFile != 0
		e.Held = flags&flagHeld != 0
	case KindWriteFailed, KindFree, KindExit:
	default:
		return fmt.Errorf("unknown event kind %d", raw[0])
	}
	return nil
}

// ReadRest makes Data the whole buffer of a held write the sensor could
// copy only the start of (Truncated): the process is stopped, so the rest
// is read from its memory (mem: /proc/PID/mem, allowed by the unit's
// CAP_SYS_PTRACE and any system-call filter) as the call will send it. At
// most max bytes are kept in all; what lies beyond stays counted by Len.
// Data no longer aliases the ring buffer afterwards.
func (e *Event) ReadRest(mem string, max int) error {
	if e.Kind != KindWrite || !e.Held || !e.Truncated || e.Buf == 0 {
		return nil
	}
	n := min(int(e.Len), max)
	if n <= len(e.Data) {
		return nil
	}
	full := make([]byte, n)
	have := copy(full, e.Data)
	f, err := os.Open(mem) //nolint:gosec // G304: mem is the held process's /proc/PID/mem (see above), read-only
	if err != nil {
		return fmt.Errorf("read the rest of a held write: %w", err)
	}
	defer f.Close()
	got, err := f.ReadAt(full[have:], int64(e.Buf)+int64(have))
	e.Data = full[:have+got]
	e.Truncated = int(e.Len) > len(e.Data)
	if err != nil {
		return fmt.Errorf("read the rest of pid %d's held write (%d of %d bytes): %w", e.PID, len(e.Data), e.Len, err)
	}
	return nil
}
