/* umvu C core: the wait loop (see core.h). One thread, the tracer's, runs
 * it: it waits for ptrace stops, seccomp notifications and pokes, lets the
 * fast path (fastpath.c) resume the stops Python need not see, and handles
 * process events itself while no filter injection is pending, writing them
 * to the journal Python replays. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <linux/seccomp.h>

#include "core.h"
#include "fastpath.h"

#ifndef PTRACE_GET_SYSCALL_INFO
#define PTRACE_GET_SYSCALL_INFO 0x420e
#endif
#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif
#define INFO_NONE 0
#define INFO_ENTRY 1
#define INFO_EXIT 2
#define INFO_SECCOMP 3

struct syscall_info {           /* struct ptrace_syscall_info, linux/ptrace.h */
    uint8_t op;
    uint8_t pad[3];
    uint32_t arch;
    uint64_t instruction_pointer;
    uint64_t stack_pointer;
    union {
        struct { uint64_t nr; uint64_t args[6]; } entry;
        struct { int64_t rval; uint8_t is_error; } exit;
        struct { uint64_t nr; uint64_t args[6]; uint32_t ret_data; } seccomp;
    };
};

static int get_info(int tid, struct umvu_event *ev)
{
    struct syscall_info info;
    if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, (void *)sizeof info, &info) < 0)
        return -errno;
    ev->arch = info.arch;
    ev->ip = info.instruction_pointer;
    ev->sp = info.stack_pointer;
    switch (info.op) {
    case INFO_SECCOMP:
        ev->nr = (long)info.seccomp.nr;
        memcpy(ev->args, info.seccomp.args, sizeof ev->args);
        ev->ret_data = info.seccomp.ret_data;
        break;
    case INFO_ENTRY:
        ev->kind = UMVU_EV_SYSCALL_ENTRY;
        ev->nr = (long)info.entry.nr;
        memcpy(ev->args, info.entry.args, sizeof ev->args);
        break;
    case INFO_EXIT:
        ev->kind = UMVU_EV_SYSCALL_EXIT;
        ev->rval = info.exit.rval;
        break;
    }
    return 0;
}

/* Every stop that writes an entry hands Python the journal as soon as it is
 * full (UMVU_EV_JOURNAL_FULL), and Python empties it before it waits again:
 * journal_len < UMVU_JOURNAL_MAX whenever a stop is decoded. */
static struct umvu_journal_entry journal_entries[UMVU_JOURNAL_MAX];
static int journal_len;
static int fast_events;         /* no filter injection pending */
static int early_pending;       /* Python keeps stops of unannounced children */
static int watch_pid;           /* its exit returns to Python...             */
static int wake_on_exits;       /* ...and every exit, while this is set      */

void umvu_set_fast_events(int on)
{
    fast_events = on;
}

void umvu_set_watch(int pid, int wake, int early)
{
    watch_pid = pid;
    wake_on_exits = wake;
    early_pending = early;
}

int umvu_journal_take(struct umvu_journal_entry *out, int max)
{
    int n = journal_len < max ? journal_len : max;
    memcpy(out, journal_entries, sizeof *out * (size_t)n);
    if (n < journal_len)
        memmove(journal_entries, journal_entries + n,
                sizeof *out * (size_t)(journal_len - n));
    journal_len -= n;
    return n;
}

unsigned long umvu_clone_flags(int tid)
{
    struct umvu_regs regs;
    unsigned long flags = 0;
    if (ptrace(PTRACE_GETREGS, tid, 0, &regs) < 0)
        return 0;
    switch (regs.orig_rax) {
    case SYS_clone:
        return regs.rdi;
    case SYS_clone3:
        umvu_read(tid, regs.rdi, &flags, sizeof flags);
        return flags;
    case SYS_vfork:
        return UMVU_CLONE_VM | UMVU_CLONE_VFORK;
    default:
        return 0;
    }
}

static void journal(int kind, struct umvu_event *ev, unsigned long flags)
{
    struct umvu_journal_entry *j = &journal_entries[journal_len++];
    j->kind = kind;
    j->tid = ev->tid;
    j->status = ev->status;
    j->msg = ev->msg;
    j->flags = flags;
}

