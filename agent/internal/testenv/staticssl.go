package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

const staticSSLHint = "apt-get install -y gcc libssl-dev"

// staticSSLClient is a TLS client in C: it connects to 127.0.0.1:PORT,
// verifies the server with CAFILE, writes the request it reads from the
// file REQUEST with SSL_write, reads the response to the end, then waits
// for its stdin to close before it exits (so that a test can look at the
// running process).
const staticSSLClient = `
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 4) {
		fprintf(stderr, "usage: %s PORT CAFILE REQUEST\n", argv[0]);
		return 2;
	}
	static char req[65536], buf[16384];
	FILE *f = fopen(argv[3], "rb");
	if (!f) { perror("request"); return 2; }
	size_t n = fread(req, 1, sizeof(req), f);
	fclose(f);
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1) { ERR_print_errors_fp(stderr); return 1; }
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) { perror("connect"); return 1; }
	SSL *ssl = SSL_new(ctx);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) != 1 || SSL_write(ssl, req, (int)n) != (int)n) { ERR_print_errors_fp(stderr); return 1; }
	int r;
	while ((r = SSL_read(ssl, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, r, stdout);
	fflush(stdout);
	while (read(0, buf, sizeof(buf)) > 0)
		;
	return 0;
}
`

// StaticOpenSSLClient builds, with gcc, a TLS client linked statically
// against Debian's libssl.a and libcrypto.a and stripped: it carries
// OpenSSL but exports no SSL_write, so no probe can be attached by
// symbol (what AARSM reports as unmonitored). It returns the binary's
// path; run it as StaticOpenSSLCommand does.
func StaticOpenSSLClient(t testing.TB) string {
	t.Helper()
	gcc := requireBinary(t, "gcc", staticSSLHint)
	dir := t.TempDir()
	src := filepath.Join(dir, "tlsclient.c")
	if err := os.WriteFile(src, []byte(staticSSLClient), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tlsclient")
	var out bytes.Buffer
	cmd := exec.Command(gcc, "-O2", "-s", "-o", bin, src, "-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-ldl", "-lpthread")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv: build a static OpenSSL client (%s): %v\n%s", staticSSLHint, err, out.Bytes())
	}
	return bin
}

// StaticOpenSSLCommand returns an unstarted command of the client bin
// (StaticOpenSSLClient) that sends raw to 127.0.0.1:port, verifying the
// server with ca; it exits once its stdin closes (NewGate, or a pipe).
func StaticOpenSSLCommand(t testing.TB, bin string, ca *CA, port int, raw []byte) *exec.Cmd {
	t.Helper()
	f := filepath.Join(stateDir(t, "static-ssl-"), "request")
	if err := writeFile(f, raw); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(bin, strconv.Itoa(port), ca.CAFile, f)
	killOnCleanup(t, cmd)
	return cmd
}
