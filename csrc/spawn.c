/* umvu C core: starting a process of the view (see core.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#include "core.h"

static void child_fail(const char *name, int err)
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "umvu: %s: %s\n", name, strerror(err));
    if (n > 0)
        (void)!write(2, msg, (size_t)n);
    _exit(err == ENOENT ? 127 : 126);
}

static int install(const void *filter, unsigned short len, unsigned long flags)
{
    struct sock_fprog prog = { len, (struct sock_filter *)filter };
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static int send_fd(int sock, int fd)
{
    char byte = 0;
    struct iovec iov = { &byte, 1 };
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof fd);
    return sendmsg(sock, &msg, 0) < 0 ? -errno : 0;
}

static int recv_fd(int sock)
{
    char byte;
    struct iovec iov = { &byte, 1 };
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } u;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = u.buf, .msg_controllen = sizeof u.buf };
    ssize_t r;
    do
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (r <= 0 || !c || c->cmsg_type != SCM_RIGHTS)
        return -1;
    int fd;
    memcpy(&fd, CMSG_DATA(c), sizeof fd);
    return fd;
}

/* Close every descriptor but 0-2 and these two: the child is made
 * dumpable (to be seized) before its exec, and a process of the view must
 * not take the hypervisor's descriptors (its notification listeners)
 * from it with pidfd_getfd meanwhile. */
static void keep_only_stdio_and(int a, int b)
{
    int lo = a < b ? a : b, hi = a < b ? b : a;
    if (lo > 3)
        syscall(SYS_close_range, 3, lo - 1, 0);
    if (hi > lo + 1)
        syscall(SYS_close_range, lo + 1, hi - 1, 0);
    syscall(SYS_close_range, hi + 1, ~0U, 0);
}

/* fork; the parent PTRACE_SEIZEs the child (when asked to); the child
 * installs the notifying filter, hands its listener to the parent, installs
 * the tracing filter (if any) and execs. Returns the child pid or -errno. */
int umvu_spawn(const char *path, char *const argv[], char *const envp[],
               const void *notif_filter, unsigned short notif_len,
               const void *filter, unsigned short filter_len,
               unsigned long ptrace_options, const int *default_sigs, int nsigs,
               const char *display_name, int *listener)
{
    int go[2], sock[2];
    *listener = -1;
    if (pipe2(go, O_CLOEXEC) < 0)
        return -errno;
    /* SEQPACKET: a child that dies before sending gives the parent EOF */
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sock) < 0) {
        int e = errno;
        close(go[0]);
        close(go[1]);
        return -e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(go[0]);
        close(go[1]);
        close(sock[0]);
        close(sock[1]);
        return -e;
    }
    if (pid == 0) {
        char c;
        /* the hypervisor is not dumpable (out of its tracees' reach); its
         * child must be seizable before the exec that would make it so
         * anyway: set before the listener is sent, i.e. before the seize */
        close(go[1]);
        close(sock[0]);
        keep_only_stdio_and(go[0], sock[1]);
        for (int i = 0; i < nsigs; i++)
            signal(default_sigs[i], SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            child_fail("prctl(NO_NEW_PRIVS)", errno);
        /* killable once the hypervisor holds a notification: a signal
         * must not make the call run twice */
        int lfd = install(notif_filter, notif_len,
                          SECCOMP_FILTER_FLAG_NEW_LISTENER |
                          SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV);
        if (lfd < 0)
            child_fail("seccomp", errno);
        int e = send_fd(sock[1], lfd);
        if (e < 0)
            child_fail("seccomp listener", -e);
        close(lfd);
        /* seizable from here on (the exec would make it so anyway): only
         * now that it holds nothing of the hypervisor's, its own listener
         * included; the parent seizes once it reads this */
        prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
        (void)!write(sock[1], "", 1);
        close(sock[1]);
        while (read(go[0], &c, 1) < 0 && errno == EINTR)
            ;                   /* the parent has seized us (if it would) */
        close(go[0]);
        if (filter_len && install(filter, filter_len, 0) < 0)
            child_fail("seccomp", errno);
        execve(path, argv, envp);
        child_fail(display_name, errno);
    }
    close(go[0]);
    close(sock[1]);
    *listener = recv_fd(sock[0]);  /* before seizing: the child may not stop */
    if (*listener >= 0) {
        char ready;             /* the child is dumpable (or gone) */
        while (read(sock[0], &ready, 1) < 0 && errno == EINTR)
            ;
    }
    close(sock[0]);
    if (*listener < 0) {        /* the child failed before (it said why) */
        close(go[1]);
        waitpid(pid, NULL, 0);
        return -EINVAL;
    }
    if (ptrace_options &&
        ptrace(PTRACE_SEIZE, pid, 0, (void *)ptrace_options) < 0) {
        int e = errno;
        kill(pid, SIGKILL);
        close(go[1]);
        close(*listener);
        *listener = -1;
        waitpid(pid, NULL, 0);
        return -e;
    }
    close(go[1]);               /* child goes on to exec (or has failed) */
    return pid;
}
