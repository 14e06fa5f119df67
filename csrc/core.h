/* umvu C core: the parts of the tracer that run on every stop.
 *
 * Python owns policy; the C core owns the wait loop, register and memory
 * access, and the decision "nobody wants this call: resume it" so that such
 * stops never take the GIL.  Everything here is x86_64 Linux.
 *
 * This header is all Python sees of it (csrc/build_core.py hands it to
 * cffi's cdef, so it holds only what cdef parses; umvu/ccore.py is its
 * Python face). Its state is set through the functions below, never by
 * assigning C variables. One concern a file, dependencies one way:
 *
 *   wait.c      the wait loop: ptrace stops, seccomp notifications, pokes;
 *               process events into the journal      -> fastpath.c, tracee.c
 *   fastpath.c  "this call reaches nothing virtual": per-syscall rows,
 *               threads, mounts, the walk below binds -> tracee.c
 *   window.c    data calls on served files that are windows on a host
 *               file (vudev's devices)                -> tracee.c
 *   tracee.c    a stopped thread's registers and memory
 *   spawn.c     starting a process of the view
 *
 * fastpath.h declares what wait.c asks of fastpath.c (not seen by Python).
 */

struct umvu_regs {              /* same layout as struct user_regs_struct */
    unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx,
        rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base,
        ds, es, fs, gs;
};

/* ---- wait.c: the wait loop ------------------------------------------- */

/* kinds of event returned by umvu_wait */
#define UMVU_EV_SECCOMP      1  /* seccomp RET_TRACE stop: nr/args valid      */
#define UMVU_EV_SYSCALL_EXIT 2  /* syscall-exit-stop: rval valid              */
#define UMVU_EV_SYSCALL_ENTRY 3 /* syscall-enter-stop (only while injecting)  */
#define UMVU_EV_CLONE        4  /* fork/vfork/clone event: msg = new tid      */
#define UMVU_EV_EXEC         5  /* exec event: msg = former tid               */
#define UMVU_EV_EXIT_STOP    6  /* PTRACE_EVENT_EXIT: msg = wait status       */
#define UMVU_EV_STOP         7  /* PTRACE_EVENT_STOP: group stop / interrupt  */
#define UMVU_EV_SIGNAL       8  /* signal-delivery-stop: sig                  */
#define UMVU_EV_EXITED       9  /* thread gone: status is the wait status     */
#define UMVU_EV_VFORK_DONE   10
#define UMVU_EV_JOURNAL_FULL 11 /* the event is handled; replay the journal */
#define UMVU_EV_NOTIF        12 /* seccomp user notification: tid, nr, args,
                                   ip, arch valid; msg = notification id,
                                   status = the listener it came from      */
#define UMVU_EV_FD_OPENED    13 /* journal only: the C core opened a file of
                                   a plain bind for tid: status = the fd,
                                   flags = the open flags, path = its path
                                   in the view                             */
#define UMVU_EV_FD_CLOSED    14 /* journal only: tid closed mirrored fd
                                   status                                  */
#define UMVU_EV_FD_DUP       15 /* journal only: tid dup'ed mirrored fd msg
                                   to status; flags = 1: close-on-exec     */
#define UMVU_EV_FD_CLOEXEC   16 /* journal only: F_SETFD on mirrored fd
                                   status; flags = its FD_CLOEXEC          */

#define UMVU_CLONE_VM    0x100
#define UMVU_CLONE_VFORK 0x4000

struct umvu_event {
    int tid;
    int kind;
    int status;                 /* raw wait status                           */
    int event;                  /* PTRACE_EVENT_* for event stops            */
    int sig;
    unsigned long msg;          /* PTRACE_GETEVENTMSG                        */
    unsigned int arch;          /* seccomp/syscall stops                     */
    unsigned int ret_data;      /* SECCOMP_RET_DATA of the filter            */
    long nr;
    unsigned long args[6];
    unsigned long ip, sp;
    long rval;                  /* syscall-exit-stop                         */
};

/* Wait for the next event: a ptrace stop or exit, a seccomp notification on
 * one of the listeners, or a poke. timeout_us < 0: no timeout. -EAGAIN on a
 * timeout or a poke, -ECHILD when no child is left. */
int umvu_wait(struct umvu_event *ev, long timeout_us);
void umvu_poke(void);           /* from a worker: a deferred call is done */
int umvu_wait_init(void);       /* once, before any other thread exists */
int umvu_add_listener(int fd);
/* answer a notification: cont = let the kernel run the call */
int umvu_notif_reply(int fd, unsigned long long id, long result, int cont);
/* wait for one thread only (while running code inside it): no fast path */
int umvu_wait_tid(int tid, struct umvu_event *ev);
unsigned long umvu_clone_flags(int tid);

/* a tracer that sleeps is woken through an idle CPU: poll this long first */
void umvu_set_spin(unsigned long ns);

/* Process events handled in C while fast events are on (no filter
 * injection pending), and descriptors the C core opened below plain binds,
 * written to a journal Python replays in order. */
