package act

import (
	"crypto/tls"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// TestPeers: a TLS client of a loopback server has that server as its one
// peer, over IPv4 and IPv6.
func TestPeers(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ network, addr string }{
		{"tcp4", "127.0.0.1:0"},
		{"tcp6", "[::1]:0"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			ca := testenv.NewCA(t)
			ln, err := tls.Listen(tc.network, tc.addr, ca.ServerTLSConfig())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				_, _ = c.Read(make([]byte, 1))
			}()
			cmd, lines := helperCmd(t, "hold", tc.network, ln.Addr().String()+","+ca.CAFile)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			killAtCleanup(t, cmd)
			if l := nextLine(t, lines, 10*time.Second); l != "ready" {
				t.Fatalf("helper: %q", l)
			}
			got, err := Peers(uint32(cmd.Process.Pid))
			if err != nil {
				t.Fatal(err)
			}
			want := []netip.AddrPort{netip.MustParseAddrPort(ln.Addr().String())}
			if !slices.Equal(got, want) {
				t.Fatalf("Peers = %v, want %v", got, want)
			}
		})
	}
}

// TestPeersLeaveAcceptedOut: a process that both serves and dials has
// only its dialled connection as a peer, not the one it accepted.
func TestPeersLeaveAcceptedOut(t *testing.T) {
	testenv.RequireRoot(t)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s := <-accepted
	defer s.Close()
	got, err := Peers(uint32(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	server := netip.MustParseAddrPort(ln.Addr().String())
	client := netip.MustParseAddrPort(c.LocalAddr().String())
	if !slices.Contains(got, server) || slices.Contains(got, client) {
		t.Fatalf("Peers = %v, want %v among them and not %v", got, server, client)
	}
}

// TestDumpBoth: the one-walk dump has the sockets of both families, as
// the per-family dumps do.
func TestDumpBoth(t *testing.T) {
	testenv.RequireRoot(t)
	want := map[netip.AddrPort]bool{}
	for _, network := range []string{"tcp4", "tcp6"} {
		ln, err := net.Listen(network, map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() }) // open until the dumps below
		want[netip.MustParseAddrPort(ln.Addr().String())] = true
	}
	s, err := newDiagSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	both, err := s.dumpBoth(1 << tcpListen)
	if err != nil {
		t.Fatal(err)
	}
	var perFamily []diagEntry
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		socks, err := s.dump(family, 1<<tcpListen)
		if err != nil {
			t.Fatal(err)
		}
		perFamily = append(perFamily, socks...)
	}
	local := func(l []diagEntry) map[netip.AddrPort]bool {
		m := map[netip.AddrPort]bool{}
		for _, e := range l {
			src := [16]byte(e.id[4:20])
			a := netip.AddrFrom16(src).Unmap()
			if e.family == unix.AF_INET {
				a = netip.AddrFrom4([4]byte(src[:4]))
			}
			m[netip.AddrPortFrom(a, e.localPort())] = true
		}
		return m
	}
	got, ref := local(both), local(perFamily)
	for ap := range want {
		if !got[ap] || !ref[ap] {
			t.Errorf("listener %s: in the one-walk dump %v, in the per-family dumps %v", ap, got[ap], ref[ap])
		}
	}
}

func TestPeersOfAGoneProcess(t *testing.T) {
	if _, err := Peers(1 << 30); err == nil {
		t.Fatal("no error for a process that does not exist")
	}
}

// BenchmarkPeers: what a recorded verdict adds to the hold, for a process
// with one connection.
func BenchmarkPeers(b *testing.B) {
	testenv.RequireRoot(b)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for b.Loop() {
		if _, err := Peers(uint32(os.Getpid())); err != nil {
			b.Fatal(err)
		}
	}
}
