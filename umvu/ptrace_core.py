"""Thin Python face of the C core (umvu._core): constants and checked calls."""

from __future__ import annotations

import errno
import os

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


def set_fast_info(info: dict[int, tuple]) -> None:
    """Per-syscall fast-path entries: nr -> (kind, path, at, path2, at2,
    follow, follow_arg, empty, rewrite); numbers not given go to Python."""
    table = lib.umvu_nrinfo
    for nr in range(NR_MAX):
        entry = info.get(nr, (FAST_PYTHON, -1, -1, -1, -1, 0, -1, -1, 0))
        (table[nr].kind, table[nr].path, table[nr].at, table[nr].path2,
         table[nr].at2, table[nr].follow, table[nr].follow_arg,
         table[nr].empty, table[nr].rewrite) = entry


def set_mounts(mounts: list[tuple[str, str | None, str | None]]) -> None:
    """(mount point, host directory it stands for or None, bottom layer or
    None), mount order (see umvu_set_mounts)."""
    columns = [[ffi.new("char[]", os.fsencode(s)) if s else ffi.NULL for s in col]
               for col in zip(*mounts)] or [[], [], []]    # alive during the call
    arrays = [ffi.new("char *[]", col + [ffi.NULL]) for col in columns]
    check(lib.umvu_set_mounts(*arrays, len(mounts)))


def set_thread(tid: int, tgid: int, flags: int, cwd: str, fds=()) -> None:
    """What the C core knows of a thread: its process, TF_* flags, cwd and
    the descriptors the view mirrors (more than 16: TF_PYTHON)."""
    check(lib.umvu_set_thread(tid, tgid, flags, os.fsencode(cwd),
                              ffi.new("int[]", list(fds) or [0]), len(fds)))


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
