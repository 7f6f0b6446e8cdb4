package enforce

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// httpsPort is the port of an https URI that names none (RFC 9110 section
// 4.2.2): what a Host header without a port means on a TLS connection.
const httpsPort = "443"

// smtpPorts are the ports of SMTP relay and submission (25, 465 for
// implicit TLS, 587).
var smtpPorts = []uint16{25, 465, 587}

// addressedDest returns AARSM_DEST for an HTTP request: the destination
// its Host header (or HTTP/2 :authority) addresses, as host:port. A Host
// without a port gets 443: every request the agent sees travels over TLS,
// and there the Host "api.example" means api.example:443. A Host that is
// not host[:port] is kept as sent; an empty one gives "".
func addressedDest(host string) string {
	if host == "" {
		return ""
	}
	if h, p, err := net.SplitHostPort(host); err == nil {
		if p == "" {
			return net.JoinHostPort(h, httpsPort)
		}
		return host
	}
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")); err == nil {
		return net.JoinHostPort(a.String(), httpsPort)
	}
	if strings.ContainsAny(host, ":[]") {
		return host // not host[:port]
	}
	return net.JoinHostPort(host, httpsPort)
}

// choosePeer picks, among peers (the process's outbound TCP connections,
// act.Peers), the one a message addressed to dest (AARSM_DEST, "" when
// the message names none, as over SMTP) was written to, when there is no
// doubt: the only one whose remote port is dest's (and address too, when
// dest's host is an IP address); else the process's only connection (a
// proxy, a tunnel); for a message naming no destination, the only one, or
// the only one on an SMTP port. Otherwise it returns the zero AddrPort.
func choosePeer(dest string, peers []netip.AddrPort) netip.AddrPort {
	var match func(netip.AddrPort) bool
	if h, p, err := net.SplitHostPort(dest); err == nil {
		port, perr := strconv.ParseUint(p, 10, 16)
		addr, aerr := netip.ParseAddr(h)
		match = func(ap netip.AddrPort) bool {
			return perr == nil && uint64(ap.Port()) == port && (aerr != nil || ap.Addr() == addr.Unmap())
		}
	} else {
		match = func(ap netip.AddrPort) bool { return dest == "" && slices.Contains(smtpPorts, ap.Port()) }
	}
	var found netip.AddrPort
	n := 0
	for _, ap := range peers {
		if match(ap) {
			found = ap
			n++
		}
	}
	switch {
	case n == 1:
		return found
	case n == 0 && len(peers) == 1:
		return peers[0]
	}
	return netip.AddrPort{}
}
