"""The declarative x86_64 syscall table: the single source for the seccomp
filter (umvu.seccomp_filter), the C fast-path rows (umvu.vfs.feeder) and the
coverage page (docs/syscalls.md, written by `python -m umvu.syscall_table`).

Each line: number, name, family, then key=value details.

Families say who could ever want to answer the call:
  never    memory, signals, futex, scheduling, exit...: no module can
           virtualize them, the filter always lets them run
  proc     process life (clone/fork/exec/wait): followed with ptrace events
  path     names a file (path=arg index, at=dirfd index, path2/at2 for a
           second name, nofollow=how the last component is treated:
           always | at:ARG (AT_SYMLINK_NOFOLLOW in arg) | o:ARG (O_NOFOLLOW)
           | empty:ARG (AT_EMPTY_PATH allowed in arg))
  fd       reads, writes or inspects an open file (fd=arg index)
  fdmeta   changes the descriptor table or the cwd (close, dup, fcntl,
           fchdir): the view mirrors virtual descriptors
  fdattr   changes an open file's metadata (fchmod, fchown, fxattr)
  fdnew    creates a descriptor with no name (pipe, eventfd...)
  socket   sockets (msocket-aware modules)
  id       user and group ids (unrealuidgid)
  time     clocks (vumisc)
  host     host and domain name, uname (vumisc)
  mount    mount/umount: always trapped so vumount reaches the modules

Arguments a path call's service needs, by role (the row is the only place
that knows a syscall's shape):
  op=      what it does to its path (module.PathCall.op): stat, open,
           modify, create, delete, rename, link
  mode= dev= uid= gid= length= times= flags=   index of that argument
  statbuf=N:stat|statx   the stat buffer a service's metadata patches

vcall=NAME makes the call a variant of a virtual call (as VUOS's
vu_syscalls.conf does): a module handles NAME once and umvu.vcalls turns
each variant into it (getuid, setreuid, setfsuid... -> getresfuid and
setresfuid; time, gettimeofday, clock_gettime -> clock_gettime).
  kernel   kernel-wide admin calls no module virtualizes today
"""

from __future__ import annotations

import typing
import sys

