package probe

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/bpf/ssl"
)

// An agent replaced in place by a newer binary (an upgrade) hands its
// sensor over: the old image stops judging and executes the new binary
// with the sensor's ring, hold maps and links left open; the new image
// loads and attaches its own programs beside the old ones (a generation
// further: bpf/ssl/ssl.c, "active"), switches the kernel over to them in
// one map write, judges what the old programs left in their ring, and only
// then detaches them. Every write is seen by exactly one generation, and
// a write held by the old one is judged by the new one.

// HandoverABI names the layout of the events and of the shared maps.
// A successor adopts a predecessor's sensor only if they agree; change
// it with either.
const HandoverABI = 2

// HandoverFDs are the file descriptors of a sensor, left open across
// exec for the successor image.
type HandoverFDs struct {
	ABI        int    `json:"abi"`
	Generation uint32 `json:"generation"`
	Active     int    `json:"active"`
	Events     int    `json:"events"`
	Holds      int    `json:"holds"`
	Resolving  int    `json:"resolving"`
	Links      []int  `json:"links"`
}

// Handover is a predecessor's sensor, adopted by its successor
// (Options.Handover).
type Handover struct {
	generation                       uint32
	active, events, holds, resolving *ebpf.Map
	links                            []link.Link
}

// PrepareHandover readies the sensor for a successor image, after Run
// returned and before exec: the files the kernel reported are examined
// (and the processes held for them resumed), the kernel keeps holding
// for up to allow as if the event loop ran, and the descriptors the
// successor needs stay open across exec. The sensor must not be used
// afterwards, but for Close if the exec fails.
func (s *Sensor) PrepareHandover(allow time.Duration) (HandoverFDs, error) {
	s.stopDiscovery()
	s.drainDiscoveries()
	// What the old programs hold until the successor switches over is
	// judged by it: the kernel must not see the event loop as stopped.
	if err := s.objs.Heartbeat.Put(uint32(0), MonoNow()+uint64(allow)); err != nil {
		return HandoverFDs{}, fmt.Errorf("hand over: extend heartbeat: %w", err)
	}
	f := HandoverFDs{ABI: HandoverABI, Generation: s.gen,
		Active: s.objs.Active.FD(), Events: s.objs.Events.FD(), Holds: s.objs.Holds.FD(), Resolving: s.objs.Resolving.FD()}
	s.mu.Lock()
	all := append([]link.Link(nil), s.links...)
	for _, ls := range s.flinks {
		all = append(all, ls...)
	}
	s.mu.Unlock()
	for _, l := range all {
		fl, ok := l.(interface{ FD() int })
		if !ok {
			return HandoverFDs{}, fmt.Errorf("hand over: a probe of type %T has no descriptor (kernel without BPF links)", l)
		}
		f.Links = append(f.Links, fl.FD())
	}
	for _, fd := range append([]int{f.Active, f.Events, f.Holds, f.Resolving}, f.Links...) {
		if err := Inherit(fd); err != nil {
			return HandoverFDs{}, fmt.Errorf("hand over: %w", err)
		}
	}
	return f, nil
}

// Inherit lets fd stay open across exec.
func Inherit(fd int) error {
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("keep descriptor %d open across exec: %w", fd, err)
	}
	return nil
}

// AdoptHandover takes over the descriptors a predecessor image left. On
// error nothing is left open: the predecessor's probes are detached (the
// new sensor then starts afresh and resolves its holds by their fail
// mode).
func AdoptHandover(f HandoverFDs) (*Handover, error) {
	h := &Handover{generation: f.Generation}
	var errs []error
	for _, fd := range f.Links {
		l, err := link.NewFromFD(fd)
		if err != nil {
			_ = unix.Close(fd)
			errs = append(errs, fmt.Errorf("probe %d: %w", fd, err))
			continue
		}
		h.links = append(h.links, l)
	}
	for _, m := range []struct {
		fd  int
		dst **ebpf.Map
	}{{f.Active, &h.active}, {f.Events, &h.events}, {f.Holds, &h.holds}, {f.Resolving, &h.resolving}} {
		mp, err := ebpf.NewMapFromFD(m.fd)
		if err != nil {
			errs = append(errs, fmt.Errorf("map %d: %w", m.fd, err))
			continue
		}
		*m.dst = mp
	}
	if f.ABI != HandoverABI {
		errs = append(errs, fmt.Errorf("the predecessor's events and maps have layout %d, this agent's %d", f.ABI, HandoverABI))
	}
	if err := errors.Join(errs...); err != nil {
		_ = h.Close() // what could not be adopted is reported; the rest is closed
		return nil, fmt.Errorf("adopt the predecessor's sensor: %w", err)
	}
	return h, nil
}

