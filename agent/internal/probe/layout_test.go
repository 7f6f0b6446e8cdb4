package probe

import (
	"testing"
	"unsafe"

	"github.com/aarsm/aarsm/bpf/ssl"
)

// The event decoder reads records by offset: the sizes it assumes must be
// those of the C structs bpf2go generated the Go types from.
func TestEventLayoutMatchesC(t *testing.T) {
	if got := int(unsafe.Sizeof(ssl.SensorEventHeader{})); got != headerSize {
		t.Errorf("struct event_header is %d bytes, the decoder assumes %d", got, headerSize)
	}
	if got := int(unsafe.Sizeof(ssl.SensorFileEvent{})); got != fileEventLen {
		t.Errorf("struct file_event is %d bytes, the decoder assumes %d", got, fileEventLen)
	}
	var h ssl.SensorEventHeader
	for name, c := range map[string][2]uintptr{
		"pid":    {unsafe.Offsetof(h.Pid), 4},
		"tid":    {unsafe.Offsetof(h.Tid), 8},
		"len":    {unsafe.Offsetof(h.Len), 12},
		"ts":     {unsafe.Offsetof(h.Ts), 16},
		"cgroup": {unsafe.Offsetof(h.Cgroup), 24},
		"ssl":    {unsafe.Offsetof(h.Ssl), 32},
		"comm":   {unsafe.Offsetof(h.Comm), 40},
		"buf":    {unsafe.Offsetof(h.Buf), 56},
	} {
		if c[0] != c[1] {
			t.Errorf("event_header.%s at offset %d, the decoder reads %d", name, c[0], c[1])
		}
	}
	var f ssl.SensorFileEvent
	for name, c := range map[string][2]uintptr{
		"ino":      {unsafe.Offsetof(f.Ino), 64},
		"dev":      {unsafe.Offsetof(f.Dev), 72},
		"ppid":     {unsafe.Offsetof(f.Ppid), 76},
		"filename": {unsafe.Offsetof(f.Filename), 80},
	} {
		if c[0] != c[1] {
			t.Errorf("file_event.%s at offset %d, the decoder reads %d", name, c[0], c[1])
		}
	}
	if got := unsafe.Sizeof(ssl.SensorDataEvent{}); got != headerSize+MaxData {
		t.Errorf("struct data_event is %d bytes, want %d", got, headerSize+MaxData)
	}
}
