package probe

import (
	"errors"
	"io"

	"golang.org/x/arch/x86/x86asm"
)

// Where the write probe and its hold guard go.
//
// A uprobe on an instruction the kernel cannot emulate is executed out of
// line: a single step, ~16 µs here. Branches, calls, NOP and (since Linux
// 6.x) PUSH of a register are emulated: ~0.45 µs. libssl's SSL_write starts
// with "sub $0x18,%rsp", node's with "push %rbp". So the write probe goes on
// the first emulated instruction of the function's straight-line prologue,
// as long as nothing before it changes the argument registers the program
// reads (rdi: SSL*, rsi: buffer, rdx: length); else on the entry.
//
// The guard, which kills a held thread resumed by someone else, must run
// after the stop and before the function does any work, on every way out
// of the probed instruction: each successor's straight line is followed to
// its first emulated instruction (at the latest the first call or branch,
// so before any work), or to its return.

// maxPrologue bounds the instructions looked at from one start.
const maxPrologue = 32

type placement struct {
	site   uint64   // file offset of the write probe
	guards []uint64 // file offsets of the guard probes
}

// placeWrite decodes the function at file offset entry of r.
func placeWrite(r io.ReaderAt, entry uint64) placement {
	p := placement{site: entry}
	off := entry
	for i := 0; i < maxPrologue; i++ {
		inst, ok := decodeAt(r, off)
		if !ok {
			break
		}
		if emulated(inst) {
			p.site = off
			break
		}
		if !keepsArguments(inst) {
			break
		}
		off += uint64(inst.Len)
	}
	inst, ok := decodeAt(r, p.site)
	if !ok {
		return p
	}
	for _, next := range successors(inst, p.site) {
		if g, ok := firstEmulated(r, next); ok {
			p.guards = appendUnique(p.guards, g)
		}
	}
	return p
}

// firstEmulated follows the straight line from off to its first emulated
// instruction. A line that returns needs no guard (ok false); one that
// cannot be decoded gets the guard at its start.
func firstEmulated(r io.ReaderAt, off uint64) (uint64, bool) {
	start := off
	for i := 0; i < maxPrologue; i++ {
		inst, ok := decodeAt(r, off)
		if !ok {
			return start, true
		}
		if emulated(inst) {
			return off, true
		}
		switch inst.Op {
		case x86asm.RET, x86asm.LRET, x86asm.UD2, x86asm.HLT:
			return 0, false
		}
		if !straight(inst) {
			return off, true // an indirect branch: guard it where it stands
		}
		off += uint64(inst.Len)
	}
	return start, true
}

// successors are the file offsets execution may continue at after inst.
func successors(inst x86asm.Inst, off uint64) []uint64 {
	next := off + uint64(inst.Len)
	rel, isRel := inst.Args[0].(x86asm.Rel)
	target := uint64(int64(next) + int64(rel))
	switch {
	case inst.Op == x86asm.CALL && isRel, inst.Op == x86asm.JMP && isRel:
		return []uint64{target}
	case isConditional(inst.Op) && isRel:
		return []uint64{next, target}
	case straight(inst):
		return []uint64{next}
	}
	return nil
}

func decodeAt(r io.ReaderAt, off uint64) (x86asm.Inst, bool) {
	var code [16]byte
	n, err := r.ReadAt(code[:], int64(off))
	if n == 0 || (err != nil && !errors.Is(err, io.EOF)) {
		return x86asm.Inst{}, false
	}
	inst, err := x86asm.Decode(code[:n], 64)
	return inst, err == nil
}

// emulated reports whether the kernel runs a probed inst without a single
// step (arch/x86/kernel/uprobes.c: relative branches and calls, NOP, PUSH
// of a 64-bit register). On kernels that do not emulate PUSH the probe
// costs a single step there, as it would on the entry.
func emulated(inst x86asm.Inst) bool {
	if inst.Op == x86asm.NOP && inst.Len == 1 {
		return true
	}
	if _, ok := inst.Args[0].(x86asm.Rel); ok {
		return inst.Op == x86asm.CALL || inst.Op == x86asm.JMP || isConditional(inst.Op)
	}
	if inst.Op == x86asm.PUSH {
		r, ok := inst.Args[0].(x86asm.Reg)
		return ok && r >= x86asm.RAX && r <= x86asm.R15
	}
	return false
}

func isConditional(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE,
		x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO,
		x86asm.JP, x86asm.JS:
		return true
	}
	return false
}

// straight reports whether execution always continues after inst.
func straight(inst x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.JMP, x86asm.CALL, x86asm.RET, x86asm.LRET, x86asm.LCALL, x86asm.LJMP,
		x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE,
		x86asm.UD2, x86asm.INT, x86asm.HLT, x86asm.SYSCALL:
		return false
	}
	return !isConditional(inst.Op)
}

// keepsArguments reports whether inst certainly leaves rdi, rsi and rdx as
// they were: a short list of instructions whose only effect is on their
// first operand (and flags), with that operand not an argument register.
func keepsArguments(inst x86asm.Inst) bool {
	switch inst.Op {
	case x86asm.TEST, x86asm.CMP:
		return true
	case x86asm.MOV, x86asm.MOVSXD, x86asm.MOVZX, x86asm.MOVSX, x86asm.LEA,
		x86asm.ADD, x86asm.SUB, x86asm.AND, x86asm.OR, x86asm.XOR:
	default:
		return false
	}
	switch dst := inst.Args[0].(type) {
	case x86asm.Mem:
		return true
	case x86asm.Reg:
		return !isArgument(dst)
	}
	return false
}

func isArgument(r x86asm.Reg) bool {
	switch r {
	case x86asm.RDI, x86asm.EDI, x86asm.DI, x86asm.DIB,
		x86asm.RSI, x86asm.ESI, x86asm.SI, x86asm.SIB,
		x86asm.RDX, x86asm.EDX, x86asm.DX, x86asm.DL, x86asm.DH:
		return true
	}
	return false
}

func appendUnique(l []uint64, v uint64) []uint64 {
	for _, x := range l {
		if x == v {
			return l
		}
	}
	return append(l, v)
}
