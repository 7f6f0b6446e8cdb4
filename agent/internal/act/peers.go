package act

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"golang.org/x/sys/unix"
)

// tcpListen is TCP_LISTEN (include/net/tcp_states.h).
const tcpListen = 10

// Peers returns the remote addresses of the outbound TCP connections of
// process pid that can still carry data (established, or half-closed by
// the peer), IPv4 and IPv6 (an IPv4-mapped address is returned as IPv4),
// sorted. Its sockets are found as DestroySockets finds them (its
// /proc/PID/fd against a sock_diag dump of its network namespace); a
// connection whose local port is one the process listens on was accepted,
// not opened, and is left out.
//
// The sensor sees a TLS library's connection object, not its socket:
// Peers is how the agent tells where a write was going, when the process's
// connections leave no doubt.
func Peers(pid uint32) ([]netip.AddrPort, error) {
	inodes, err := socketInodes(pid)
	if err != nil {
		return nil, fmt.Errorf("peers of pid %d: %w", pid, err)
	}
	if len(inodes) == 0 {
		return nil, nil
	}
	s, err := openDiag(pid)
	if err != nil {
		return nil, fmt.Errorf("peers of pid %d: %w", pid, err)
	}
	defer s.close()
	socks, err := s.dumpBoth(peerStates)
	if err != nil {
		return nil, fmt.Errorf("peers of pid %d: %w", pid, err)
	}
	var conns []diagEntry
	listening := map[uint16]bool{}
	for _, sk := range socks {
		if !inodes[sk.inode] {
			continue
		}
		if sk.state == tcpListen {
			listening[sk.localPort()] = true
		} else {
			conns = append(conns, sk)
		}
	}
	var out []netip.AddrPort
	for _, c := range conns {
		if !listening[c.localPort()] {
			out = append(out, c.remote())
		}
	}
	slices.SortFunc(out, netip.AddrPort.Compare)
	return out, nil
}

// peerStates are the TCP states Peers asks for.
const peerStates = 1<<tcpEstablished | 1<<tcpCloseWait | 1<<tcpListen

// tcpDiagGetSock is TCPDIAG_GETSOCK, the request of the first inet_diag
// interface (struct inet_diag_req), which the kernel still answers.
const (
	tcpDiagGetSock    = 18
	sizeofInetDiagReq = 60 // family, src_len, dst_len, ext, sockid, states, dbs
)

// dumpBoth lists the TCP sockets of both families in the given states. The
// kernel walks its whole TCP hash table for each dump (about a millisecond
// with 262,144 buckets, however few the sockets), so it asks with
// TCPDIAG_GETSOCK, whose dump covers both families in one walk; a kernel
// that refuses it is asked once per family.
func (s *diagSocket) dumpBoth(states uint32) ([]diagEntry, error) {
	seq := s.seq.Add(1)
	b := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReq)
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], tcpDiagGetSock)
	ne.PutUint16(b[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(b[8:], seq)
	r := b[unix.NLMSG_HDRLEN:]
	r[0] = unix.AF_INET // ignored by the dump: both families come
	id := r[4 : 4+sizeofSockID]
	ne.PutUint32(id[40:], ^uint32(0)) // no cookie (INET_DIAG_NOCOOKIE)
	ne.PutUint32(id[44:], ^uint32(0))
	ne.PutUint32(r[4+sizeofSockID:], states)
	var out []diagEntry
	err := unix.Sendto(s.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	if err == nil {
		err = s.receive(seq, false, func(data []byte) {
			if e, ok := parseDiagMsg(data); ok {
				out = append(out, e)
			}
		})
	}
	if err == nil {
		return out, nil
	}
	out = out[:0]
	var errs []error
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := s.dump(family, states)
		if err != nil {
			errs = append(errs, err)
		}
		out = append(out, socks...)
	}
	return out, errors.Join(errs...)
}

// The fields of struct inet_diag_sockid: __be16 sport, dport; __be32
// src[4], dst[4]; then the interface and the cookie.
func (e diagEntry) localPort() uint16 { return uint16(e.id[0])<<8 | uint16(e.id[1]) }

// local is the socket's local address and port (an IPv4-mapped address as
// IPv4).
func (e diagEntry) local() netip.AddrPort {
	src := [16]byte(e.id[4:20])
	if e.family == unix.AF_INET {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(src[:4])), e.localPort())
	}
	return netip.AddrPortFrom(netip.AddrFrom16(src).Unmap(), e.localPort())
}

func (e diagEntry) remote() netip.AddrPort {
	port := uint16(e.id[2])<<8 | uint16(e.id[3])
	dst := [16]byte(e.id[20:36])
	if e.family == unix.AF_INET {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(dst[:4])), port)
	}
	return netip.AddrPortFrom(netip.AddrFrom16(dst).Unmap(), port)
}