/* Process events Python only needs to hear about later: resume at once and
 * write them to the journal, which Python replays, in order, before it
 * handles anything else. Returns 1 when handled. */
static int fast_event(struct umvu_event *ev)
{
    int tid = ev->tid;
    switch (ev->kind) {
    case UMVU_EV_SIGNAL:
        ptrace(PTRACE_CONT, tid, 0, (void *)(long)ev->sig);
        return 1;
    case UMVU_EV_EXIT_STOP:
    case UMVU_EV_VFORK_DONE:
        ptrace(PTRACE_CONT, tid, 0, 0);
        return 1;
    case UMVU_EV_STOP:
        if (ev->sig == SIGSTOP || ev->sig == SIGTSTP || ev->sig == SIGTTIN ||
            ev->sig == SIGTTOU)
            ptrace(PTRACE_LISTEN, tid, 0, 0);
        else
            ptrace(PTRACE_CONT, tid, 0, 0);
        return 1;
    case UMVU_EV_CLONE: {
        unsigned long flags = umvu_clone_flags(tid);
        umvu_fast_clone(tid, (int)ev->msg, flags);
        journal(ev->kind, ev, flags);
        ptrace(PTRACE_CONT, tid, 0, 0);
        return 1;
    }
    case UMVU_EV_EXEC:
        umvu_fast_exec(tid, (int)ev->msg);
        journal(ev->kind, ev, 0);
        ptrace(PTRACE_CONT, tid, 0, 0);
        return 1;
    case UMVU_EV_EXITED:
        umvu_forget_thread(tid);
        journal(ev->kind, ev, 0);
        /* Python decides when the view is done: it hears of the exit it
         * waits for, and of every exit once that one is gone */
        return tid != watch_pid && !wake_on_exits;
    }
    return 0;
}

/* A stop the fast path handled: resume it (PTRACE_CONT, or PTRACE_SYSCALL to
 * its exit stop). 1: wait again; 0 with ev a UMVU_EV_JOURNAL_FULL when the
 * journal must go to Python first. */
static int resume(int tid, int how, struct umvu_event *ev)
{
    ptrace(how, tid, 0, 0);
    if (journal_len < UMVU_JOURNAL_MAX)
        return 1;
    ev->kind = UMVU_EV_JOURNAL_FULL;
    return 0;
}

/* Turn a wait status into an event. Returns 1 when the stop was handled here
 * (fast path) and the caller should wait again. */
