// Package stream is the second stage of the pipeline: it turns the
// sensor's per-call events into one ordered byte stream per TLS connection
// and direction, identified by (pid, SSL*), and returns each event's part
// of it as segments for the parser. It drops the retries that
// OpenSSL demands after a failed write, accounts for bytes the sensor could
// not capture, and bounds memory: a fixed number of connections, the least
// recently used evicted first, and idle ones closed.
package stream

import (
	"container/list"
	"hash/maphash"
	"time"

	"github.com/aarsm/aarsm/agent/internal/probe"
)

// Dir is the direction of data on a connection.
type Dir uint8

const (
	Egress  Dir = iota // written by the process (SSL_write): requests
	Ingress            // read by the process (SSL_read): responses
)

func (d Dir) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// Key names a connection: the process and its SSL*.
type Key struct {
	PID uint32
	SSL uint64
}

// Conn is one TLS connection as seen from the process.
type Conn struct {
	Key
	TID    uint32 // thread of the last call
	Comm   string
	Cgroup uint64
	First  uint64 // monotonic ns of the first event
	Last   uint64 // monotonic ns of the last event

	Bytes   [2]uint64 // bytes delivered per direction
	Lost    [2]uint64 // bytes not captured per direction
	Retries uint64    // writes dropped as retries of a failed write

	elem *list.Element

	// The last write, to recognise the retry OpenSSL requires after a
	// failure: same length and same leading bytes.
	lastLen    uint32
	lastSum    uint64
	lastFailed bool
}

// Segment is what one event adds to a connection: bytes in one direction,
// or its end. Data is only valid until the assembler's next call; Lost
// counts bytes of the call that follow Data but were not captured.
type Segment struct {
	Conn *Conn
	Dir  Dir
	Data []byte
	Lost int
	Mono uint64
	// Closed: the connection is gone (freed, its process exec'd or
	// exited, evicted); no segment of it follows.
	Closed bool
}

// Options bound the assembler. The zero value gives the defaults.
type Options struct {
	MaxConns int           // connections tracked at once; default 4096
	Idle     time.Duration // a connection silent this long is closed; default 2 minutes
}

// Stats are the assembler's counters.
type Stats struct {
	Open      int
	Opened    uint64
	Evicted   uint64 // closed for lack of room or idleness
	Retries   uint64
	LostBytes uint64
}

// Assembler tracks connections. It is not safe for concurrent use: the
// sensor delivers events from one goroutine.
type Assembler struct {
	opts  Options
	conns map[uint32]map[uint64]*Conn
	lru   *list.List // front: most recently used
	seed  maphash.Seed
	stats Stats
	out   []Segment // the last call's segments, reused
}

// New returns an assembler.
func New(opts Options) *Assembler {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 4096
	}
	if opts.Idle <= 0 {
		opts.Idle = 2 * time.Minute
	}
	return &Assembler{
		opts:  opts,
		conns: map[uint32]map[uint64]*Conn{},
		lru:   list.New(),
		seed:  maphash.MakeSeed(),
	}
}

// retrySample is how many leading bytes identify a retried write: all the
// sensor copies. A retry repeats the failed call's buffer and length; a
// new request of the same length (every request on a keep-alive
// connection shares its first bytes) differs somewhere in its body.
const retrySample = probe.MaxData

// Handle applies one sensor event and returns what it adds to the
// connections: the bytes of a read or write (none for a dropped retry), the
// end of the connections it closes. The segments are valid until the next
// call.
func (a *Assembler) Handle(ev *probe.Event) []Segment {
	a.out = a.out[:0]
	switch ev.Kind {
	case probe.KindWrite, probe.KindRead:
		c := a.conn(ev)
		dir := Egress
		if ev.Kind == probe.KindRead {
			dir = Ingress
		} else {
			sample := ev.Data
			if len(sample) > retrySample {
				sample = sample[:retrySample]
			}
			sum := maphash.Bytes(a.seed, sample)
			retry := c.lastFailed && c.lastLen == ev.Len && c.lastSum == sum
			c.lastLen, c.lastSum, c.lastFailed = ev.Len, sum, false
			if retry {
				c.Retries++
				a.stats.Retries++
				return nil
			}
		}
		lost := int(ev.Len) - len(ev.Data)
		c.Bytes[dir] += uint64(len(ev.Data))
		c.Lost[dir] += uint64(lost)
		a.stats.LostBytes += uint64(lost)
		a.out = append(a.out, Segment{Conn: c, Dir: dir, Data: ev.Data, Lost: lost, Mono: ev.Mono})
	case probe.KindWriteFailed:
		if c := a.lookup(Key{ev.PID, ev.SSL}); c != nil {
			c.lastFailed = true
		}
	case probe.KindFree:
		if c := a.lookup(Key{ev.PID, ev.SSL}); c != nil {
			a.close(c)
		}
	case probe.KindExec, probe.KindExit:
		// A new image or a dead process: its SSL* values mean nothing now.
		for _, c := range a.conns[ev.PID] {
			a.close(c)
		}
	}
	return a.out
}

// Evict closes connections idle since before now-Idle (monotonic ns) and
// returns their ends, valid until the next call.
func (a *Assembler) Evict(now uint64) []Segment {
	a.out = a.out[:0]
	idle := uint64(a.opts.Idle)
	for e := a.lru.Back(); e != nil; {
		c := e.Value.(*Conn)
		if now < idle || c.Last > now-idle {
			break
		}
		e = e.Prev()
		a.close(c)
		a.stats.Evicted++
	}
	return a.out
}

// CloseAll closes every connection and returns their ends, valid until
// the next call.
func (a *Assembler) CloseAll() []Segment {
	a.out = a.out[:0]
	for e := a.lru.Front(); e != nil; {
		next := e.Next()
		a.close(e.Value.(*Conn))
		e = next
	}
	return a.out
}

// Stats returns the counters.
func (a *Assembler) Stats() Stats {
	st := a.stats
	st.Open = a.lru.Len()
	return st
}

// Lookup returns the open connection k, or nil.
func (a *Assembler) Lookup(k Key) *Conn { return a.lookup(k) }

func (a *Assembler) lookup(k Key) *Conn {
	return a.conns[k.PID][k.SSL]
}

// conn finds or opens the connection of ev and marks it used.
func (a *Assembler) conn(ev *probe.Event) *Conn {
	k := Key{ev.PID, ev.SSL}
	c := a.lookup(k)
	if c == nil {
		if a.lru.Len() >= a.opts.MaxConns {
			a.close(a.lru.Back().Value.(*Conn))
			a.stats.Evicted++
		}
		c = &Conn{Key: k, First: ev.Mono}
		byPID := a.conns[k.PID]
		if byPID == nil {
			byPID = map[uint64]*Conn{}
			a.conns[k.PID] = byPID
		}
		byPID[k.SSL] = c
		c.elem = a.lru.PushFront(c)
		a.stats.Opened++
		c.Comm = ev.Comm()
	} else {
		a.lru.MoveToFront(c.elem)
	}
	c.TID = ev.TID
	c.Cgroup = ev.Cgroup
	c.Last = ev.Mono
	return c
}

func (a *Assembler) close(c *Conn) {
	byPID := a.conns[c.PID]
	delete(byPID, c.SSL)
	if len(byPID) == 0 {
		delete(a.conns, c.PID)
	}
	a.lru.Remove(c.elem)
	a.out = append(a.out, Segment{Conn: c, Mono: c.Last, Closed: true})
}
