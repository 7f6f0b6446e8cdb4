package judge

import (
	"sync"
	"time"

	"github.com/aarsm/aarsm/agent/internal/policy"
)

// BulkState counts, per process and policy, the messages and recipients
// sent to unknown domains within each policy's bulk window. The caller owns
// it (one for the agent) and passes it to Judge; time only comes from the
// now argument. Memory is bounded: at most MaxProcesses processes are
// tracked (the least recently active are dropped first) and each window
// keeps at most max(max_messages, max_recipients)+1 events.
type BulkState struct {
	mu    sync.Mutex
	procs map[procKey]*procBulk
	max   int
}

// MaxProcesses is the default bound on the processes a BulkState tracks.
const MaxProcesses = 16384

type procKey struct {
	pid   uint32
	start uint64
}

type bulkKey struct {
	pid    uint32
	start  uint64
	policy string
}

type procBulk struct {
	last    time.Time
	windows map[string][]bulkEvent // by policy name
}

type bulkEvent struct {
	at time.Time
	n  int
}

// NewBulkState returns an empty state tracking up to maxProcesses processes
// (MaxProcesses when <= 0).
func NewBulkState(maxProcesses int) *BulkState {
	if maxProcesses <= 0 {
		maxProcesses = MaxProcesses
	}
	return &BulkState{procs: make(map[procKey]*procBulk), max: maxProcesses}
}

// Forget drops the counters of a process (call it when the process exits).
func (s *BulkState) Forget(pid uint32, startTime uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.procs, procKey{pid, startTime})
}

// Len returns the number of processes tracked.
func (s *BulkState) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.procs)
}

// observe returns the messages and recipients to unknown domains within the
// window ending at now, counting this message (n recipients). With record
// false (a partial SMTP message that will be judged again on completion)
// the message is counted but not stored.
func (s *BulkState) observe(k bulkKey, b policy.Bulk, now time.Time, n int, record bool) (int, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.procs == nil {
		s.procs = make(map[procKey]*procBulk)
		if s.max <= 0 {
			s.max = MaxProcesses
		}
	}
	pk := procKey{k.pid, k.start}
	p := s.procs[pk]
	if p == nil {
		if !record {
			return 1, n
		}
		if len(s.procs) >= s.max {
			s.evict()
		}
		p = &procBulk{windows: make(map[string][]bulkEvent, 1)}
		s.procs[pk] = p
	}
	evs := p.windows[k.policy]
	// Drop events outside the window.
	cut := 0
	for cut < len(evs) && !evs[cut].at.After(now.Add(-b.Window)) {
		cut++
	}
	evs = evs[cut:]
	msgs, rcpts := 1, n
	for _, e := range evs {
		msgs++
		rcpts += e.n
	}
	if record {
		evs = append(evs, bulkEvent{at: now, n: n})
		if limit := max(b.MaxMessages, b.MaxRecipients) + 1; len(evs) > limit {
			evs = append(evs[:0:0], evs[len(evs)-limit:]...)
		}
		p.windows[k.policy] = evs
		p.last = now
	}
	return msgs, rcpts
}

// evict drops the least recently active process.
func (s *BulkState) evict() {
	var oldest procKey
	first := true
	var at time.Time
	for k, p := range s.procs {
		if first || p.last.Before(at) {
			oldest, at, first = k, p.last, false
		}
	}
	if !first {
		delete(s.procs, oldest)
	}
}
