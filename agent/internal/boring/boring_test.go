package boring

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// The real executables: Bun from npm, and Claude Code's native package (a
// Bun single-file executable of a newer Bun). Where the functions are is
// told by the probes in probe/trace/enforce tests (a real fetch's bytes
// arrive); here: found, consistent, and refused when anything differs.

func open(t testing.TB, path string) (*elf.File, *os.File) {
	t.Helper()
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fh.Close() })
	f, err := elf.NewFile(fh)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f, fh
}

func TestFindReal(t *testing.T) {
	testenv.SkipShort(t, "fetches Bun and Claude Code from npm")
	for _, p := range []testenv.NPMTarball{testenv.BunPackage, testenv.ClaudeCodePackage} {
		t.Run(p.Spec, func(t *testing.T) {
			path := testenv.NPMExecutable(t, p)
			f, fh := open(t, path)
			res, err := Find(f, fh)
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			t.Logf("%s: SSL_write %#x (file %#x), SSL_read %#x (file %#x), %v", p.Spec,
				res.Write.Addr, res.Write.Offset, res.Read.Addr, res.Read.Offset, res.Build)
			checkFound(t, f, fh, res)
		})
	}
}

func checkFound(t *testing.T, f *elf.File, r io.ReaderAt, res Result) {
	t.Helper()
	text := f.Section(".text")
	for _, fn := range []Func{res.Write, res.Read} {
		if fn.Addr < text.Addr || fn.Addr >= text.Addr+text.Size || fn.Addr&15 != 0 {
			t.Errorf("%s at %#x: not an aligned address of .text", fn.Name, fn.Addr)
		}
		if fn.Offset != fn.Addr-text.Addr+text.Offset {
			t.Errorf("%s: file offset %#x, want %#x", fn.Name, fn.Offset, fn.Addr-text.Addr+text.Offset)
		}
		// INT3 padding before, code after.
		var b [2]byte
		if _, err := r.ReadAt(b[:], int64(fn.Offset-1)); err != nil || b[0] != 0xcc || b[1] == 0xcc {
			t.Errorf("%s: bytes around the entry % x", fn.Name, b)
		}
	}
	if res.Write.Addr == res.Read.Addr {
		t.Error("SSL_write and SSL_read at the same address")
	}
	if !strings.HasSuffix(res.Build.Source, "/ssl/ssl_lib.cc") || len(res.Build.WriteLines) != 4 || res.Build.ID == "" {
		t.Errorf("build %+v", res.Build)
	}
}

// patched reads r with some bytes replaced.
type patched struct {
	r       io.ReaderAt
	patches map[int64]byte
}

func (p patched) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.r.ReadAt(b, off)
	for at, v := range p.patches {
		if at >= off && at < off+int64(n) {
			b[at-off] = v
		}
	}
	return n, err
}

// Anything unexpected is refused, never guessed: a site of SSL_write that
// reports another reason, a second function that looks like SSL_write, an
// entry nobody calls.
func TestFindRefusesChangedBuild(t *testing.T) {
	testenv.SkipShort(t, "fetches Bun from npm")
	path := testenv.NPMExecutable(t, testenv.BunPackage)
	f, fh := open(t, path)
	res, err := Find(f, fh)
	if err != nil {
		t.Fatal(err)
	}
	// SSL_write's sites: "mov $reason, %edx" (BA imm32) after the file.
	code := make([]byte, 0x180) // Bun's SSL_write is 0x184 bytes long
	if _, err := fh.ReadAt(code, int64(res.Write.Offset)); err != nil {
		t.Fatal(err)
	}
	var reasonAt []int64
	for i := 0; i+5 <= len(code); i++ {
		if code[i] == 0xba && binary.LittleEndian.Uint32(code[i+1:]) == reasonBadLength {
			reasonAt = append(reasonAt, int64(res.Write.Offset)+int64(i)+1)
		}
	}
	if len(reasonAt) != 1 {
		t.Fatalf("SSL_write: %d BAD_LENGTH sites in its first %d bytes, want 1", len(reasonAt), len(code))
	}
	entryCalls := callsTo(t, fh, f, res.Write.Addr)
	for _, tc := range []struct {
		name    string
		patches map[int64]byte
	}{
		{"reason changed", map[int64]byte{reasonAt[0]: 112}},
		{"padding gone", map[int64]byte{int64(res.Write.Offset) - 1: 0x90}},
		{"never called", entryCalls},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Find(f, patched{fh, tc.patches})
			if !errors.Is(err, ErrUnrecognised) {
				t.Fatalf("err %v, want ErrUnrecognised", err)
			}
			t.Logf("refused: %v", err)
		})
	}
	t.Run("not boringssl", func(t *testing.T) {
		for _, bin := range []string{"node", "curl", "openssl"} {
			p, err := exec.LookPath(bin)
			if err != nil {
				t.Fatalf("%s: %v", bin, err)
			}
			f, fh := open(t, p)
			if _, err := Find(f, fh); !errors.Is(err, ErrNotBoringSSL) {
				t.Errorf("%s: err %v, want ErrNotBoringSSL", bin, err)
			}
		}
	})
}

