/* statread FILE N: N iterations of stat + open + read + close on FILE.
 * Prints the total number of bytes read, so a wrong answer is visible. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s FILE ITERATIONS\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    long n = atol(argv[2]);
    char buf[4096];
    long long total = 0;
    for (long i = 0; i < n; i++) {
        struct stat st;
        if (stat(path, &st) < 0) { perror("stat"); return 1; }
        int fd = open(path, O_RDONLY);
        if (fd < 0) { perror("open"); return 1; }
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 || r != st.st_size) {
            fprintf(stderr, "read: got %zd, size %lld\n", r, (long long)st.st_size);
            return 1;
        }
        total += r;
        if (close(fd) < 0) { perror("close"); return 1; }
    }
    printf("%lld\n", total);
    return 0;
}
