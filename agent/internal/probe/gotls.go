package probe

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/aarsm/aarsm/agent/internal/gosym"
)

// Go's crypto/tls, in any Go executable (stripped too): gosym finds
// (*Conn).Write, Read and Close and the register ABI of the release that
// built it; bpf/ssl/ssl.c's go_tls_* programs read the registers. The
// *tls.Conn is the connection's identity where OpenSSL's is the SSL*, so
// the rest of the pipeline (stream, parse, holds and verdicts) does not
// know which library wrote.
//
//   - write: go_tls_write at Write's Body (past the stack check: once per
//     call), the same event and hold path as SSL_write; its hold guard
//     go_tls_write_guard after it, placed as for OpenSSL (on every way
//     out of the probed instruction, at the first instruction the kernel
//     emulates).
//   - read (Options.Reads): go_tls_read at Read's Body keeps (Conn,
//     buffer) by goroutine (R14), go_tls_read_ret at each of Read's RETs
//     copies n bytes. Never a uretprobe: Go moves stacks.
//   - close: go_tls_close at Close's Body, as SSL_free.
//
// The hold guard (Options.WriteGuard, fail-closed policies) keeps
// OpenSSL's semantics: a write resumed by a SIGCONT that is not the
// agent's is killed before it runs (fail-closed), or goes on, counted
// (fail-open, signal_generate). The holds are kept by thread, as for
// OpenSSL (the agent, the guard process and release-holds resolve them
// alike), and the held goroutine stays on its thread while the process is
// stopped. But once resumed, a goroutine may be preempted (SIGURG) between
// the write probe and the guard a few instructions later and go on on
// another thread, where ssl_write_guard would find no hold: so the Go
// guard, go_tls_write_guard, finds the hold through the goroutine
// (go_held: (tgid, g) -> the thread it was held on).

// goTLS is what examining a Go executable found.
type goTLS struct {
	version string // go1.26.8
	write   gosym.Func
	read    gosym.Func // zero: none
	close   gosym.Func // zero: none (connections end by eviction)
	guards  []uint64   // file offsets of the write's hold guards
}

// ErrGoUnmonitored wraps why a Go executable's crypto/tls is not probed
// (an unsupported Go release, damaged or unexpected tables or code): its
// TLS writes are not seen. Target.Err carries it.
var ErrGoUnmonitored = errors.New("go crypto/tls not probed")

// examineGo looks for Go's crypto/tls in f (read through r). Not a Go
// executable, or Go without crypto/tls: nil, nil.
func examineGo(f *elf.File, r io.ReaderAt) (t *goTLS, isGo bool, err error) {
	g, err := gosym.FindTLS(f, r)
	switch {
	case errors.Is(err, gosym.ErrNotGo):
		return nil, false, nil
	case errors.Is(err, gosym.ErrNoTLS):
		return nil, true, nil
	case err != nil:
		v := "go (version unknown)"
		if g.Binary.BuildInfo != nil {
			v = g.Binary.BuildInfo.GoVersion
		}
		return nil, true, fmt.Errorf("%w: %s: %w", ErrGoUnmonitored, v, err)
	}
	t = &goTLS{version: g.Binary.Version.String(), write: g.Write, read: g.Read, close: g.Close}
	if inst, ok := decodeAt(r, g.Write.Body); ok {
		for _, next := range successors(inst, g.Write.Body) {
			if off, ok := firstEmulated(r, next); ok {
				t.guards = appendUnique(t.guards, off)
			}
		}
	}
	return t, true, nil
}

// attachGo probes Go's crypto/tls in ex; it returns the links and what
// was probed ("go1.26.8 crypto/tls.(*Conn).Write").
func (s *Sensor) attachGo(ex *link.Executable, g *goTLS) ([]link.Link, []string, error) {
	var links []link.Link
	var attached []string
	up := func(name string, off uint64, prog *ebpf.Program) error {
		l, err := ex.Uprobe(name, prog, &link.UprobeOptions{Address: off})
		if err != nil {
			return fmt.Errorf("attach %s at %#x: %w", name, off, err)
		}
		links = append(links, l)
		return nil
	}
	fail := func(err error) ([]link.Link, []string, error) {
		_ = closeLinks(links)
		return nil, nil, err
	}
	if s.opts.WriteGuard {
		for _, off := range g.guards {
			if err := up(gosym.SymWrite+" guard", off, s.objs.GoTlsWriteGuard); err != nil {
				return fail(err)
			}
		}
	}
	if err := up(gosym.SymWrite, g.write.Body, s.objs.GoTlsWrite); err != nil {
		return fail(err)
	}
	attached = append(attached, g.version+" "+gosym.SymWrite)
	if s.opts.Reads && g.read.Body != 0 {
		if err := up(gosym.SymRead, g.read.Body, s.objs.GoTlsRead); err != nil {
			return fail(err)
		}
		for _, off := range g.read.Returns {
			if err := up(gosym.SymRead+" RET", off, s.objs.GoTlsReadRet); err != nil {
				return fail(err)
			}
		}
		attached = append(attached, g.version+" "+gosym.SymRead)
	}
	if g.close.Body != 0 {
		if err := up(gosym.SymClose, g.close.Body, s.objs.GoTlsClose); err != nil {
			return fail(err)
		}
		attached = append(attached, g.version+" "+gosym.SymClose)
	}
	return links, attached, nil
}
