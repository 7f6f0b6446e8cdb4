package pkgid

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ExeHasher computes the content hash of executables off the caller's
// path: a verdict must not wait for the sha256 of a 300 MB binary. Sum
// opens the file (the agent reads a process's executable through
// /proc/PID/exe, which reaches the inode it runs even when the path was
// replaced since), looks its identity up (device, inode, size, mtime,
// ctime) among the sums it knows and, when it is new, hands the open file
// to a background worker and waits at most a short time for it. A file
// is hashed once per identity; rewriting it changes the identity.
//
// Bounds: MaxEntries sums kept (one is dropped at random to make room),
// Queue files waiting to be hashed (more are reported pending and tried
// again at their next Sum), MaxBytes hashed of one file (a bigger file's
// sum covers its first MaxBytes; its size is in its identity), MaxWaiters
// callbacks per file in progress. One worker: at most one file is read at
// a time. An ExeHasher is safe for concurrent use.
type ExeHasher struct {
	opts ExeHashOptions

	mu      sync.Mutex
	sums    map[statKey]exeSum
	pending map[statKey]*exeJob
	stats   ExeHashStats
	closed  bool

	jobs chan *exeJob
	stop chan struct{}
	done chan struct{}
}

// ExeHashOptions bound an ExeHasher; zero fields take the defaults.
type ExeHashOptions struct {
	MaxEntries int   // sums kept; default 4096
	Queue      int   // files waiting; default 64
	MaxBytes   int64 // bytes hashed per file; default 1 GiB
	MaxWaiters int   // callbacks per file in progress; default 64
}

func (o ExeHashOptions) withDefaults() ExeHashOptions {
	if o.MaxEntries <= 0 {
		o.MaxEntries = 4096
	}
	if o.Queue <= 0 {
		o.Queue = 64
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.MaxWaiters <= 0 {
		o.MaxWaiters = 64
	}
	return o
}

// ExeHashStats count an ExeHasher's work.
type ExeHashStats struct {
	Hits    uint64 // answered from the sums known
	Hashed  uint64 // files hashed
	Pending uint64 // Sum calls that returned before the sum was known
	Dropped uint64 // files not queued (queue full) or sums discarded (file changed while read)
	Errors  uint64 // files that could not be read
}

type exeSum struct {
	sum string
	cut bool
}

type exeJob struct {
	f       *os.File
	key     statKey
	done    chan struct{}
	sum     exeSum
	err     error
	waiters []func(sum string, err error)
}

// NewExeHasher starts a hasher; Close stops its worker.
func NewExeHasher(o ExeHashOptions) *ExeHasher {
	o = o.withDefaults()
	h := &ExeHasher{
		opts:    o,
		sums:    make(map[statKey]exeSum),
		pending: make(map[statKey]*exeJob),
		jobs:    make(chan *exeJob, o.Queue),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go h.run()
	return h
}

// ErrHashPending is returned by Sum when the file's hash is not known yet.
var ErrHashPending = errors.New("content hash pending")

// Sum returns the content hash ("sha256:" and 64 hex digits) of the file
// at the agent's path p; when it is not known yet, the call that queues
// the file waits at most wait for it (later calls while it is hashed do not
// wait: a 300 MB binary stalls no more than one verdict, by wait). When it
// is still not known, Sum returns ErrHashPending and, if then
// is not nil, calls then (from the worker's goroutine) once it is, or once
// hashing failed; then is not called when the file could not be queued.
func (h *ExeHasher) Sum(p string, wait time.Duration, then func(sum string, err error)) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	key, err := fileKey(f)
	if err != nil {
		_ = f.Close() // read only: nothing to lose
		return "", fmt.Errorf("hash %s: %w", p, err)
	}
	h.mu.Lock()
	if s, ok := h.sums[key]; ok {
		h.stats.Hits++
		h.mu.Unlock()
		_ = f.Close() // read only: nothing to lose
		return s.sum, nil
	}
	j := h.pending[key]
	if j != nil {
		_ = f.Close() // read only: nothing to lose
		wait = 0
	} else {
		if h.closed {
			h.mu.Unlock()
			_ = f.Close() // read only: nothing to lose
			return "", fmt.Errorf("hash %s: %w (hasher closed)", p, ErrHashPending)
		}
		j = &exeJob{f: f, key: key, done: make(chan struct{})}
		select {
		case h.jobs <- j:
			h.pending[key] = j
		default:
			h.stats.Dropped++
			h.stats.Pending++
			h.mu.Unlock()
			_ = f.Close() // read only: nothing to lose
			return "", fmt.Errorf("hash %s: %w (queue full)", p, ErrHashPending)
		}
	}
	h.mu.Unlock()

	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-j.done:
		case <-t.C:
		}
		t.Stop()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-j.done:
		if j.err != nil {
			return "", j.err
		}
		return j.sum.sum, nil
	default:
	}
	h.stats.Pending++
	if then != nil && len(j.waiters) < h.opts.MaxWaiters {
		j.waiters = append(j.waiters, then)
	}
	return "", fmt.Errorf("hash %s: %w", p, ErrHashPending)
}

