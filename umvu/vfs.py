"""The virtual file system layer: path and descriptor syscalls while a
file-system service is mounted.

Each path call is resolved through the view (umvu.pathwalk). If no service
owns the result, the kernel runs the call (with the path rewritten when the
view, not the kernel, shaped the resolution). If a service owns it, the
service answers or redirects the call to a path of the older view, which is
resolved again until a host path is reached; the call is then rewritten to
that host path, so the tracee gets real descriptors and all later I/O on
them is native.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import struct

from . import ccore
from . import syscall_table
from . import procinfo, served, structs
from .linux import (AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW,
                    CLOSE_RANGE_CLOEXEC, CLOSE_RANGE_UNSHARE, F_DUPFD,
                    F_DUPFD_CLOEXEC, F_SETFD, MS_NOEXEC, O_CLOEXEC,
                    O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_RDWR, O_TRUNC,
                    RESOLVE_BENEATH, RESOLVE_IN_ROOT, RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV, UTIME_NOW, UTIME_OMIT)
from .fsstate import FdTable, OpenFile, ProcFs
from .lowerview import LowerView
from .module import _serve_for
from .module import Answer, Caller, ExecRequest, FdChange, Module, PathCall, \
    PathService, Redirect
from .pathwalk import MAGIC, Walker
from .services import path_under as _under
from .tracer import TF_NOMAP, TF_PYTHON

log = logging.getLogger("umvu")

KEY = "_vfs"
NR_FCNTL = syscall_table.NR["fcntl"]
NR_CLOSE = syscall_table.NR["close"]
NR_SOCKET = syscall_table.NR["socket"]
NR_CONNECT = syscall_table.NR["connect"]
NR_DUP3 = syscall_table.NR["dup3"]

#: what a process traps once it holds a descriptor the view must watch
ALL_FD_CALLS = frozenset(sc.nr for sc in syscall_table.TABLE
                         if sc.family in ("fd", "fdmeta", "fdattr"))
#: ... once it holds a file whose metadata changes the view must see
META_FD_CALLS = frozenset(sc.nr for sc in syscall_table.TABLE
                          if sc.family == "fdattr" or sc.name == "fstat")
WATCH_META, WATCH_ALL = 1, 2


def _signed32(value: int) -> int:
    value &= 0xffffffff
    return value - (1 << 32) if value >> 31 else value


class Vfs:
    def __init__(self, view):
        self.view = view
        self.services = view.services
        self.walker = Walker(self.services, self._magic)
        self._caller: ProcFs | None = None
        self.served = served.ServedCalls(self)
        self.handlers = {}
        self._fd_methods = {}
        self._placeholders = 0
        FdTable.on_release = self._released
        for sc in syscall_table.TABLE:
            method = getattr(self, "sys_" + sc.name, None)
            if method is None and sc.op is not None:
                method = self.sys_two_paths if sc.op in ("rename", "link") \
                    else self.sys_path
            if sc.family in ("fd", "fdmeta", "fdattr") and sc.fd is not None \
                    and sc.fd >= 0:
                self._fd_methods[sc.nr] = method
                method = self._fd_call
            if method is not None:
                self.handlers[sc.nr] = method

    # ---- process state -------------------------------------------------------
    def state(self, proc) -> ProcFs:
        st = proc.data.get(KEY)
        if st is None:
            st = proc.data[KEY] = ProcFs.from_kernel(proc.pid)
            self.sync(proc)
        return st

    def on_new_process(self, parent, child, flags) -> None:
        st = parent.data.get(KEY)
        if st is not None:
            child.data[KEY] = st.fork(flags)
            self.sync(child)

    def on_new_thread(self, proc, tid: int) -> None:
        if KEY in proc.data:
            self.sync(proc)

    def on_exec(self, proc) -> None:
        st = proc.data.get(KEY)
        if st is not None:
            new = proc.data[KEY] = st.exec()
            new.exe = getattr(proc, "pending_exe", None) or st.exe
            proc.pending_exe = None
            if not self._shared(st.files, proc):
                st.files.drop_all()
            self.sync(proc)

    def on_exit(self, proc) -> None:
        st = proc.data.get(KEY)
        if st is not None and not self._shared(st.files, proc):
            st.files.drop_all()

    def _shared(self, files, proc) -> bool:
        """Does a process other than proc use this descriptor table?"""
        return any(p is not proc and p.data.get(KEY) is not None and
                   p.data[KEY].files is files
                   for p in self.view.tracer.processes.values())

    def _released(self, entry: OpenFile) -> None:
        """The last descriptor of an open file is gone."""
        if entry.served is None:
            return
        ph = entry.private.get("ph_fd")

        def release():
            try:
                if ph is not None:
                    served.write_back(entry, f"/proc/self/fd/{ph}")
                entry.served.release()
            except Exception:
                log.exception("release of %s failed", entry.path)
            finally:
                if ph is not None:
                    os.close(ph)
        if entry.service is not None and entry.service.blocking:
            self.view.submit(release)       # it may wait for a daemon
        else:
            release()

    # ---- what the C fast path knows --------------------------------------------
    def sync(self, proc) -> None:
        """Tell the C core whether this process's calls could be virtual."""
        st = proc.data.get(KEY)
        if st is None:
            return
        flags = TF_PYTHON if st.fs.root != "/" else 0
        if os.geteuid() == 0 and (getattr(proc, "creds_changed", False) or
                                  not procinfo.has_my_rights(proc.pid)):
            flags |= TF_NOMAP       # the C core's walk would lend it root's rights
        if flags & TF_PYTHON or st.files.fds or st.exe or any(
                _under(st.fs.cwd, m) for m in self.services.mount_points()):
            self.view.tracer.proc_is_virtual()  # its /proc/PID/{root,fd,exe,cwd}
        fds = [fd for fd, _ in st.files]
        for tid in proc.threads:
            self.view.tracer.set_thread_view(tid, proc.pid, flags, st.fs.cwd, fds)

    def changed(self, st: ProcFs) -> None:
        """st's cwd, root or descriptors changed: re-sync all who share them."""
        for proc in self.view.tracer.processes.values():
            other = proc.data.get(KEY)
            if other is not None and (other.fs is st.fs or other.files is st.files):
                self.sync(proc)

    def sync_all(self) -> None:
        for proc in self.view.tracer.processes.values():
            self.sync(proc)

    #: trapped whenever a file system is loaded, beyond the path family
    ALWAYS = ("fchdir", "io_uring_setup", "bind", "connect")

    #: calls that must always reach Python: they change or report the state
    #: (close_range's descriptor argument starts a range: not one to check)
    SLOW = {"chdir", "fchdir", "chroot", "execve", "execveat", "getcwd",
            "io_uring_setup", "bind", "connect", "close_range"}

    def fast_entry(self, nr: int):
        """The C fast-path row (FastRow) of a number this layer handles, or None."""
        sc = syscall_table.BY_NR[nr]
        if sc.name in self.SLOW:
            return None
        if sc.family in ("fd", "fdmeta", "fdattr"):
            fd = sc.fd if sc.fd is not None else -1
            fd2 = sc.fd2 if sc.fd2 is not None else -1
            return ccore.FastRow(ccore.FAST_FD, path=fd, path2=fd2)
        if sc.family != "path":
            return None
        path, at = (sc.path, sc.at) if sc.path is not None else (sc.path2, sc.at2)
        path2, at2 = (sc.path2, sc.at2) if sc.path is not None else (None, None)
        follow, follow_arg = ccore.FOLLOW_ALWAYS, -1
        if sc.nofollow == "always":
            follow = ccore.FOLLOW_NEVER
        elif sc.nofollow:
            kind, _, arg = sc.nofollow.partition(":")
            follow, follow_arg = (ccore.FOLLOW_AT if kind == "at" else ccore.FOLLOW_O), int(arg)
        none = lambda v: -1 if v is None else v  # noqa: E731
        # below a plain bind the C core may rewrite the path itself, but not
        # of a call that opens a descriptor (the view mirrors those); below
        # layers (cow) only of a stat-like one (the others may copy up)
        op = sc.op
        rewrite = 0 if path2 is not None or op in (None, "open") or \
            sc.name == "openat2" else {"stat": 1, "modify": 2}.get(op, 3)
        return ccore.FastRow(ccore.FAST_PATH, path=none(path), at=none(at),
                          path2=none(path2), at2=none(at2), follow=follow,
                          follow_arg=follow_arg, empty=none(sc.empty),
                          rewrite=rewrite)

    def _magic(self, pid: int, kind: str) -> str | None:
        """/proc/PID/{cwd,root,exe,fd/N} as the view sees them, when the
        view's answer differs from the kernel's; else None."""
        proc = self.view.tracer.processes.get(pid)
        st = proc.data.get(KEY) if proc else None
        if st is None:
            return None
        chrooted = st.fs.root != "/"
        if kind == "cwd":
            virtual = chrooted or self._is_virtual_dir(st.fs.cwd)
            return _rooted(st, st.fs.cwd) if virtual else None
        if kind == "root":
            return "/" if chrooted else None
        if kind == "exe":
            return _rooted(st, st.exe) if st.exe else None
        fd = int(kind[3:])
        entry = st.files.get(fd)
        if entry is not None and not self._still_open(pid, fd, entry):
            st.files.drop(fd)
            return None
        return _rooted(st, entry.path) if entry else None

    def _get(self, stop, st: ProcFs, fd: int) -> OpenFile | None:
        """The mirror's entry for fd, if it still is the file we opened: a
        process that does not trap descriptor calls closes and reuses
        descriptors without our seeing it."""
        entry = st.files.get(fd)
        proc = stop.process
        if entry is None or proc.fd_watch == WATCH_ALL:
            return entry
        if self._still_open(proc.pid, fd, entry):
            return entry
        st.files.drop(fd)
        return None

    @staticmethod
    def _still_open(pid: int, fd: int, entry: OpenFile) -> bool:
        """A process that does not trap descriptor calls closes descriptors
        without our seeing it: check that the kernel's descriptor is still
        the file we opened."""
        try:
            real = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            return False
        return real in (entry.host, entry.host + " (deleted)") or not entry.host

    def _is_virtual_dir(self, path: str) -> bool:
        return self.services.for_path(path) is not None

    # ---- dispatch ---------------------------------------------------------------
    def on_syscall(self, stop):
        handler = self.handlers.get(stop.nr)
        if handler is None:
            return None
        st = self.state(stop.process)
        _serve_for(_caller(stop))
        return handler(stop, st, syscall_table.BY_NR[stop.nr])

    def _start(self, stop, st: ProcFs, dirfd: int) -> tuple[str, bool] | None:
        """Directory a relative path starts from, and whether it is virtual."""
        if _signed32(dirfd) == AT_FDCWD:
            return st.fs.cwd, self._is_virtual_dir(st.fs.cwd)
        entry = self._get(stop, st, _signed32(dirfd))
        if entry is not None:
            return entry.path, True
        try:
            # the thread's own table: its leader may have exited
            path = os.readlink(f"/proc/{stop.tid}/fd/{_signed32(dirfd)}")
        except OSError:
            return None
        return (path, False) if path.startswith("/") else None

    def _resolve(self, stop, st, path: str, dirfd: int | None, follow: bool, **kw):
        if dirfd is None or path.startswith("/"):
            start, virtual = st.fs.cwd, False
            if not path.startswith("/"):
                virtual = self._is_virtual_dir(st.fs.cwd)
        else:
            found = self._start(stop, st, dirfd)
            if found is None:
                return None             # bad dirfd: the kernel says why
            start, virtual = found
        with procinfo.acting_as(stop.process.pid):  # the walk is the caller's
            res = self.walker.resolve(path, start, st.fs.root, follow,
                                      stop.process.pid, **kw)
        res.touched = res.touched or virtual
        return res

    def _read_path(self, stop, addr: int) -> str:
        return os.fsdecode(stop.read_str(addr, 4097))

    @staticmethod
    def _follow(sc, args) -> bool:
        rule = sc.nofollow
        if rule is None:
            return True
        if rule == "always":
            return False
        kind, _, index = rule.partition(":")
        flags = args[int(index)]
        if kind == "o":
            return not (flags & O_NOFOLLOW) and not (
                flags & O_CREAT and flags & O_EXCL)
        return not flags & AT_SYMLINK_NOFOLLOW

    def _final(self, res, call: PathCall):
        """Walk the redirect chain: a Redirect to a host path, or an int."""
        path, service = res.path, res.service
        final = Redirect(path)
        while service is not None:
            call.path = path
            self._answered(service)
            answer = service.path_call(call)
            if not isinstance(answer, Redirect):
                if isinstance(answer, Answer):
                    answer.service = service
                return answer
            final.listing = final.listing or answer.listing
            final.meta = final.meta or answer.meta
            final.trap_fd = final.trap_fd or answer.trap_fd
            path = final.path = answer.path
            service = self.services.for_path(path, service.epoch)
        return final

    def _rewrite(self, stop, index: int, path: str, at_index: int | None) -> None:
        stop.set_arg(index, stop.scratch(os.fsencode(path) + b"\0"))
        if at_index is not None:
            stop.set_arg(at_index, AT_FDCWD)

    # ---- generic path calls ------------------------------------------------------
    def sys_path(self, stop, st, sc):
        args = stop.args
        name = sc.name
        # symlink(target, linkpath): the name created is the second path
        pidx, atidx = (sc.path, sc.at) if sc.path is not None else (sc.path2, sc.at2)
        if pidx is None or args[pidx] == 0:
            if name == "utimensat":     # futimens: an fd call
                entry = self._get(stop, st, _signed32(args[0]))
                if entry is not None and entry.served is not None:
                    return self.served.fd_modify(stop, entry, "utimensat",
                                                 times=self._times(stop, name, args[2]))
                return self._fd_redirect(stop, st, args[0], 1, 0)
            return None
        path = self._read_path(stop, args[pidx])
        dirfd = args[atidx] if atidx is not None else None
        if path == "" and sc.empty is not None and (   # empty=-1: always (readlinkat)
                sc.empty < 0 or args[sc.empty] & AT_EMPTY_PATH):
            entry = self._get(stop, st, _signed32(dirfd)) if dirfd is not None else None
            if entry is not None and entry.served is not None and name in (
                    "newfstatat", "statx"):
                return self.served.fstatat_empty(stop, entry, name)
            if entry is not None and entry.meta and sc.stat_layout:
                self._patch_on_exit(stop, name, entry.meta)
            return None                 # the fd itself: a real descriptor
        op = sc.op
        flags = self._open_flags(name, args) if op == "open" else 0
        if name == "unlinkat" and args[2] & AT_REMOVEDIR:
            name = "rmdir"
        # a trailing slash follows a last symlink, but not for calls that
        # act on the name itself (mkdir, unlink, rmdir)
        res = self._resolve(stop, st, path, dirfd, self._follow(sc, args),
                            slash_follows=op not in ("create", "delete"))
        if res is not None and name == "chdir":
            stop.on_exit(lambda r, p=res.path: self._set_cwd(st, p, r))
        if res is not None and name in ("readlink", "readlinkat"):
            magic = MAGIC.match(res.path)
            target = magic and self._magic(int(magic.group(1)), magic.group(3))
            if target:
                return self._answer_readlink(stop, args[pidx + 1],
                                             args[pidx + 2], target)
        if res is not None and not res.touched and not res.error and \
                name in ("execve", "execveat"):
            return self._shebang(stop, st, sc, res.path, res.path)
        if res is None or not res.touched:
            return None
        if res.error:
            return -res.error
        if name in ("execve", "execveat") and res.service is not None and \
                getattr(res.service, "flags", 0) & MS_NOEXEC:
            return -errno.EACCES        # mount -o noexec
        if op == "delete" and res.path in self.services.mount_points():
            return -errno.EBUSY         # a mount point cannot go
        if op == "create" and res.service is not None and \
                res.path == getattr(res.service, "target", None):
            return -errno.EEXIST        # the mount point itself
        call = self._path_call(name, op, res.path, flags, args, _caller(stop))
        if name in ("symlink", "symlinkat"):
            call.link = self._read_path(stop, args[0])
        elif sc.times is not None:
            call.times = self._times(stop, name, args[sc.times])
        final = self._final(res, call)
        if isinstance(final, int):
            return final
        if isinstance(final, Answer):
            return self._answer(stop, st, sc, name, res, final, flags, pidx, atidx)
        host = final.path
        if res.trailing_slash and not host.endswith("/"):
            host += "/"
        if host == path and not (final.listing or final.meta or final.trap_fd) \
                and name not in ("execve", "execveat"):
            # the caller's own absolute, canonical string (a bind onto
            # itself, a cow file not copied up): the kernel runs it as it
            # is, without a rewrite and its exit stop, and the descriptor
            # needs no mirror (its path in /proc is the view's)
            return None
        self._rewrite(stop, pidx, host, atidx)
        if op == "open":
            self._track_open(stop, st, res, flags, final)
        elif final.meta and sc.stat_layout:
            self._patch_on_exit(stop, name, final.meta)
        elif name in ("execve", "execveat"):
            stop.process.pending_exe = res.path
            self.view.tracer.proc_is_virtual()  # before the C core meets /proc/self/exe
            return self._shebang(stop, st, sc, host, res.path)
        return None

    #: interpreters an exec may go through before ELOOP (as the kernel)
    EXEC_DEPTH = 5

    def _shebang(self, stop, st, sc, host: str, vpath: str):
        """Interpreters the kernel would not find: the modules' own
        (Module.exec_interpreter, binfmt_misc's place: first), then a `#!`
        script's interpreter when the view has it elsewhere. Then exec the
        interpreter ourselves with the argv the kernel would give (`#!`:
        [interp, optional arg, script path, argv[1:]...]); it may be a
        script or a foreign binary in its turn."""
        hooks = [m for m in reversed(list(self.view.modules.values()))
                 if type(m).exec_interpreter is not Module.exec_interpreter]
        argv_at = 1 if sc.name == "execve" else 2
        filename = vpath
        if hooks:       # the name the caller gave, as the kernel passes it on
            given = self._read_path(stop, stop.args[sc.path])
            if given.startswith("/") or sc.at is None or \
                    _signed32(stop.args[sc.at]) == AT_FDCWD:
                filename = given
        strings = None          # the new argv (strings, or the caller's pointers)
        rewritten = False
        for depth in range(self.EXEC_DEPTH + 1):
            head = self._exec_head(stop, host)
            if head is None:
                break
            prefix = None
            if hooks:
                if strings is None:
                    strings = _argv_pointers(stop, stop.args[argv_at])
                argv0 = stop.read_str(strings[0], 4096) if strings and \
                    isinstance(strings[0], int) else (strings or [b""])[0]
                request = ExecRequest(vpath, filename, head, os.fsdecode(argv0),
                                      _caller(stop))
                for module in hooks:
                    self._answered(module)
                    prefix = module.exec_interpreter(request)
                    if prefix:
                        break
            script = not prefix
            if script:
                prefix = _script_line(head, filename)
                if prefix is None:
                    break
            if depth == self.EXEC_DEPTH:
                return -errno.ELOOP
            res = self.walker.resolve(prefix[0], st.fs.cwd, st.fs.root, True,
                                      stop.process.pid)
            if res.error:
                return -res.error
            if script and not res.touched and not rewritten and not hooks:
                return None     # the kernel finds it
            final = self._final(res, PathCall("execve", "stat", res.path,
                                              caller=_caller(stop)))
            if isinstance(final, int):
                return final
            if not isinstance(final, Redirect):
                return -errno.EACCES    # a served interpreter: not (yet)
            if strings is None:
                strings = _argv_pointers(stop, stop.args[argv_at])
            strings = [os.fsencode(x) for x in prefix] + strings[1:]
            rewritten = True
            host, vpath, filename = final.path, res.path, prefix[0]
        if not rewritten:
            return None
        pointers = [x if isinstance(x, int) else stop.scratch(x + b"\0")
                    for x in strings] + [0]
        stop.set_arg(argv_at, stop.scratch(struct.pack(f"{len(pointers)}Q", *pointers)))
        self._rewrite(stop, sc.path, host, sc.at)
        stop.process.pending_exe = vpath
        return None

    @staticmethod
    def _exec_head(stop, host: str) -> bytes | None:
        """The first bytes of a file the caller may exec, else None (the
        kernel says why)."""
        try:
            with procinfo.acting_as(stop.process.pid):
                if not os.access(host, os.X_OK, effective_ids=True):
                    return None
            with open(host, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return None
                return f.read(256)
        except OSError:
            return None

    def _answer(self, stop, st, sc, name, res, answer, flags, pidx, atidx):
        """A service answered with data: write it where the call wants it."""
        args = stop.args
        if answer.kind == "link":
            if name not in ("readlink", "readlinkat"):
                return -errno.EINVAL
            return self._answer_readlink(stop, args[pidx + 1], args[pidx + 2],
                                         answer.value)
        if answer.kind == "stat" and name in ("execve", "execveat"):
            opened = answer.service.path_call(PathCall(
                "open", "open", res.path, flags=0, caller=_caller(stop)))
            if not isinstance(opened, Answer) or opened.kind != "served":
                return opened if isinstance(opened, int) else -errno.EACCES
            answer = opened
        elif answer.kind == "stat":
            if sc.stat_layout:
                index, layout = sc.stat_layout
                pack = structs.pack_statx if layout == "statx" else structs.pack_stat
                stop.write(args[index], pack(answer.value))
                return 0
            if name == "chdir":
                return self._chdir_served(stop, st, res, answer.value)
            if name == "statfs":
                stop.write(args[1], structs.pack_statfs(answer.value))
                return 0
            if name in ("access", "faccessat", "faccessat2"):
                return 0
            return -errno.ENOTSUP
        if answer.kind == "socket":
            return self._connect(stop, name, flags, pidx, atidx, *answer.value)
        # served
        if name in ("execve", "execveat"):
            exe = os.path.join(self.view.tmpdir, f"exec-{stop.process.pid}")
            served.materialize(answer.value, exe)
            answer.value.release()
            _give(exe, stop)
            stop.process.pending_exe = res.path
            self._rewrite(stop, pidx, exe, atidx)
            return self._shebang(stop, st, sc, exe, res.path)
        if name not in ("open", "openat", "creat", "openat2"):
            return -errno.ENOTSUP
        # the placeholder: an empty file, or an empty directory so that
        # fchdir works natively
        is_dir = getattr(answer.value, "is_dir", False)
        self._placeholders += 1
        ph = os.path.join(self.view.tmpdir, f"served-{self._placeholders}")
        if is_dir:
            os.mkdir(ph)
        else:
            open(ph, "wb").close()
        _give(ph, stop)
        ph_flags = (O_DIRECTORY if is_dir else O_RDWR) | (flags & O_CLOEXEC)
        self._rewrite(stop, pidx, ph, atidx)
        flag_at = {"open": 1, "openat": 2}.get(name)
        if flag_at is not None:
            stop.set_arg(flag_at, ph_flags)
        elif name == "creat":
            return -errno.ENOTSUP
        else:                                       # openat2: struct open_how
            stop.set_arg(2, stop.scratch(struct.pack("QQQ", ph_flags, 0, 0)))
        open_file = OpenFile(res.path, answer.service, flags & ~O_CLOEXEC, ph,
                             served=answer.value)
        def opened(fd):
            os.rmdir(ph) if is_dir else os.unlink(ph)
            if fd < 0:
                answer.value.release()
                return None
            st.files.add(fd, open_file, bool(flags & O_CLOEXEC))
            self._watch(stop, st, fd)
            self.changed(st)
            return None
        stop.on_exit(opened)
        return None

    def _connect(self, stop, name, flags, pidx, atidx, address, on_connected):
        """Open /dev/null, then put a connected unix socket in its place."""
        if name not in ("open", "openat"):
            return -errno.ENOTSUP
        self._rewrite(stop, pidx, "/dev/null", atidx)
        def opened(fd):
            if fd < 0:
                return None
            raw = os.fsencode(address)
            sockaddr = struct.pack("H", socket.AF_UNIX) + raw + b"\0"
            sock = stop.run(NR_SOCKET, socket.AF_UNIX, socket.SOCK_SEQPACKET, 0)
            if sock is None or sock < 0:
                return sock
            addr = stop.scratch(sockaddr)
            err = stop.run(NR_CONNECT, sock, addr, len(sockaddr))
            if err == 0:
                err = stop.run(NR_DUP3, sock, fd, flags & O_CLOEXEC)
            stop.run(NR_CLOSE, sock)
            if err is None or err < 0:
                stop.run(NR_CLOSE, fd)
                return err
            on_connected(stop.process.pid, fd)
            return None
        stop.on_exit(opened)
        return None

    @staticmethod
    def _patch_on_exit(stop, name: str, meta: dict) -> None:
        buf = stop.args[syscall_table.BY_NAME[name].stat_layout[0]]
        stop.on_exit(lambda r: _patch_stat(stop, r, name, buf, meta))

    def _fd_redirect(self, stop, st, fd: int, path_at: int, at_at: int):
        """An fd call that would change a lower-layer file (futimens): make it
        a path call on the file the service gives (a copy in its top layer)."""
        entry = self._get(stop, st, _signed32(fd))
        if entry is None or not isinstance(entry.service, PathService):
            return None
        host = entry.service.fd_redirect(entry.path, _caller(stop))
        if host is None or isinstance(host, int):
            return host
        self._rewrite(stop, path_at, host, at_at)
        return None

    def _answered(self, service) -> None:
        """For --trace: who shaped this call."""
        module = getattr(service, "module", None)
        self.view.answered_by = module.name if module is not None else "umvu"

    def _chdir_served(self, stop, st, res, attrs):
        if not stat.S_ISDIR(attrs.st_mode):
            return -errno.ENOTDIR
        self._rewrite(stop, 0, self.view.tmpdir, None)
        stop.on_exit(lambda r, p=res.path: self._set_cwd(st, p, r))
        return None

    def _fd_call(self, stop, st, sc):
        """A descriptor call: served files answer here; the rest keeps the
        mirror up to date."""
        entry = self._get(stop, st, _signed32(stop.args[sc.fd]))
        if (entry is None or entry.served is None) and sc.fd2 is not None:
            entry = self._get(stop, st, _signed32(stop.args[sc.fd2]))
        if entry is not None and entry.served is not None:
            self._answered(entry.service)
            result = self.served.handle(sc.name, stop, st, entry)
            if result is not None:
                return result
            if sc.name == "mmap":
                ph = entry.private.get("ph_fd")
                if ph is None and entry.private.get("write_back"):
                    entry.private["ph_fd"] = os.open(
                        f"/proc/{stop.process.pid}/fd/{_signed32(stop.args[4])}", os.O_RDWR)
        elif entry is not None and entry.meta and sc.name == "fstat":
            self._patch_on_exit(stop, "fstat", entry.meta)
        method = self._fd_methods.get(stop.nr)
        return method(stop, st, sc) if method is not None else None

    @staticmethod
    def _open_flags(name: str, args) -> int:
        if name == "open":
            return args[1]
        if name == "creat":
            return O_CREAT | O_TRUNC | 1
        return args[2] & 0xffffffff if name == "openat" else 0

    @staticmethod
    def _path_call(name: str, op: str, path: str, flags: int, args, caller):
        """The PathCall for a syscall, with the arguments services need."""
        call = PathCall(name, op, path, flags=flags, caller=caller)
        row = syscall_table.BY_NAME[name]
        for field in ("mode", "dev", "uid", "gid", "length"):
            index = getattr(row, field)
            if index is not None:
                value = args[index]
                setattr(call, field, value & 0o177777 if field == "mode"
                        else value & 0xffffffff if field in ("uid", "gid") else value)
        if row.flags is not None:
            call.flags = args[row.flags] & 0xffffffff
        return call

    @staticmethod
    def _times(stop, name: str, addr: int):
        """(atime_ns, mtime_ns) a utime* call asks for; None: now. Either
        may be UTIME_NOW or UTIME_OMIT as in utimensat."""
        if not addr:
            return None
        if name in ("utimensat",):
            a_s, a_ns, m_s, m_ns = struct.unpack("qqqq", stop.read(addr, 32))
            def one(sec, nsec):
                return nsec if nsec in (UTIME_NOW, UTIME_OMIT) else sec * 10**9 + nsec
            return one(a_s, a_ns), one(m_s, m_ns)
        if name in ("utimes", "futimesat"):
            a_s, a_us, m_s, m_us = struct.unpack("qqqq", stop.read(addr, 32))
            return a_s * 10**9 + a_us * 1000, m_s * 10**9 + m_us * 1000
        actime, modtime = struct.unpack("qq", stop.read(addr, 16))  # utime
        return actime * 10**9, modtime * 10**9

    def _track_open(self, stop, st, res, flags, final: Redirect) -> None:
        if res.service is None:
            return
        def opened(fd, path=res.path, service=res.service):
            if fd < 0:
                return None
            st.files.add(fd, OpenFile(path, service, flags, final.path,
                                      final.listing, trap=final.trap_fd,
                                      meta=final.meta), bool(flags & O_CLOEXEC))
            self._watch(stop, st, fd)
            self.changed(st)
            return None
        stop.on_exit(opened)

    def _set_cwd(self, st, path: str, result: int):
        if result == 0:
            st.fs.cwd = path
            self.changed(st)
        return None

    def _answer_readlink(self, stop, buf: int, size: int, target: str) -> int:
        data = os.fsencode(target)[: size & 0xffffffff]
        stop.write(buf, data)
        return len(data)

    # ---- openat2: RESOLVE_* flags are applied by the walk ---------------------
    def sys_openat2(self, stop, st, sc):
        args = stop.args
        how = stop.read(args[2], 24)
        flags, mode, resolve = struct.unpack("QQQ", how)
        path = self._read_path(stop, args[1])
        if path.startswith("/") and resolve & RESOLVE_BENEATH:
            return -errno.EXDEV
        start = self._start(stop, st, args[0]) if not path.startswith("/") or \
            resolve & RESOLVE_IN_ROOT else (st.fs.cwd, False)
        if start is None:
            return None
        base = start[0]
        res = self.walker.resolve(
            path, base, base if resolve & RESOLVE_IN_ROOT else st.fs.root,
            not flags & O_NOFOLLOW, stop.process.pid,
            no_symlinks=bool(resolve & RESOLVE_NO_SYMLINKS),
            beneath=base if resolve & RESOLVE_BENEATH else None)
        res.touched = res.touched or start[1]
        if not res.touched:
            return None
        if res.error:
            return -res.error
        if resolve & RESOLVE_NO_XDEV and res.service is not None and \
                self.services.for_path(base) is not res.service:
            return -errno.EXDEV
        final = self._final(res, PathCall("openat2", "open", res.path, flags=flags,
                                          mode=mode, caller=_caller(stop)))
        if isinstance(final, int):
            return final
        self._rewrite(stop, 1, final.path, 0)
        stop.set_arg(2, stop.scratch(struct.pack("QQQ", flags, mode, 0)))
        self._track_open(stop, st, res, flags, final)
        return None

    # ---- two-path calls ------------------------------------------------------------
    def sys_two_paths(self, stop, st, sc):
        args = stop.args
        op = sc.op
        path1 = self._read_path(stop, args[sc.path])
        path2 = self._read_path(stop, args[sc.path2])
        follow1 = sc.name == "linkat" and bool(args[4] & 0x400)   # AT_SYMLINK_FOLLOW
        at1 = args[sc.at] if sc.at is not None else None
        at2 = args[sc.at2] if sc.at2 is not None else None
        res1 = self._resolve(stop, st, path1, at1, follow1)
        res2 = self._resolve(stop, st, path2, at2, False)
        if res1 is None or res2 is None or not (res1.touched or res2.touched):
            return None
        for res in (res1, res2):
            if res.error:
                return -res.error
        points = self.services.mount_points()
        if res1.path in points or (op == "rename" and res2.path in points):
            return -errno.EBUSY
        service = res1.service
        if service is not res2.service:
            return -errno.EXDEV         # as the kernel across mount points
        if service is None:
            self._rewrite(stop, sc.path, res1.path, sc.at)
            self._rewrite(stop, sc.path2, res2.path, sc.at2)
            return None
        call = self._path_call(sc.name, op, res1.path, 0, args, _caller(stop))
        call.path2 = res2.path
        answer = service.path_call(call)
        if not isinstance(answer, Redirect):
            return answer
        lower = LowerView(self.services, service.epoch)
        host1 = lower.real(answer.path, op, name=sc.name)
        host2 = lower.real(answer.path2, "create", name=sc.name)
        self._rewrite(stop, sc.path, host1, sc.at)
        self._rewrite(stop, sc.path2, host2, sc.at2)
        return None

    # ---- calls on the process's own state -------------------------------------------
    def sys_getcwd(self, stop, st, sc):
        data = os.fsencode(_rooted(st, st.fs.cwd)) + b"\0"
        if len(data) > stop.args[1]:
            return -errno.ERANGE
        stop.write(stop.args[0], data)
        return len(data)

    def sys_fchdir(self, stop, st, sc):
        fd = _signed32(stop.args[0])
        entry = self._get(stop, st, fd)
        if entry is not None:
            stop.on_exit(lambda r, p=entry.path: self._set_cwd(st, p, r))
            return None
        def kernel_cwd(result, pid=stop.process.pid):
            if result == 0:
                st.fs.cwd = os.readlink(f"/proc/{pid}/cwd")
                self.changed(st)
        stop.on_exit(kernel_cwd)
        return None

    def sys_chroot(self, stop, st, sc):
        res = self._resolve(stop, st, self._read_path(stop, stop.args[0]),
                            None, True)
        if res is None:
            return None
        if res.error:
            return -res.error
        try:
            mode = self.walker.lstat(res.path, float("inf")).st_mode
        except OSError as exc:
            return -exc.errno
        if not stat.S_ISDIR(mode):
            return -errno.ENOTDIR
        st.fs.root = res.path
        self.changed(st)
        return 0

    # ---- AF_UNIX sockets are named by paths too ----------------------------------
    def _sockaddr(self, stop, st, sc, op: str):
        addr, size = stop.args[1], stop.args[2] & 0xffffffff
        if not addr or size <= 2 or size > 110:
            return None
        raw = stop.read(addr, size)
        if struct.unpack_from("H", raw)[0] != socket.AF_UNIX or raw[2] == 0:
            return None                 # not a path (abstract, or not AF_UNIX)
        path = os.fsdecode(raw[2:].split(b"\0", 1)[0])
        res = self._resolve(stop, st, path, None, op == "stat")
        if res is None or not res.touched:
            return None
        if res.error:
            return -res.error
        final = self._final(res, PathCall(sc.name, op, res.path, caller=_caller(stop)))
        if not isinstance(final, Redirect):
            return final if isinstance(final, int) else -errno.ECONNREFUSED
        host = os.fsencode(final.path)
        if len(host) > 107:
            return -errno.ENAMETOOLONG
        new = struct.pack("H", socket.AF_UNIX) + host + b"\0"
        stop.set_arg(1, stop.scratch(new))
        stop.set_arg(2, len(new))
        return None

    def sys_bind(self, stop, st, sc):
        return self._sockaddr(stop, st, sc, "create")

    def sys_connect(self, stop, st, sc):
        return self._sockaddr(stop, st, sc, "stat")

    def sys_io_uring_setup(self, stop, st, sc):
        return -errno.ENOSYS if self.services.mount_points() else None

    # ---- descriptor table ------------------------------------------------------------
    def sys_close(self, stop, st, sc):
        fd = _signed32(stop.args[0])
        if self._get(stop, st, fd) is not None:
            st.files.drop(fd)
            self.changed(st)
        return None

    def _dup_hook(self, stop, st, old: int, new: int | None, cloexec: bool):
        if self._get(stop, st, old) is None and (new is None or self._get(stop, st, new) is None):
            return None
        def done(result):
            if result >= 0:
                st.files.dup(old, result if new is None else new, cloexec)
                self._watch(stop, st, result)
                self.changed(st)
            return None
        stop.on_exit(done)
        return None

    def _watch(self, stop, st, fd: int) -> None:
        """A descriptor whose calls the view must see: from now on this
        process traps every descriptor call (a served file, a merged
        directory) or the metadata ones (a file of a cow mount's lower
        layer, whose reads stay native); the C core lets the calls on other
        descriptors go at once."""
        entry = st.files.get(fd)
        if entry is None:
            return
        want = WATCH_ALL if entry.served is not None or entry.listing is not None \
            else WATCH_META if entry.trap else 0
        if want > stop.process.fd_watch:
            stop.tighten(ALL_FD_CALLS if want == WATCH_ALL else META_FD_CALLS)
            stop.process.fd_watch = want

    def sys_dup(self, stop, st, sc):
        return self._dup_hook(stop, st, _signed32(stop.args[0]), None, False)

    def sys_dup2(self, stop, st, sc):
        return self._dup_hook(stop, st, _signed32(stop.args[0]),
                              _signed32(stop.args[1]), False)

    def sys_dup3(self, stop, st, sc):
        return self._dup_hook(stop, st, _signed32(stop.args[0]),
                              _signed32(stop.args[1]),
                              bool(stop.args[2] & O_CLOEXEC))

    def sys_fcntl(self, stop, st, sc):
        fd, cmd = _signed32(stop.args[0]), _signed32(stop.args[1])
        if self._get(stop, st, fd) is None:
            return None
        if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
            return self._dup_hook(stop, st, fd, None, cmd == F_DUPFD_CLOEXEC)
        if cmd == F_SETFD:
            st.files.set_cloexec(fd, bool(stop.args[2] & 1))
        return None

    def sys_close_range(self, stop, st, sc):
        first, last, flags = stop.args[0] & 0xffffffff, stop.args[1] & 0xffffffff, stop.args[2]
        if flags & CLOSE_RANGE_UNSHARE:
            st.files = st.files.copy()
        if flags & CLOSE_RANGE_CLOEXEC:
            for fd, _ in list(st.files):
                if first <= fd <= last:
                    st.files.set_cloexec(fd, True)
        else:
            st.files.drop_range(first, last)
        self.changed(st)
        return None

    # ---- merged directories -------------------------------------------------------------
    def sys_getdents64(self, stop, st, sc):
        entry = self._get(stop, st, _signed32(stop.args[0]))
        if entry is None or entry.listing is None:
            return None
        if entry.entries is None:
            entry.entries = list(entry.listing())
        data, entry.pos = structs.pack_dirents(entry.entries, entry.pos,
                                               stop.args[2] & 0xffffffff)
        if not data and entry.pos < len(entry.entries):
            return -errno.EINVAL
        if data:
            stop.write(stop.args[1], data)
        return len(data)

    def sys_getdents(self, stop, st, sc):
        entry = self._get(stop, st, _signed32(stop.args[0]))
        return None if entry is None or entry.listing is None else -errno.ENOSYS

    def sys_lseek(self, stop, st, sc):
        entry = self._get(stop, st, _signed32(stop.args[0]))
        if entry is None or entry.listing is None:
            return None
        offset, whence = stop.args[1], stop.args[2]
        if whence != 0:
            return -errno.EINVAL
        entry.pos = offset
        return offset

    # ---- metadata changes on descriptors ----------------------------------------------
    def _fd_modify(self, stop, st, sc):
        entry = self._get(stop, st, _signed32(stop.args[0]))
        if entry is None:
            return None
        if not isinstance(entry.service, PathService):
            return None
        args = stop.args
        if sc.name == "fchmod":
            change = FdChange("chmod", mode=args[1] & 0o7777)
        elif sc.name == "fchown":
            change = FdChange("chown", uid=_unchanged(args[1]), gid=_unchanged(args[2]))
        else:
            change = FdChange(sc.name[1:], xattr=self._read_path(stop, args[1]))
        return entry.service.fd_modify(entry.path, change, _caller(stop))

    sys_fchmod = sys_fchown = sys_fsetxattr = sys_fremovexattr = _fd_modify

    # ---- busy mounts -----------------------------------------------------------------------
    def in_use(self, service) -> bool:
        for proc in self.view.tracer.processes.values():
            st = proc.data.get(KEY)
            if st is None:
                continue
            if self.services.for_path(st.fs.cwd) is service:
                return True
            for fd, (entry, _) in list(st.files):
                if entry.service is not service:
                    continue
                if self._still_open(proc.pid, fd, entry):
                    return True
                st.files.drop(fd)
        return False


def _patch_stat(stop, result: int, name: str, buf: int, meta: dict):
    """Show a service's metadata (owner, mode, device) in a stat buffer the
    kernel has just filled."""
    if result != 0 or not buf:
        return None
    layout = syscall_table.BY_NAME[name].stat_layout[1]
    if layout == "stat":
        mode_at, uid_at, gid_at, fmt = 24, 28, 32, "I"
    else:
        mode_at, uid_at, gid_at, fmt = 28, 20, 24, "H"
    if "mode" in meta:
        kind, perm = meta["mode"]
        old = struct.unpack(fmt, stop.read(buf + mode_at, struct.calcsize(fmt)))[0]
        new = (kind or stat.S_IFMT(old)) | (old & 0o7777 if perm is None else perm)
        stop.write(buf + mode_at, struct.pack(fmt, new))
    for key, at in (("uid", uid_at), ("gid", gid_at)):
        if key in meta:
            stop.write(buf + at, struct.pack("I", meta[key]))
    if "rdev" in meta:
        if layout == "stat":
            stop.write(buf + 40, struct.pack("Q", meta["rdev"]))
        else:
            stop.write(buf + 128, struct.pack("II", os.major(meta["rdev"]),
                                              os.minor(meta["rdev"])))
    return None


def _rooted(st: ProcFs, path: str) -> str:
    """A view path as a chrooted process names it (from its own root)."""
    root = st.fs.root
    if root == "/" or not (path == root or path.startswith(root + "/")):
        return path
    return path[len(root):] or "/"


def _argv_pointers(stop, addr: int) -> list[int]:
    """The pointers of a NULL-terminated argv in the caller's memory."""
    found = []
    while addr:
        ptr = struct.unpack("Q", stop.read(addr, 8))[0]
        if not ptr:
            break
        found.append(ptr)
        addr += 8
    return found


def _script_line(head: bytes, filename: str) -> list[str] | None:
    """The argv head a `#!` line gives: [interp, optional arg, filename]."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].strip()
    if not line:
        return None
    interp, _, optarg = line.partition(b" ")
    optarg = optarg.strip()
    return [os.fsdecode(interp)] + ([os.fsdecode(optarg)] if optarg else []) + [filename]


def _caller(stop) -> Caller:
    return Caller(stop.process.pid, stop.tid)


def _unchanged(value: int) -> int | None:
    """A chown id argument: None for (uid_t)-1."""
    value &= 0xffffffff
    return None if value == 0xffffffff else value


def _give(path: str, stop) -> None:
    """A file of the view's own that the calling process opens itself (a
    placeholder, an exec copy): in a root session, make it the caller's."""
    if os.geteuid() == 0:
        uid, gid = procinfo.fs_ids(stop.process.pid)
        if (uid, gid) != (0, 0):
            os.chown(path, uid, gid)
