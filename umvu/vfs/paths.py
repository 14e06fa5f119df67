"""Path calls: each path is resolved through the view (walk.py). If no
service owns the result, the kernel runs the call (with the path rewritten
when the view, not the kernel, shaped the resolution). If a service owns it,
the service answers, or redirects the call to a path of the older view,
which is resolved again until a host path is reached (the redirect chain);
the call is then rewritten to that host path, so the tracee gets real
descriptors and all later I/O on them is native. Also the calls on a
process's cwd and root, and AF_UNIX socket names."""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

from .. import creds, syscall_table
from ..linux import (AT_FDCWD, O_CLOEXEC, O_NOFOLLOW, RESOLVE_BENEATH, RESOLVE_IN_ROOT,
                     RESOLVE_NO_SYMLINKS, RESOLVE_NO_XDEV)
from ..module import Answer, PathCall, Redirect
from . import decode
from .decode import signed32
from .lower import follow_chain
from .procfs import rooted
from .state import OpenFile, ProcFs
from .walk import MAGIC

NR_SOCKET = syscall_table.NR["socket"]
NR_CONNECT = syscall_table.NR["connect"]
NR_DUP3 = syscall_table.NR["dup3"]
NR_CLOSE = syscall_table.NR["close"]
#: the calls that report socket names, trapped in a process once it binds
#: or connects to a socket the view renamed
SOCKNAME_NRS = frozenset(syscall_table.NR[n] for n in (
    "getsockname", "getpeername", "accept", "accept4", "recvfrom", "recvmsg"))