_TABLE = """
0   read            fd
1   write           fd
2   open            path path=0 nofollow=o:1 op=open mode=2
3   close           fdmeta
4   stat            path path=0 op=stat statbuf=1:stat
5   fstat           fd statbuf=1:stat
6   lstat           path path=0 nofollow=always op=stat statbuf=1:stat
7   poll            fd fd=-1 note=pollfd array
8   lseek           fd
9   mmap            fd fd=4
10  mprotect        never
11  munmap          never
12  brk             never
13  rt_sigaction    never
14  rt_sigprocmask  never
15  rt_sigreturn    never
16  ioctl           fd
17  pread64         fd
18  pwrite64        fd
19  readv           fd
20  writev          fd
21  access          path path=0 op=stat mode=1
22  pipe            fdnew
23  select          fd fd=-1 note=fd sets
24  sched_yield     never
25  mremap          never
26  msync           never
27  mincore         never
28  madvise         never
29  shmget          never
30  shmat           never
31  shmctl          never
32  dup             fdmeta
33  dup2            fdmeta fd2=1
34  pause           never
35  nanosleep       time
36  getitimer       never
37  alarm           never
38  setitimer       never
39  getpid          never
40  sendfile        fd fd2=1
41  socket          socket
42  connect         socket fd=0
43  accept          socket fd=0
44  sendto          socket fd=0
45  recvfrom        socket fd=0
46  sendmsg         socket fd=0
47  recvmsg         socket fd=0
48  shutdown        socket fd=0
49  bind            socket fd=0
50  listen          socket fd=0
51  getsockname     socket fd=0
52  getpeername     socket fd=0
53  socketpair      socket
54  setsockopt      socket fd=0
55  getsockopt      socket fd=0
56  clone           proc
57  fork            proc
58  vfork           proc
59  execve          path path=0 op=stat
60  exit            never
61  wait4           proc
62  kill            never
63  uname           host
64  semget          never
65  semop           never
66  semctl          never
67  shmdt           never
68  msgget          never
69  msgsnd          never
70  msgrcv          never
71  msgctl          never
72  fcntl           fdmeta
73  flock           fd
74  fsync           fd
75  fdatasync       fd
76  truncate        path path=0 op=modify length=1
77  ftruncate       fd
78  getdents        fd
79  getcwd          path note=answered from the process cwd
80  chdir           path path=0 op=stat
81  fchdir          fdmeta
82  rename          path path=0 path2=1 nofollow=always op=rename
83  mkdir           path path=0 nofollow=always op=create mode=1
84  rmdir           path path=0 nofollow=always op=delete
85  creat           path path=0 op=open mode=1
86  link            path path=0 path2=1 nofollow=always op=link
87  unlink          path path=0 nofollow=always op=delete
88  symlink         path path2=1 nofollow=always op=create note=arg 0 is link content
89  readlink        path path=0 nofollow=always op=stat
90  chmod           path path=0 op=modify mode=1
91  fchmod          fdattr
92  chown           path path=0 op=modify uid=1 gid=2
93  fchown          fdattr
94  lchown          path path=0 nofollow=always op=modify uid=1 gid=2
95  umask           path note=kept per process for virtual creat
96  gettimeofday    time vcall=clock_gettime
97  getrlimit       never
98  getrusage       never
99  sysinfo         time
100 times           time
101 ptrace          kernel note=tracees cannot trace (one tracer per task)
102 getuid          id vcall=getresfuid
103 syslog          kernel
104 getgid          id vcall=getresfgid
105 setuid          id vcall=setresfuid
106 setgid          id vcall=setresfgid
107 geteuid         id vcall=getresfuid
108 getegid         id vcall=getresfgid
109 setpgid         never
110 getppid         never
111 getpgrp         never
112 setsid          never
113 setreuid        id vcall=setresfuid
114 setregid        id vcall=setresfgid
115 getgroups       id
116 setgroups       id
117 setresuid       id vcall=setresfuid
118 getresuid       id vcall=getresfuid
119 setresgid       id vcall=setresfgid
120 getresgid       id vcall=getresfgid
121 getpgid         never
122 setfsuid        id vcall=setresfuid
123 setfsgid        id vcall=setresfgid
124 getsid          never
125 capget          id
126 capset          id
127 rt_sigpending   never
128 rt_sigtimedwait never
129 rt_sigqueueinfo never
130 rt_sigsuspend   never
131 sigaltstack     never
132 utime           path path=0 op=modify times=1
133 mknod           path path=0 nofollow=always op=create mode=1 dev=2
134 uselib          kernel
135 personality     never
136 ustat           kernel
137 statfs          path path=0 op=stat
138 fstatfs         fd
139 sysfs           kernel
140 getpriority     never
141 setpriority     never
142 sched_setparam  never
143 sched_getparam  never
144 sched_setscheduler never
145 sched_getscheduler never
146 sched_get_priority_max never
147 sched_get_priority_min never
148 sched_rr_get_interval never
149 mlock           never
150 munlock         never
151 mlockall        never
152 munlockall      never
153 vhangup         kernel
154 modify_ldt      never
155 pivot_root      mount
156 _sysctl         kernel
157 prctl           never
158 arch_prctl      never
159 adjtimex        time
160 setrlimit       never
161 chroot          path path=0
162 sync            fd fd=-1
163 acct            kernel
164 settimeofday    time vcall=clock_settime
165 mount           mount path=1 note=source is arg 0, type arg 2, data arg 4
166 umount2         mount path=0
167 swapon          kernel
168 swapoff         kernel
169 reboot          kernel
170 sethostname     host
171 setdomainname   host
172 iopl            kernel
173 ioperm          kernel
174 create_module   kernel
175 init_module     kernel
176 delete_module   kernel
177 get_kernel_syms kernel
178 query_module    kernel
179 quotactl        kernel
180 nfsservctl      kernel
181 getpmsg         kernel
182 putpmsg         kernel
183 afs_syscall     kernel
184 tuxcall         kernel
185 security        kernel
186 gettid          never
187 readahead       fd
188 setxattr        path path=0 op=modify
189 lsetxattr       path path=0 nofollow=always op=modify
190 fsetxattr       fdattr
191 getxattr        path path=0 op=stat
192 lgetxattr       path path=0 nofollow=always op=stat
193 fgetxattr       fd
194 listxattr       path path=0 op=stat
195 llistxattr      path path=0 nofollow=always op=stat
196 flistxattr      fd
197 removexattr     path path=0 op=modify
198 lremovexattr    path path=0 nofollow=always op=modify
199 fremovexattr    fdattr
200 tkill           never
201 time            time vcall=clock_gettime
202 futex           never
203 sched_setaffinity never
204 sched_getaffinity never
205 set_thread_area never
206 io_setup        kernel note=aio: refused on served fds by the fd family
207 io_destroy      kernel
208 io_getevents    kernel
209 io_submit       kernel
210 io_cancel       kernel
211 get_thread_area never
212 lookup_dcookie  kernel
213 epoll_create    fdnew
214 epoll_ctl_old   kernel
215 epoll_wait_old  kernel
216 remap_file_pages never
217 getdents64      fd
218 set_tid_address never
219 restart_syscall never
220 semtimedop      never
221 fadvise64       fd
222 timer_create    time
223 timer_settime   time
224 timer_gettime   time
225 timer_getoverrun never
226 timer_delete    never
227 clock_settime   time vcall=clock_settime
228 clock_gettime   time vcall=clock_gettime
229 clock_getres    time
230 clock_nanosleep time
231 exit_group      never
232 epoll_wait      fd
233 epoll_ctl       fd
234 tgkill          never
235 utimes          path path=0 op=modify times=1
236 vserver         kernel
237 mbind           never
238 set_mempolicy   never
239 get_mempolicy   never
240 mq_open         kernel
241 mq_unlink       kernel
242 mq_timedsend    kernel
243 mq_timedreceive kernel
244 mq_notify       kernel
245 mq_getsetattr   kernel
246 kexec_load      kernel
247 waitid          proc
248 add_key         kernel
249 request_key     kernel
250 keyctl          kernel
251 ioprio_set      never
252 ioprio_get      never
253 inotify_init    fdnew
254 inotify_add_watch path path=1 op=stat
255 inotify_rm_watch fd
256 migrate_pages   never
257 openat          path at=0 path=1 nofollow=o:2 op=open mode=3
258 mkdirat         path at=0 path=1 nofollow=always op=create mode=2
259 mknodat         path at=0 path=1 nofollow=always op=create mode=2 dev=3
260 fchownat        path at=0 path=1 nofollow=at:4 empty=4 op=modify uid=2 gid=3 flags=4
261 futimesat       path at=0 path=1 op=modify times=2
262 newfstatat      path at=0 path=1 nofollow=at:3 empty=3 op=stat statbuf=2:stat
263 unlinkat        path at=0 path=1 nofollow=always op=delete flags=2
264 renameat        path at=0 path=1 at2=2 path2=3 nofollow=always op=rename
265 linkat          path at=0 path=1 at2=2 path2=3 nofollow=always empty=4 op=link flags=4
266 symlinkat       path at2=1 path2=2 nofollow=always op=create note=arg 0 is link content
267 readlinkat      path at=0 path=1 nofollow=always empty=-1 op=stat
268 fchmodat        path at=0 path=1 op=modify mode=2
269 faccessat       path at=0 path=1 op=stat mode=2
270 pselect6        fd fd=-1 note=fd sets
271 ppoll           fd fd=-1 note=pollfd array
272 unshare         kernel note=namespaces would escape the view's mirrors
273 set_robust_list never
274 get_robust_list never
275 splice          fd fd2=2
276 tee             fd fd2=1
277 sync_file_range fd
278 vmsplice        fd
279 move_pages      never
280 utimensat       path at=0 path=1 nofollow=at:3 empty=3 op=modify times=2
281 epoll_pwait     fd
282 signalfd        fdnew
283 timerfd_create  time
284 eventfd         fdnew
285 fallocate       fd
286 timerfd_settime time
287 timerfd_gettime time
288 accept4         socket fd=0
289 signalfd4       fdnew
290 eventfd2        fdnew
291 epoll_create1   fdnew
292 dup3            fdmeta fd2=1
293 pipe2           fdnew
294 inotify_init1   fdnew
295 preadv          fd
296 pwritev         fd
297 rt_tgsigqueueinfo never
298 perf_event_open kernel
299 recvmmsg        socket fd=0
300 fanotify_init   kernel
301 fanotify_mark   path at=3 path=4 op=stat
302 prlimit64       never
303 name_to_handle_at path at=0 path=1 nofollow=at:4 empty=4 op=stat
304 open_by_handle_at fd
305 clock_adjtime   time
306 syncfs          fd
307 sendmmsg        socket fd=0
308 setns           kernel
309 getcpu          never
310 process_vm_readv never
311 process_vm_writev never
312 kcmp            never
313 finit_module    kernel
314 sched_setattr   never
315 sched_getattr   never
316 renameat2       path at=0 path=1 at2=2 path2=3 nofollow=always op=rename flags=4
317 seccomp         never note=lets the hypervisor tighten filters
318 getrandom       never
319 memfd_create    fdnew
320 kexec_file_load kernel
321 bpf             kernel
322 execveat        path at=0 path=1 nofollow=at:4 empty=4 op=stat
323 userfaultfd     fdnew
324 membarrier      never
325 mlock2          never
326 copy_file_range fd fd2=2
327 preadv2         fd
328 pwritev2        fd
329 pkey_mprotect   never
330 pkey_alloc      never
331 pkey_free       never
332 statx           path at=0 path=1 nofollow=at:2 empty=2 op=stat statbuf=4:statx
333 io_pgetevents   kernel
334 rseq            never
424 pidfd_send_signal never
425 io_uring_setup  kernel note=refused while a path service is mounted
426 io_uring_enter  kernel
427 io_uring_register kernel
428 open_tree       mount
429 move_mount      mount
430 fsopen          mount
431 fsconfig        mount
432 fsmount         mount
433 fspick          mount
434 pidfd_open      never
435 clone3          proc
436 close_range     fdmeta
437 openat2         path at=0 path=1 op=open note=RESOLVE_* flags in struct open_how
438 pidfd_getfd     fd
439 faccessat2      path at=0 path=1 nofollow=at:3 empty=3 op=stat mode=2
440 process_madvise never
441 epoll_pwait2    fd
442 mount_setattr   mount
443 quotactl_fd     kernel
444 landlock_create_ruleset kernel
445 landlock_add_rule kernel
446 landlock_restrict_self kernel
447 memfd_secret    fdnew
448 process_mrelease never
449 futex_waitv     never
450 set_mempolicy_home_node never
451 cachestat       fd
452 fchmodat2       path at=0 path=1 nofollow=at:3 empty=3 op=modify mode=2
453 map_shadow_stack never
454 futex_wake      never
455 futex_wait      never
456 futex_requeue   never
457 statmount       mount
458 listmount       mount
459 lsm_get_self_attr kernel
460 lsm_set_self_attr kernel
461 lsm_list_modules kernel
462 mseal           never
463 setxattrat      path at=0 path=1 nofollow=at:2 empty=2 op=modify
464 getxattrat      path at=0 path=1 nofollow=at:2 op=stat
465 listxattrat     path at=0 path=1 nofollow=at:2 op=stat
466 removexattrat   path at=0 path=1 nofollow=at:2 empty=2 op=modify
467 open_tree_attr  mount
468 file_getattr    path at=0 path=1 nofollow=at:4 op=stat
469 file_setattr    path at=0 path=1 nofollow=at:4 op=modify
"""

