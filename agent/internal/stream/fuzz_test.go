package stream

import (
	"testing"

	"github.com/aarsm/aarsm/agent/internal/probe"
)

// FuzzAssembler replays an arbitrary sequence of sensor events (writes,
// reads, failed writes, frees, exits over a few processes and SSL*
// values, with clocks going forward and back): the assembler never holds
// more than MaxConns connections, a closed connection gets no segment,
// and closing everything leaves none.
func FuzzAssembler(f *testing.F) {
	f.Add([]byte{0, 1, 1, 10, 4, 1, 1, 0, 0, 1, 1, 10, 5, 1, 1, 0, 8, 1, 0, 0})
	f.Add([]byte{0, 1, 2, 200, 0, 2, 2, 200, 0, 3, 3, 200, 7, 1, 0, 0, 9, 0, 0, 255})
	f.Fuzz(func(t *testing.T, ops []byte) {
		const maxConns = 3
		a := New(Options{MaxConns: maxConns, Idle: 1000})
		payload := make([]byte, 256)
		var mono uint64
		closed := map[Key]bool{}
		for ; len(ops) >= 4; ops = ops[4:] {
			op, pid, ssl, n := ops[0]%10, uint32(ops[1]%4), uint64(ops[2]%4), int(ops[3])
			mono += uint64(n)
			ev := &probe.Event{PID: pid, SSL: ssl, Mono: mono, Len: uint32(n), Data: payload[:n/2]}
			var segs []Segment
			switch op {
			case 0, 1, 2:
				ev.Kind = probe.KindWrite
			case 3:
				ev.Kind = probe.KindRead
			case 4:
				ev.Kind = probe.KindWriteFailed
			case 5:
				ev.Kind = probe.KindFree
			case 6:
				ev.Kind = probe.KindExit
			case 7:
				ev.Kind = probe.KindExec
			case 8:
				segs = a.Evict(mono)
			case 9:
				segs = a.CloseAll()
			}
			if op < 8 {
				segs = a.Handle(ev)
			}
			for _, s := range segs {
				if s.Closed {
					closed[s.Conn.Key] = true
					continue
				}
				if s.Conn == nil || a.Lookup(s.Conn.Key) != s.Conn {
					t.Fatalf("segment of a connection not open: %+v", s)
				}
				delete(closed, s.Conn.Key)
			}
			if st := a.Stats(); st.Open > maxConns || st.Open < 0 {
				t.Fatalf("%d connections open", st.Open)
			}
		}
		a.CloseAll()
		if st := a.Stats(); st.Open != 0 {
			t.Fatalf("%d connections open after CloseAll", st.Open)
		}
	})
}
