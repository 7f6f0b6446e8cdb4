package egress

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsServer is a real DNS server on loopback (UDP and TCP on one port)
// whose answers a test changes: the resolver the agent uses is tested
// against it, with TTLs, NXDOMAIN and truncation.
type dnsServer struct {
	addr    string
	mu      sync.Mutex
	answers map[string][]Answer // name with its final dot
	queries atomic.Int64
}

func newDNSServer(t *testing.T) *dnsServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	s := &dnsServer{addr: pc.LocalAddr().String(), answers: map[string][]Answer{}}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if out := s.answer(buf[:n], true); out != nil {
				_, _ = pc.WriteTo(out, from)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				out := s.answer(q, false)
				binary.BigEndian.PutUint16(l[:], uint16(len(out)))
				_, _ = c.Write(append(l[:], out...))
			}()
		}
	}()
	t.Cleanup(func() { pc.Close(); ln.Close(); wg.Wait() })
	return s
}

func (s *dnsServer) set(name string, ans ...Answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers[name+"."] = ans
}

// answer builds the answer to query q; "big.test." is truncated over UDP.
func (s *dnsServer) answer(q []byte, udp bool) []byte {
	s.queries.Add(1)
	var m dnsmessage.Message
	if err := m.Unpack(q); err != nil || len(m.Questions) != 1 {
		return nil
	}
	qq := m.Questions[0]
	name := qq.Name.String()
	s.mu.Lock()
	ans, known := s.answers[name]
	s.mu.Unlock()
	h := dnsmessage.Header{ID: m.ID, Response: true, RecursionAvailable: true}
	if !known {
		h.RCode = dnsmessage.RCodeNameError
	}
	if udp && name == "big.test." {
		h.Truncated = true
		ans = nil
	}
	b := dnsmessage.NewBuilder(nil, h)
	_ = b.StartQuestions()
	_ = b.Question(qq)
	_ = b.StartAnswers()
	for _, a := range ans {
		rh := dnsmessage.ResourceHeader{Name: qq.Name, Class: dnsmessage.ClassINET, TTL: uint32(a.TTL / time.Second)}
		switch {
		case a.Addr.Is4() && qq.Type == dnsmessage.TypeA:
			_ = b.AResource(rh, dnsmessage.AResource{A: a.Addr.As4()})
		case a.Addr.Is6() && qq.Type == dnsmessage.TypeAAAA:
			_ = b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: a.Addr.As16()})
		}
	}
	out, _ := b.Finish()
	return out
}

func TestDNSClient(t *testing.T) {
	srv := newDNSServer(t)
	srv.set("mail.test", Answer{netip.MustParseAddr("192.0.2.7"), 300 * time.Second}, Answer{netip.MustParseAddr("2001:db8::7"), 60 * time.Second})
	srv.set("big.test", Answer{netip.MustParseAddr("192.0.2.8"), 30 * time.Second})
	srv.set("empty.test")
	c := &DNSClient{Servers: []string{srv.addr}, Timeout: time.Second}
	ctx := context.Background()

	got, err := c.Resolve(ctx, "mail.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []Answer{{netip.MustParseAddr("192.0.2.7"), 300 * time.Second}, {netip.MustParseAddr("2001:db8::7"), 60 * time.Second}}
	if !slices.Equal(got, want) {
		t.Errorf("mail.test: %v, want %v", got, want)
	}
	// Truncated over UDP: asked again over TCP.
	if got, err := c.Resolve(ctx, "big.test"); err != nil || len(got) != 1 || got[0].Addr != netip.MustParseAddr("192.0.2.8") {
		t.Errorf("big.test: %v %v", got, err)
	}
	for _, name := range []string{"nowhere.test", "empty.test"} {
		if _, err := c.Resolve(ctx, name); !errors.Is(err, ErrNoAnswer) {
			t.Errorf("%s: %v, want ErrNoAnswer", name, err)
		}
	}
	// A server that does not answer: an error within the timeout.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	c2 := &DNSClient{Servers: []string{dead.LocalAddr().String()}, Timeout: 200 * time.Millisecond}
	start := time.Now()
	if _, err := c2.Resolve(ctx, "mail.test"); err == nil || errors.Is(err, ErrNoAnswer) {
		t.Errorf("silent server: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("silent server took %v", d)
	}
}

func TestHostsFileFirst(t *testing.T) {
	p := t.TempDir() + "/hosts"
	if err := writeFile(p, "127.0.0.1 localhost\n# comment\n10.9.8.7 Mail.Test other # trailing\n::1 ip6-localhost mail.test\n"); err != nil {
		t.Fatal(err)
	}
	c := &DNSClient{HostsFile: p}
	got, err := c.Resolve(context.Background(), "mail.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Addr != netip.MustParseAddr("10.9.8.7") || got[1].Addr != netip.IPv6Loopback() || got[0].TTL != HostsTTL {
		t.Errorf("got %v", got)
	}
}

func TestReadResolvConf(t *testing.T) {
	p := t.TempDir() + "/resolv.conf"
	if err := writeFile(p, "search x\nnameserver 127.0.0.53\nnameserver ::1\nnameserver bogus\noptions edns0\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n"); err != nil {
		t.Fatal(err)
	}
	got, err := ReadResolvConf(p)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"127.0.0.53:53", "[::1]:53", "10.0.0.1:53"}) {
		t.Errorf("got %v", got)
	}
}

// An address DNS stops giving stays allowed for the grace period after
// its TTL; a failed resolution drops nothing early; a TTL of 0 does not
// make the agent ask in a loop.
func TestNamesRefreshAndGrace(t *testing.T) {
	n := newNames(time.Minute, MinRefresh)
	t0 := time.Unix(1000, 0)
	n.setHosts([]string{"mail.test"}, t0)
	if d := n.due(t0); !slices.Equal(d, []string{"mail.test"}) {
		t.Fatalf("due %v", d)
	}
	a1, a2 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	if !n.update("mail.test", []Answer{{a1, 30 * time.Second}}, nil, t0) {
		t.Error("first answer: no change")
	}
	if next := n.nextDue(); !next.Equal(t0.Add(30 * time.Second)) {
		t.Errorf("next %v", next)
	}
	// DNS moved to a2.
	t1 := t0.Add(30 * time.Second)
	n.update("mail.test", []Answer{{a2, 0}}, nil, t1)
	if got := n.addrs("mail.test"); !slices.Equal(got, []netip.Addr{a1, a2}) {
		t.Errorf("during grace: %v", got)
	}
	if next := n.nextDue(); !next.Equal(t1.Add(MinRefresh)) {
		t.Errorf("TTL 0 refreshed at %v, want %v", next, t1.Add(MinRefresh))
	}
	// a1's TTL ended at t0+30s; its grace at t0+90s.
	t2 := t0.Add(91 * time.Second)
	n.update("mail.test", nil, errors.New("timeout"), t2)
	if got := n.addrs("mail.test"); !slices.Equal(got, []netip.Addr{}) && !slices.Equal(got, []netip.Addr{a2}) {
		t.Errorf("after a1's grace: %v", got)
	}
	if got := n.addrs("mail.test"); slices.Contains(got, a1) {
		t.Errorf("a1 kept after its grace: %v", got)
	}
	if next := n.nextDue(); !next.Equal(t2.Add(RetryAfter)) {
		t.Errorf("retry at %v", next)
	}
	n.setHosts(nil, t2)
	if len(n.hosts) != 0 {
		t.Error("host kept after it left the policies")
	}
}
