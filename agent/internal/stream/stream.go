// Package stream is the second stage of the pipeline: it turns the
// sensor's per-call events into one ordered byte stream per TLS connection
// and direction, identified by (pid, SSL*). It drops the retries that
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

	consumer Consumer
	elem     *list.Element

	// The last write, to recognise the retry OpenSSL requires after a
	// failure: same length and same leading bytes.
	lastLen    uint32
	lastSum    uint64
	lastFailed bool
}

// Consumer receives a connection's bytes, in order. Data is only valid
// during the call. lost counts bytes of the call that follow Data but were
// not captured. Close is called once, when the connection is gone.
type Consumer interface {
	Data(c *Conn, dir Dir, data []byte, lost int, mono uint64)
	Close(c *Conn)
	// Busy reports whether the consumer is in the middle of an outgoing
	// message: the next write may complete it.
	Busy() bool
	// Proto names the protocol the client speaks ("h1", "h2", "smtp",
	// "other"; "" before its first write).
	Proto() string
}

// Busy reports whether the connection is in the middle of an outgoing message.
func (c *Conn) Busy() bool { return c.consumer.Busy() }

// Consumer returns the connection's consumer.
func (c *Conn) Consumer() Consumer { return c.consumer }

// Proto names the protocol the connection's client speaks (Consumer.Proto).
func (c *Conn) Proto() string { return c.consumer.Proto() }

// Factory makes the consumer of a new connection.
type Factory func(c *Conn) Consumer

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
	opts    Options
	factory Factory
	conns   map[uint32]map[uint64]*Conn
	lru     *list.List // front: most recently used
	seed    maphash.Seed
	stats   Stats
}

// New returns an assembler that makes consumers with factory.
func New(factory Factory, opts Options) *Assembler {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 4096
	}
	if opts.Idle <= 0 {
		opts.Idle = 2 * time.Minute
	}
	return &Assembler{
		opts:    opts,
		factory: factory,
		conns:   map[uint32]map[uint64]*Conn{},
		lru:     list.New(),
		seed:    maphash.MakeSeed(),
	}
}

// retrySample is how many leading bytes identify a retried write: all the
// sensor copies. A retry repeats the failed call's buffer and length; a
// new request of the same length (every request on a keep-alive
// connection shares its first bytes) differs somewhere in its body.
const retrySample = probe.MaxData

// Handle applies one sensor event.
func (a *Assembler) Handle(ev *probe.Event) {
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
				return
			}
		}
		lost := int(ev.Len) - len(ev.Data)
		c.Bytes[dir] += uint64(len(ev.Data))
		c.Lost[dir] += uint64(lost)
		a.stats.LostBytes += uint64(lost)
		c.consumer.Data(c, dir, ev.Data, lost, ev.Mono)
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
}

// Evict closes connections idle since before now-Idle (monotonic ns) and
// returns how many.
func (a *Assembler) Evict(now uint64) int {
	n := 0
	idle := uint64(a.opts.Idle)
	for e := a.lru.Back(); e != nil; {
		c := e.Value.(*Conn)
		if now < idle || c.Last > now-idle {
			break
		}
		e = e.Prev()
		a.close(c)
		a.stats.Evicted++
		n++
	}
	return n
}

// CloseAll closes every connection.
func (a *Assembler) CloseAll() {
	for e := a.lru.Front(); e != nil; {
		next := e.Next()
		a.close(e.Value.(*Conn))
		e = next
	}
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
		c.consumer = a.factory(c)
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
	c.consumer.Close(c)
}
