/*
 * floor-c: the least work an SSE fan-out server can do, as a fan-out peer.
 *
 * The floor of issue 16's S3 (10,000 connections, 1 symbol, 1 tick/s): each
 * round the events of all S symbols are encoded once into one HTTP/1.1 chunk,
 * and that same buffer goes to every subscriber with one non-blocking send().
 * No per-connection allocation, no queue, no thread: one epoll loop, a timerfd
 * on absolute deadlines, an array of subscriber fds.
 *
 * Wire format, as quoteflow serves it (so the load generator measures the same
 * parsing work): response headers with Transfer-Encoding: chunked, a first chunk
 * "retry: 2000\n\n", then per round one chunk holding, per symbol,
 *
 *   id: N\nevent: tick\ndata: {"symbol":"SYM0000","price":..,"bid":..,"ask":..,
 *   "size":100,"ts":"<ISO>","ts_ns":<unix ns>,"sim_ts":"<ISO>","seq":N}\n\n
 *
 * Ids start at 1 and are global across symbols; ts_ns is the wall-clock time of
 * the round, taken just before the sends. GET /stream (any query string) streams;
 * anything else gets 404.
 *
 * A send() that the kernel takes only in part (a slow reader) keeps the rest in a
 * per-connection buffer flushed on EPOLLOUT; while it is non-empty later rounds
 * are appended to it; past 1 MiB the client is dropped (a slow consumer).
 *
 * Usage: floor-c --port P --symbols S --interval-ms T
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define MAX_FDS 1048576
#define REQ_MAX 4096
#define PEND_MAX (1 << 20)

enum { FREE = 0, READING, STREAMING };

struct conn {
    int state;
    int sub_index;      /* position in subs[] while STREAMING */
    size_t req_len;     /* bytes of the request read so far (READING) */
    char *req;          /* request bytes (READING), freed once streaming */
    char *pend;         /* unsent bytes (STREAMING, slow reader) */
    size_t pend_len, pend_cap;
};

static struct conn *conns;
static int *subs;
static int n_subs;
static int epfd, listen_fd, timer_fd;
static volatile sig_atomic_t stopping;

static const char HEADERS[] =
    "HTTP/1.1 200 OK\r\n"
    "Server: floor-c\r\n"
    "Content-Type: text/event-stream; charset=utf-8\r\n"
    "Cache-Control: no-cache\r\n"
    "X-Accel-Buffering: no\r\n"
    "Connection: keep-alive\r\n"
    "Transfer-Encoding: chunked\r\n"
    "\r\n"
    "d\r\nretry: 2000\n\n\r\n";
static const char NOT_FOUND[] =
    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

static void on_stop(int sig) { (void)sig; stopping = 1; }

static void drop(int fd) {
    struct conn *c = &conns[fd];
    if (c->state == STREAMING) {
        int last = subs[--n_subs];
        subs[c->sub_index] = last;
        conns[last].sub_index = c->sub_index;
    }
    free(c->req);
    free(c->pend);
    memset(c, 0, sizeof *c);
    close(fd); /* also removes it from the epoll set */
}

static int queue_rest(int fd, const char *buf, size_t len) {
    struct conn *c = &conns[fd];
    if (c->pend_len + len > PEND_MAX) return -1;
    if (c->pend_len + len > c->pend_cap) {
        size_t cap = c->pend_cap ? c->pend_cap : 4096;
        while (cap < c->pend_len + len) cap *= 2;
        char *p = realloc(c->pend, cap);
        if (!p) return -1;
        c->pend = p;
        c->pend_cap = cap;
    }
    memcpy(c->pend + c->pend_len, buf, len);
    int was_empty = c->pend_len == 0;
    c->pend_len += len;
    if (was_empty) {
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
    }
    return 0;
}

/* Send buf to fd now, or keep what the kernel did not take. 0 ok, -1 drop. */
static int send_or_queue(int fd, const char *buf, size_t len) {
    struct conn *c = &conns[fd];
    if (c->pend_len) return queue_rest(fd, buf, len);
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return -1;
        n = 0;
    }
    if ((size_t)n < len) return queue_rest(fd, buf + n, len - (size_t)n);
    return 0;
}

static void flush_pending(int fd) {
    struct conn *c = &conns[fd];
    ssize_t n = send(fd, c->pend, c->pend_len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        drop(fd);
        return;
    }
    memmove(c->pend, c->pend + n, c->pend_len - (size_t)n);
    c->pend_len -= (size_t)n;
    if (c->pend_len == 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev);
    }
}

static void on_readable(int fd) {
    struct conn *c = &conns[fd];
    if (c->state == STREAMING) {
        char sink[512];
        ssize_t n = recv(fd, sink, sizeof sink, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) drop(fd);
        return; /* anything a streaming client sends is ignored */
    }
    ssize_t n = recv(fd, c->req + c->req_len, REQ_MAX - 1 - c->req_len, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
        drop(fd);
        return;
    }
    c->req_len += (size_t)n;
    c->req[c->req_len] = '\0';
    if (!strstr(c->req, "\r\n\r\n")) {
        if (c->req_len >= REQ_MAX - 1) drop(fd);
        return;
    }
    int ok = strncmp(c->req, "GET /stream", 11) == 0 &&
             (c->req[11] == ' ' || c->req[11] == '?');
    free(c->req);
    c->req = NULL;
    if (!ok) {
        (void)send(fd, NOT_FOUND, sizeof NOT_FOUND - 1, MSG_NOSIGNAL);
        drop(fd);
        return;
    }
    c->state = STREAMING;
    c->sub_index = n_subs;
    subs[n_subs++] = fd;
    if (send_or_queue(fd, HEADERS, sizeof HEADERS - 1) < 0) drop(fd);
}