FAMILIES = ("never", "proc", "path", "fd", "fdmeta", "fdattr", "fdnew", "socket", "id", "time",
            "host", "mount", "kernel")

#: families trapped in every view, whatever is loaded
ALWAYS_TRAPPED = frozenset({"mount"})

#: the hypervisor's control calls (VUOS numbering, negative syscall numbers)
CONTROL_CALLS = {-1: "vu_insmod", -2: "vu_rmmod", -3: "vu_lsmod", -4: "vuctl",
                 -5: "msocket"}


class Syscall(typing.NamedTuple):   # not a dataclass: start-up time
    nr: int
    name: str
    family: str
    path: int | None = None       # index of the path argument
    at: int | None = None         # index of its dirfd argument
    path2: int | None = None      # second path (rename, link...)
    at2: int | None = None
    fd: int | None = 0            # index of the fd argument (fd families)
    fd2: int | None = None
    nofollow: str | None = None   # always | at:N | o:N
    empty: int | None = None      # arg index of flags that may hold AT_EMPTY_PATH
    vcall: str | None = None      # the virtual call it is a variant of (below)
    op: str | None = None         # path calls: stat open modify create delete rename link
    mode: int | None = None       # argument roles a service needs, by index
    dev: int | None = None
    uid: int | None = None
    gid: int | None = None
    length: int | None = None
    times: int | None = None
    flags: int | None = None      # the call's own AT_/RENAME_ flags
    statbuf: str | None = None    # "INDEX:stat" or "INDEX:statx"
    note: str = ""

    @property
    def stat_layout(self) -> tuple[int, str] | None:
        """(buffer argument, "stat" | "statx") of a stat call."""
        if self.statbuf is None:
            return None
        index, _, layout = self.statbuf.partition(":")
        return int(index), layout