// Close detaches the predecessor's probes and releases its maps.
func (h *Handover) Close() error {
	errs := []error{closeLinks(h.links)}
	h.links = nil
	for _, m := range []**ebpf.Map{&h.active, &h.events, &h.holds, &h.resolving} {
		if *m != nil {
			errs = append(errs, (*m).Close())
			*m = nil
		}
	}
	return errors.Join(errs...)
}

// replacements are the maps the successor shares with its predecessor:
// the generation switch, and the holds (the old programs' holds are judged
// by the new agent). A hold map of another layout is not shared (nor
// anything else then): the new sensor starts afresh.
func (h *Handover) replacements(spec *ebpf.CollectionSpec) (map[string]*ebpf.Map, error) {
	r := map[string]*ebpf.Map{ssl.SensorMapActive: h.active, ssl.SensorMapHolds: h.holds, ssl.SensorMapResolving: h.resolving}
	for name, m := range r {
		if err := spec.Maps[name].Compatible(m); err != nil {
			return nil, fmt.Errorf("the predecessor's map %s: %w", name, err)
		}
	}
	return r, nil
}

// predecessor is an adopted sensor the successor is taking over from.
type predecessor struct {
	h        *Handover
	reader   *ringbuf.Reader
	detached chan struct{} // closed once its probes are detached
	events   int           // delivered from its ring
}

// takeOver switches the kernel to this sensor's programs, delivers what
// the predecessor's programs left in their ring, and detaches them in the
// background (Run delivers what they wrote meanwhile, then closes them).
func (s *Sensor) takeOver(handle func(*Event)) error {
	p := s.prev
	if err := s.objs.Active.Put(uint32(0), s.gen); err != nil {
		return fmt.Errorf("switch the kernel to generation %d: %w", s.gen, err)
	}
	p.events = s.drainRing(p.reader, handle)
	links := p.h.links
	p.h.links = nil
	go func() {
		if err := closeLinks(links); err != nil {
			s.log.Warn("detach the predecessor's probes", "err", err)
		}
		close(p.detached)
	}()
	s.log.Info("took over from the predecessor", "generation", s.gen, "probes_detached", len(links))
	return nil
}

// finishTakeOver delivers the last events of the predecessor's programs
// (written after the switch by a call already past its check) and
// releases what is left of it.
func (s *Sensor) finishTakeOver(handle func(*Event)) {
	p := s.prev
	p.events += s.drainRing(p.reader, handle)
	_ = p.reader.Close()
	if err := p.h.Close(); err != nil {
		s.log.Warn("release the predecessor's maps", "err", err)
	}
	s.log.Info("the predecessor's probes are detached", "events_judged_for_it", p.events)
	s.prev = nil
}

// drainRing delivers every event waiting in r, and returns how many.
func (s *Sensor) drainRing(r *ringbuf.Reader, handle func(*Event)) int {
	var rec ringbuf.Record
	var ev Event
	for n := 0; ; n++ {
		r.SetDeadline(time.Now())
		if err := r.ReadInto(&rec); err != nil {
			return n // empty, or closed
		}
		s.deliver(rec.RawSample, &ev, handle)
	}
}

// closeLinks detaches links, concurrently: detaching waits for RCU grace
// periods in the kernel (~90 ms per tracepoint here, serialized by the
// kernel; uprobes overlap when closed together).
func closeLinks(links []link.Link) error {
	errs := make([]error, len(links))
	var wg sync.WaitGroup
	for i, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.Close()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
