package act

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/proc"
)

// TCP states (include/net/tcp_states.h) whose sockets DestroySockets tears
// down: those through which the process can still send. Listening sockets
// and sockets already closing on our side are left alone.
const (
	tcpEstablished = 1
	tcpSynSent     = 2
	tcpCloseWait   = 8

	destroyStates = 1<<tcpEstablished | 1<<tcpSynSent | 1<<tcpCloseWait
)

// Sizes of struct inet_diag_req_v2 and struct inet_diag_msg
// (include/uapi/linux/inet_diag.h), and the offset and size of the
// struct inet_diag_sockid inside both.
const (
	sizeofInetDiagReqV2 = 56
	sizeofInetDiagMsg   = 72
	reqIDOffset         = 8 // in inet_diag_req_v2, after family, protocol, ext, pad, states
	msgIDOffset         = 4 // in inet_diag_msg, after family, state, timer, retrans
	sizeofSockID        = 48
	msgInodeOffset      = 68
)

// DestroySockets destroys, with netlink SOCK_DESTROY, every TCP socket
// (IPv4 and IPv6) of process pid that is established, connecting or
// half-closed by the peer, and returns how many it destroyed. The process
// keeps running: its pending and later reads and writes on those sockets
// fail with ECONNABORTED, and the peer receives a reset.
//
// Sockets are found by inode: the process's /proc/PID/fd links
// ("socket:[N]") against a sock_diag dump of the network namespace the
// process lives in (entered on a throw-away thread when it is not the
// agent's). A socket shared with another process (inherited over fork or
// passed over a Unix socket) is destroyed for all its holders.
//
// The guard uses it on a process it kills; a block verdict uses
// BlockSockets, which spares the connections local clients made to the
// process.
func DestroySockets(pid uint32) (int, error) {
	r, err := destroySockets(pid, false)
	return r.Destroyed, err
}

// Cut is what BlockSockets did.
type Cut struct {
	// Destroyed counts the sockets destroyed.
	Destroyed int
	// Kept counts the sockets left alone: connections accepted on a port
	// the process listens on, from a peer on the loopback.
	Kept int
}

// Detail is the Done.Detail of a block: "sockets=2", or with kept
// sockets "sockets=2 kept_accepted=1".
func (c Cut) Detail() string {
	s := fmt.Sprintf("sockets=%d", c.Destroyed)
	if c.Kept > 0 {
		s += fmt.Sprintf(" kept_accepted=%d", c.Kept)
	}
	return s
}

// BlockSockets is DestroySockets for a block verdict: it destroys the
// same sockets except the connections the process accepted, on a port it
// listens on, from a peer on the loopback (an MCP server's client over
// streamable HTTP, say), which it keeps and counts.
//
// Why those, and only those: the sensor does not know which socket
// carries the blocked write, so every socket that can take the mail off
// the host goes. A loopback client's connection to the process ends on
// this host, and the server's answer on it is how the client learns that
// its tool call failed: destroyed, the client waits for its own timeout
// (the MCP SDK's: 60 s). Not kept:
//   - outbound connections to the loopback: a local proxy or tunnel
//     (HTTPS_PROXY, ssh -L, stunnel) carries them off the host;
//   - connections accepted from another host: the peer may be the one
//     pulling the mail (a reverse channel), and the process's own clients
//     from elsewhere can retry.
//
// What a kept connection can still carry: a blocked write the process
// makes on it itself (a TLS server answering a local client), which
// reaches only that local process; what that process sends on is its own
// traffic, seen or held as such (a relay of ciphertext is not readable
// anyway).
//
// A socket is accepted when its local address and port are those of a
// listening socket of the same process (or the listener's address is the
// wildcard), found in the same sock_diag dump.
func BlockSockets(pid uint32) (Cut, error) {
	return destroySockets(pid, true)
}

