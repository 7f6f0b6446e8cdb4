package testenv

import (
	"bytes"
	"net"
	"os/exec"
	"testing"
)

const (
	wgetHint      = "apt-get install -y wget"
	gnutlsCLIHint = "apt-get install -y gnutls-bin"
)

// Wget returns an unstarted wget command (Debian's wget speaks TLS through
// GnuTLS, libgnutls.so.30) that sends req to url+req.Path, verifying the
// server with ca, and prints the response body on stdout. The body goes
// with --body-file; wget adds Host, User-Agent, Accept, Accept-Encoding,
// Connection and Content-Length (and a form Content-Type unless req sets
// one). It exits non-zero on HTTP errors. Chunked and Gzip are not
// supported.
func Wget(t testing.TB, ca *CA, url string, req Request) *exec.Cmd {
	t.Helper()
	bin := requireBinary(t, "wget", wgetHint)
	dir := stateDir(t, "wget-")
	args := []string{bin, "--quiet", "--output-document=-", "--no-config", "--no-proxy", "--tries=1",
		"--timeout=60", "--ca-certificate=" + ca.CAFile, "--method=" + req.method()}
	for _, h := range req.sortedHeaders() {
		args = append(args, "--header="+h[0]+": "+h[1])
	}
	if f := req.writeBodyFile(t, dir); f != "" {
		args = append(args, "--body-file="+f)
	}
	args = append(args, joinURL(url, req.path()))
	cmd := exec.Command(args[0], args[1:]...)
	killOnCleanup(t, cmd)
	return cmd
}

// GnuTLSCLI returns an unstarted gnutls-cli (GnuTLS's own client) that
// connects to addr (an IP address and port), verifies the server with ca,
// writes raw (fed on stdin; do not replace cmd.Stdin) and prints what the
// server sends until the server closes the connection.
func GnuTLSCLI(t testing.TB, ca *CA, addr string, raw []byte) *exec.Cmd {
	t.Helper()
	bin := requireBinary(t, "gnutls-cli", gnutlsCLIHint)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("testenv: bad address %q: %v", addr, err)
	}
	cmd := exec.Command(bin, "--x509cafile="+ca.CAFile, "--port="+port, "--logfile=/dev/null", host)
	cmd.Stdin = bytes.NewReader(raw)
	killOnCleanup(t, cmd)
	return cmd
}
