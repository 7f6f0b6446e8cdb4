package act

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aarsm/aarsm/agent/internal/proc"
	"github.com/aarsm/aarsm/agent/internal/testenv"
)

// TestDestroySockets: a TLS client blocked in a read on a loopback server
// has its connection destroyed; its read fails with ECONNABORTED, the
// server's read with ECONNRESET, and the client lives on.
func TestDestroySockets(t *testing.T) {
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
			serverErr := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					serverErr <- err
					return
				}
				defer c.Close()
				_, err = c.Read(make([]byte, 1)) // handshake, then wait
				serverErr <- err
			}()

			cg := testenv.NewCgroup(t)
			cmd, lines := helperCmd(t, "hold", tc.network, ln.Addr().String()+","+ca.CAFile)
			if err := cg.Start(cmd); err != nil {
				t.Fatal(err)
			}
			killAtCleanup(t, cmd)
			if l := nextLine(t, lines, 10*time.Second); l != "ready" {
				t.Fatalf("helper: %q", l)
			}
			pid := uint32(cmd.Process.Pid)
			st, err := proc.FS{}.StartTime(pid)
			if err != nil {
				t.Fatal(err)
			}

			start := time.Now()
			n, err := DestroySockets(pid)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("destroyed %d sockets, want 1", n)
			}
			t.Logf("DestroySockets (1 socket, incl. fd walk and the dump): %v", elapsed)

			if l := nextLine(t, lines, 5*time.Second); l != "read ECONNABORTED" {
				t.Fatalf("client: %q, want \"read ECONNABORTED\"", l)
			}
			select {
			case err := <-serverErr:
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("server read: %v, want ECONNRESET", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("server read did not fail")
			}
			// The process lives: same PID, same start time, not a zombie.
			if got, err := (proc.FS{}).StartTime(pid); err != nil || got != st {
				t.Fatalf("client gone: start time %d, %v", got, err)
			}
			if s := procState(t, pid); s == "Z" {
				t.Fatal("client exited")
			}
			// Nothing left to destroy.
			n, err = DestroySockets(pid)
			if err != nil || n != 0 {
				t.Fatalf("second DestroySockets: %d, %v", n, err)
			}
		})
	}
}

// TestBlockSockets: a process that listens, has accepted a loopback
// client's connection and has dialled out (to a loopback server, as a
// proxy would be) loses only its outbound connection to a block; the
// client's connection still carries data both ways. The guard's
// DestroySockets still takes both.
func TestBlockSockets(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ name, network, listen, server string }{
		{"tcp4", "tcp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"tcp6", "tcp6", "[::1]:0", "[::1]:0"},
		// A dual-stack wildcard listener: its IPv4 clients' connections
		// are IPv6 sockets with IPv4-mapped addresses.
		{"wildcard", "tcp", ":0", "127.0.0.1:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := net.Listen("tcp", tc.server)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			serverErr := make(chan error, 1)
			go func() {
				c, err := srv.Accept()
				if err != nil {
					serverErr <- err
					return
				}
				defer c.Close()
				_, err = c.Read(make([]byte, 1))
				serverErr <- err
			}()

			cg := testenv.NewCgroup(t)
			cmd, lines := helperCmd(t, "serve", tc.network, tc.listen+","+srv.Addr().String())
			if err := cg.Start(cmd); err != nil {
				t.Fatal(err)
			}
			killAtCleanup(t, cmd)
			l := nextLine(t, lines, 10*time.Second)
			addr, ok := strings.CutPrefix(l, "ready ")
			if !ok {
				t.Fatalf("helper: %q", l)
			}
			if tc.name == "wildcard" {
				_, port, _ := net.SplitHostPort(addr)
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			client, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			echo := func(msg string) error {
				_ = client.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := client.Write([]byte(msg)); err != nil {
					return err
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(client, got); err != nil {
					return err
				}
				if string(got) != msg {
					return fmt.Errorf("echoed %q, want %q", got, msg)
				}
				return nil
			}
			if err := echo("before\n"); err != nil { // accepted by now
				t.Fatal(err)
			}
			pid := uint32(cmd.Process.Pid)

			cut, err := BlockSockets(pid)
			if err != nil {
				t.Fatal(err)
			}
			if cut != (Cut{Destroyed: 1, Kept: 1}) {
				t.Fatalf("BlockSockets = %+v, want 1 destroyed (outbound) and 1 kept (accepted)", cut)
			}
			if got := cut.Detail(); got != "sockets=1 kept_accepted=1" {
				t.Errorf("Detail %q", got)
			}
			if l := nextLine(t, lines, 5*time.Second); l != "outbound read ECONNABORTED" {
				t.Fatalf("helper: %q, want \"outbound read ECONNABORTED\"", l)
			}
			select {
			case err := <-serverErr:
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Fatalf("server read: %v, want ECONNRESET", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the outbound connection's peer saw no reset")
			}
			if err := echo("after\n"); err != nil {
				t.Fatalf("the accepted connection after the block: %v", err)
			}

			// The guard's DestroySockets keeps nothing.
			n, err := DestroySockets(pid)
			if err != nil || n != 1 {
				t.Fatalf("DestroySockets = %d, %v; want the accepted connection", n, err)
			}
			if err := echo("gone\n"); err == nil {
				t.Fatal("the accepted connection still echoes after DestroySockets")
			}
		})
	}
}

func TestAccepted(t *testing.T) {
	ap := netip.MustParseAddrPort
	listeners := []netip.AddrPort{ap("127.0.0.1:8080"), ap("[::]:9090")}
	for _, tc := range []struct {
		local string
		want  bool
	}{
		{"127.0.0.1:8080", true},
		{"127.0.0.2:8080", false}, // another address, same port: not this listener's
		{"127.0.0.1:9090", true},  // the wildcard
		{"[::1]:9090", true},
		{"127.0.0.1:40000", false}, // an ephemeral port: dialled
	} {
		if got := accepted(ap(tc.local), listeners); got != tc.want {
			t.Errorf("accepted(%s) = %v, want %v", tc.local, got, tc.want)
		}
	}
}

func TestDestroySocketsGone(t *testing.T) {
	cmd, _ := helperCmd(t, "sleep", "", "")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := uint32(cmd.Process.Pid)
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if _, err := DestroySockets(pid); !errors.Is(err, ErrGone) {
		t.Fatalf("DestroySockets of a reaped process: %v, want ErrGone", err)
	}
}

// BenchmarkSockDestroy measures one SOCK_DESTROY request on a loopback
// connection (without the fd walk and dumps).
func BenchmarkSockDestroy(b *testing.B) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Closed once the destroyed client's reset arrives: a
			// benchmark of many iterations must not pile up sockets.
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	s, err := newDiagSocket()
	if err != nil {
		b.Fatal(err)
	}
	defer s.close()
	for b.Loop() {
		b.StopTimer()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		socks, err := s.dump(syscall.AF_INET, destroyStates)
		if err != nil {
			b.Fatal(err)
		}
		var id *diagEntry
		la := c.LocalAddr().(*net.TCPAddr)
		for i := range socks {
			if int(socks[i].id[0])<<8|int(socks[i].id[1]) == la.Port {
				id = &socks[i]
			}
		}
		if id == nil {
			b.Fatal("client socket not in dump")
		}
		b.StartTimer()
		if err := s.destroy(syscall.AF_INET, id.id); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		c.Close()
		b.StartTimer()
	}
}
