/* LD_PRELOAD shim for wrk (T2F): every new TLS connection starts without a session, so each
 * one makes a full handshake. wrk reuses one SSL object per connection slot and calls
 * SSL_clear between connections, which keeps the last session: unshimmed, every reconnect
 * resumes (T2). wrk calls SSL_set_fd before every SSL_connect attempt of a handshake: the
 * session is dropped only before the handshake has started.
 * Built by bench/run into bench/.run: gcc -shared -fPIC -O2 -o no-resume.so no-resume.c -ldl */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;
int SSL_set_session(SSL *ssl, SSL_SESSION *session);
int SSL_in_before(const SSL *ssl);

int SSL_set_fd(SSL *ssl, int fd)
{
    static int (*real)(SSL *, int);
    if (!real)
        real = (int (*)(SSL *, int))dlsym(RTLD_NEXT, "SSL_set_fd");
    int r = real(ssl, fd);
    if (SSL_in_before(ssl))
        SSL_set_session(ssl, NULL);
    return r;
}
