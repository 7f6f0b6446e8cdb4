package probe

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/btf"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/bpf/ssl"
)

// The decoder reads records through the Go types bpf2go generated from the
// C structs (event.go). TestEventLayoutMatchesC checks that those types are
// the structs of the compiled object, size and every member's offset and
// size, as its BTF describes them: a Go file left behind by an object
// rebuilt from changed C fails here even before `make check-generate`.
func TestEventLayoutMatchesC(t *testing.T) {
	spec, err := ssl.LoadSensor()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		typ  reflect.Type
	}{
		{"event_header", reflect.TypeFor[cHeader]()},
		{"data_event", reflect.TypeFor[cData]()},
		{"file_event", reflect.TypeFor[cFile]()},
	} {
		var s *btf.Struct
		if err := spec.Types.TypeByName(c.name, &s); err != nil {
			t.Errorf("struct %s: %v", c.name, err)
			continue
		}
		if uintptr(s.Size) != c.typ.Size() {
			t.Errorf("struct %s is %d bytes in the object, %s %d", c.name, s.Size, c.typ, c.typ.Size())
		}
		fields := generatedFields(c.typ)
		if len(fields) != len(s.Members) {
			t.Errorf("struct %s has %d members in the object, %s %d fields", c.name, len(s.Members), c.typ, len(fields))
			continue
		}
		for i, m := range s.Members {
			f := fields[i]
			size, err := btf.Sizeof(m.Type)
			if err != nil {
				t.Fatalf("%s.%s: %v", c.name, m.Name, err)
			}
			if strings.ReplaceAll(m.Name, "_", "") != strings.ToLower(f.Name) ||
				uintptr(m.Offset.Bytes()) != f.Offset || uintptr(size) != f.Type.Size() || m.BitfieldSize != 0 {
				t.Errorf("%s.%s: %d bytes at offset %d in the object; %s.%s: %d bytes at offset %d",
					c.name, m.Name, size, m.Offset.Bytes(), c.typ, f.Name, f.Type.Size(), f.Offset)
			}
		}
	}
	// What decode takes from the types without naming a field.
	if off := unsafe.Offsetof(cData{}.H); off != 0 {
		t.Errorf("struct data_event starts with something else than its header (at %d)", off)
	}
	if off := unsafe.Offsetof(cFile{}.H); off != 0 {
		t.Errorf("struct file_event starts with something else than its header (at %d)", off)
	}
	if dataOffset != headerSize || headerSize+MaxData != int(unsafe.Sizeof(cData{})) {
		t.Errorf("data_event: data at %d, header %d bytes, MaxData %d, struct %d bytes",
			dataOffset, headerSize, MaxData, unsafe.Sizeof(cData{}))
	}
}

// generatedFields are the fields of a bpf2go type, in order, without the
// layout marker (_ structs.HostLayout).
func generatedFields(t reflect.Type) []reflect.StructField {
	var fields []reflect.StructField
	for i := range t.NumField() {
		if f := t.Field(i); f.Name != "_" {
			fields = append(fields, f)
		}
	}
	return fields
}

// pattern fills b with bytes that differ from their neighbours and are
// never 0 (no field decodes as empty, no string is cut short).
func pattern(b []byte) {
	for i := range b {
		b[i] = byte(i%251 + 1)
	}
}

