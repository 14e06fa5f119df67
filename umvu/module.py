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

A module that can be mounted (`vumount -t NAME...`) implements
mount(request), which returns a Service; umount() is called when it goes
away. What a module may ask of the view lives on `self.ctx` (a
ServiceContext); what it may know of the calling process on `call.caller`
or `request.caller` (a Caller). docs/modules.md describes the whole API.
"""

from __future__ import annotations

import copy
import errno
import os
import threading
from typing import Any, Callable

from . import creds, linux, logs, procinfo  # noqa: F401  (linux: constants for modules)

#: returned by a handler: the call is not ours, the kernel runs it
KERNEL = None


class WouldBlock(Exception):
    """Raised by a service that must wait (for a FUSE daemon, say) while
    running on the tracer's thread: the view then runs the whole call again
    on a worker thread, where waiting is allowed."""


def syscall(*names: str):
    """Mark a method as the handler of the named syscalls, or of the named
    virtual calls (see VIRTUAL_CALLS in umvu.syscall_table): one handler
    answers a whole family of variants, as in VUOS."""
    def mark(func):
        func.umvu_syscalls = names
        return func
    return mark


class Caller:
    """The process whose call is being served, as a module may know it.

    Everything here is read from the kernel when asked (the process may
    have changed it since the last call)."""

    __slots__ = ("pid", "tid")

    def __init__(self, pid: int, tid: int | None = None):
        self.pid = pid
        self.tid = pid if tid is None else tid

    @property
    def umask(self) -> int:
        return procinfo.umask(self.pid) if self.pid else 0o022

    def fs_ids(self) -> tuple[int, int]:
        """(fsuid, fsgid): the ids the kernel checks its file access with."""
        return creds.fs_ids(self.pid) if self.pid else (os.getuid(), os.getgid())

    @property
    def groups(self) -> list[int]:
        return creds.fs_creds(self.pid)[2] if self.pid else os.getgroups()

    def view_ids(self, effective: bool = False) -> tuple[int, int, list[int]]:
        """(fsuid, fsgid, groups) as the view shows them to the process:
        virtual ones where a module virtualizes ids (unrealuidgid answers
        the virtual calls getresfuid/getresfgid and getgroups), else the
        kernel's (then fs_ids() and groups). effective=True: (euid, egid,
        groups). The ids to put where a file system records who asked (the
        owner of a new file, a FUSE request's header); never the ones the
        kernel checks access with (fs_ids, acting_as)."""
        ids = None if _ids_source is None else _ids_source(self.pid, self.tid)
        if ids is None:                 # no module virtualizes ids
            if not effective:
                return (*self.fs_ids(), self.groups)
            st = procinfo.fields(self.pid, "Uid", "Gid") if self.pid else {}
            try:
                return (int(st["Uid"].split()[1]), int(st["Gid"].split()[1]),
                        self.groups)
            except (KeyError, IndexError, ValueError):
                return os.geteuid(), os.getegid(), self.groups
        pick = 1 if effective else 3
        return ids.uids[pick], ids.gids[pick], list(ids.groups)

    def acting_as(self):
        """A context manager: file work done inside it is checked by the
        kernel with this process's file credentials (it matters when the
        hypervisor runs as root; otherwise it changes nothing)."""
        return creds.acting_as(self.pid)

    def signal_pending(self) -> bool:
        """Has it a signal waiting that it neither blocks nor ignores?
        (A service that waits long checks it to give up with EINTR.)"""
        return bool(self.pid) and procinfo.signal_pending(self.pid)

    def __repr__(self):
        return f"<Caller pid={self.pid}>"

    @staticmethod
    def current() -> "Caller":
        """The process whose call this thread serves now (NOBODY if none):
        for code far from the call, such as a ServedFile's read or the
        header of a FUSE request, which gets no Call."""
        return getattr(_serving, "caller", NOBODY)


#: the hypervisor itself, for work no process asked for (unmount at the end)
NOBODY = Caller(0)
_serving = threading.local()


#: the view's answer to Caller.view_ids: (pid, tid) -> ids (View.view_ids)
_ids_source = None


def _answer_ids(source) -> None:
    """The view says who answers Caller.view_ids."""
    global _ids_source
    _ids_source = source


def _serve_for(caller: Caller) -> None:
    """The view says whose call this thread serves (Caller.current)."""
    _serving.caller = caller


class MountRequest:
    """One `vumount`/mount(2) call, as the module that takes it sees it.

    target is a canonical path of the view; source is as given
    (`ctx.resolve(request.caller, source)` makes a path of it); options is
    the -o data string, minus the words turned into flags (ro, nosuid...)."""

    __slots__ = ("source", "target", "fstype", "flags", "options", "caller")

    def __init__(self, source: str, target: str, fstype: str, flags: int = 0,
                 options: str = "", caller: Caller = NOBODY):
        self.source = source
        self.target = target
        self.fstype = fstype
        self.flags = flags
        self.options = options
        self.caller = caller

    def words(self) -> dict[str, str | None]:
        """The options as {word: value}, value None for a bare word
        ("ro,size=10M" -> {"ro": None, "size": "10M"})."""
        found: dict[str, str | None] = {}
        for word in self.options.split(","):
            if word:
                key, eq, value = word.partition("=")
                found[key] = value if eq else None
        return found

    def __repr__(self):
        return (f"<MountRequest -t {self.fstype} -o {self.options!r} "
                f"{self.source} {self.target}>")


class ServiceContext:
    """What a module or service may ask of the view: one object, so that
    the whole of it is written down here and nothing else is reached into.

    The view makes one per loaded module (`module.ctx`); services share
    their module's (`service.ctx`)."""

    def __init__(self, view):
        self._view = view

    log = logs.getLogger("umvu")

    @property
    def tmpdir(self) -> str:
        """A directory of the view's own (placeholders, sockets), removed
        when the view ends."""
        return self._view.tmpdir

    @property
    def env(self) -> dict[str, str]:
        """The environment the view started with (PATH for programs)."""
        return self._view.env

    def resolve(self, caller: Caller, path: str, follow: bool = True) -> str:
        """The canonical path in the view of a path the caller gave
        (relative to its cwd, through its root, symlinks followed)."""
        return self._view.resolve_for(caller.pid, path, follow)

    def may_wait(self) -> None:
        """Call before waiting for anything: raises WouldBlock on the
        tracer's thread, so the call moves to a worker thread."""
        self._view.may_wait()

    def unlocked(self):
        """A context manager: wait inside it, on a worker, without holding
        the view (the tracer serves other calls meanwhile)."""
        return self._view.unlocked()

    def submit(self, func: Callable, *args):
        """Run func(*args) on a worker thread, holding the view while it runs;
        a concurrent.futures.Future."""
        return self._view.submit(func, *args)

    def start_helper(self, argv: list[str]):
        """Start a program as a helper of the view (a FUSE daemon): it sees
        the view but does not keep it alive; its output goes to umvu's log
        stream. Returns a handle for stop_helper."""
        return self._view.start_helper(argv)

    def stop_helper(self, helper, timeout: float) -> None:
        """Wait (on a worker) for a helper to end; kill it after timeout."""
        self._view.stop_helper(helper, timeout)

    def add_service(self, service: "Service") -> None:
        """Mount a service of the module's own (vufuse's /dev/fuse)."""
        self._view.add_service(service, internal=True)

    def remove_service(self, service: "Service") -> None:
        self._view.remove_service(service)

    def bypass_vdso(self, owner: Any, on: bool = True) -> None:
        """While at least one owner (any object: a service, say) has it on,
        every process of the view makes real system calls for what the vDSO
        answers in user space: clock_gettime, gettimeofday, time and
        clock_getres, so that the handlers of those calls (or of the
        virtual calls clock_gettime/clock_settime) see all of them. Running
        processes change at once, new programs from their first
        instruction. Processes outside the view, and the whole view when no
        owner asks, keep the vDSO's speed (vumisc's time view uses it)."""
        self._view.bypass_vdso(owner, on)


