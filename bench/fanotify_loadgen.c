/* Open-event load generator for the tracer benchmarks.
 *
 * usage: fanotify_loadgen ROOT NFILES PASSES
 * chroots into ROOT, detaches from its parent (so no tracer counts it as its own descendant),
 * prints "ready pid=N", waits for one byte on stdin, then for each pass forks a child that opens
 * and closes /data/f%06d for every file (a fresh pid per pass, so the kernel never merges repeats),
 * and finally prints "end_ns=T opens=N" (CLOCK_MONOTONIC) once the last open is done, and exits.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: %s ROOT NFILES PASSES\n", argv[0]); return 2; }
    int nfiles = atoi(argv[2]), passes = atoi(argv[3]);
    if (chroot(argv[1]) || chdir("/")) { perror("chroot"); return 1; }
    pid_t d = fork();
    if (d < 0) { perror("fork"); return 1; }
    if (d > 0) return 0;   /* the caller waits for "ready", not for us */
    setsid();
    printf("ready pid=%d\n", getpid());
    fflush(stdout);
    char c;
    if (read(0, &c, 1) != 1) return 1;
    char path[64];
    long opens = 0;
    for (int p = 0; p < passes; p++) {
        pid_t child = fork();
        if (child == 0) {
            for (int i = 0; i < nfiles; i++) {
                snprintf(path, sizeof path, "/data/f%06d", i);
                int fd = open(path, O_RDONLY);
                if (fd >= 0) close(fd);
            }
            _exit(0);
        }
        waitpid(child, NULL, 0);
        opens += nfiles;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    printf("end_ns=%lld opens=%ld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, opens);
    fflush(stdout);
    return 0;
}
