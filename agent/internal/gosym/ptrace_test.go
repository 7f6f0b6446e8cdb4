package gosym

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// traceGoClient runs a build of the client under ptrace, with a
// breakpoint (INT3) on the body of (*Conn).Write and (*Conn).Read (Func.Body,
// past the stack check) and on each of their RETs (the file offsets FindTLS returned, mapped as
// /proc/PID/maps says: what a uprobe does), and checks that the registers
// the ABI table names hold what it says: at the entry the receiver, the
// buffer (for Write: its bytes are the marker), its length and capacity;
// at a RET of the same goroutine (g, R14, unchanged), n and a nil error,
// and for Read the buffer filled with the marker. The registers are read
// at their struct pt_regs offsets in what PTRACE_GETREGS fills (the same
// layout): those offsets are checked too.
func traceGoClient(t *testing.T, path string, g TLS) {
	marker := fmt.Sprintf("aarsm-gotls-marker-%d", time.Now().UnixNano())
	out, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	// Every ptrace request must come from the thread that started the
	// tracee.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.Command(path, "pipe", marker)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	defer cmd.Process.Release()
	kill := time.AfterFunc(60*time.Second, func() { _ = unix.Kill(pid, unix.SIGKILL) })
	defer kill.Stop()
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil || !ws.Stopped() {
		t.Fatalf("first stop: %v %v", err, ws)
	}
	if err := unix.PtraceSetOptions(pid, unix.PTRACE_O_TRACECLONE|unix.PTRACE_O_EXITKILL); err != nil {
		t.Fatal(err)
	}

	const (
		writeEntry = iota
		writeRet
		readEntry
		readRet
	)
	type bp struct {
		kind int
		orig byte
		set  bool
	}
	bps := map[uint64]*bp{}
	toAddr, err := mappedAddrs(pid, path)
	if err != nil {
		t.Fatal(err)
	}
	insert := func(off uint64, kind int) {
		addr, err := toAddr(off)
		if err != nil {
			t.Fatal(err)
		}
		word := make([]byte, 8)
		if _, err := unix.PtracePeekData(pid, uintptr(addr), word); err != nil {
			t.Fatal(err)
		}
		bps[addr] = &bp{kind: kind, orig: word[0], set: true}
		word[0] = 0xcc
		if _, err := unix.PtracePokeData(pid, uintptr(addr), word); err != nil {
			t.Fatal(err)
		}
	}
	remove := func(tid int, addr uint64) {
		b := bps[addr]
		if !b.set {
			return
		}
		word := make([]byte, 8)
		if _, err := unix.PtracePeekData(tid, uintptr(addr), word); err != nil {
			t.Fatal(err)
		}
		word[0] = b.orig
		if _, err := unix.PtracePokeData(tid, uintptr(addr), word); err != nil {
			t.Fatal(err)
		}
		b.set = false
	}
	removeKind := func(tid, kind int) {
		for addr, b := range bps {
			if b.kind == kind {
				remove(tid, addr)
			}
		}
	}
	insert(g.Write.Body, writeEntry)
	insert(g.Read.Body, readEntry)
	for _, r := range g.Write.Returns {
		insert(r, writeRet)
	}
	for _, r := range g.Read.Returns {
		insert(r, readRet)
	}

	if err := unix.PtraceCont(pid, 0); err != nil {
		t.Fatal(err)
	}

	abi := g.ABI
	var writeG, readG, readBuf uint64
	seen := map[int]bool{}
	check := func(tid int, kind int, regs []byte) {
		val := func(r Reg) uint64 { return binary.LittleEndian.Uint64(regs[r.PtRegsOffset():]) }
		mem := func(addr, n uint64) []byte {
			b := make([]byte, n)
			if _, err := unix.PtracePeekData(tid, uintptr(addr), b); err != nil {
				t.Errorf("peek %#x: %v", addr, err)
			}
			return b
		}
		seen[kind] = true
		switch kind {
		case writeEntry:
			writeG = val(abi.G)
			if val(abi.Conn) == 0 || val(abi.Len) != uint64(len(marker)) || val(abi.Cap) < val(abi.Len) {
				t.Errorf("Write entry: conn %#x len %d cap %d", val(abi.Conn), val(abi.Len), val(abi.Cap))
			} else if b := mem(val(abi.Buf), val(abi.Len)); string(b) != marker {
				t.Errorf("Write entry: buffer %q", b)
			}
		case writeRet:
			if val(abi.G) != writeG || val(abi.N) != uint64(len(marker)) || val(abi.ErrType) != 0 || val(abi.ErrData) != 0 {
				t.Errorf("Write RET: g %#x (entry %#x) n %d err %#x %#x", val(abi.G), writeG, val(abi.N), val(abi.ErrType), val(abi.ErrData))
			}
		case readEntry:
			readG, readBuf = val(abi.G), val(abi.Buf)
			if val(abi.Conn) == 0 || val(abi.Len) != 4096 || val(abi.Cap) != 4096 {
				t.Errorf("Read entry: conn %#x len %d cap %d", val(abi.Conn), val(abi.Len), val(abi.Cap))
			}
		case readRet:
			if val(abi.G) != readG || val(abi.N) != uint64(len(marker)) || val(abi.ErrType) != 0 {
				t.Errorf("Read RET: g %#x (entry %#x) n %d err %#x", val(abi.G), readG, val(abi.N), val(abi.ErrType))
			} else if b := mem(readBuf, val(abi.N)); string(b) != marker {
				t.Errorf("Read RET: buffer %q", b)
			}
		}
	}

	exited := false
	for !exited {
		tid, err := unix.Wait4(-1, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("wait: %v", err)
		}
		if ws.Exited() || ws.Signaled() {
			if tid == pid {
				exited = true
				if !ws.Exited() || ws.ExitStatus() != 0 {
					t.Errorf("client: %v", ws)
				}
			}
			continue
		}
		if !ws.Stopped() {
			continue
		}
		inject := 0
		switch sig := ws.StopSignal(); {
		case sig == unix.SIGTRAP && ws.TrapCause() != 0: // a clone event
		case sig == unix.SIGTRAP:
			var regs unix.PtraceRegs
			if err := unix.PtraceGetRegs(tid, &regs); err != nil {
				t.Fatal(err)
			}
			addr := regs.Rip - 1
			b, ok := bps[addr]
			if !ok {
				inject = int(sig)
				break
			}
			if b.set {
				var raw bytes.Buffer
				_ = binary.Write(&raw, binary.LittleEndian, &regs)
				check(tid, b.kind, raw.Bytes())
				// One call of each: its breakpoints are done.
				removeKind(tid, b.kind)
			}
			regs.Rip = addr
			if err := unix.PtraceSetRegs(tid, &regs); err != nil {
				t.Fatal(err)
			}
		case sig == unix.SIGSTOP: // a new thread's first stop
		default:
			inject = int(sig)
		}
		_ = unix.PtraceCont(tid, inject)
	}
	for kind, name := range []string{"Write entry", "Write RET", "Read entry", "Read RET"} {
		if !seen[kind] {
			t.Errorf("%s never reached", name)
		}
	}
	if b, _ := os.ReadFile(out.Name()); strings.TrimSpace(string(b)) != "ok" {
		t.Errorf("client printed %q", b)
	}
}

// mappedAddrs returns a function that turns a file offset of the binary
// at path into its address in process pid, through its executable
// mappings.
func mappedAddrs(pid int, path string) (func(uint64) (uint64, error), error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, err
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	type mapping struct{ start, end, off uint64 }
	var maps []mapping
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// start-end perms offset dev inode path
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || !strings.Contains(fields[1], "x") || fields[4] != strconv.FormatUint(st.Ino, 10) {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		off, _ := strconv.ParseUint(fields[2], 16, 64)
		maps = append(maps, mapping{start, end, off})
	}
	return func(o uint64) (uint64, error) {
		for _, m := range maps {
			if o >= m.off && o < m.off+m.end-m.start {
				return m.start + o - m.off, nil
			}
		}
		return 0, fmt.Errorf("file offset %#x not mapped executable in %s", o, path)
	}, sc.Err()
}