func destroySockets(pid uint32, keepAccepted bool) (Cut, error) {
	var cut Cut
	inodes, err := socketInodes(pid)
	if err != nil {
		return cut, fmt.Errorf("destroy sockets of pid %d: %w", pid, err)
	}
	if len(inodes) == 0 {
		return cut, nil
	}
	s, err := openDiag(pid)
	if err != nil {
		return cut, fmt.Errorf("destroy sockets of pid %d: %w", pid, err)
	}
	defer s.close()
	states := uint32(destroyStates)
	if keepAccepted {
		states |= 1 << tcpListen
	}
	socks, err := s.dumpBoth(states)
	var errs []error
	if err != nil {
		errs = append(errs, err) // the sockets of the family that answered still go
	}
	var own []diagEntry
	var listeners []netip.AddrPort
	for _, sk := range socks {
		switch {
		case !inodes[sk.inode]:
		case sk.state == tcpListen:
			listeners = append(listeners, sk.local())
		default:
			own = append(own, sk)
		}
	}
	for _, sk := range own {
		if keepAccepted && sk.remote().Addr().IsLoopback() && accepted(sk.local(), listeners) {
			cut.Kept++
			continue
		}
		switch err := s.destroy(sk.family, sk.id); {
		case err == nil:
			cut.Destroyed++
		case errors.Is(err, unix.ENOENT):
			// Closed meanwhile: nothing left to destroy.
		case errors.Is(err, unix.EOPNOTSUPP):
			return cut, fmt.Errorf("destroy sockets of pid %d: SOCK_DESTROY not supported by the kernel (CONFIG_INET_DIAG_DESTROY): %w", pid, err)
		default:
			errs = append(errs, fmt.Errorf("socket inode %d: %w", sk.inode, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return cut, fmt.Errorf("destroy sockets of pid %d: %w", pid, err)
	}
	return cut, nil
}

// accepted tells whether a connection with this local address was accepted
// on one of the listeners: same port, and the listener's address is the
// connection's or the wildcard.
func accepted(local netip.AddrPort, listeners []netip.AddrPort) bool {
	for _, l := range listeners {
		if l.Port() == local.Port() && (l.Addr().IsUnspecified() || l.Addr() == local.Addr()) {
			return true
		}
	}
	return false
}

// PreloadDiag makes the kernel load what DestroySockets needs (the
// sock_diag, inet_diag and tcp_diag modules, where they are modules) by
// asking once for the TCP sockets of both families in the agent's network
// namespace. Call it before holding starts: a module autoload runs modprobe
// as a usermode helper and waits for it, and a held modprobe (a file not
// examined yet) would wait for the very agent thread that asked.
func PreloadDiag() error {
	s, err := newDiagSocket()
	if err != nil {
		return fmt.Errorf("preload sock_diag: %w", err)
	}
	defer s.close()
	var errs []error
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if _, err := s.dump(family, destroyStates); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("preload sock_diag: %w", err)
	}
	return nil
}

// socketInodes returns the inodes of the sockets open in pid.
func socketInodes(pid uint32) (map[uint32]bool, error) {
	dir := proc.FS{}.Path(pid, "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		if proc.Gone(err) {
			return nil, ErrGone
		}
		return nil, err
	}
	inodes := make(map[uint32]bool)
	for _, e := range ents {
		target, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			continue // closed meanwhile
		}
		rest, ok := strings.CutPrefix(target, "socket:[")
		if !ok {
			continue
		}
		ino, err := strconv.ParseUint(strings.TrimSuffix(rest, "]"), 10, 32)
		if err != nil {
			continue
		}
		inodes[uint32(ino)] = true
	}
	return inodes, nil
}

// diagSocket is a NETLINK_INET_DIAG socket.
type diagSocket struct {
	fd  int
	seq atomic.Uint32
}

type diagEntry struct {
	id     [sizeofSockID]byte // struct inet_diag_sockid as the kernel sent it (cookie included)
	inode  uint32
	family uint8 // AF_INET or AF_INET6
	state  uint8 // TCP state (include/net/tcp_states.h)
}

// openDiag opens a NETLINK_INET_DIAG socket in the network namespace of
// pid. A netlink socket stays in the namespace it was created in, so only
// its creation happens on a thread that entered the namespace; that
// thread is never unlocked and exits with its goroutine.
func openDiag(pid uint32) (*diagSocket, error) {
	var self, target unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &self); err != nil {
		return nil, fmt.Errorf("own network namespace: %w", err)
	}
	nsPath := proc.FS{}.Path(pid, "ns/net")
	if err := unix.Stat(nsPath, &target); err != nil {
		if proc.Gone(err) {
			return nil, ErrGone
		}
		return nil, fmt.Errorf("network namespace: %w", err)
	}
	if self.Dev == target.Dev && self.Ino == target.Ino {
		return newDiagSocket()
	}
	type result struct {
		s   *diagSocket
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ch <- result{err: fmt.Errorf("open network namespace: %w", err)}
			return
		}
		defer unix.Close(ns)
		if err := unix.Setns(ns, unix.CLONE_NEWNET); err != nil {
			ch <- result{err: fmt.Errorf("enter network namespace: %w", err)}
			return
		}
		s, err := newDiagSocket()
		ch <- result{s, err}
	}()
	r := <-ch
	return r.s, r.err
}