// TestDecodeReadsEveryField: a record built as the C struct, each byte of
// it different, decodes field for field, also from an address that is not
// aligned. A field of the generated types that the decoder does not read
// (one added to the C struct) fails the test until it is decoded and
// checked here, or named padding.
func TestDecodeReadsEveryField(t *testing.T) {
	header := func(ev *Event, h *cHeader, flags map[string]bool) map[string]bool {
		return map[string]bool{
			"Kind":   ev.Kind == Kind(h.Kind),
			"Flags":  ev.Truncated == flags["truncated"] && ev.Held == flags["held"] && ev.UnknownFile == flags["unknown"],
			"Pad0":   true, // padding
			"Pid":    ev.PID == h.Pid,
			"Tid":    ev.TID == h.Tid,
			"Len":    ev.Len == h.Len,
			"Ts":     ev.Mono == h.Ts,
			"Cgroup": ev.Cgroup == h.Cgroup,
			"Ssl":    ev.SSL == h.Ssl,
			"Comm":   ev.Comm() == string(bytesOf(&h.Comm)),
			"Buf":    ev.Buf == h.Buf,
		}
	}
	check := func(t *testing.T, typ reflect.Type, decoded map[string]bool) {
		t.Helper()
		for _, f := range generatedFields(typ) {
			ok, listed := decoded[f.Name]
			if !listed {
				t.Errorf("%s.%s is not decoded: read it in Event.decode and check it here (or call it padding)", typ, f.Name)
			} else if !ok {
				t.Errorf("%s.%s decoded wrong", typ, f.Name)
			}
		}
	}
	decode := func(t *testing.T, rec []byte) []*Event {
		t.Helper()
		odd := make([]byte, len(rec)+1)[1:]
		copy(odd, rec)
		var evs []*Event
		for _, raw := range [][]byte{rec, odd} {
			ev := new(Event)
			if err := ev.decode(raw); err != nil {
				t.Fatal(err)
			}
			// A record without data bytes decodes to an empty, non-nil
			// Data: there is no first byte to compare.
			if len(ev.Data) > 0 && &ev.Data[0] != &raw[dataOffset] {
				t.Errorf("%s event: Data does not alias the record at offset %d", ev.Kind, dataOffset)
			}
			evs = append(evs, ev)
		}
		return evs
	}

	t.Run("data", func(t *testing.T) {
		var d cData
		pattern(bytesOf(&d))
		d.H.Kind = uint8(KindWrite)
		d.H.Flags = flagTruncated | flagHeld
		rec := bytesOf(&d)[:dataOffset+100]
		for _, ev := range decode(t, rec) {
			check(t, reflect.TypeFor[cHeader](), header(ev, &d.H, map[string]bool{"truncated": true, "held": true}))
			check(t, reflect.TypeFor[cData](), map[string]bool{
				"H":    true, // above
				"Data": bytes.Equal(ev.Data, d.Data[:100]),
			})
		}
	})
	t.Run("file", func(t *testing.T) {
		var f cFile
		pattern(bytesOf(&f))
		f.H.Kind = uint8(KindExec)
		f.H.Flags = flagUnknownFile | flagHeld
		for _, ev := range decode(t, bytesOf(&f)) {
			check(t, reflect.TypeFor[cHeader](), header(ev, &f.H, map[string]bool{"unknown": true, "held": true}))
			check(t, reflect.TypeFor[cFile](), map[string]bool{
				"H":        true, // above
				"Ino":      ev.File == proc.FileID{Ino: f.Ino, Dev: f.Dev},
				"Dev":      ev.File == proc.FileID{Ino: f.Ino, Dev: f.Dev},
				"Ppid":     uint64(ev.PPID) == uint64(f.Ppid),
				"Filename": ev.Filename == string(bytesOf(&f.Filename)), // no NUL: all of it
			})
		}
	})
	t.Run("short", func(t *testing.T) {
		var f cFile
		f.H.Kind = uint8(KindExec)
		var ev Event
		if err := ev.decode(bytesOf(&f)[:fileEventLen-1]); err == nil {
			t.Errorf("exec event of %d bytes decoded", fileEventLen-1)
		}
		f.H.Kind = uint8(KindFree)
		if err := ev.decode(bytesOf(&f)[:headerSize-1]); err == nil {
			t.Errorf("event of %d bytes decoded", headerSize-1)
		}
		if err := ev.decode(bytesOf(&f)[:headerSize]); err != nil {
			t.Errorf("free event of %d bytes: %v", headerSize, err)
		}
	})
}

// Decoding a write allocates nothing (Data aliases the record).
func TestDecodeWriteAllocatesNothing(t *testing.T) {
	var d cData
	d.H.Kind = uint8(KindWrite)
	d.H.Len = 1024
	rec := bytesOf(&d)[:dataOffset+1024]
	var ev Event
	if n := testing.AllocsPerRun(100, func() { ev.decode(rec) }); n != 0 {
		t.Errorf("decoding a write allocates %v times", n)
	}
}

// BenchmarkDecode: a 1 KiB write, and an exec (its file name is the one
// allocation).
func BenchmarkDecode(b *testing.B) {
	var d cData
	d.H.Kind = uint8(KindWrite)
	d.H.Len = 1024
	var f cFile
	f.H.Kind = uint8(KindExec)
	copy(bytesOf(&f.Filename), "/usr/bin/python3")
	var ev Event
	for _, c := range []struct {
		name string
		rec  []byte
	}{
		{"write", bytesOf(&d)[:dataOffset+1024]},
		{"exec", bytesOf(&f)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := ev.decode(c.rec); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
