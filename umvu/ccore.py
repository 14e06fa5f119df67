"""The Python face of the whole C core (umvu._core, csrc/): its constants,
checked calls and the rows and tables it is given, built by field name.

The C core's state is set only through the functions here (csrc/core.h
lists them); nothing outside this module touches `lib` to assign it."""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from ._core import ffi, lib

# ptrace requests and options (linux/ptrace.h)
PTRACE_CONT = 7
PTRACE_KILL = 8
PTRACE_SYSCALL = 24
PTRACE_INTERRUPT = 0x4207
PTRACE_LISTEN = 0x4208
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206

O_TRACESYSGOOD = 1
O_TRACEFORK = 1 << 1
O_TRACEVFORK = 1 << 2
O_TRACECLONE = 1 << 3
O_TRACEEXEC = 1 << 4
O_TRACEVFORKDONE = 1 << 5
O_TRACEEXIT = 1 << 6
O_TRACESECCOMP = 1 << 7
O_EXITKILL = 1 << 20
OPTIONS = (O_TRACESYSGOOD | O_TRACEFORK | O_TRACEVFORK | O_TRACECLONE
           | O_TRACEEXEC | O_TRACEEXIT | O_TRACESECCOMP | O_EXITKILL)

EV_SECCOMP = lib.UMVU_EV_SECCOMP
EV_SYSCALL_EXIT = lib.UMVU_EV_SYSCALL_EXIT
EV_SYSCALL_ENTRY = lib.UMVU_EV_SYSCALL_ENTRY
EV_CLONE = lib.UMVU_EV_CLONE
EV_EXEC = lib.UMVU_EV_EXEC
EV_EXIT_STOP = lib.UMVU_EV_EXIT_STOP
EV_STOP = lib.UMVU_EV_STOP
EV_SIGNAL = lib.UMVU_EV_SIGNAL
EV_EXITED = lib.UMVU_EV_EXITED
EV_VFORK_DONE = lib.UMVU_EV_VFORK_DONE
EV_JOURNAL_FULL = lib.UMVU_EV_JOURNAL_FULL
EV_NOTIF = lib.UMVU_EV_NOTIF

FAST_PYTHON = lib.UMVU_FAST_PYTHON
FAST_RESUME = lib.UMVU_FAST_RESUME
FAST_PATH = lib.UMVU_FAST_PATH
FAST_FD = lib.UMVU_FAST_FD
FOLLOW_ALWAYS = lib.UMVU_FOLLOW_ALWAYS
FOLLOW_NEVER = lib.UMVU_FOLLOW_NEVER
FOLLOW_AT = lib.UMVU_FOLLOW_AT
FOLLOW_O = lib.UMVU_FOLLOW_O
TF_PYTHON = lib.UMVU_TF_PYTHON
TF_NOMAP = lib.UMVU_TF_NOMAP
TF_SHARED = lib.UMVU_TF_SHARED
NR_MAX = lib.UMVU_NR_MAX


def check(ret: int) -> int:
    if ret < 0:
        raise OSError(-ret, os.strerror(-ret))
    return ret


def ptrace(req: int, tid: int, addr: int = 0, data: int = 0) -> int:
    return check(lib.umvu_ptrace(req, tid, addr, data))


def try_ptrace(req: int, tid: int, addr: int = 0, data: int = 0) -> int:
    """ptrace that tolerates a thread that vanished (ESRCH): returns -errno."""
    return lib.umvu_ptrace(req, tid, addr, data)


def new_event():
    return ffi.new("struct umvu_event *")


def getregs(tid: int):
    regs = ffi.new("struct umvu_regs *")
    check(lib.umvu_getregs(tid, regs))
    return regs


def setregs(tid: int, regs) -> None:
    check(lib.umvu_setregs(tid, regs))


def copy_regs(regs):
    new = ffi.new("struct umvu_regs *")
    ffi.memmove(new, regs, ffi.sizeof("struct umvu_regs"))
    return new


def read(tid: int, addr: int, size: int) -> bytes:
    buf = ffi.new("char[]", size)
    n = check(lib.umvu_read(tid, addr, buf, size))
    if n < size:
        raise OSError(errno.EFAULT, "short read from tracee memory")
    return ffi.buffer(buf, n)[:]


def write(tid: int, addr: int, data: bytes) -> None:
    n = check(lib.umvu_write(tid, addr, data, len(data)))
    if n < len(data):
        raise OSError(errno.EFAULT, "short write to tracee memory")


