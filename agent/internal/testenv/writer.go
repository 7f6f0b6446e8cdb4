package testenv

import (
	"crypto/tls"
	_ "embed"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

//go:embed testdata/writer.c
var writerSource []byte

//go:embed testdata/gnutls_writer.c
var gnutlsWriterSource []byte

// CWriter compiles testdata/writer.c, a TLS client on the system's libssl that
// writes COUNT records of SIZE bytes at RATE per second and prints the mean
// nanoseconds per SSL_write (usage: writer PORT COUNT SIZE RATE). It needs
// a C compiler (clang, or cc) and libssl.so.3, no OpenSSL headers.
func CWriter(t testing.TB) string {
	t.Helper()
	cc := "clang"
	if _, err := exec.LookPath(cc); err != nil {
		cc = "cc"
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "writer.c")
	if err := os.WriteFile(src, writerSource, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "writer")
	if msg, err := exec.Command(cc, "-O2", "-o", out, src, "-l:libssl.so.3").CombinedOutput(); err != nil {
		t.Fatalf("testenv: compile writer.c with %s: %v (apt-get install -y clang libssl3)\n%s", cc, err, msg)
	}
	return out
}

// GnuTLSWriter compiles testdata/gnutls_writer.c, CWriter's twin on the
// system's libgnutls.so.30 (usage: gnutls_writer PORT COUNT SIZE RATE; it
// prints the mean nanoseconds per gnutls_record_send). It needs a C
// compiler and libgnutls30, no GnuTLS headers.
func GnuTLSWriter(t testing.TB) string {
	t.Helper()
	cc := "clang"
	if _, err := exec.LookPath(cc); err != nil {
		cc = "cc"
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "gnutls_writer.c")
	if err := os.WriteFile(src, gnutlsWriterSource, 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "gnutls_writer")
	if msg, err := exec.Command(cc, "-O2", "-o", out, src, "-l:libgnutls.so.30").CombinedOutput(); err != nil {
		t.Fatalf("testenv: compile gnutls_writer.c with %s: %v (apt-get install -y clang libgnutls30)\n%s", cc, err, msg)
	}
	return out
}

// NewDiscardServer accepts TLS connections on loopback, reads and drops
// everything, and returns its port.
func NewDiscardServer(t testing.TB, ca *CA) string {
	t.Helper()
	ln, err := tls.Listen("tcp4", "127.0.0.1:0", ca.ServerTLSConfig())
	if err != nil {
		t.Fatalf("testenv: listen on loopback: %v", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("testenv: accept: %v", err)
				}
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetDeadline(time.Now().Add(connTimeout * 5))
				_, _ = io.Copy(io.Discard, c)
				_ = c.Close() // everything read was dropped anyway
			}()
		}
	}()
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}