#define UMVU_JOURNAL_MAX 256
struct umvu_journal_entry {
    int kind;                   /* UMVU_EV_CLONE, _EXEC, _EXITED, _FD_OPENED */
    int tid;
    int status;
    unsigned long msg;
    unsigned long flags;        /* clone flags; open flags */
    char path[4097];            /* _FD_OPENED: the path in the view */
};
void umvu_set_fast_events(int on);
/* Before each umvu_wait: the exit of watch_pid returns to Python, and every
 * exit while wake_on_exits; early_pending: Python keeps stops of children it
 * has not met, so a clone that may introduce them returns too. */
void umvu_set_watch(int watch_pid, int wake_on_exits, int early_pending);
/* move up to max journal entries to out, oldest first; their number */
int umvu_journal_take(struct umvu_journal_entry *out, int max);

/* ---- fastpath.c: calls that reach nothing virtual ---------------------- */

/* One row per syscall number (0..UMVU_NR_MAX-1), built by Python from the
 * syscall table (ccore.FastRow): what to do at a seccomp stop when Python
 * need not see the call. Numbers outside the table (including the negative
 * control calls) always go to Python. */
#define UMVU_NR_MAX 512
#define UMVU_PATH_MAX 4096
#define UMVU_AT_FDCWD -100
#define UMVU_FAST_PYTHON 0      /* hand the stop to Python                    */
#define UMVU_FAST_RESUME 1      /* nobody owns it any more: let kernel run it */
#define UMVU_FAST_PATH 2        /* resume unless a path could be virtual      */
#define UMVU_FAST_FD 3          /* resume unless a descriptor argument is one
                                   the view mirrors for the thread          */
#define UMVU_FOLLOW_ALWAYS 0
#define UMVU_FOLLOW_NEVER 1
#define UMVU_FOLLOW_AT 2        /* unless AT_SYMLINK_NOFOLLOW in follow_arg   */
#define UMVU_FOLLOW_O 3         /* unless O_NOFOLLOW in follow_arg            */
#define UMVU_REWRITE_OPEN 4     /* umvu_fast_row.rewrite of an open           */
#define UMVU_FDC_DATA 0         /* fdclass: reads, writes, seeks, maps...     */
#define UMVU_FDC_TABLE 1        /* changes the descriptor table (close, dup,  */
                                /* fcntl): Python's, or journaled in C        */
#define UMVU_FDC_ATTR 2         /* changes the file's attributes (fchmod,     */
                                /* xattrs, ioctl)                             */
#define UMVU_FDC_STAT 3         /* reports them (fstat)                       */
#define UMVU_REWRITE_EXEC 5     /* of an execve: it runs as it is only when   */
                                /* neither the file nor its #! interpreter    */
                                /* reaches anything virtual                   */
struct umvu_fast_row {
    signed char kind;           /* UMVU_FAST_*                                */
    signed char path, at;       /* argument indexes, -1 none; FAST_FD: path   */
    signed char path2, at2;     /* and path2 are descriptor arguments        */
    signed char follow;         /* UMVU_FOLLOW_* for the last component       */
    signed char follow_arg;     /* the flags argument FOLLOW_AT/_O look at    */
    signed char empty;          /* the flags argument with AT_EMPTY_PATH      */
    signed char rewrite;        /* a path below a rewritable mount may be
                                   rewritten to its host path by the C core:
                                   1 a stat-like call, 2 one that changes a
                                   file, 3 one that makes or removes a name
                                   (a trailing slash follows no link); 4 an
                                   open (below a plain bind only: the C
                                   core mirrors the descriptor, journaled
                                   as UMVU_EV_FD_OPENED); 0 not          */
    signed char fdclass;        /* FAST_FD: UMVU_FDC_*, what the call does to
                                   its descriptor (which UMVU_FD_* flags
                                   let it run in the kernel)              */
};
/* rows[nr] for nr < n, the rest UMVU_FAST_PYTHON */
int umvu_set_fast_rows(const struct umvu_fast_row *rows, int n);

/* per-thread flags (umvu_set_thread); a cwd below a mount shows in the
 * cwd itself, the descriptors the view mirrors in the list */
#define UMVU_TF_PYTHON 4        /* always ask Python (chroot...)               */
#define UMVU_TF_NOMAP 8         /* its rights differ from the hypervisor's: no */
                                /* walk below a bind in C (umvu_set_mounts)    */
#define UMVU_TF_SHARED 16       /* its descriptor table is another thread's or */
                                /* process's too: no table change in C (it    */
                                /* would reach this thread's entry only)      */
/* a descriptor the view mirrors */
#define UMVU_FD_NATIVE 1        /* the kernel's answers are the view's for its */
                                /* calls (a file of a plain bind): only those  */
                                /* that change the table (close, dup) stop     */
#define UMVU_FD_READS 8         /* its data and stat calls are the kernel's    */
                                /* (a lower layer's file, nothing of the      */
                                /* service's to show): attribute changes stop */