class Call:
    """One intercepted call, as a module sees it: its name (the syscall's,
    or the virtual call's), its six raw arguments, the caller's memory."""

    __slots__ = ("name", "nr", "args", "_stop", "_view", "module", "caller")

    def __init__(self, name: str, stop, view, module: "Module"):
        self.name = name
        self.nr = stop.nr
        self.args = stop.args
        self._stop = stop
        self._view = view
        self.module = module
        self.caller = Caller(stop.process.pid, stop.tid)

    @property
    def pid(self) -> int:
        return self.caller.pid

    @property
    def tid(self) -> int:
        return self.caller.tid

    @property
    def state(self) -> Any:
        """This module's per-process state for the calling process."""
        return self._view.process_state(self._stop.process, self.module)

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

    # changing the call rather than answering it (a handler that uses these
    # returns KERNEL: the kernel runs the changed call). Trapped calls only:
    # the mount family and the control calls cannot be changed.
    def set_arg(self, index: int, value: int) -> None:
        """Run the call with argument `index` (0-5) set to value; the
        caller's registers are put back at the exit."""
        self._stop.set_arg(index, value)

    def scratch(self, data: bytes) -> int:
        """Copy data below the caller's stack (for a changed argument that
        points to a struct); returns its address, valid during the call."""
        return self._stop.scratch(data)

    def on_exit(self, hook: Callable[[int], int | None]) -> None:
        """hook(result) is called when the kernel has run the call; it may
        read and write the caller's memory and return a new result (None:
        unchanged)."""
        self._stop.on_exit(hook)

    def answer_fd(self, fd: int, cloexec: bool = False) -> int | None:
        """Answer the call with a copy of the hypervisor's descriptor fd
        (a socket the module made): the caller gets it under the lowest
        free number, as the kernel would choose, and the call returns that
        number. Return what this returns (`return call.answer_fd(fd)`); the
        module may close its own fd right after. A control call (msocket)
        gets it at once; a trapped call is run as another call that makes
        a descriptor, then swapped at its exit (see umvu/fdpass.py), so
        its arguments are the view's from here on. cloexec: O_CLOEXEC."""
        from . import fdpass
        return fdpass.answer(self._stop, fd, cloexec)

    def effective_uid(self) -> int:
        """The caller's effective uid as the view shows it (a module of
        virtual ids such as unrealuidgid answers; else the kernel's): the
        one to check "as root" with. The same as
        `call.caller.view_ids(effective=True)[0]`."""
        return self._view.effective_uid(self._stop)