func fileKey(f *os.File) (statKey, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return statKey{}, fmt.Errorf("stat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return statKey{}, errors.New("not a regular file")
	}
	return statKey{
		Dev: st.Dev, Ino: st.Ino, Size: st.Size,
		Mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec,
		Ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec,
	}, nil
}

func (h *ExeHasher) run() {
	defer close(h.done)
	for {
		select {
		case <-h.stop:
			h.drain()
			return
		case j := <-h.jobs:
			h.hash(j)
		}
	}
}

// drain fails the jobs left in the queue (Close).
func (h *ExeHasher) drain() {
	for {
		select {
		case j := <-h.jobs:
			_ = j.f.Close() // read only
			h.finish(j, exeSum{}, fmt.Errorf("%w (hasher closed)", ErrHashPending))
		default:
			return
		}
	}
}

func (h *ExeHasher) hash(j *exeJob) {
	defer j.f.Close()
	d := sha256.New()
	n, err := io.Copy(d, io.NewSectionReader(j.f, 0, h.opts.MaxBytes))
	if err != nil {
		h.finish(j, exeSum{}, fmt.Errorf("hash %s: %w", j.f.Name(), err))
		return
	}
	if k, kerr := fileKey(j.f); kerr != nil || k != j.key {
		// Written to while it was read: the sum is of no version.
		h.finish(j, exeSum{}, fmt.Errorf("hash %s: the file changed while it was read", j.f.Name()))
		return
	}
	h.finish(j, exeSum{sum: "sha256:" + hex.EncodeToString(d.Sum(nil)), cut: n >= h.opts.MaxBytes && j.key.Size > n}, nil)
}

func (h *ExeHasher) finish(j *exeJob, s exeSum, err error) {
	h.mu.Lock()
	delete(h.pending, j.key)
	j.sum, j.err = s, err
	switch {
	case err == nil:
		h.stats.Hashed++
		evictOne(h.sums, h.opts.MaxEntries)
		h.sums[j.key] = s
	case errors.Is(err, ErrHashPending):
		h.stats.Dropped++
	default:
		h.stats.Errors++
	}
	waiters := j.waiters
	j.waiters = nil
	close(j.done)
	h.mu.Unlock()
	for _, w := range waiters {
		w(s.sum, err)
	}
}

// Stats returns the hasher's counters.
func (h *ExeHasher) Stats() ExeHashStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.stats
}

// Close stops the worker after the file it is reading; the files queued
// are not hashed (their callbacks get an error wrapping ErrHashPending).
func (h *ExeHasher) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	h.mu.Unlock()
	close(h.stop)
	<-h.done
}