def read_str(tid: int, addr: int, limit: int = 4096) -> bytes:
    """A NUL-terminated string; ENAMETOOLONG past `limit` bytes."""
    if addr == 0:
        raise OSError(errno.EFAULT, "NULL string pointer")
    buf = ffi.new("char[]", limit)
    n = check(lib.umvu_read_str(tid, addr, buf, limit))
    return ffi.buffer(buf, n)[:]


class FastRow(NamedTuple):
    """What the C core may decide alone at a seccomp stop of one syscall
    number (struct umvu_fast_row, field for field): argument indexes are
    -1 where there is none."""
    kind: int = FAST_PYTHON     # FAST_PYTHON, FAST_RESUME, FAST_PATH, FAST_FD
    path: int = -1              # FAST_PATH: the path argument; FAST_FD: the fd
    at: int = -1                # its dirfd argument
    path2: int = -1             # a second path (or descriptor) argument
    at2: int = -1               # its dirfd argument
    follow: int = FOLLOW_ALWAYS  # FOLLOW_*: is a last symlink followed
    follow_arg: int = -1        # the flags argument FOLLOW_AT/FOLLOW_O read
    empty: int = -1             # the flags argument that may say AT_EMPTY_PATH
    rewrite: int = 0            # 1 stat-like, 2 changes a file, 3 makes or
                                # removes a name: the C core may rewrite the
                                # path to the host one below a bind; 0 not
    fdclass: int = 0            # FAST_FD: FDC_*, what it does to its descriptor


#: the row of a number trapped by a filter that nobody wants any more
RESUME = FastRow(FAST_RESUME)


def set_fast_rows(rows: dict[int, FastRow]) -> None:
    """The fast-path row of each syscall number; numbers not given (and
    rows of kind FAST_PYTHON) go to Python."""
    table = ffi.new("struct umvu_fast_row[]", NR_MAX)
    for nr, row in rows.items():
        table[nr] = row._asdict()
    check(lib.umvu_set_fast_rows(table, NR_MAX))


class MountRow(NamedTuple):
    """A mount point and how far the C core may walk below it (struct
    umvu_mount): host None, Python answers every path below it; bottom
    None, a plain bind to host; else layers (host the top one) by the
    protocol store (the name of the top's bookkeeping directory: a regular
    file there is a deletion) and meta_suffix (added to such a name: that
    file holds metadata of its own). Without store and meta_suffix layers
    are not walked in C."""
    path: str
    host: str | None = None
    bottom: str | None = None
    store: str | None = None
    meta_suffix: str | None = None


def set_mounts(mounts: list[MountRow]) -> None:
    """The mount points in mount order (tuples in MountRow's field order)."""
    table = ffi.new("struct umvu_mount[]", max(len(mounts), 1))
    keep = []                   # the strings, alive during the call
    for i, row in enumerate(mounts):
        row = MountRow(*row)
        for field, value in row._asdict().items():
            if value is not None:
                keep.append(ffi.new("char[]", os.fsencode(value)))
                setattr(table[i], field, keep[-1])
    check(lib.umvu_set_mounts(table, len(mounts)))


FD_NATIVE = lib.UMVU_FD_NATIVE
FD_TABLE_C = lib.UMVU_FD_TABLE_C
FD_DUP_C = lib.UMVU_FD_DUP_C
FD_READS = lib.UMVU_FD_READS
FD_STAT = lib.UMVU_FD_STAT
FDC_DATA, FDC_TABLE, FDC_ATTR, FDC_STAT = (lib.UMVU_FDC_DATA, lib.UMVU_FDC_TABLE,
                                           lib.UMVU_FDC_ATTR, lib.UMVU_FDC_STAT)


def set_thread(tid: int, tgid: int, flags: int, cwd: str, fds=()) -> None:
    """What the C core knows of a thread: its process, TF_* flags, cwd and
    the descriptors the view mirrors, as (fd, window id or 0, FD_* flags,
    a directory's view path or None, the host file it stands for) (more
    than 64: TF_PYTHON)."""
    fds = list(fds)
    table = ffi.new("struct umvu_fd[]", max(len(fds), 1))
    keep = []                   # the strings, alive during the call
    for i, (fd, window, fd_flags, path, host) in enumerate(fds):
        table[i].fd, table[i].window, table[i].flags = fd, window, fd_flags
        if path is not None and host:
            keep.append(ffi.new("char[]", os.fsencode(path)))
            table[i].path = keep[-1]
            keep.append(ffi.new("char[]", os.fsencode(host)))
            table[i].host = keep[-1]
    check(lib.umvu_set_thread(tid, tgid, flags, os.fsencode(cwd), table, len(fds)))