class PathCalls:
    def __init__(self, vfs):
        self.vfs = vfs
        self.services = vfs.services
        self.walker = vfs.walker
        #: host path -> the view's name of a socket bound below a mount
        self.socket_names: dict[bytes, bytes] = {}

    # ---- resolution and the redirect chain ---------------------------------------
    def start(self, stop, pfs: ProcFs, dirfd: int) -> tuple[str, bool] | None:
        """Directory a relative path starts from, and whether it is virtual."""
        if signed32(dirfd) == AT_FDCWD:
            return pfs.fs.cwd, self.services.for_path(pfs.fs.cwd) is not None
        entry = self.vfs.fds.get(stop, pfs, signed32(dirfd))
        if entry is not None:
            return entry.path, True
        try:
            # the thread's own table: its leader may have exited
            path = os.readlink(f"/proc/{stop.tid}/fd/{signed32(dirfd)}")
        except OSError:
            return None
        return (path, False) if path.startswith("/") else None

    def resolve(self, stop, pfs: ProcFs, path: str, dirfd: int | None,
                follow: bool, **kw):
        """Resolve a path the caller gave (relative to dirfd or its cwd);
        None for a bad dirfd (the kernel says why)."""
        if dirfd is None or path.startswith("/"):
            start, virtual = pfs.fs.cwd, False
            if not path.startswith("/"):
                virtual = self.services.for_path(pfs.fs.cwd) is not None
        else:
            found = self.start(stop, pfs, dirfd)
            if found is None:
                return None             # bad dirfd: the kernel says why
            start, virtual = found
        with creds.acting_as(stop.process.pid):     # the walk is the caller's
            res = self.walker.resolve(path, start, pfs.fs.root, follow,
                                      stop.process.pid, **kw)
        res.touched = res.touched or virtual
        return res

    def final(self, stop, res, call: PathCall):
        """Walk the redirect chain: a Redirect to a host path, an Answer, or
        an int."""
        return follow_chain(self.services, call, res.path, res.service,
                            lambda service: self.vfs.answered(stop, service))

    @staticmethod
    def rewrite(stop, index: int, path: str, at_index: int | None) -> None:
        """Point the call's path argument at `path` (and its dirfd at the cwd)."""
        stop.set_arg(index, stop.scratch(os.fsencode(path) + b"\0"))
        if at_index is not None:
            stop.set_arg(at_index, AT_FDCWD)

    # ---- one path ------------------------------------------------------------------
    def one_path(self, stop, pfs, sc):
        """The generic path call (stat, open, modify, create, delete)."""
        call = decode.path_args(stop, sc)
        args = stop.args
        name = call.name
        if call.path is None:
            if name == "utimensat":     # futimens: an fd call
                entry = self.vfs.fds.get(stop, pfs, signed32(args[0]))
                if entry is not None and entry.served is not None:
                    return self.vfs.served.fd_modify(
                        stop, entry, "utimensat",
                        times=decode.times(stop, name, args[2]))
                return self.vfs.fds.fd_redirect(stop, pfs, args[0], 1, 0)
            return None
        if call.empty:
            dirfd = call.dirfd
            entry = self.vfs.fds.get(stop, pfs, signed32(dirfd)) \
                if dirfd is not None else None
            if entry is not None and entry.served is not None and name in (
                    "newfstatat", "statx"):
                return self.vfs.served.fstatat_empty(stop, entry, name)
            if entry is not None and entry.meta and sc.stat_layout:
                decode.patch_on_exit(stop, name, entry.meta)
            if entry is not None and entry.served is None and call.op == "modify":
                # fchmodat2/fchownat/utimensat/setxattrat(fd, "", AT_EMPTY_PATH)
                # on a watched descriptor (a lower layer's file): as the
                # descriptor calls do, the service decides (a copy-up)
                return self.vfs.fds.empty_path_modify(stop, pfs, sc, entry)
            return None                 # the fd itself: a real descriptor
        op, flags = call.op, call.flags
        # a trailing slash follows a last symlink, but not for calls that
        # act on the name itself (mkdir, unlink, rmdir)
        res = self.resolve(stop, pfs, call.path, call.dirfd, call.follow,
                           slash_follows=op not in ("create", "delete"))
        if res is not None and name == "chdir":
            stop.on_exit(lambda r, p=res.path: self._set_cwd(pfs, p, r))
        if res is not None and name in ("readlink", "readlinkat"):
            magic = MAGIC.match(res.path)
            target = magic and self.vfs.proc.magic(int(magic.group(1)), magic.group(3))
            if target:
                return self._answer_readlink(stop, args[call.path_at + 1],
                                             args[call.path_at + 2], target)
        if res is None or not res.touched:
            return None
        if res.error:
            return -res.error
        if op == "delete" and res.path in self.services.mount_points():
            return -errno.EBUSY         # a mount point cannot go
        if op == "create" and res.service is not None and \
                res.path == getattr(res.service, "target", None):
            return -errno.EEXIST        # the mount point itself
        pcall = decode.path_call(name, op, res.path, flags, args, decode.caller(stop))
        if name in ("symlink", "symlinkat"):
            pcall.link = decode.read_path(stop, args[0])
        elif sc.times is not None:
            pcall.times = decode.times(stop, name, args[sc.times])
        final = self.final(stop, res, pcall)
        if isinstance(final, int):
            return final
        if isinstance(final, Answer):
            return self._answer(stop, pfs, sc, name, res, final, flags,
                                call.path_at, call.dirfd_at)
        host = final.path
        if res.trailing_slash and not host.endswith("/"):
            host += "/"
        if host == call.path and not (final.listing or final.meta or final.trap_fd):
            # the caller's own absolute, canonical string (a bind onto
            # itself, a cow file not copied up): the kernel runs it as it
            # is, without a rewrite and its exit stop, and the descriptor
            # needs no mirror (its path in /proc is the view's)
            return None
        self.rewrite(stop, call.path_at, host, call.dirfd_at)
        if op == "open":
            self.track_open(stop, pfs, res, flags, final)
        elif final.meta and sc.stat_layout:
            decode.patch_on_exit(stop, name, final.meta)
        return None

    def _answer(self, stop, pfs, sc, name, res, answer, flags, pidx, atidx):
        """A service answered with data: write it where the call wants it."""
        args = stop.args
        if answer.kind == "link":
            if name not in ("readlink", "readlinkat"):
                return -errno.EINVAL
            return self._answer_readlink(stop, args[pidx + 1], args[pidx + 2],
                                         answer.value)
        if answer.kind == "stat":
            if sc.stat_layout:
                index, layout = sc.stat_layout
                pack = decode.pack_statx if layout == "statx" else decode.pack_stat
                stop.write(args[index], pack(answer.value))
                return 0
            if name == "chdir":
                return self._chdir_served(stop, pfs, res, answer.value)
            if name == "statfs":
                stop.write(args[1], decode.pack_statfs(answer.value))
                return 0
            if name in ("access", "faccessat", "faccessat2"):
                return 0
            return -errno.ENOTSUP
        if answer.kind == "socket":
            return self._connect(stop, name, flags, pidx, atidx, *answer.value)
        return self.vfs.served.open(stop, pfs, name, res.path, answer, flags,
                                    pidx, atidx)

    @staticmethod
    def _answer_readlink(stop, buf: int, size: int, target: str) -> int:
        data = os.fsencode(target)[: size & 0xffffffff]
        stop.write(buf, data)
        return len(data)

    def _connect(self, stop, name, flags, pidx, atidx, address, on_connected):
        """Open /dev/null, then put a connected unix socket in its place."""
        if name not in ("open", "openat"):
            return -errno.ENOTSUP
        self.rewrite(stop, pidx, "/dev/null", atidx)
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

    def track_open(self, stop, pfs, res, flags, final: Redirect) -> None:
        """An open redirected below a service: mirror its descriptor."""
        if res.service is None:
            return
        def opened(fd, path=res.path, service=res.service):
            if fd < 0:
                return None
            entry = OpenFile(path, service, flags, final.path, final.listing,
                             trap=final.trap_fd, meta=final.meta)
            entry.private["dir"] = _is_dir(final.path, flags)
            pfs.files.add(fd, entry, bool(flags & O_CLOEXEC))
            self.vfs.fds.watch(stop, pfs, fd)
            self.vfs.feeder.changed(pfs)
            return None
        stop.on_exit(opened)

    def opened_in_c(self, proc, fd: int, flags: int, path: str) -> None:
        """The C core opened `path` below a plain bind for proc (from the
        journal): mirror the descriptor as track_open does, with the host
        path the bind's promise (host_dir) gives."""
        pfs = self.vfs.known_state(proc)
        service = self.vfs.services.for_path(path)
        if pfs is None or service is None:
            return
        found = service.host_dir() if hasattr(service, "host_dir") else None
        if not found or found[1] is not None:
            return                      # unmounted meanwhile: stale
        rel = path[len(service.target):] if service.target != "/" else path
        host = (found[0].rstrip("/") + rel) or "/"
        entry = OpenFile(path, service, flags & ~O_CLOEXEC, host)
        entry.private["dir"] = _is_dir(host, flags)
        pfs.files.add(fd, entry, bool(flags & O_CLOEXEC))
        self.vfs.feeder.changed_later(pfs)

    # ---- openat2: RESOLVE_* flags are applied by the walk ---------------------
    def sys_openat2(self, stop, pfs, sc):
        args = stop.args
        flags, mode, resolve = decode.OPEN_HOW.unpack(stop.read(args[2], 24))
        path = decode.read_path(stop, args[1])
        if path.startswith("/") and resolve & RESOLVE_BENEATH:
            return -errno.EXDEV
        start = self.start(stop, pfs, args[0]) if not path.startswith("/") or \
            resolve & RESOLVE_IN_ROOT else (pfs.fs.cwd, False)
        if start is None:
            return None
        base = start[0]
        res = self.walker.resolve(
            path, base, base if resolve & RESOLVE_IN_ROOT else pfs.fs.root,
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
        final = self.final(stop, res, PathCall("openat2", "open", res.path,
                                               flags=flags, mode=mode,
                                               caller=decode.caller(stop)))
        if isinstance(final, int):
            return final
        self.rewrite(stop, 1, final.path, 0)
        stop.set_arg(2, stop.scratch(decode.OPEN_HOW.pack(flags, mode, 0)))
        self.track_open(stop, pfs, res, flags, final)
        return None

    # ---- two paths (rename, link) -----------------------------------------------------
    def two_paths(self, stop, pfs, sc):
        args = stop.args
        op = sc.op
        path1 = decode.read_path(stop, args[sc.path])
        path2 = decode.read_path(stop, args[sc.path2])
        follow1 = sc.name == "linkat" and bool(args[4] & 0x400)   # AT_SYMLINK_FOLLOW
        at1 = args[sc.at] if sc.at is not None else None
        at2 = args[sc.at2] if sc.at2 is not None else None
        res1 = self.resolve(stop, pfs, path1, at1, follow1)
        res2 = self.resolve(stop, pfs, path2, at2, False)
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
            self.rewrite(stop, sc.path, res1.path, sc.at)
            self.rewrite(stop, sc.path2, res2.path, sc.at2)
            return None
        call = decode.path_call(sc.name, op, res1.path, 0, args, decode.caller(stop))
        call.path2 = res2.path
        # the redirect chain of two paths: both must reach the same older
        # service (which gets the call with both), or both the host
        while service is not None:
            self.vfs.answered(stop, service)
            answer = service.path_call(call)
            if not isinstance(answer, Redirect):
                return answer if isinstance(answer, int) else -errno.EXDEV
            if answer.path2 is None:
                return -errno.EXDEV
            call.path, call.path2 = answer.path, answer.path2
            older = self.services.for_path(answer.path, service.epoch)
            if older is not self.services.for_path(answer.path2, service.epoch):
                return -errno.EXDEV     # as the kernel across mount points
            service = older
        self.rewrite(stop, sc.path, call.path, sc.at)
        self.rewrite(stop, sc.path2, call.path2, sc.at2)
        return None

    # ---- the process's cwd and root ---------------------------------------------------
    def _set_cwd(self, pfs, path: str, result: int):
        if result == 0:
            pfs.fs.cwd = path
            self.vfs.feeder.changed(pfs)
        return None

    def _chdir_served(self, stop, pfs, res, attrs):
        if not stat.S_ISDIR(attrs.st_mode):
            return -errno.ENOTDIR
        self.rewrite(stop, 0, self.vfs.view.tmpdir, None)
        stop.on_exit(lambda r, p=res.path: self._set_cwd(pfs, p, r))
        return None

    def sys_getcwd(self, stop, pfs, sc):
        data = os.fsencode(rooted(pfs, pfs.fs.cwd)) + b"\0"
        if len(data) > stop.args[1]:
            return -errno.ERANGE
        stop.write(stop.args[0], data)
        return len(data)

    def sys_fchdir(self, stop, pfs, sc):
        fd = signed32(stop.args[0])
        entry = self.vfs.fds.get(stop, pfs, fd)
        if entry is not None:
            stop.on_exit(lambda r, p=entry.path: self._set_cwd(pfs, p, r))
            return None
        def kernel_cwd(result, pid=stop.process.pid):
            if result == 0:
                pfs.fs.cwd = os.readlink(f"/proc/{pid}/cwd")
                self.vfs.feeder.changed(pfs)
        stop.on_exit(kernel_cwd)
        return None

    def sys_chroot(self, stop, pfs, sc):
        res = self.resolve(stop, pfs, decode.read_path(stop, stop.args[0]),
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
        pfs.fs.root = res.path
        self.vfs.feeder.changed(pfs)
        return 0

    # ---- AF_UNIX sockets are named by paths too ----------------------------------
    def _sockaddr(self, stop, pfs, sc, op: str):
        addr, size = stop.args[1], stop.args[2] & 0xffffffff
        if not addr or size <= 2 or size > 110:
            return None
        raw = stop.read(addr, size)
        if struct.unpack_from("H", raw)[0] != socket.AF_UNIX or raw[2] == 0:
            return None                 # not a path (abstract, or not AF_UNIX)
        path = os.fsdecode(raw[2:].split(b"\0", 1)[0])
        res = self.resolve(stop, pfs, path, None, op == "stat")
        if res is None or not res.touched:
            return None
        if res.error:
            return -res.error
        final = self.final(stop, res, PathCall(sc.name, op, res.path,
                                               caller=decode.caller(stop)))
        if not isinstance(final, Redirect):
            return final if isinstance(final, int) else -errno.ECONNREFUSED
        host = os.fsencode(final.path)
        if len(host) > 107:
            return -errno.ENAMETOOLONG
        new = struct.pack("H", socket.AF_UNIX) + host + b"\0"
        stop.set_arg(1, stop.scratch(new))
        stop.set_arg(2, len(new))
        given = raw[2:].split(b"\0", 1)[0]
        if host != given:
            # the kernel now names the socket by its host path: the calls
            # that report socket names show the view's name instead
            name = given if op == "create" else os.fsencode(res.path)
            def named(result):
                if op == "create" and result != 0:
                    return None
                if op == "create" or host not in self.socket_names:
                    self.socket_names[host] = name
                if not getattr(stop.process, "sockname_watch", False):
                    stop.process.sockname_watch = True
                    stop.tighten(SOCKNAME_NRS)
                return None
            stop.on_exit(named)
        return None

    # ---- ... and reported: the host names of sockets the view renamed -------
    def _view_sockaddr(self, stop, addr: int, lenp: int, size: int) -> None:
        """At the exit of a call that wrote a peer's or its own address:
        a host path the view renamed (bind, connect below a mount) is
        replaced by the view's name (the one given to bind)."""
        if not addr or not lenp or size <= 2:
            return
        try:
            length = struct.unpack("I", stop.read(lenp, 4))[0]
            data = stop.read(addr, min(length, size))
        except OSError:
            return
        if len(data) <= 2 or struct.unpack_from("H", data)[0] != socket.AF_UNIX:
            return
        view = self.socket_names.get(data[2:].split(b"\0", 1)[0])
        if view is None:
            return
        new = struct.pack("H", socket.AF_UNIX) + view + b"\0"
        stop.write(addr, new[:size])
        stop.write(lenp, struct.pack("I", len(new)))

    def _names_at_exit(self, stop, addr: int, lenp: int) -> None:
        if not addr or not lenp or not self.socket_names:
            return
        try:
            size = struct.unpack("I", stop.read(lenp, 4))[0]
        except OSError:
            return
        def done(result):
            if result >= 0:
                self._view_sockaddr(stop, addr, lenp, size)
            return None
        stop.on_exit(done)

    def sys_getsockname(self, stop, pfs, sc):
        self._names_at_exit(stop, stop.args[1], stop.args[2])

    sys_getpeername = sys_accept = sys_accept4 = sys_getsockname

    def sys_recvfrom(self, stop, pfs, sc):
        self._names_at_exit(stop, stop.args[4], stop.args[5])

    def sys_recvmsg(self, stop, pfs, sc):
        if not self.socket_names or not stop.args[1]:
            return None
        try:
            name = struct.unpack("Q", stop.read(stop.args[1], 8))[0]
        except OSError:
            return None
        self._names_at_exit(stop, name, stop.args[1] + 8)   # msg_name, msg_namelen

    def sys_bind(self, stop, pfs, sc):
        return self._sockaddr(stop, pfs, sc, "create")

    def sys_connect(self, stop, pfs, sc):
        return self._sockaddr(stop, pfs, sc, "stat")

    def sys_io_uring_setup(self, stop, pfs, sc):
        return -errno.ENOSYS if self.services.mount_points() else None


def _is_dir(host: str, flags: int) -> bool:
    """A descriptor opened on a directory (with or without O_DIRECTORY;
    O_NOFOLLOW: a symlink itself is none): the C core walks paths relative
    to it."""
    try:
        return stat.S_ISDIR(os.stat(host, follow_symlinks=not flags & O_NOFOLLOW).st_mode)
    except OSError:
        return False