static int decode(int tid, int status, struct umvu_event *ev, int fast)
{
    memset(ev, 0, sizeof *ev);
    ev->tid = tid;
    ev->status = status;
    if (WIFEXITED(status) || WIFSIGNALED(status)) {
        ev->kind = UMVU_EV_EXITED;
    } else if (WSTOPSIG(status) == (SIGTRAP | 0x80)) {
        if (fast) {
            int r = umvu_fast_restore(tid, &journal_entries[journal_len]);
            if (r == 2)
                journal_len++;
            if (r)
                return resume(tid, PTRACE_CONT, ev);
        }
        ev->kind = UMVU_EV_SYSCALL_EXIT;     /* refined by get_info */
        get_info(tid, ev);
        return 0;
    } else {
        ev->sig = WSTOPSIG(status);
        ev->event = (unsigned)status >> 16;
        switch (ev->event) {
        case 0:
            ev->kind = UMVU_EV_SIGNAL;
            break;
        case PTRACE_EVENT_SECCOMP:
            ev->kind = UMVU_EV_SECCOMP;
            get_info(tid, ev);
            if (fast) {
                long result;
                switch (umvu_fast_decide(tid, ev->nr, ev->args, &result,
                                         &journal_entries[journal_len])) {
                case UMVU_V_RESUME:
                    return resume(tid, PTRACE_CONT, ev);
                case UMVU_V_ANSWERED:
                    if (umvu_set_result(tid, result) == 0)
                        return resume(tid, PTRACE_CONT, ev);
                    break;          /* gone meanwhile */
                case UMVU_V_JOURNALED:
                    journal_len++;
                    return resume(tid, PTRACE_CONT, ev);
                case UMVU_V_TO_EXIT:
                    return resume(tid, PTRACE_SYSCALL, ev);
                case UMVU_V_REWRITE:
                    if (umvu_fast_rewrite(tid, ev->sp) == 0)
                        return resume(tid, PTRACE_SYSCALL, ev);
                    break;
                case UMVU_V_PYTHON:
                    break;
                }
            }
            return 0;
        case PTRACE_EVENT_FORK:
        case PTRACE_EVENT_VFORK:
        case PTRACE_EVENT_CLONE:
            ev->kind = UMVU_EV_CLONE;
            break;
        case PTRACE_EVENT_EXEC:
            ev->kind = UMVU_EV_EXEC;
            break;
        case PTRACE_EVENT_EXIT:
            ev->kind = UMVU_EV_EXIT_STOP;
            break;
        case PTRACE_EVENT_VFORK_DONE:
            ev->kind = UMVU_EV_VFORK_DONE;
            break;
        case PTRACE_EVENT_STOP:
            ev->kind = UMVU_EV_STOP;
            break;
        default:
            ev->kind = UMVU_EV_SIGNAL;
            break;
        }
        if (ev->kind == UMVU_EV_CLONE || ev->kind == UMVU_EV_EXEC ||
            ev->kind == UMVU_EV_EXIT_STOP)
            ptrace(PTRACE_GETEVENTMSG, tid, 0, &ev->msg);
    }
    if (fast && fast_events && fast_event(ev)) {
        /* Python holds stops of children it has not met: a clone may
         * introduce them, and they wait for it */
        if (journal_len < UMVU_JOURNAL_MAX &&
            !(early_pending && ev->kind == UMVU_EV_CLONE))
            return 1;
        ev->kind = UMVU_EV_JOURNAL_FULL;
    }
    return 0;
}

static unsigned long spin_ns;   /* poll this long before sleeping */

void umvu_set_spin(unsigned long ns)
{
    spin_ns = ns;
}

static unsigned long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long)ts.tv_sec * 1000000000UL + (unsigned long)ts.tv_nsec;
}

/* What the loop sleeps on: SIGCHLD (a ptrace stop or a child's exit) through
 * a signalfd, a poke from a worker through an eventfd, and the seccomp
 * listeners of the view's process trees. */
#define MAX_LISTENERS 64
static int sigchld_fd = -1, poke_fd = -1;
static int listeners[MAX_LISTENERS];
static int nlisteners;
static volatile int poked;

/* SIGCHLD must be blocked in every thread for the signalfd to see it: call
 * before the hypervisor starts any thread (children unblock it, umvu_spawn) */
int umvu_wait_init(void)
{
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0)
        return -errno;
    sigchld_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    poke_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return sigchld_fd < 0 || poke_fd < 0 ? -errno : 0;
}

#ifndef SECCOMP_IOCTL_NOTIF_SET_FLAGS
#define SECCOMP_IOCTL_NOTIF_SET_FLAGS SECCOMP_IOW(4, __u64)
#endif
#define SYNC_WAKE_UP 1UL        /* SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP, 6.6+ */

int umvu_add_listener(int fd)
{
    if (nlisteners == MAX_LISTENERS)
        return -EMFILE;
    /* the caller and the hypervisor take turns: wake it on our CPU rather
     * than through an idle one (older kernels refuse; it only costs time) */
    (void)ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, SYNC_WAKE_UP);
    listeners[nlisteners++] = fd;
    return 0;
}

void umvu_poke(void)
{
    poked = 1;
    uint64_t one = 1;
    (void)!write(poke_fd, &one, sizeof one);
}

