"""The file credentials of a process, and borrowing them: a hypervisor run
by root does a process's file work with that process's fsuid, fsgid,
groups and capabilities (`acting_as`), so that the kernel checks the work
as it would the process's own call. The credentials are read from /proc
(procinfo) and remembered while every call that changes them is trapped."""

from __future__ import annotations

import os
import threading

from .procinfo import fields


#: pid -> fs_creds, while the view traps every call that changes them and
#: says so (watch_creds / forget_creds)
_creds: dict[int, tuple[int, int, list[int]]] | None = None


def watch_creds() -> None:
    """From now on the caller tells forget_creds of every credential change
    (set*id, setgroups, capset, exec, exit): fs_creds may remember."""
    global _creds
    if _creds is None:
        _creds = {}


def forget_creds(pid: int) -> None:
    if _creds is not None:
        _creds.pop(pid, None)


def fs_creds(pid: int) -> tuple[int, int, list[int], int]:
    """The (fsuid, fsgid, groups, effective capabilities) the kernel checks
    the process's file access with."""
    if _creds is not None and pid in _creds:
        return _creds[pid]
    st = fields(pid, "Uid", "Gid", "Groups", "CapEff")
    try:
        creds = (int(st["Uid"].split()[3]), int(st["Gid"].split()[3]),
                 [int(g) for g in st.get("Groups", "").split()],
                 int(st.get("CapEff", "0"), 16))
    except (KeyError, IndexError, ValueError):
        return os.getuid(), os.getgid(), os.getgroups(), 0
    if _creds is not None:
        _creds[pid] = creds
    return creds


#: this process's effective capabilities, read once (acting_as changes
#: only the fs ids of a thread, never these)
_MY_CAPS = int(fields(os.getpid(), "CapEff").get("CapEff", "0"), 16)


def has_my_rights(pid: int) -> bool:
    """Does the process check files as this one does (same fs ids and
    capabilities)? Then work done for it needs no borrowed identity."""
    uid, gid, _, caps = fs_creds(pid)
    return (uid, gid, caps) == (os.geteuid(), os.getegid(), _MY_CAPS)


def fs_ids(pid: int) -> tuple[int, int]:
    """The (fsuid, fsgid) the kernel checks the process's file access with."""
    return fs_creds(pid)[:2]


_libc = None


def _syscall(nr: int, *args) -> int:
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc.syscall(nr, *args)


SYS_SETFSUID, SYS_SETFSGID, SYS_SETGROUPS = 122, 123, 116
SYS_CAPGET, SYS_CAPSET = 125, 126
CAP_VERSION_3 = 0x20080522


def _set_effective_caps(caps: int) -> None:
    """This thread's effective capabilities (permitted ones stay)."""
    import ctypes
    header = (ctypes.c_uint32 * 2)(CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()          # 2 x {effective, permitted, inheritable}
    if _syscall(SYS_CAPGET, header, data) != 0:
        return
    data[0], data[3] = caps & 0xffffffff, caps >> 32
    _syscall(SYS_CAPSET, header, data)


class acting_as:
    """Do file work with the calling process's file-system credentials.

    A hypervisor run by root must not lend its power to a process that
    dropped it: while this is active, this thread's fsuid, fsgid and groups
    are the caller's, so the kernel checks the work as it would the
    caller's own call. When the hypervisor is not root the caller's
    credentials are its own, and this does nothing.
    """

    #: the identity this thread borrows now: nested uses for the same
    #: process (the walk, then a service's work) change nothing
    _current = threading.local()

    def __init__(self, pid: int):
        self.pid = pid
        self.active = False
        self.caps = False
        self.nested = False

    def __enter__(self):
        if os.geteuid() != 0 or not self.pid:
            return self
        if getattr(self._current, "pid", None) == self.pid:
            self.nested = True
            return self
        self._current.pid = self.pid
        uid, gid, groups_of, caps = fs_creds(self.pid)
        if (uid, gid) == (0, 0):
            if caps & _MY_CAPS != _MY_CAPS:     # a root that dropped some
                _set_effective_caps(caps & _MY_CAPS)
                self.caps = True
            return self
        import ctypes
        arr = (ctypes.c_uint * max(len(groups_of), 1))(*groups_of)
        _syscall(SYS_SETGROUPS, len(groups_of), arr)     # this thread only
        _syscall(SYS_SETFSGID, gid)
        _syscall(SYS_SETFSUID, uid)
        self.active = True
        return self

    def __exit__(self, *exc):
        if self.nested or os.geteuid() != 0 or not self.pid:
            return False
        self._current.pid = None
        if self.caps:
            _set_effective_caps(_MY_CAPS)
        if self.active:
            _syscall(SYS_SETFSUID, 0)
            _syscall(SYS_SETFSGID, 0)
            _syscall(SYS_SETGROUPS, 0, None)
        return False
