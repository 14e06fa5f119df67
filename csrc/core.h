/* umvu C core: the parts of the tracer that run on every stop.
 *
 * Python owns policy; this file owns the wait loop, register and memory
 * access, and the decision "nobody wants this call: resume it" so that such
 * stops never take the GIL.  Everything here is x86_64 Linux.
 */

struct umvu_regs {              /* same layout as struct user_regs_struct */
    unsigned long r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx,
        rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base,
        ds, es, fs, gs;
};

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

/* Fast-path table, indexed by syscall number (0..UMVU_NR_MAX-1), filled by
 * Python from the syscall table: what to do at a seccomp stop when Python
 * need not see the call. Numbers outside the table (including the negative
 * control calls) always go to Python. */
#define UMVU_NR_MAX 512
#define UMVU_PATH_MAX 4096
#define UMVU_AT_FDCWD -100
#define UMVU_FAST_PYTHON 0      /* hand the stop to Python                    */
#define UMVU_FAST_RESUME 1      /* nobody owns it any more: let kernel run it */
#define UMVU_FAST_PATH 2        /* resume unless a path could be virtual      */
#define UMVU_FAST_FD 3          /* resume unless the thread has virtual fds   */
#define UMVU_FOLLOW_ALWAYS 0
#define UMVU_FOLLOW_NEVER 1
#define UMVU_FOLLOW_AT 2        /* unless AT_SYMLINK_NOFOLLOW in follow_arg   */
#define UMVU_FOLLOW_O 3         /* unless O_NOFOLLOW in follow_arg            */
struct umvu_nrinfo {
    signed char kind, path, at, path2, at2, follow, follow_arg, empty;
    signed char rewrite;        /* a path below a rewritable mount may be
                                   rewritten to its host path by the C core:
                                   1 a stat-like call, 2 one that changes a
                                   file, 3 one that makes or removes a name
                                   (a trailing slash follows no link); 0 not */
};
extern struct umvu_nrinfo umvu_nrinfo[512];

/* per-thread flags (umvu_set_thread); a cwd below a mount shows in the
 * cwd itself, mirrored descriptors in the list */
#define UMVU_TF_PYTHON 4        /* always ask Python (chroot...)               */
#define UMVU_TF_NOMAP 8         /* its rights differ from the hypervisor's: no */
                                /* walk below a bind in C (umvu_set_mounts)    */
extern int umvu_proc_virtual;
extern unsigned long umvu_fast_resumed, umvu_fast_paths, umvu_fast_fds;

int umvu_set_thread(int tid, int tgid, int flags, const char *cwd,
                    const int *low, int nlow);
void umvu_forget_thread(int tid);
/* mount points in mount order; sources[i]: the host directory a path below
 * paths[i] stands for (a plain bind), or NULL: Python answers below it;
 * bottoms[i] too: layers (vufs cow...), sources[i] the top one, whose
 * SOURCE/.- holds deletions and metadata: C answers only stat-like calls */
int umvu_set_mounts(char **paths, char **sources, char **bottoms, int n);
/* at a seccomp stop: 0 ask Python, 1 resume, 2 rewrite (umvu_fast_rewrite) */
int umvu_fast_decide(int tid, long nr, const unsigned long *args);
/* after umvu_fast_decide said 2: point the argument at the host path; the
 * thread is resumed to its exit stop, where umvu_fast_restore puts the
 * registers back. Return 0 when done (else: ask Python). */
int umvu_fast_rewrite(int tid, unsigned long sp);
int umvu_fast_restore(int tid);
extern unsigned long umvu_spin_ns;        /* poll this long before sleeping */

/* Process events handled in C while umvu_fast_events is set (no filter
 * injection pending), written here for Python to replay in order. */
#define UMVU_JOURNAL_MAX 256
struct umvu_journal_entry {
    int kind;                   /* UMVU_EV_CLONE, _EXEC or _EXITED */
    int tid;
    int status;
    unsigned long msg;
    unsigned long flags;        /* clone flags */
};
extern struct umvu_journal_entry umvu_journal[256];
extern int umvu_journal_len;
extern int umvu_fast_events;
extern int umvu_early_pending;  /* Python keeps stops of unannounced children */
extern int umvu_watch_pid;      /* its exit returns to Python...             */
extern int umvu_wake_on_exits;  /* ...and every exit, while this is set      */

unsigned long umvu_clone_flags(int tid);
/* Wait for the next event: a ptrace stop or exit, a seccomp notification on
 * one of the listeners, or a poke. timeout_us < 0: no timeout. -EAGAIN on a
 * timeout or a poke, -ECHILD when no child is left. */
int umvu_wait(struct umvu_event *ev, long timeout_us);
void umvu_poke(void);           /* from a worker: a deferred call is done */
int umvu_wait_init(void);       /* once, before any other thread exists */
int umvu_add_listener(int fd);
/* answer a notification: cont = let the kernel run the call */
int umvu_notif_reply(int fd, unsigned long long id, long result, int cont);
int umvu_wait_tid(int tid, struct umvu_event *ev);
long umvu_ptrace(int req, int tid, unsigned long addr, unsigned long data);
int umvu_getregs(int tid, struct umvu_regs *regs);
int umvu_setregs(int tid, const struct umvu_regs *regs);
int umvu_set_result(int tid, long result);    /* skip the call at a seccomp stop */
long umvu_read(int tid, unsigned long addr, void *buf, unsigned long len);
long umvu_write(int tid, unsigned long addr, const void *buf, unsigned long len);
long umvu_read_str(int tid, unsigned long addr, char *buf, unsigned long max);
/* notif_filter is installed first, with a listener (returned in *listener);
 * then filter, if filter_len; the child is PTRACE_SEIZEd only if
 * ptrace_options is not 0 */
int umvu_spawn(const char *path, char *const argv[], char *const envp[],
               const void *notif_filter, unsigned short notif_len,
               const void *filter, unsigned short filter_len,
               unsigned long ptrace_options, const int *default_sigs, int nsigs,
               const char *display_name, int *listener);
