/* Sets TCP_NODELAY on every connection a server accepts, for s3s-fs, which does not:
 * without it each GET's body waits for the client's delayed ACK of its headers (about
 * 40 ms on Linux), which S3 and other stores do not make a reader wait. Loaded with
 * LD_PRELOAD by `ferry-bench shared` (see start_s3). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void no_delay(int fd) {
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

int accept(int s, struct sockaddr *addr, socklen_t *len) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "accept");
    int fd = real(s, addr, len);
    no_delay(fd);
    return fd;
}

int accept4(int s, struct sockaddr *addr, socklen_t *len, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = dlsym(RTLD_NEXT, "accept4");
    int fd = real(s, addr, len, flags);
    no_delay(fd);
    return fd;
}