_TEXT_FIELDS = ("nofollow", "vcall", "op", "statbuf")


def _parse(text: str) -> list[Syscall]:
    calls = []
    for line in text.strip().splitlines():
        head, _, note = line.partition(" note=")
        words = head.split()
        fields = {}
        for word in words[3:]:
            key, _, value = word.partition("=")
            fields[key] = value if key in _TEXT_FIELDS else int(value)
        if words[2] not in FAMILIES:
            raise ValueError(f"syscall table: unknown family in {line!r}")
        calls.append(Syscall(int(words[0]), words[1], words[2], note=note,
                             **fields))
    return calls


TABLE: list[Syscall] = _parse(_TABLE)
BY_NAME: dict[str, Syscall] = {s.name: s for s in TABLE}
BY_NR: dict[int, Syscall] = {s.nr: s for s in TABLE}
NR: dict[str, int] = {s.name: s.nr for s in TABLE}


#: virtual call -> the syscalls that are variants of it
VIRTUAL_CALLS: dict[str, tuple[str, ...]] = {}
for _s in TABLE:
    if _s.vcall:
        VIRTUAL_CALLS.setdefault(_s.vcall, ())
        VIRTUAL_CALLS[_s.vcall] += (_s.name,)


def numbers(families=(), names=()) -> set[int]:
    """Syscall numbers of the given families and names."""
    families = set(families)
    unknown = set(names) - BY_NAME.keys()
    if unknown:
        raise KeyError(f"unknown syscalls: {', '.join(sorted(unknown))}")
    return {s.nr for s in TABLE if s.family in families} | {NR[n] for n in names}


