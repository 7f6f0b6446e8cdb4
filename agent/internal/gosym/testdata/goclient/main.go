// A tiny TLS client that gotls_test.go builds with each Go toolchain it
// can get: "get URL" is an HTTPS GET through net/http; "pipe MARKER"
// writes MARKER over crypto/tls to a server in the same process, on
// net.Pipe (no network), which reads it with one Read. It must build with
// Go 1.16: no generics, io/ioutil.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io/ioutil"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "get" {
		resp, err := http.Get(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		b, _ := ioutil.ReadAll(resp.Body)
		fmt.Println(resp.Status, len(b))
		return
	}
	if len(os.Args) != 3 || os.Args[1] != "pipe" {
		fmt.Fprintln(os.Stderr, "usage: tlsclient get URL | pipe MARKER")
		os.Exit(2)
	}
	if err := pipe(os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// pipe writes marker over TLS to a server in this process, on net.Pipe.
func pipe(marker string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	a, b := net.Pipe()
	done := make(chan error, 1)
	go func() {
		srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{cert}})
		buf := make([]byte, 4096)
		n, err := srv.Read(buf)
		if err == nil && string(buf[:n]) != marker {
			err = fmt.Errorf("server read %q", buf[:n])
		}
		// No Close: its close_notify would wait on the pipe for 5 s.
		done <- err
	}()
	cli := tls.Client(b, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
	if _, err := cli.Write([]byte(marker)); err != nil {
		return err
	}
	if err := <-done; err != nil {
		return err
	}
	fmt.Println("ok")
	return nil
}
