package stream

import (
	"fmt"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
)

type recorder struct {
	data   map[Key]string
	lost   map[Key]int
	closed []Key
}

func (r *recorder) add(segs []Segment) {
	for _, s := range segs {
		if s.Closed {
			r.closed = append(r.closed, s.Conn.Key)
			continue
		}
		r.data[s.Conn.Key] += s.Dir.String()[:1] + ":" + string(s.Data) + " "
		r.lost[s.Conn.Key] += s.Lost
	}
}

// recAsm records every segment its assembler returns.
type recAsm struct {
	*Assembler
	r *recorder
}

func (w recAsm) Handle(ev *probe.Event) { w.r.add(w.Assembler.Handle(ev)) }

func (w recAsm) Evict(now uint64) int {
	segs := w.Assembler.Evict(now)
	w.r.add(segs)
	return len(segs)
}

func (w recAsm) CloseAll() { w.r.add(w.Assembler.CloseAll()) }

func newRec(opts Options) (recAsm, *recorder) {
	r := &recorder{data: map[Key]string{}, lost: map[Key]int{}}
	return recAsm{New(opts), r}, r
}

func write(pid uint32, ssl uint64, s string, mono uint64) *probe.Event {
	return &probe.Event{Kind: probe.KindWrite, PID: pid, SSL: ssl, Len: uint32(len(s)), Data: []byte(s), Mono: mono}
}

func TestRetryAfterFailedWriteIsDropped(t *testing.T) {
	a, r := newRec(Options{})
	k := Key{1, 0xa}
	// node: SSL_write fails before the handshake is done, then is retried.
	a.Handle(write(1, 0xa, "GET / HTTP/1.1\r\n\r\n", 1))
	a.Handle(&probe.Event{Kind: probe.KindWriteFailed, PID: 1, SSL: 0xa})
	a.Handle(write(1, 0xa, "GET / HTTP/1.1\r\n\r\n", 2))
	a.Handle(&probe.Event{Kind: probe.KindWriteFailed, PID: 1, SSL: 0xa})
	a.Handle(write(1, 0xa, "GET / HTTP/1.1\r\n\r\n", 3))
	// A successful identical write is not a retry.
	a.Handle(write(1, 0xa, "GET / HTTP/1.1\r\n\r\n", 4))
	if got, want := r.data[k], "e:GET / HTTP/1.1\r\n\r\n e:GET / HTTP/1.1\r\n\r\n "; got != want {
		t.Fatalf("stream %q, want %q", got, want)
	}
	if a.Stats().Retries != 2 {
		t.Fatalf("retries = %d", a.Stats().Retries)
	}
}

func TestDifferentBytesAfterFailureAreKept(t *testing.T) {
	a, r := newRec(Options{})
	a.Handle(write(1, 0xa, "first", 1))
	a.Handle(&probe.Event{Kind: probe.KindWriteFailed, PID: 1, SSL: 0xa})
	a.Handle(write(1, 0xa, "other", 2))
	if got := r.data[Key{1, 0xa}]; got != "e:first e:other " {
		t.Fatalf("stream %q", got)
	}
}

func TestConnectionsAreSeparateAndClosed(t *testing.T) {
	a, r := newRec(Options{})
	a.Handle(write(1, 0xa, "a", 1))
	a.Handle(write(1, 0xb, "b", 1))
	a.Handle(write(2, 0xa, "c", 1))
	a.Handle(&probe.Event{Kind: probe.KindRead, PID: 1, SSL: 0xa, Len: 5, Data: []byte("resp")})
	if r.data[Key{1, 0xa}] != "e:a i:resp " || r.data[Key{1, 0xb}] != "e:b " || r.data[Key{2, 0xa}] != "e:c " {
		t.Fatalf("streams mixed: %v", r.data)
	}
	if r.lost[Key{1, 0xa}] != 1 {
		t.Fatalf("lost = %d, want 1", r.lost[Key{1, 0xa}])
	}
	a.Handle(&probe.Event{Kind: probe.KindFree, PID: 1, SSL: 0xb})
	a.Handle(&probe.Event{Kind: probe.KindExit, PID: 2})
	if fmt.Sprint(r.closed) != fmt.Sprint([]Key{{1, 0xb}, {2, 0xa}}) {
		t.Fatalf("closed %v", r.closed)
	}
	// A reused SSL* after free is a new connection.
	a.Handle(write(1, 0xb, "new", 2))
	if st := a.Stats(); st.Open != 2 || st.Opened != 4 {
		t.Fatalf("stats %+v", st)
	}
	a.CloseAll()
	if a.Stats().Open != 0 || len(r.closed) != 4 {
		t.Fatalf("after CloseAll: %+v closed %v", a.Stats(), r.closed)
	}
}

func TestBoundedConnections(t *testing.T) {
	a, r := newRec(Options{MaxConns: 3})
	for i := uint64(1); i <= 10; i++ {
		a.Handle(write(1, i, "x", i))
	}
	if st := a.Stats(); st.Open != 3 || st.Evicted != 7 {
		t.Fatalf("stats %+v", st)
	}
	if r.closed[0] != (Key{1, 1}) {
		t.Fatalf("evicted %v first; want the least recently used", r.closed[0])
	}
}

func TestIdleEviction(t *testing.T) {
	a, r := newRec(Options{Idle: time.Second})
	s := uint64(time.Second)
	a.Handle(write(1, 1, "x", 1*s))
	a.Handle(write(1, 2, "x", 5*s))
	if n := a.Evict(3 * s); n != 1 || r.closed[0] != (Key{1, 1}) {
		t.Fatalf("evicted %d: %v", n, r.closed)
	}
	if n := a.Evict(5 * s); n != 0 {
		t.Fatalf("evicted a fresh connection")
	}
}

// Requests of the same length on one keep-alive connection share their
// first bytes; one after a failure marker is a new request unless it
// repeats the failed write byte for byte.
func TestSameLengthRequestAfterFailureIsKept(t *testing.T) {
	a, r := newRec(Options{})
	head := "POST /email HTTP/1.1\r\nHost: api.postmarkapp.com\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
	clean := head + `{"To":"b@company.co"}`
	bad := head + `{"Bcc":"p@giftshop."}`
	if len(clean) != len(bad) {
		t.Fatalf("test mails of different lengths: %d, %d", len(clean), len(bad))
	}
	a.Handle(write(1, 0xa, clean, 1))
	a.Handle(&probe.Event{Kind: probe.KindWriteFailed, PID: 1, SSL: 0xa})
	a.Handle(write(1, 0xa, bad, 2))
	if got, want := r.data[Key{1, 0xa}], "e:"+clean+" e:"+bad+" "; got != want {
		t.Fatalf("stream %q, want %q", got, want)
	}
	if a.Stats().Retries != 0 {
		t.Fatalf("retries = %d, want 0", a.Stats().Retries)
	}
}
