"""The API a module is written against. Modules import only this file.

A module is a class with a name, a description, the syscall families or
names it wants to see, handlers for those calls, and optional hooks:

    from umvu.module import Module, syscall

    class Hello(Module):
        name = "hello"
        description = "says hello"

        @syscall("getpid")
        def getpid(self, call):
            return 42          # answer; return KERNEL to let the kernel run it

A module that can be mounted (`vumount -t NAME...`) implements mount(), which
returns a Service; umount() is called when it goes away.
"""

from __future__ import annotations

import copy
import errno
import os
from typing import Any

#: returned by a handler: the call is not ours, the kernel runs it
KERNEL = None


class WouldBlock(Exception):
    """Raised by a service that must wait (for a FUSE daemon, say) while
    running on the tracer's thread: the view then runs the whole call again
    on a worker thread, where waiting is allowed."""


def syscall(*names: str):
    """Mark a method as the handler of the named syscalls."""
    def mark(func):
        func.umvu_syscalls = names
        return func
    return mark


class Call:
    """One intercepted call, as a module sees it."""

    __slots__ = ("name", "nr", "args", "_stop", "view", "module")

    def __init__(self, name: str, stop, view, module: "Module"):
        self.name = name
        self.nr = stop.nr
        self.args = stop.args
        self._stop = stop
        self.view = view
        self.module = module

    @property
    def pid(self) -> int:
        return self._stop.process.pid

    @property
    def tid(self) -> int:
        return self._stop.tid

    @property
    def state(self) -> Any:
        """This module's per-process state for the calling process."""
        return self.view.process_state(self._stop.process, self.module)

    @state.setter
    def state(self, value: Any) -> None:
        self._stop.process.data[self.module.name] = value

    def read(self, addr: int, size: int) -> bytes:
        return self._stop.read(addr, size)

    def read_str(self, addr: int, limit: int = 4096) -> str:
        return os.fsdecode(self._stop.read_str(addr, limit))

    def write(self, addr: int, data: bytes) -> None:
        if addr == 0:
            raise OSError(errno.EFAULT, "NULL pointer")
        self._stop.write(addr, data)


class Service:
    """One mounted instance of a module: what `vumount` created."""

    def __init__(self, module: "Module", source: str, target: str,
                 fstype: str, flags: int, options: str):
        self.module = module
        self.source = source
        self.target = target
        self.fstype = fstype
        self.flags = flags
        self.options = options
        self.epoch = 0          # set by the service table
        self.view = getattr(module, "view", None)

    def confirm(self, path: str) -> bool:
        """False lets an older service (or the kernel) answer for path."""
        return True

    def may_wait(self) -> None:
        """Call before waiting for anything: raises WouldBlock on the
        tracer's thread, so the call moves to a worker thread."""
        if self.view is not None:
            self.view.may_wait()

    def __repr__(self):
        return (f"<{type(self).__name__} {self.fstype} {self.source} on "
                f"{self.target} epoch={self.epoch}>")


class Module:
    name: str = ""
    description: str = ""
    #: syscall families (see umvu.syscall_table) trapped while loaded
    families: tuple[str, ...] = ()
    #: more syscalls, by name, trapped while loaded
    syscalls: tuple[str, ...] = ()
    #: more mount types this module takes (exactly, or as TYPE.subtype)
    fstypes: tuple[str, ...] = ()

    def __init__(self, view):
        self.view = view

    # optional hooks -------------------------------------------------------
    def init(self) -> None:
        """Called once when loaded."""

    def fini(self) -> None:
        """Called once when removed."""

    def new_state(self, pid: int) -> Any:
        """Per-process state for a process first seen by this module."""
        return None

    def fork_state(self, state: Any, flags: int) -> Any:
        """State of a new child, from its parent's (default: a copy)."""
        return copy.copy(state)

    def exec_state(self, state: Any) -> Any:
        return state

    def mount(self, source: str, target: str, fstype: str, flags: int,
              options: str, caller) -> Service:
        """Called for `vumount -t TYPE` where this module's name is a prefix
        of TYPE; target is canonical; caller is the calling process."""
        raise OSError(errno.ENODEV, f"{self.name} cannot be mounted")

    def umount(self, service: Service, flags: int) -> None:
        """Called when service goes away."""

    # ----------------------------------------------------------------------
    @classmethod
    def handlers(cls) -> dict[str, str]:
        """syscall name -> method name, from @syscall marks."""
        found = {}
        for attr in dir(cls):
            func = getattr(cls, attr, None)
            for name in getattr(func, "umvu_syscalls", ()):
                found[name] = attr
        return found


# ---- file-system services ----------------------------------------------------

class Redirect:
    """Answer of a path call: run it on these paths of the older view."""

    __slots__ = ("path", "path2", "listing", "meta", "trap_fd")

    def __init__(self, path: str, path2: str | None = None, listing=None,
                 meta: dict | None = None, trap_fd: bool = False):
        self.path = path
        self.path2 = path2
        self.listing = listing      # callable -> [(name, d_type, ino)] for merged dirs
        self.meta = meta            # st_mode/st_uid/st_gid/st_rdev shown by stat calls
        self.trap_fd = trap_fd      # an open: the service wants the descriptor's
                                    # metadata calls (fd_modify) and fstat


