/* Test workload: creates and opens N distinct files as fast as it can, then exits 0.
 * Usage: opener <dir> <count> */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    long n = strtol(argv[2], NULL, 10);
    char path[4096];
    for (long i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/f%ld", argv[1], i);
        int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) { perror("open"); return 1; }
        close(fd);
    }
    printf("opened %ld\n", n);
    return 0;
}