func newDiagSocket() (*diagSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("netlink inet_diag socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		_ = unix.Close(fd) // the bind error is the one to report
		return nil, fmt.Errorf("bind netlink socket: %w", err)
	}
	return &diagSocket{fd: fd}, nil
}

func (s *diagSocket) close() { _ = unix.Close(s.fd) }

// send sends one request: a netlink header and an inet_diag_req_v2.
func (s *diagSocket) send(typ, flags uint16, family uint8, states uint32, id *[sizeofSockID]byte) (uint32, error) {
	seq := s.seq.Add(1)
	b := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], typ)
	ne.PutUint16(b[6:], flags)
	ne.PutUint32(b[8:], seq)
	r := b[unix.NLMSG_HDRLEN:]
	r[0] = family
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], states)
	if id != nil {
		copy(r[reqIDOffset:], id[:])
	} else {
		// No cookie: match any socket (INET_DIAG_NOCOOKIE).
		ne.PutUint32(r[reqIDOffset+40:], ^uint32(0))
		ne.PutUint32(r[reqIDOffset+44:], ^uint32(0))
	}
	if err := unix.Sendto(s.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return 0, err
	}
	return seq, nil
}

// receive reads replies to seq and calls fn for each data message until
// NLMSG_DONE, or until the acknowledgement when ack is set.
func (s *diagSocket) receive(seq uint32, ack bool, fn func(data []byte)) error {
	buf := make([]byte, 64<<10)
	ne := binary.NativeEndian
	for {
		n, _, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		b := buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(ne.Uint32(b[0:]))
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return fmt.Errorf("malformed netlink message")
			}
			typ := ne.Uint16(b[4:])
			mseq := ne.Uint32(b[8:])
			data := b[unix.NLMSG_HDRLEN:l]
			b = b[min(nlmsgAlign(l), len(b)):]
			if mseq != seq {
				continue
			}
			switch typ {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(data) < 4 {
					return fmt.Errorf("short netlink error")
				}
				if e := int32(ne.Uint32(data)); e != 0 {
					return unix.Errno(-e)
				}
				if ack {
					return nil
				}
			default:
				fn(data)
			}
		}
	}
}

func nlmsgAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// dump lists the TCP sockets of family in the given states.
func (s *diagSocket) dump(family uint8, states uint32) ([]diagEntry, error) {
	seq, err := s.send(unix.SOCK_DIAG_BY_FAMILY, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, family, states, nil)
	if err != nil {
		return nil, fmt.Errorf("sock_diag dump of family %d: %w", family, err)
	}
	var out []diagEntry
	err = s.receive(seq, false, func(data []byte) {
		if e, ok := parseDiagMsg(data); ok {
			out = append(out, e)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("sock_diag dump of family %d: %w", family, err)
	}
	return out, nil
}

// parseDiagMsg reads a struct inet_diag_msg.
func parseDiagMsg(data []byte) (diagEntry, bool) {
	if len(data) < sizeofInetDiagMsg {
		return diagEntry{}, false
	}
	var e diagEntry
	copy(e.id[:], data[msgIDOffset:msgIDOffset+sizeofSockID])
	e.family, e.state = data[0], data[1] // idiag_family, idiag_state
	e.inode = binary.NativeEndian.Uint32(data[msgInodeOffset:])
	return e, true
}

// destroy destroys the socket with exactly this id (addresses, ports and
// cookie), so a socket that replaced it with the same addresses is safe.
func (s *diagSocket) destroy(family uint8, id [sizeofSockID]byte) error {
	seq, err := s.send(unix.SOCK_DESTROY, unix.NLM_F_REQUEST|unix.NLM_F_ACK, family, ^uint32(0), &id)
	if err != nil {
		return fmt.Errorf("sock_destroy: %w", err)
	}
	if err := s.receive(seq, true, func([]byte) {}); err != nil {
		return fmt.Errorf("sock_destroy: %w", err)
	}
	return nil
}