class PathCall:
    """A path syscall as a file-system service sees it.

    op is one of: stat (lookups that change nothing: stat, access, readlink,
    xattr reads, statfs, chdir, exec), open, modify (chmod, chown, utimes,
    truncate, xattr writes), create (mkdir, mknod, symlink), delete (unlink,
    rmdir), rename, link. `name` is the syscall; paths are canonical paths
    in the view.
    """

    __slots__ = ("name", "op", "path", "path2", "flags", "mode", "pid",
                 "uid", "gid", "dev", "link", "length", "times")

    def __init__(self, name, op, path, path2=None, flags=0, mode=0, pid=0,
                 uid=-1, gid=-1, dev=0):
        self.name = name
        self.op = op
        self.path = path
        self.path2 = path2
        self.flags = flags          # open flags, or the call's AT_/RENAME_ flags
        self.mode = mode            # for open/creat/mkdir/mknod/chmod
        self.pid = pid
        self.uid = uid              # for chown (0xffffffff: unchanged)
        self.gid = gid
        self.dev = dev              # for mknod
        self.link = ""              # for symlink: the link's content
        self.length = 0             # for truncate
        self.times = None           # for utime*: (atime_ns, mtime_ns); None: now

    def redirect(self, path: str, path2: str | None = None, listing=None,
                 meta: dict | None = None, trap_fd: bool = False) -> Redirect:
        return Redirect(path, path2, listing, meta, trap_fd)

    def serve(self, file: "ServedFile") -> "Answer":
        """Answer an open (or exec, chdir) with a file the service serves."""
        return Answer("served", file)

    def stat_result(self, st) -> "Answer":
        """Answer a stat-like call (stat, lstat, statx, access, chdir...)."""
        return Answer("stat", st)

    def link_target(self, target: str) -> "Answer":
        """Answer readlink."""
        return Answer("link", target)

    def statfs_result(self, info: dict) -> "Answer":
        """Answer statfs: f_bsize, f_frsize, f_blocks, f_bfree, f_bavail,
        f_files, f_ffree, f_namemax (os.statvfs names, any may be missing)."""
        return Answer("stat", info)

    def connect(self, address: str, on_connected) -> "Answer":
        """Answer an open with a unix SOCK_SEQPACKET socket connected to
        `address` (where the service listens): how a FUSE daemon's open of
        /dev/fuse reaches vufuse. on_connected(pid, fd) follows."""
        return Answer("socket", (address, on_connected))


class PathService(Service):
    """A service mounted on a path: answers path calls below its target."""

    #: set by the view: the file system as seen by services older than this one
    lower = None

    def path_call(self, call: PathCall):
        """Redirect(...) to run the call elsewhere, or an int result."""
        raise OSError(errno.ENOSYS, "not implemented")

    def lstat(self, path: str) -> os.stat_result:
        """Used while resolving paths through this service."""
        answer = self.path_call(PathCall("lstat", "stat", path))
        if isinstance(answer, Redirect):
            return self.lower.lstat(answer.path)
        if isinstance(answer, Answer) and answer.kind == "stat":
            return answer.value
        raise _error(answer, path)

    def readlink(self, path: str) -> str:
        answer = self.path_call(PathCall("readlink", "stat", path))
        if isinstance(answer, Redirect):
            return self.lower.readlink(answer.path)
        if isinstance(answer, Answer) and answer.kind == "link":
            return answer.value
        raise _error(answer, path)

    def attach(self) -> None:
        """Called when mounted, once `lower` is set; raise OSError to refuse."""

    def host_dir(self) -> tuple[str, str | None] | None:
        """(host directory, None) when every call below the mount just goes
        to that directory, unchanged but for the prefix (a plain bind): the
        C core then walks and rewrites paths below it without asking. Or
        (top, bottom): layers as vufs keeps them (top/.- holds deletions and
        metadata, see docs/vufs.md), for stat-like calls only."""
        return None


class ServedFile:
    """An open file whose data the service serves itself (no host file).

    is_dir: a directory (readdir, fchdir) rather than a file.

    The process holds a placeholder descriptor (and traps its descriptor
    calls from then on); the calls on it come here. Offsets are kept by the
    view.
    """

    is_dir = False

    def read(self, size: int, offset: int) -> bytes:
        raise OSError(errno.EISDIR, "not a regular file")

    def write(self, data: bytes, offset: int) -> int:
        raise OSError(errno.EBADF, "not writable")

    def stat(self):
        """An object with os.stat_result's st_* attributes."""
        raise OSError(errno.EIO, "no attributes")

    def truncate(self, size: int) -> None:
        raise OSError(errno.EINVAL, "cannot truncate")

    def readdir(self) -> list:
        """[(name, d_type, inode)], '.' and '..' included."""
        raise OSError(errno.ENOTDIR, "not a directory")

    def fsync(self) -> None:
        pass

    def ioctl(self, request: int, arg: int, call) -> int:
        raise OSError(errno.ENOTTY, "no ioctl")

    def release(self) -> None:
        """The last descriptor referring to this open file was closed."""


class Answer:
    """A path call answered with data rather than a redirect or an errno."""

    __slots__ = ("kind", "value", "service")

    def __init__(self, kind: str, value):
        self.kind = kind        # "served" | "stat" | "link" | "socket"
        self.value = value
        self.service = None     # set by the view: who answered


def _error(answer, path: str) -> OSError:
    err = -answer if isinstance(answer, int) and answer < 0 else errno.EINVAL
    return OSError(err, os.strerror(err), path)
