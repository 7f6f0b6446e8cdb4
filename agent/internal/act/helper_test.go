package act

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The test binary doubles as the client processes the tests act on: with
// AARSM_ACT_HELPER set, TestMain runs a helper instead of the tests.
const helperEnv = "AARSM_ACT_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(runHelper(mode, os.Args[len(os.Args)-2:]))
	}
	os.Exit(m.Run())
}

// errnoName names the errno in err, or returns err's text.
func errnoName(err error) string {
	var errno syscall.Errno
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &errno):
		switch errno {
		case syscall.EPERM:
			return "EPERM"
		case syscall.ECONNABORTED:
			return "ECONNABORTED"
		case syscall.ECONNRESET:
			return "ECONNRESET"
		case syscall.ECONNREFUSED:
			return "ECONNREFUSED"
		}
		return errno.Error()
	case errors.Is(err, io.EOF):
		return "EOF"
	}
	return err.Error()
}

// runHelper: args are [network address, extra].
//
//	sleep:   sleeps.
//	connect: dials TCP once, prints "ok" or the errno name, exits 0.
//	udp:     sends one UDP datagram with sendto, prints the result.
//	hold:    TLS-dials (address "host:port,CA file"), prints "ready", blocks in Read,
//	         prints "read <errno name>" when it fails, then sleeps.
//	serve:   listens (address "listen address,address to dial"), dials
//	         out, prints "ready <listening address>", echoes the lines of
//	         the connections it accepts, prints "outbound read <errno
//	         name>" when its read on the dialled one fails, then sleeps.
func runHelper(mode string, args []string) int {
	network, addr := args[0], args[1]
	switch mode {
	case "sleep":
		time.Sleep(time.Hour)
	case "connect":
		c, err := net.DialTimeout(network, addr, 3*time.Second)
		if err == nil {
			c.Close()
		}
		fmt.Println(errnoName(err))
	case "udp":
		c, err := net.ListenUDP(network, nil)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		ua, err := net.ResolveUDPAddr(network, addr)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		_, err = c.WriteToUDP([]byte("x"), ua)
		fmt.Println(errnoName(err))
	case "hold":
		server, caFile, _ := strings.Cut(addr, ",")
		caPEM, err := os.ReadFile(caFile)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		c, err := tls.Dial(network, server, &tls.Config{RootCAs: pool})
		if err != nil {
			fmt.Println("dial", err)
			return 1
		}
		if err := c.Handshake(); err != nil {
			fmt.Println("handshake", err)
			return 1
		}
		fmt.Println("ready")
		_, err = c.Read(make([]byte, 1))
		fmt.Println("read", errnoName(err))
		time.Sleep(time.Hour)
	case "serve":
		return serveHelper(network, addr)
	default:
		return 2
	}
	return 0
}

func serveHelper(network, addr string) int {
	listen, dial, _ := strings.Cut(addr, ",")
	ln, err := net.Listen(network, listen)
	if err != nil {
		fmt.Println("listen", err)
		return 1
	}
	c, err := net.Dial("tcp", dial)
	if err != nil {
		fmt.Println("dial", err)
		return 1
	}
	go func() {
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(a, a) }()
		}
	}()
	fmt.Println("ready", ln.Addr())
	_, err = c.Read(make([]byte, 1))
	fmt.Println("outbound read", errnoName(err))
	time.Sleep(time.Hour)
	return 0
}

// helperCmd returns an unstarted helper command with its stdout on a
// pipe read line by line through the returned channel.
func helperCmd(t *testing.T, mode, network, arg string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", network, arg)
	cmd.Env = append(os.Environ(), helperEnv+"="+mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return cmd, lines
}

// killAtCleanup kills and reaps cmd (by PID) when the test ends.
func killAtCleanup(t *testing.T, cmd *exec.Cmd) {
	t.Cleanup(func() {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
}

func nextLine(t *testing.T, lines <-chan string, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("helper exited without output")
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("no line from helper within %v", timeout)
	}
	return ""
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

func itoa(v uint32) string { return fmt.Sprint(v) }