static void drain(int fd)
{
    char buf[sizeof(struct signalfd_siginfo) * 8];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

/* Take one notification from a listener poll found readable. Returns 0 with
 * ev filled, or -1 when it went away meanwhile (its caller was killed). */
static int recv_notif(int fd, struct umvu_event *ev)
{
    struct seccomp_notif n;
    memset(&n, 0, sizeof n);
    if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &n) < 0)
        return -1;
    memset(ev, 0, sizeof *ev);
    ev->kind = UMVU_EV_NOTIF;
    ev->tid = (int)n.pid;
    ev->status = fd;
    ev->msg = n.id;
    ev->nr = n.data.nr;
    ev->arch = n.data.arch;
    ev->ip = n.data.instruction_pointer;
    memcpy(ev->args, n.data.args, sizeof ev->args);
    return 0;
}

int umvu_notif_reply(int fd, unsigned long long id, long result, int cont)
{
    struct seccomp_notif_resp r = { .id = id };
    if (cont)
        r.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    else if (result < 0 && result > -4096)
        r.error = (int)result;
    else
        r.val = result;
    return ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &r) < 0 ? -errno : 0;
}

/* Sleep until something may have happened. Returns 1 with ev filled for a
 * notification, 0 to look at waitpid again, -EAGAIN on timeout or poke. */
static int sleep_for_events(struct umvu_event *ev, int timeout_ms)
{
    struct pollfd fds[2 + MAX_LISTENERS];
    int n = 0;
    fds[n++] = (struct pollfd){ .fd = sigchld_fd, .events = POLLIN };
    fds[n++] = (struct pollfd){ .fd = poke_fd, .events = POLLIN };
    for (int i = 0; i < nlisteners; i++)
        fds[n++] = (struct pollfd){ .fd = listeners[i], .events = POLLIN };
    int r = poll(fds, (nfds_t)n, timeout_ms);
    if (r < 0)
        return -errno;          /* EINTR: Python's signal handlers run */
    if (r == 0)
        return -EAGAIN;
    if (fds[0].revents)
        drain(sigchld_fd);
    for (int i = 2; i < n; i++) {
        if ((fds[i].revents & POLLIN) && recv_notif(fds[i].fd, ev) == 0)
            return 1;
    }
    /* a listener whose processes are all gone reports POLLHUP: forget it */
    for (int i = n - 1; i >= 2; i--) {
        if ((fds[i].revents & (POLLHUP | POLLERR | POLLNVAL)) &&
            !(fds[i].revents & POLLIN)) {
            close(listeners[i - 2]);
            listeners[i - 2] = listeners[--nlisteners];
        }
    }
    if (fds[1].revents) {
        drain(poke_fd);
        poked = 0;
        return -EAGAIN;
    }
    return 0;
}

int umvu_wait(struct umvu_event *ev, long timeout_us)
{
    unsigned long start = now_ns();
    unsigned long spin_end = start + spin_ns;
    unsigned long end = timeout_us < 0 ? 0 : start + (unsigned long)timeout_us * 1000UL;
    for (;;) {
        int status;
        int tid = waitpid(-1, &status, __WALL | WNOHANG);
        if (tid > 0) {
            if (!decode(tid, status, ev, 1))
                return 0;
            /* handled here: a stop just happened, more may follow soon */
            spin_end = now_ns() + spin_ns;
            continue;
        }
        if (tid < 0 && errno != ECHILD)
            return -errno;
        if (tid < 0 && timeout_us < 0)
            return -ECHILD;
        if (poked) {
            poked = 0;
            drain(poke_fd);
            return -EAGAIN;
        }
        unsigned long now = now_ns();
        /* a tracer that sleeps is woken through an idle CPU, which costs
         * tens of microseconds per stop on a VM: poll a while first */
        if (tid == 0 && now < spin_end)
            continue;
        int ms = -1;
        if (end) {
            if (now >= end)
                return tid < 0 ? -ECHILD : -EAGAIN;
            ms = (int)((end - now + 999999) / 1000000);
        }
        int r = sleep_for_events(ev, ms);
        if (r == 1)
            return 0;
        if (r < 0)
            return r == -EAGAIN && tid < 0 ? -ECHILD : r;
    }
}

/* Wait for one thread only (used while running code inside that thread). */
int umvu_wait_tid(int tid, struct umvu_event *ev)
{
    int status;
    int r;
    do
        r = waitpid(tid, &status, __WALL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    decode(tid, status, ev, 0);
    return 0;
}