def name_of(nr: int) -> str:
    if nr in BY_NR:
        return BY_NR[nr].name
    return CONTROL_CALLS.get(nr, f"syscall_{nr}")


def coverage_markdown() -> str:
    """docs/syscalls.md: what umvu does with each syscall."""
    out = ["# Syscall coverage (x86_64)", "",
           "Generated by `python -m umvu.syscall_table > docs/syscalls.md` from",
           "`umvu/syscall_table.py`, the table that also builds the seccomp filter.",
           "Calls of family `never` are never stopped; `mount` calls always stop;",
           "the others stop only while a loaded module asks for their family.",
           "Unknown numbers (and the control calls) always stop.", "",
           "| nr | syscall | family | details |", "|---|---|---|---|"]
    for nr, name in sorted(CONTROL_CALLS.items(), reverse=True):
        out.append(f"| {nr} | {name} | control | answered by the hypervisor |")
    for s in TABLE:
        details = [f"{k}={v}" for k, v in (("path", s.path), ("at", s.at),
                   ("path2", s.path2), ("nofollow", s.nofollow),
                   ("virtual call", s.vcall)) if v is not None]
        if s.note:
            details.append(s.note)
        out.append(f"| {s.nr} | {s.name} | {s.family} | {', '.join(details)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(coverage_markdown())
