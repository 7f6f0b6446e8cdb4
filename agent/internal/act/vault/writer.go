package vault

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultQueue is how many entries a Writer holds while it writes.
const DefaultQueue = 16

// ErrBusy is returned by Submit when the Writer's queue is full or closed.
var ErrBusy = errors.New("quarantine writer busy")

// Writer stores entries in the background, in the order submitted, so that
// whoever submits (the agent's event loop, while the sender is held) never
// waits on the disk: encoding and fsync of a 16 MiB message take longer
// than a held write may wait. A write that fails is logged, with the
// entry's id, policy and the error, never the message.
type Writer struct {
	v   *Vault
	log *slog.Logger
	q   chan *Entry

	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

// NewWriter starts a writer into v with room for queue pending entries
// (0: DefaultQueue).
func NewWriter(v *Vault, log *slog.Logger, queue int) *Writer {
	if queue <= 0 {
		queue = DefaultQueue
	}
	if log == nil {
		log = slog.Default()
	}
	w := &Writer{v: v, log: log, q: make(chan *Entry, queue), done: make(chan struct{})}
	go w.run()
	return w
}

// Vault returns the vault written to.
func (w *Writer) Vault() *Vault { return w.v }

// Submit assigns e its id (see Assign) and queues it; the caller must not
// change e afterwards. It does not wait: with the queue full it refuses
// with ErrBusy. The entry is on disk once Close has returned, or when it
// appears in List.
func (w *Writer) Submit(e *Entry, now time.Time, keep time.Duration) (string, error) {
	if err := Assign(e, now, keep); err != nil {
		return "", err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return "", fmt.Errorf("%w: closed", ErrBusy)
	}
	select {
	case w.q <- e:
		return e.ID, nil
	default:
		return "", fmt.Errorf("%w: %d messages waiting to be written", ErrBusy, cap(w.q))
	}
}

func (w *Writer) run() {
	defer close(w.done)
	for e := range w.q {
		if err := w.v.Write(e); err != nil {
			w.log.Error("quarantined message not kept", "id", e.ID, "policy", e.Policy, "pid", e.PID, "err", err)
			continue
		}
		w.log.Info("message quarantined", "id", e.ID, "policy", e.Policy, "pid", e.PID, "expires", e.Expires.Format(time.RFC3339))
	}
}

// Close writes what is queued and stops.
func (w *Writer) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.q)
	}
	w.mu.Unlock()
	<-w.done
}
