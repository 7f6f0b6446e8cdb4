// A TLS client on the system's libssl for the benchmarks: connects to
// 127.0.0.1:PORT, writes COUNT records of SIZE bytes ("x"...; never a
// request, so never held), RATE per second at most (0: as fast as it can),
// and prints the mean nanoseconds per SSL_write. No OpenSSL headers are
// needed: the few functions used are declared here.
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_method_st SSL_METHOD;
extern const SSL_METHOD *TLS_client_method(void);
extern SSL_CTX *SSL_CTX_new(const SSL_METHOD *method);
extern SSL *SSL_new(SSL_CTX *ctx);
extern int SSL_set_fd(SSL *ssl, int fd);
extern int SSL_connect(SSL *ssl);
extern int SSL_write(SSL *ssl, const void *buf, int num);

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: writer PORT COUNT SIZE RATE\n");
		return 2;
	}
	int port = atoi(argv[1]), size = atoi(argv[3]);
	long count = atol(argv[2]), rate = atol(argv[4]);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
		perror("connect");
		return 1;
	}
	SSL *ssl = SSL_new(SSL_CTX_new(TLS_client_method()));
	if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1) {
		fprintf(stderr, "TLS handshake failed\n");
		return 1;
	}
	char *buf = malloc(size);
	memset(buf, 'x', size);
	for (int i = 0; i < 1000; i++)
		SSL_write(ssl, buf, size);
	double start = now(), busy = 0;
	for (long i = 0; i < count; i++) {
		if (rate > 0) {
			double due = start + i * 1e9 / rate;
			while (now() < due)
				usleep(50);
		}
		double t0 = now();
		if (SSL_write(ssl, buf, size) != size) {
			fprintf(stderr, "SSL_write failed\n");
			return 1;
		}
		busy += now() - t0;
	}
	printf("%.1f\n", busy / count);
	return 0;
}
