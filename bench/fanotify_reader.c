/* Minimal fanotify reader: the practical ceiling the Python tracer is compared with.
 *
 * One notification group in fd mode with an unlimited queue and a filesystem mark, the same event
 * mask and read size as agent/trace. Per event it does only what any fd-mode tracer must:
 * readlink(/proc/self/fd/N) and close(N).
 *
 * usage: fanotify_reader MARK_PATH EXPECTED_EVENTS IDLE_MS READ_EVENTS [range]
 * With "range", each buffer's fds are closed after its readlinks with one close_range(2) when they
 * form a range (as agent/trace does), instead of one close(2) per event.
 * prints "ready" once marked, then "events=N first_ns=T last_ns=T" (CLOCK_MONOTONIC, after reads
 * that returned events) when EXPECTED_EVENTS were seen or IDLE_MS passed without events.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/fanotify.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5 && !(argc == 6 && strcmp(argv[5], "range") == 0)) {
        fprintf(stderr, "usage: %s MARK_PATH EXPECTED_EVENTS IDLE_MS READ_EVENTS [range]\n", argv[0]);
        return 2;
    }
    int range = argc == 6;
    if (range) {  /* a buffer's fds stay open until its close_range: room for all of them */
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rlim_t want = (rlim_t)atoi(argv[4]) * 4 + 1024;
        if (rl.rlim_cur < want) { rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max; setrlimit(RLIMIT_NOFILE, &rl); }
    }
    long long expected = atoll(argv[2]);
    int idle_ms = atoi(argv[3]);
    size_t bufsz = (size_t)atoi(argv[4]) * sizeof(struct fanotify_event_metadata);
    int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE,
                           O_RDONLY | O_LARGEFILE | O_CLOEXEC | O_NOATIME);
    if (fd < 0) { perror("fanotify_init"); return 1; }
    if (fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_OPEN | FAN_OPEN_EXEC | FAN_ACCESS,
                      AT_FDCWD, argv[1]) < 0) { perror("fanotify_mark"); return 1; }
    char *buf = malloc(bufsz);
    char link[64], target[PATH_MAX];
    long long events = 0, first = 0, last = 0;
    printf("ready\n");
    fflush(stdout);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (events < expected) {
        int r = poll(&pfd, 1, idle_ms);
        if (r == 0) break;
        if (r < 0) { if (errno == EINTR) continue; perror("poll"); return 1; }
        for (;;) {
            ssize_t len = read(fd, buf, bufsz);
            if (len <= 0) break;
            ssize_t whole = len;  /* FAN_EVENT_NEXT counts len down */
            struct fanotify_event_metadata *ev = (struct fanotify_event_metadata *)buf;
            int lo = INT_MAX, hi = -1, n = 0;
            for (; FAN_EVENT_OK(ev, len); ev = FAN_EVENT_NEXT(ev, len)) {
                events++;
                if (ev->fd < 0) continue;
                snprintf(link, sizeof link, "/proc/self/fd/%d", ev->fd);
                if (readlink(link, target, sizeof target - 1) < 0) target[0] = 0;
                if (!range) { close(ev->fd); continue; }
                if (ev->fd < lo) lo = ev->fd;
                if (ev->fd > hi) hi = ev->fd;
                n++;
            }
            if (range && n) {
                if (hi - lo + 1 == n) {
                    syscall(SYS_close_range, lo, hi, 0);
                } else {  /* not a range: one by one, walking the buffer again */
                    for (ev = (struct fanotify_event_metadata *)buf; FAN_EVENT_OK(ev, whole); ev = FAN_EVENT_NEXT(ev, whole))
                        if (ev->fd >= 0) close(ev->fd);
                }
            }
            last = now_ns();
            if (!first) first = last;
        }
    }
    printf("events=%lld first_ns=%lld last_ns=%lld\n", events, first, last);
    return 0;
}