class Service:
    """One mounted instance of a module: what `vumount` created."""

    def __init__(self, module: "Module", request: MountRequest):
        self.module = module
        self.request = request
        self.source = request.source
        self.target = request.target
        self.fstype = request.fstype
        self.flags = request.flags
        self.options = request.options
        self.epoch = 0          # set by the service table
        self.ctx: ServiceContext | None = getattr(module, "ctx", None)

    #: shown as read-only in /proc/mounts even without MS_RDONLY
    readonly = False
    #: set by the view: a module's own service (ServiceContext.add_service),
    #: not listed in /proc/mounts
    internal = False

    def confirm(self, path: str) -> bool:
        """False lets an older service (or the kernel) answer for path."""
        return True

    def settings(self) -> dict[str, str]:
        """What `umvu --dump` saves with this mount beyond its mount line:
        setting -> current value (vumisc: nodename, frequency...)."""
        return {}

    def may_wait(self) -> None:
        """Call before waiting for anything: raises WouldBlock on the
        tracer's thread, so the call moves to a worker thread."""
        if self.ctx is not None:
            self.ctx.may_wait()

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

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

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

    def dump_state(self, state: Any) -> dict[str, str]:
        """What `umvu --dump` saves of a process's state in this module, as
        view-file settings (vunet: {"stack": path})."""
        return {}

    def mount(self, request: MountRequest) -> Service | None:
        """Called for `vumount -t TYPE` where this module's name is a prefix
        of TYPE. Return the new Service (None: nothing new to mount); raise
        OSError(errno, message) to refuse: the message reaches the user."""
        raise OSError(errno.ENODEV, f"{self.name} cannot be mounted")

    def umount(self, service: Service, flags: int) -> None:
        """Called when service goes away."""

    def exec_interpreter(self, request: "ExecRequest") -> list[str] | None:
        """binfmt_misc's place: called, while this module is loaded, for
        every exec of a regular file the caller may execute, host files and
        files below mounts alike, before the kernel runs it (newest module
        first; the first answer wins). Return None to let it run as it is,
        or the head of a new argv, [interpreter, args...]: the view then
        execs the interpreter (a path in the caller's view: a missing one
        fails the exec with ENOENT) with that head followed by the caller's
        argv[1:]. The caller's argv[0] is dropped (binfmt_misc puts
        request.filename in its place; flag P keeps request.argv0 too).
        The interpreter goes through this hook and `#!` again (at most 5
        levels, then ELOOP). Modules that define no such method cost
        nothing here."""
        return None

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