// callsTo returns patches that turn every direct call of target into a
// call of target+1.
func callsTo(t *testing.T, fh *os.File, f *elf.File, target uint64) map[int64]byte {
	t.Helper()
	text := f.Section(".text")
	data, err := io.ReadAll(text.Open())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]byte{}
	for i := 0; i+5 <= len(data); i++ {
		if data[i] != 0xe8 && data[i] != 0xe9 {
			continue
		}
		rel := int32(binary.LittleEndian.Uint32(data[i+1:]))
		if text.Addr+uint64(i)+5+uint64(int64(rel)) != target {
			continue
		}
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(rel+1))
		for k := range b {
			out[int64(text.Offset)+int64(i)+1+int64(k)] = b[k]
		}
	}
	if len(out) == 0 {
		t.Fatal("no call to patch")
	}
	return out
}

func TestFindNotELFCode(t *testing.T) {
	// A file whose read-only data names ssl_lib.cc but whose code has no
	// site: refused as unrecognised.
	dir := t.TempDir()
	src := filepath.Join(dir, "x.c")
	if err := os.WriteFile(src, []byte(`const char *f = "../../ssl/ssl_lib.cc"; int main(void) { return f[0]; }`), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "x")
	if out, err := exec.Command("cc", "-O2", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("cc: %v\n%s", err, out)
	}
	f, fh := open(t, bin)
	if _, err := Find(f, fh); !errors.Is(err, ErrUnrecognised) {
		t.Fatalf("err %v, want ErrUnrecognised", err)
	}
}

// BenchmarkFindBun: the time and memory Find costs on Bun (~107 MB, 78 MB
// of code), against reading the file's code once (the floor of any scan).
func BenchmarkFindBun(b *testing.B) {
	path := testenv.NPMExecutable(b, testenv.BunPackage)
	f, fh := open(b, path)
	text := f.Section(".text")
	readOnce := func() {
		buf := make([]byte, chunk)
		for off := uint64(0); off < text.Size; off += chunk {
			if _, err := fh.ReadAt(buf[:min(chunk, text.Size-off)], int64(text.Offset+off)); err != nil {
				b.Fatal(err)
			}
		}
	}
	// CPU time of this thread too: the machine is shared, wall time
	// counts the others' work.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	var findCPU time.Duration
	measure := func(fn func()) (time.Duration, uint64) {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start, c0 := time.Now(), cpu()
		fn()
		d := time.Since(start)
		findCPU += cpu() - c0
		runtime.ReadMemStats(&m1)
		return d, m1.TotalAlloc - m0.TotalAlloc
	}
	readOnce() // page cache warm
	var find, floor time.Duration
	var alloc uint64
	for b.Loop() {
		d, a := measure(func() {
			if _, err := Find(f, fh); err != nil {
				b.Fatal(err)
			}
		})
		find += d
		alloc = a
		c := findCPU
		d, _ = measure(readOnce)
		findCPU = c
		floor += d
	}
	n := float64(b.N)
	b.ReportMetric(float64(find.Milliseconds())/n, "ms/find")
	b.ReportMetric(float64(findCPU.Milliseconds())/n, "cpu-ms/find")
	b.ReportMetric(float64(alloc)/(1<<20), "MB-alloc/find")
	b.ReportMetric(float64(find)/float64(floor), "x-read-code-once")
}
