// A TLS client on the system's libgnutls for the benchmarks: connects to
// 127.0.0.1:PORT, writes COUNT records of SIZE bytes ("x"...; never a
// request, so never held), RATE per second at most (0: as fast as it can),
// and prints the mean nanoseconds per gnutls_record_send. The server's
// certificate is not verified. No GnuTLS headers are needed: the few
// functions used are declared here.
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

typedef struct gnutls_session_int *gnutls_session_t;
typedef struct gnutls_certificate_credentials_st *gnutls_certificate_credentials_t;
#define GNUTLS_CLIENT 2
#define GNUTLS_CRD_CERTIFICATE 1
extern int gnutls_init(gnutls_session_t *session, unsigned int flags);
extern int gnutls_set_default_priority(gnutls_session_t session);
extern int gnutls_certificate_allocate_credentials(gnutls_certificate_credentials_t *res);
extern int gnutls_credentials_set(gnutls_session_t session, int type, void *cred);
extern void gnutls_transport_set_int2(gnutls_session_t session, int recv_fd, int send_fd);
extern int gnutls_handshake(gnutls_session_t session);
extern int gnutls_error_is_fatal(int error);
extern const char *gnutls_strerror(int error);
extern ssize_t gnutls_record_send(gnutls_session_t session, const void *data, size_t data_size);

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: gnutls_writer PORT COUNT SIZE RATE\n");
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
	gnutls_session_t s;
	gnutls_certificate_credentials_t cred;
	if (gnutls_init(&s, GNUTLS_CLIENT) < 0 || gnutls_set_default_priority(s) < 0 ||
	    gnutls_certificate_allocate_credentials(&cred) < 0 || gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred) < 0) {
		fprintf(stderr, "gnutls setup failed\n");
		return 1;
	}
	gnutls_transport_set_int2(s, fd, fd);
	int ret;
	do {
		ret = gnutls_handshake(s);
	} while (ret < 0 && !gnutls_error_is_fatal(ret));
	if (ret < 0) {
		fprintf(stderr, "TLS handshake failed: %s\n", gnutls_strerror(ret));
		return 1;
	}
	char *buf = malloc(size);
	memset(buf, 'x', size);
	for (int i = 0; i < 1000; i++)
		gnutls_record_send(s, buf, size);
	double start = now(), busy = 0;
	for (long i = 0; i < count; i++) {
		if (rate > 0) {
			double due = start + i * 1e9 / rate;
			while (now() < due)
				usleep(50);
		}
		double t0 = now();
		if (gnutls_record_send(s, buf, size) != size) {
			fprintf(stderr, "gnutls_record_send failed\n");
			return 1;
		}
		busy += now() - t0;
	}
	printf("%.1f\n", busy / count);
	return 0;
}