class ExecRequest:
    """An exec about to happen, as Module.exec_interpreter sees it.

    path is the file's canonical path in the view; filename the name the
    caller gave (what the kernel passes an interpreter; path when it was
    relative to a descriptor); head its first bytes (256, the kernel's
    BINPRM_BUF_SIZE, fewer for a short file); argv0 the caller's argv[0]."""

    __slots__ = ("path", "filename", "head", "argv0", "caller")

    def __init__(self, path: str, filename: str, head: bytes, argv0: str,
                 caller: Caller = NOBODY):
        self.path = path
        self.filename = filename
        self.head = head
        self.argv0 = argv0
        self.caller = caller

    def __repr__(self):
        return f"<ExecRequest {self.filename} ({self.path}) argv0={self.argv0!r}>"


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
    in the view; `caller` is the process that made the call.
    """

    __slots__ = ("name", "op", "path", "path2", "flags", "mode", "caller",
                 "uid", "gid", "dev", "link", "length", "times")

    def __init__(self, name, op, path, path2=None, flags=0, mode=0,
                 caller: Caller = NOBODY, uid=-1, gid=-1, dev=0):
        self.name = name
        self.op = op
        self.path = path
        self.path2 = path2
        self.flags = flags          # open flags, or the call's AT_/RENAME_ flags
        self.mode = mode            # for open/creat/mkdir/mknod/chmod
        self.caller = caller
        self.uid = uid              # for chown (0xffffffff: unchanged)
        self.gid = gid
        self.dev = dev              # for mknod
        self.link = ""              # for symlink: the link's content
        self.length = 0             # for truncate
        self.times = None           # for utime*: (atime_ns, mtime_ns); None: now

    @property
    def pid(self) -> int:
        return self.caller.pid

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


class FdChange:
    """A metadata change made through a descriptor (fchmod, fchown,
    fsetxattr, fremovexattr), decoded: what PathService.fd_modify gets.

    name is "chmod", "chown", "setxattr" or "removexattr"; mode for chmod;
    uid and gid for chown (None: unchanged); xattr for the xattr calls."""

    __slots__ = ("name", "mode", "uid", "gid", "xattr")

    def __init__(self, name: str, mode: int = 0, uid: int | None = None,
                 gid: int | None = None, xattr: str = ""):
        self.name = name
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.xattr = xattr

    def __repr__(self):
        return f"<FdChange {self.name} mode={self.mode:o} uid={self.uid} gid={self.gid}>"


class PathService(Service):
    """A service mounted on a path: answers path calls below its target."""

    #: set by the view: the file system as seen by services older than this
    #: one (VUOS epochs): lower.lstat(path), lower.open(path), lower.scandir
    #: (path)... work whatever serves the path (docs/modules.md)
    lower = None
    #: its answers may wait (a FUSE daemon): releases run on a worker
    blocking = False

    def path_call(self, call: PathCall):
        """Redirect(...) to run the call elsewhere, an Answer, or an int
        result (negative: an errno)."""
        raise OSError(errno.ENOSYS, "not implemented")

    def lstat(self, path: str, caller: Caller = NOBODY) -> os.stat_result:
        """Used while resolving paths through this service."""
        answer = self.path_call(PathCall("lstat", "stat", path, caller=caller))
        if isinstance(answer, Redirect):
            return self.lower.lstat(answer.path)
        if isinstance(answer, Answer) and answer.kind == "stat":
            return answer.value
        raise _error(answer, path)

    def readlink(self, path: str, caller: Caller = NOBODY) -> str:
        answer = self.path_call(PathCall("readlink", "stat", path, caller=caller))
        if isinstance(answer, Redirect):
            return self.lower.readlink(answer.path, caller)
        if isinstance(answer, Answer) and answer.kind == "link":
            return answer.value
        raise _error(answer, path)

    def fd_redirect(self, path: str, caller: Caller) -> str | int | None:
        """A descriptor opened through a redirect with trap_fd is about to
        change its file's times (futimens): the host path the change must
        reach instead (a copy-up), a negative errno, or None (the kernel
        changes the file the descriptor refers to)."""
        return None

    def fd_modify(self, path: str, change: FdChange, caller: Caller) -> int | None:
        """A metadata change through a descriptor opened with trap_fd: the
        result, or None to let the kernel do it on the descriptor."""
        return None

    def attach(self) -> None:
        """Called when mounted, once `lower` is set; raise OSError to refuse."""

    #: the layer protocol of host_dir's (top, bottom): the name of top's
    #: bookkeeping directory (a regular file there in a name's place: the
    #: name was deleted) ...
    layer_store: str | None = None
    #: ... and the suffix added to a name there for its own metadata file
    layer_meta_suffix: str | None = None

    def host_dir(self) -> tuple[str, str | None] | None:
        """A promise that lets the C core answer without asking:

        (directory, None): every call below the mount goes to this host
        directory, unchanged but for the prefix (a plain bind).
        (top, bottom): stat-like calls are answered from two layers, the
        top one if it has the name, else the bottom one, unless the top's
        bookkeeping directory (top/layer_store) records a deletion or
        metadata (layer_meta_suffix) for it; without those two attributes
        Python is asked.
        None: ask this service every time."""
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

    def window(self) -> "Window | None":
        """A file whose bytes are a range of a host file the module holds
        (a partition of an image, a ramdisk): its data calls (read, write,
        their p/v forms, lseek) are then answered by the C core with no
        call into Python, clamped to the range. Asked at open, and again
        after every call the service answers (an ioctl may make the file
        read-only). None: every call comes here."""
        return None


class Window:
    """What ServedFile.window() returns: bytes [offset, offset+size) of host
    descriptor fd (the view keeps its own description of the file, so the
    module may close fd later). readonly: writes fail with EPERM. A read
    past the host file's end sees zeros; a write never goes past size
    (ENOSPC at the end, cut short across it)."""

    __slots__ = ("fd", "offset", "size", "readonly")

    def __init__(self, fd: int, offset: int, size: int, readonly: bool = False):
        self.fd, self.offset, self.size, self.readonly = fd, offset, size, readonly


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
