package egress

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// Host names are kept in step with DNS by the agent itself: net.Resolver
// gives no TTLs, so DNSClient asks the name servers of /etc/resolv.conf
// directly (A and AAAA over UDP, TCP when the answer is truncated) and
// each address is refreshed when its TTL ends. Names in /etc/hosts are
// taken from there first, as the C library does with "hosts: files dns",
// and read again every HostsTTL.

// Answer is one address of a name and how long it may be cached.
type Answer struct {
	Addr netip.Addr
	TTL  time.Duration
}

// Resolver resolves a host name to its addresses with their TTLs.
type Resolver interface {
	Resolve(ctx context.Context, host string) ([]Answer, error)
}

// ErrNoAnswer is returned for a name that has no address (NXDOMAIN or no
// A/AAAA record).
var ErrNoAnswer = errors.New("no address")

// HostsTTL is the TTL given to an address read from the hosts file.
const HostsTTL = 30 * time.Second

// maxDNSMessage bounds a DNS answer read (UDP or TCP).
const maxDNSMessage = 8192

// DNSClient is a minimal, bounded DNS stub resolver.
type DNSClient struct {
	// Servers are name servers as "address:port", tried in order.
	Servers []string
	// HostsFile, if set, is read before asking DNS (e.g. "/etc/hosts").
	HostsFile string
	// Timeout bounds each query; 0 means 2 s.
	Timeout time.Duration
	id      atomic.Uint32
}

// SystemResolver returns a DNSClient for the name servers of
// /etc/resolv.conf (127.0.0.1:53 if it names none, as the C library does)
// and /etc/hosts.
func SystemResolver() (*DNSClient, error) {
	servers, err := ReadResolvConf("/etc/resolv.conf")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if len(servers) == 0 {
		servers = []string{"127.0.0.1:53"}
	}
	return &DNSClient{Servers: servers, HostsFile: "/etc/hosts"}, nil
}

// ReadResolvConf returns the "nameserver" entries of a resolv.conf as
// address:53 (at most 3, as the C library reads).
func ReadResolvConf(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(io.LimitReader(f, 64<<10))
	for sc.Scan() && len(out) < 3 {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 || fields[0] != "nameserver" {
			continue
		}
		a, err := netip.ParseAddr(fields[1])
		if err != nil {
			continue
		}
		out = append(out, netip.AddrPortFrom(a, 53).String())
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read resolv.conf: %w", err)
	}
	return out, nil
}

// Resolve returns the IPv4 and IPv6 addresses of host.
func (c *DNSClient) Resolve(ctx context.Context, host string) ([]Answer, error) {
	if c.HostsFile != "" {
		if addrs := lookupHostsFile(c.HostsFile, host); len(addrs) > 0 {
			out := make([]Answer, 0, len(addrs))
			for _, a := range addrs {
				out = append(out, Answer{Addr: a, TTL: HostsTTL})
			}
			return out, nil
		}
	}
	if len(c.Servers) == 0 {
		return nil, fmt.Errorf("resolve %s: no name server", host)
	}
	var errs []error
	for _, srv := range c.Servers {
		var out []Answer
		var nx int
		var failed error
		for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
			ans, err := c.query(ctx, srv, host, qt)
			switch {
			case errors.Is(err, ErrNoAnswer):
				nx++
			case err != nil:
				failed = err
			}
			out = append(out, ans...)
		}
		if failed == nil && len(out) > 0 {
			return out, nil
		}
		if failed == nil && nx == 2 {
			return nil, fmt.Errorf("resolve %s: %w", host, ErrNoAnswer)
		}
		if failed != nil {
			errs = append(errs, failed)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("resolve %s: %w", host, errors.Join(errs...))
}

func (c *DNSClient) query(ctx context.Context, server, host string, qt dnsmessage.Type) ([]Answer, error) {
	name, err := dnsmessage.NewName(strings.TrimSuffix(host, ".") + ".")
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", host, err)
	}
	id := uint16(c.id.Add(1))
	b := dnsmessage.NewBuilder(make([]byte, 2, 514), dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, fmt.Errorf("query %s: %w", host, err)
	}
	if err := b.Question(dnsmessage.Question{Name: name, Type: qt, Class: dnsmessage.ClassINET}); err != nil {
		return nil, fmt.Errorf("query %s: %w", host, err)
	}
	msg, err := b.Finish()
	if err != nil {
		return nil, fmt.Errorf("query %s: %w", host, err)
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2)) // the TCP length prefix
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := exchange(ctx, "udp", server, msg[2:], id)
	if err == nil && resp.Truncated {
		resp, err = exchange(ctx, "tcp", server, msg, id)
	}
	if err != nil {
		return nil, fmt.Errorf("query %s %s at %s: %w", host, qt, server, err)
	}
	if resp.RCode == dnsmessage.RCodeNameError {
		return nil, ErrNoAnswer
	}
	if resp.RCode != dnsmessage.RCodeSuccess {
		return nil, fmt.Errorf("query %s %s at %s: %s", host, qt, server, resp.RCode)
	}
	var out []Answer
	for _, rr := range resp.Answers {
		ttl := time.Duration(rr.Header.TTL) * time.Second
		switch body := rr.Body.(type) {
		case *dnsmessage.AResource:
			if qt == dnsmessage.TypeA {
				out = append(out, Answer{Addr: netip.AddrFrom4(body.A), TTL: ttl})
			}
		case *dnsmessage.AAAAResource:
			if qt == dnsmessage.TypeAAAA {
				out = append(out, Answer{Addr: netip.AddrFrom16(body.AAAA), TTL: ttl})
			}
		}
	}
	if len(out) == 0 {
		return nil, ErrNoAnswer
	}
	return out, nil
}

// exchange sends one query (with its 2-byte length prefix over TCP) and
// reads the answer with the same id.
func exchange(ctx context.Context, network, server string, msg []byte, id uint16) (*dnsmessage.Message, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, server)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write(msg); err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	buf := make([]byte, maxDNSMessage)
	for {
		var n int
		if network == "tcp" {
			var l [2]byte
			if _, err := io.ReadFull(conn, l[:]); err != nil {
				return nil, fmt.Errorf("read: %w", err)
			}
			size := int(binary.BigEndian.Uint16(l[:]))
			if size > len(buf) {
				return nil, fmt.Errorf("answer of %d bytes is over %d", size, len(buf))
			}
			if n, err = io.ReadFull(conn, buf[:size]); err != nil {
				return nil, fmt.Errorf("read: %w", err)
			}
		} else if n, err = conn.Read(buf); err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		var m dnsmessage.Message
		if err := m.Unpack(buf[:n]); err != nil || m.ID != id || !m.Response {
			if network == "tcp" {
				return nil, fmt.Errorf("bad answer: %w", err)
			}
			continue // a stray or forged datagram: wait for ours until the deadline
		}
		return &m, nil
	}
}

// lookupHostsFile returns the addresses a hosts file gives name.
func lookupHostsFile(path, name string) []netip.Addr {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil || a.Zone() != "" {
			continue
		}
		for _, h := range fields[1:] {
			if strings.EqualFold(strings.TrimSuffix(h, "."), name) {
				out = append(out, a.Unmap())
				break
			}
		}
	}
	return out
}