#define UMVU_FD_STAT 16         /* its stat calls are the kernel's (a merged   */
                                /* directory with no metadata of its own)     */
#define UMVU_FD_TABLE_C 2       /* its close and F_SETFD may be done in C and  */
                                /* journaled (UMVU_EV_FD_*): not a served file */
#define UMVU_FD_DUP_C 4         /* and its dup* too: a dup needs no filter of  */
                                /* its own                                     */
struct umvu_fd {
    int fd;
    int window;                 /* its window (window.c), or 0               */
    int flags;                  /* UMVU_FD_*                                  */
    const char *path;           /* a directory's path in the view: calls      */
                                /* relative to it are walked from there; NULL */
    const char *host;           /* with path: the file the kernel opened; the */
                                /* path counts while /proc/TID/fd/FD names it */
                                /* (a process that does not trap close reuses */
                                /* numbers unseen)                            */
};
int umvu_set_thread(int tid, int tgid, int flags, const char *cwd,
                    const struct umvu_fd *fds, int nfds);
void umvu_forget_thread(int tid);
/* some process's /proc/PID/{cwd,root,exe,fd} differ from the kernel's */
void umvu_set_proc_virtual(int on);

/* A mount point, and how far the C core may walk below it. host NULL:
 * Python answers every path below. bottom NULL: a plain bind (a path below
 * stands for the same name under host). Else layers, for stat-like calls
 * only: a name is shown from host (the top layer) if it has it, else from
 * bottom, unless the top's bookkeeping says otherwise, which the mount's
 * layer protocol describes:
 *   host/store/P, a regular file: P was deleted (and all below it);
 *   host/store/P<meta_suffix> exists: P has metadata of its own;
 *   host/store itself is the bookkeeping (never shown).
 * Both the store's name and the suffix are needed to walk layers. */
struct umvu_mount {
    const char *path;
    const char *host;
    const char *bottom;
    const char *store;
    const char *meta_suffix;
};
/* the mounts in mount order (a newer one below an older one comes later) */
int umvu_set_mounts(const struct umvu_mount *mounts, int n);

/* what the fast path has done since the start */
struct umvu_stats {
    unsigned long resumed;      /* seccomp stops resumed without Python */
    unsigned long paths;        /* path calls decided in C */
    unsigned long fds;          /* descriptor calls decided in C */
    unsigned long windows;      /* calls on windows answered in C */
};
void umvu_get_stats(struct umvu_stats *out);

/* ---- window.c: served files that are windows on a host file ---------- */

/* A served file whose bytes are [offset, offset+size) of host descriptor fd
 * (vudev): its read, write, pread64, pwrite64, readv, writev, preadv,
 * pwritev, preadv2, pwritev2 and lseek are answered in C at the stop,
 * clamped to the window. The window keeps its own description of the file
 * and the open file's offset; its range is mapped once per owner (the
 * service: an id of Python's, 0 for none) and kept mapped until
 * umvu_window_forget(owner). Returns an id > 0, or -errno. */
#define UMVU_WIN_READ 1             /* opened for reading                     */
#define UMVU_WIN_WRITE 2            /* opened for writing                     */
#define UMVU_WIN_RDONLY 4           /* the file refuses writes now (EPERM)    */
int umvu_window_open(int fd, unsigned long long offset, unsigned long long size,
                     int flags, long owner);
void umvu_window_close(int id);
void umvu_window_forget(long owner);
int umvu_window_set_flags(int id, int flags);   /* only UMVU_WIN_RDONLY changes */
long long umvu_window_pos(int id, long long pos);   /* pos >= 0 sets it */
/* 1 when call nr is one a window answers */
int umvu_window_handles(long nr);
/* the answer to call nr with args on window id, made by thread tid */
long umvu_window_call(int id, int tid, long nr, const unsigned long *args);

/* ---- tracee.c: registers and memory of a stopped thread ----------------- */

long umvu_ptrace(int req, int tid, unsigned long addr, unsigned long data);
int umvu_getregs(int tid, struct umvu_regs *regs);
int umvu_setregs(int tid, const struct umvu_regs *regs);
int umvu_set_result(int tid, long result);    /* skip the call at a seccomp stop */
long umvu_read(int tid, unsigned long addr, void *buf, unsigned long len);
long umvu_write(int tid, unsigned long addr, const void *buf, unsigned long len);
long umvu_read_str(int tid, unsigned long addr, char *buf, unsigned long max);

/* ---- spawn.c: a new process of the view --------------------------------- */

/* notif_filter is installed first, with a listener (returned in *listener);
 * then filter, if filter_len; the child is PTRACE_SEIZEd only if
 * ptrace_options is not 0 */
int umvu_spawn(const char *path, char *const argv[], char *const envp[],
               const void *notif_filter, unsigned short notif_len,
               const void *filter, unsigned short filter_len,
               unsigned long ptrace_options, const int *default_sigs, int nsigs,
               const char *display_name, int *listener);
