package proc

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseMapsLine(t *testing.T) {
	m, ok := parseMapsLine("7f1c2a400000-7f1c2a45e000 r-xp 0001c000 fe:00 326786                     /usr/lib/x86_64-linux-gnu/libssl.so.3")
	if !ok || m.Start != 0x7f1c2a400000 || m.End != 0x7f1c2a45e000 || !m.Exec || m.Offset != 0x1c000 ||
		m.Major != 0xfe || m.Minor != 0 || m.Inode != 326786 || m.Path != "/usr/lib/x86_64-linux-gnu/libssl.so.3" || m.Deleted {
		t.Fatalf("got %+v ok=%v", m, ok)
	}
	if m.KernelDev() != 0xfe<<20 {
		t.Fatalf("kernel dev %x", m.KernelDev())
	}
	m, ok = parseMapsLine("00400000-00401000 r--p 00000000 08:01 42 /tmp/a b (deleted)")
	if !ok || m.Path != "/tmp/a b" || !m.Deleted || m.Exec {
		t.Fatalf("got %+v ok=%v", m, ok)
	}
	for _, bad := range []string{"", "7f-7e r-xp 0 fe:00 0 /x", "zz-10 r-xp 0 fe:00 1 /x", "1-2 r-xp 0 fe:00 1 [heap]", "1-2 r-xp 0 fe00 1 /x"} {
		if _, ok := parseMapsLine(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestSelf(t *testing.T) {
	var fs FS
	pid := uint32(os.Getpid())
	exe, err := fs.Exe(pid)
	if err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	if filepath.Clean(exe) != filepath.Clean(self) {
		t.Errorf("exe %q, want %q", exe, self)
	}
	if st, err := fs.StartTime(pid); err != nil || st == 0 {
		t.Errorf("start time %d, %v", st, err)
	}
	maps, err := fs.Maps(pid, true)
	if err != nil || len(maps) == 0 {
		t.Fatalf("maps: %d, %v", len(maps), err)
	}
	id, _, err := StatID(exe)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, m := range maps {
		if (FileID{m.KernelDev(), m.Inode}) == id {
			found = true
		}
	}
	if !found {
		t.Errorf("own executable %v not among executable mappings", id)
	}
	if _, err := fs.Exe(1 << 30); !Gone(err) {
		t.Errorf("missing process: %v, want a Gone error", err)
	}
	if _, err := fs.CgroupPath(pid); err != nil {
		t.Errorf("cgroup: %v", err)
	}
}

// On a plain file system the mapped identity is stat's.
func TestMappedID(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	want, _, err := StatID(p)
	if err != nil {
		t.Fatal(err)
	}
	got, err := MappedID(p)
	if err != nil || got != want {
		t.Fatalf("MappedID %v, %v; stat %v", got, err, want)
	}
	if _, err := MappedID(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("no error for a missing file")
	}
}
