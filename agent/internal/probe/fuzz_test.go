package probe

import (
	"bytes"
	"testing"
)

// FuzzExamineELF reads arbitrary bytes as the file of a new process or
// library (a file any user can create and run): examineELF may refuse it,
// never panic (the agent examines every file run or mapped: a panic would
// end enforcement), and it places probes only on functions it found. An
// entry's offset may lie past the end of a lying file (a segment bigger
// than the file): the kernel refuses to attach there, and the file is
// reported as not probed.
func FuzzExamineELF(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Add([]byte("#!/bin/sh\necho hi\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := examineELF(bytes.NewReader(data))
		if err != nil {
			if len(info.symbols) != 0 {
				t.Fatalf("symbols %v with an error: %v", info.symbols, err)
			}
			return
		}
		for name, p := range info.places {
			if info.symbols[name] == 0 {
				t.Fatalf("placement %+v for %s, which was not found", p, name)
			}
		}
	})
}

// FuzzEventDecode decodes arbitrary ring buffer records: the kernel writes
// them, but a decoder that trusts a length field must not read past the
// record.
func FuzzEventDecode(f *testing.F) {
	var d cData
	d.H.Kind = uint8(KindWrite)
	d.H.Len = 5
	copy(d.Data[:], "hello")
	rec := bytesOf(&d)[:dataOffset+5]
	f.Add(bytes.Clone(rec))
	var fe cFile
	fe.H.Kind = uint8(KindExec)
	for i, c := range "/usr/bin/node" {
		fe.Filename[i] = int8(c)
	}
	f.Add(bytes.Clone(bytesOf(&fe)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var ev Event
		if err := ev.decode(raw); err != nil {
			return
		}
		if len(ev.Data) > len(raw) || uint32(len(ev.Data)) > ev.Len && len(ev.Data) > 0 {
			t.Fatalf("%d bytes of data from a %d-byte record (len %d)", len(ev.Data), len(raw), ev.Len)
		}
		if len(ev.Filename) > len(raw) || len(ev.Comm()) > 16 {
			t.Fatalf("filename %d bytes, comm %q", len(ev.Filename), ev.Comm())
		}
		_ = ev.Kind.String()
	})
}
