/* timer CMD [ARGS...]: run CMD and time it from inside the view.
 *
 * run.py compiles this at run time and starts every timed workload through
 * it, inside umvu's view, inside proot and natively alike, so the time it
 * reports is the workload's own (fork, exec of CMD, CMD, wait), without the
 * hypervisor's start-up and exit. On exit it writes one line to stderr:
 *
 *     umvu-bench-timer: ELAPSED USER SYS
 *
 * (seconds: wall clock from CLOCK_MONOTONIC, and the CPU time of CMD and its
 * descendants) and exits with CMD's status (128 + N if killed by signal N).
 * The CPU times are differences: a shell that execs the timer hands it the
 * CPU time of the children it had waited for (a view's set-up commands).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (t1.tv_sec - t0->tv_sec) + (t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static double tv(struct timeval t)
{
    return t.tv_sec + t.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CMD [ARGS...]\n", argv[0]);
        return 2;
    }
    struct rusage ru0, ru;
    getrusage(RUSAGE_CHILDREN, &ru0);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("timer: fork");
        return 126;
    }
    if (pid == 0) {
        execvp(argv[1], argv + 1);
        fprintf(stderr, "timer: %s: %s\n", argv[1], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            perror("timer: waitpid");
            return 126;
        }
    }
    double elapsed = since(&t0);
    getrusage(RUSAGE_CHILDREN, &ru);
    fprintf(stderr, "umvu-bench-timer: %.6f %.6f %.6f\n", elapsed,
            tv(ru.ru_utime) - tv(ru0.ru_utime),
            tv(ru.ru_stime) - tv(ru0.ru_stime));
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}