WIN_READ, WIN_WRITE, WIN_RDONLY = lib.UMVU_WIN_READ, lib.UMVU_WIN_WRITE, lib.UMVU_WIN_RDONLY


def window_open(fd: int, offset: int, size: int, flags: int, owner: int = 0) -> int:
    """A window on bytes [offset, offset+size) of host descriptor fd whose
    data calls the C core answers (csrc/window.c); its id. The range stays
    mapped for `owner` until window_forget(owner)."""
    return check(lib.umvu_window_open(fd, offset, size, flags, owner))


def window_forget(owner: int) -> None:
    lib.umvu_window_forget(owner)


def window_close(wid: int) -> None:
    lib.umvu_window_close(wid)


def window_set_flags(wid: int, flags: int) -> None:
    lib.umvu_window_set_flags(wid, flags)


def window_pos(wid: int, pos: int = -1) -> int:
    """The window's file offset (set first when pos >= 0)."""
    return check(lib.umvu_window_pos(wid, pos))


def window_handles(nr: int) -> bool:
    return bool(lib.umvu_window_handles(nr))


def window_call(wid: int, tid: int, nr: int, args) -> int:
    """What the C core answers to call nr(args) on the window (the same
    answer the fast path gives at the stop)."""
    return lib.umvu_window_call(wid, tid, nr, ffi.new("unsigned long[6]", list(args)[:6]))


def set_proc_virtual() -> None:
    """Some process's /proc/PID/{cwd,fd,exe,root} now differ from the
    kernel's: the C core sends such paths to Python from now on."""
    lib.umvu_set_proc_virtual(1)


def stats() -> dict[str, int]:
    """What the fast path decided alone since the start: stops resumed,
    path calls and descriptor calls."""
    out = ffi.new("struct umvu_stats *")
    lib.umvu_get_stats(out)
    return {"resumed": out.resumed, "paths": out.paths, "fds": out.fds,
            "windows": out.windows}


_journal = ffi.new("struct umvu_journal_entry[]", lib.UMVU_JOURNAL_MAX)
EV_FD_OPENED = lib.UMVU_EV_FD_OPENED
EV_FD_CLOSED = lib.UMVU_EV_FD_CLOSED
EV_FD_DUP = lib.UMVU_EV_FD_DUP
EV_FD_CLOEXEC = lib.UMVU_EV_FD_CLOEXEC
FD_EVENTS = frozenset({EV_FD_OPENED, EV_FD_CLOSED, EV_FD_DUP, EV_FD_CLOEXEC})
REWRITE_OPEN = lib.UMVU_REWRITE_OPEN
REWRITE_EXEC = lib.UMVU_REWRITE_EXEC


def journal_take() -> list[tuple]:
    """The process events the C core handled alone since the last call, and
    the descriptor table changes it made (EV_FD_*), oldest first: (kind,
    tid, msg, flags, status), and for EV_FD_OPENED the path in the view
    last."""
    n = lib.umvu_journal_take(_journal, lib.UMVU_JOURNAL_MAX)
    out = []
    for i in range(n):
        e = _journal[i]
        if e.kind == EV_FD_OPENED:
            out.append((e.kind, e.tid, e.msg, e.flags, e.status,
                        os.fsdecode(ffi.string(e.path))))
        else:
            out.append((e.kind, e.tid, e.msg, e.flags, e.status))
    return out


def spawn(path: str, argv: list[str], env: dict[str, str], notif_bpf: bytes,
          bpf: bytes | None, default_signals: list[int]) -> tuple[int, int]:
    """Start a process of the view: notif_bpf (with a listener), then bpf
    if given, traced from its first instruction. Returns (pid, listener)."""
    keep = []

    def cstrings(items):
        arr = ffi.new("char *[]", len(items) + 1)
        for i, item in enumerate(items):
            s = ffi.new("char[]", os.fsencode(item))
            keep.append(s)
            arr[i] = s
        arr[len(items)] = ffi.NULL
        return arr

    c_argv = cstrings(argv)
    c_env = cstrings([f"{k}={v}" for k, v in env.items()])
    sigs = ffi.new("int[]", default_signals or [0])
    listener = ffi.new("int *")
    bpf = bpf or b""
    pid = check(lib.umvu_spawn(os.fsencode(path), c_argv, c_env,
                               notif_bpf, len(notif_bpf) // 8, bpf, len(bpf) // 8,
                               OPTIONS if bpf else 0, sigs, len(default_signals),
                               os.fsencode(argv[0]), listener))
    return pid, listener[0]
