/* Minimal fanotify reader: the practical ceiling the Python tracer is compared with.
 *
 * One notification group in fd mode with an unlimited queue and a filesystem mark, the same event
 * mask and read size as agent/trace. Per event it does only what any fd-mode tracer must:
 * readlink(/proc/self/fd/N) and close(N).
 *
 * usage: fanotify_reader MARK_PATH EXPECTED_EVENTS IDLE_MS READ_EVENTS
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
#include <sys/fanotify.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s MARK_PATH EXPECTED_EVENTS IDLE_MS READ_EVENTS\n", argv[0]);
        return 2;
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
            struct fanotify_event_metadata *ev = (struct fanotify_event_metadata *)buf;
            for (; FAN_EVENT_OK(ev, len); ev = FAN_EVENT_NEXT(ev, len)) {
                events++;
                if (ev->fd < 0) continue;
                snprintf(link, sizeof link, "/proc/self/fd/%d", ev->fd);
                if (readlink(link, target, sizeof target - 1) < 0) target[0] = 0;
                close(ev->fd);
            }
            last = now_ns();
            if (!first) first = last;
        }
    }
    printf("events=%lld first_ns=%lld last_ns=%lld\n", events, first, last);
    return 0;
}