static void on_accept(void) {
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or EMFILE: the client retries */
        if (fd >= MAX_FDS) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = &conns[fd];
        c->state = READING;
        c->req = malloc(REQ_MAX);
        c->req_len = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
        if (!c->req || epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) drop(fd);
    }
}

static void iso_ms(char *out, size_t n, int64_t ns) {
    time_t s = (time_t)(ns / 1000000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + k, n - k, ".%03dZ", (int)(ns / 1000000 % 1000));
}

/* A standard normal draw (Box-Muller over a xorshift64* stream). */
static uint64_t rng_state = 42;
static double uniform(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return ((rng_state * 2685821657736338717ULL) >> 11) * (1.0 / 9007199254740992.0);
}
static double normal(void) {
    double u = uniform(), v = uniform();
    return sqrt(-2.0 * log(u > 0 ? u : 1e-300)) * cos(2 * M_PI * v);
}

int main(int argc, char **argv) {
    int port = 8090, symbols = 10;
    double interval_ms = 100;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--symbols")) symbols = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--interval-ms")) interval_ms = atof(argv[i + 1]);
        else { fprintf(stderr, "floor-c: unknown option %s\n", argv[i]); return 2; }
    }
    if (symbols < 1 || interval_ms <= 0) {
        fprintf(stderr, "floor-c: --symbols must be >= 1 and --interval-ms > 0\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTERM, on_stop);
    signal(SIGINT, on_stop);
    conns = calloc(MAX_FDS, sizeof *conns);
    subs = calloc(MAX_FDS, sizeof *subs);
    double *prices = malloc(sizeof(double) * (size_t)symbols);
    size_t cap = (size_t)symbols * 320 + 64;
    char *events = malloc(cap), *chunk = malloc(cap + 32);
    if (!conns || !subs || !prices || !events || !chunk) { perror("floor-c"); return 1; }
    for (int i = 0; i < symbols; i++) prices[i] = 100.0;

    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        listen(listen_fd, 4096) < 0) {
        perror("floor-c: listen");
        return 1;
    }
    epfd = epoll_create1(EPOLL_CLOEXEC);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    long iv_ns = (long)(interval_ms * 1e6);
    struct itimerspec its = {
        .it_interval = {iv_ns / 1000000000, iv_ns % 1000000000},
        .it_value = {iv_ns / 1000000000, iv_ns % 1000000000},
    };
    timerfd_settime(timer_fd, 0, &its, NULL);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listen_fd};
    epoll_ctl(epfd, EPOLL_CTL_ADD, listen_fd, &ev);
    ev.data.fd = timer_fd;
    epoll_ctl(epfd, EPOLL_CTL_ADD, timer_fd, &ev);
    fprintf(stderr, "floor-c listening on http://127.0.0.1:%d/stream (symbols=%d, interval=%gms)\n",
            port, symbols, interval_ms);

    double step = 0.2 * sqrt(interval_ms / 1000.0 / (252 * 6.5 * 3600));
    uint64_t id = 0;
    static struct epoll_event evs[1024];
    while (!stopping) {
        int n = epoll_wait(epfd, evs, 1024, -1);
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == listen_fd) { on_accept(); continue; }
            if (fd == timer_fd) {
                uint64_t expirations;
                if (read(timer_fd, &expirations, sizeof expirations) < 0) continue;
                /* One round, however many expirations were missed (like a Go ticker). */
                struct timespec now;
                clock_gettime(CLOCK_REALTIME, &now);
                int64_t ts_ns = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
                char iso[40];
                iso_ms(iso, sizeof iso, ts_ns);
                size_t len = 0;
                for (int s = 0; s < symbols; s++) {
                    prices[s] *= exp(step * normal());
                    double p = prices[s];
                    id++;
                    len += (size_t)snprintf(
                        events + len, cap - len,
                        "id: %llu\nevent: tick\ndata: {\"symbol\":\"SYM%04d\",\"price\":%.2f,"
                        "\"bid\":%.2f,\"ask\":%.2f,\"size\":100,\"ts\":\"%s\",\"ts_ns\":%lld,"
                        "\"sim_ts\":\"%s\",\"seq\":%llu}\n\n",
                        (unsigned long long)id, s, p, p * 0.9995, p * 1.0005, iso,
                        (long long)ts_ns, iso, (unsigned long long)id);
                }
                int h = snprintf(chunk, 32, "%zx\r\n", len);
                memcpy(chunk + h, events, len);
                memcpy(chunk + h + len, "\r\n", 2);
                size_t total = (size_t)h + len + 2;
                /* The floor: one send() of the same bytes per subscriber. Iterate
                 * backwards so a drop (swap-remove) does not skip anyone. */
                for (int k = n_subs - 1; k >= 0; k--) {
                    int sfd = subs[k];
                    if (send_or_queue(sfd, chunk, total) < 0) drop(sfd);
                }
                continue;
            }
            if (conns[fd].state == FREE) continue; /* dropped earlier in this batch */
            if (evs[i].events & (EPOLLERR | EPOLLHUP)) { drop(fd); continue; }
            if (evs[i].events & EPOLLOUT) {
                flush_pending(fd);
                if (conns[fd].state == FREE) continue;
            }
            if (evs[i].events & EPOLLIN) on_readable(fd);
        }
    }
    return 0;
}
