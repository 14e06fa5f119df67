"""A mounted FUSE file system: path calls and served files answered by an
operations backend (the wire protocol to a daemon, or a fusepy Operations
object running in the hypervisor)."""

from __future__ import annotations

import errno
import stat
import time

from umvu.module import Caller, PathService, ServedFile, WouldBlock, linux

#: requests the tracer's thread may try itself: if the daemon is slow, the
#: call is tried again on a worker, which waits for the same request's reply
#: (session.FuseConnection parks it: a daemon is never asked twice)
QUICK = {"getattr", "readlink", "read", "readdir", "statfs", "access"}
QUICK_WAIT = 0.02
WALK_CACHE_SECONDS = 1.0        # fuse2fs's entry timeout; the kernel's default
WRITE_OPS = ("modify", "create", "delete", "rename", "link")


def _writes(flags: int) -> bool:
    return flags & linux.O_ACCMODE != 0 or bool(flags & linux.O_TRUNC)


class FuseService(PathService):
    """`ops` follows WireOperations' interface; `blocking` services wait
    for a daemon, so their calls run on worker threads."""

    def __init__(self, module, request, ops, *, blocking: bool, readonly: bool,
                 daemon=None, conn=None):
        super().__init__(module, request)
        self.ops = ops
        self.blocking = blocking
        self.readonly = readonly
        self.daemon = daemon
        self.conn = conn
        self._walk_cache: dict = {}
        #: -o fakeroot: every request says uid 0, gid 0
        self.fakeroot = False

    # ---- calling the backend ----------------------------------------------
    def call(self, method: str, *args, **kwargs):
        """ops.method(*args), waiting without holding the view. Daemons get
        the caller's fs ids as the view shows them (virtual ones with
        unrealuidgid, as VUOS sends them; 0 with -o fakeroot) and its pid."""
        func = getattr(self.ops, method)
        if not self.blocking:
            return func(*args, **kwargs)
        ctx = (0, 0, Caller.current().pid) if self.fakeroot else caller_ids()
        owner = Caller.current().tid or None    # the calling thread
        try:
            self.may_wait()
        except WouldBlock:
            if method not in QUICK or self.conn is None:
                raise
            return self._quick(func, args, kwargs, ctx, owner)
        if self.conn is None:
            with self.ctx.unlocked():
                return func(*args, ctx=ctx, **kwargs)
        serving = self.conn.serving
        outer, serving.owner = getattr(serving, "owner", None), owner
        try:
            with self.ctx.unlocked():
                return func(*args, ctx=ctx, **kwargs)
        finally:
            serving.owner = outer

    def _quick(self, func, args, kwargs, ctx, owner):
        """On the tracer's thread: a daemon usually answers a lookup or a
        read within microseconds without needing the tracer, so ask and
        wait a little; only if it is slow, move the call to a worker. The
        request it timed out on stays with the daemon (and may need the
        tracer, as a daemon reading a vudev device does): the call tried
        again by the worker takes its reply instead of asking again."""
        self.conn.quick.timeout = QUICK_WAIT
        self.conn.quick.owner = owner
        try:
            return func(*args, ctx=ctx, **kwargs)
        except TimeoutError:
            raise WouldBlock() from None
        finally:
            self.conn.quick.timeout = None
            self.conn.quick.owner = None

    def rel(self, path: str) -> str:
        if self.target == "/":
            return path
        return path[len(self.target):] or "/"

    # ---- used while walking paths --------------------------------------------
    def lstat(self, path, caller=None):
        """The walk needs only whether a name is a directory or a symlink:
        remember it a moment (as the kernel's dentry cache does), so that
        walking to a file does not ask the daemon about every directory."""
        now = time.monotonic()
        hit = self._walk_cache.get(path)
        if hit is not None and now - hit[1] < WALK_CACHE_SECONDS:
            return hit[0]
        st = self.call("getattr", self.rel(path))
        if len(self._walk_cache) > 4096:
            self._walk_cache.clear()
        self._walk_cache[path] = (st, now)
        return st

    def readlink(self, path, caller=None):
        return self.call("readlink", self.rel(path))

    # ---- path calls --------------------------------------------------------------
    def path_call(self, call):
        rel = self.rel(call.path)
        if call.op != "stat":
            self._walk_cache.clear()        # names may change meaning
        if self.readonly and (call.op in WRITE_OPS or
                              (call.op == "open" and (_writes(call.flags) or
                                                      call.flags & linux.O_CREAT))):
            return -errno.EROFS
        try:
            return getattr(self, "op_" + call.op)(call, rel)
        except OSError as exc:
            return -(exc.errno or errno.EIO)

    def op_stat(self, call, rel):
        if call.name in ("readlink", "readlinkat"):
            return call.link_target(self.call("readlink", rel))
        if call.name in ("access", "faccessat", "faccessat2"):
            self.call("access", rel, call.mode & 7)
            return 0
        if call.name == "statfs":
            return call.statfs_result(self.call("statfs", rel))
        if "xattr" in call.name:
            return -errno.EOPNOTSUPP
        return call.stat_result(self.call("getattr", rel))

    def op_open(self, call, rel):
        flags = call.flags
        try:
            st = self.call("getattr", rel)
        except OSError as exc:
            if exc.errno != errno.ENOENT or not flags & linux.O_CREAT:
                raise
            fh = self.create(rel, call.mode & 0o7777, flags & ~(linux.O_CREAT | linux.O_EXCL),
                             call.caller.umask)
            return call.serve(FuseFile(self, rel, fh, False))
        if flags & linux.O_CREAT and flags & linux.O_EXCL:
            return -errno.EEXIST
        if flags & linux.O_PATH and not stat.S_ISDIR(st.st_mode):
            # a descriptor that only names the file (a symlink itself with
            # O_NOFOLLOW): nothing is opened in the daemon
            return call.serve(FusePathFile(self, rel))
        if stat.S_ISDIR(st.st_mode):
            if _writes(flags):
                return -errno.EISDIR
            return call.serve(FuseFile(self, rel, self.call("opendir", rel), True))
        fh = self.call("open", rel, flags & ~(linux.O_CREAT | linux.O_EXCL | linux.O_TRUNC))
        if flags & linux.O_TRUNC and _writes(flags) and st.st_size:
            self.call("truncate", rel, 0, fh)
        return call.serve(FuseFile(self, rel, fh, False))

    def op_modify(self, call, rel):
        name = call.name
        if name in ("chmod", "fchmodat", "fchmodat2"):
            if stat.S_ISLNK(self.call("getattr", rel).st_mode):
                return -errno.EOPNOTSUPP    # AT_SYMLINK_NOFOLLOW: as the kernel
            self.call("chmod", rel, call.mode)
        elif name in ("chown", "lchown", "fchownat"):
            self.call("chown", rel, call.uid, call.gid)
        elif name == "truncate":
            self.call("truncate", rel, call.length)
        elif name in ("utime", "utimes", "futimesat", "utimensat"):
            self.call("utimens", rel, call.times)
        else:
            return -errno.EOPNOTSUPP
        return 0

    def op_create(self, call, rel):
        umask = call.caller.umask
        if call.name in ("mkdir", "mkdirat"):
            self.make("mkdir", rel, call.mode & 0o7777, umask)
        elif call.name in ("symlink", "symlinkat"):
            self.call("symlink", rel, call.link)
        else:
            self.make("mknod", rel, call.mode, umask, call.dev)
        return 0

    def op_delete(self, call, rel):
        self.call("getattr", rel)           # as the kernel looks the name up
        self.call("rmdir" if call.name == "rmdir" else "unlink", rel)
        return 0

    # ---- the caller's umask: FUSE takes it apart, fusepy classes do not --------
    def create(self, rel, mode, flags, umask):
        if self.blocking:
            return self.call("create", rel, mode, flags, umask=umask)
        return self.call("create", rel, mode & ~umask, flags)

    def make(self, what, rel, mode, umask, *extra):
        if self.blocking:
            return self.call(what, rel, mode, *extra, umask=umask)
        return self.call(what, rel, mode & ~umask | (mode & ~0o7777), *extra)

    def op_rename(self, call, rel):
        self.call("rename", rel, self.rel(call.path2), call.flags)
        return 0

    def op_link(self, call, rel):
        self.call("link", self.rel(call.path2), rel)
        return 0


class FuseFile(ServedFile):
    def __init__(self, service: FuseService, rel: str, fh: int, is_dir: bool):
        self.service, self.rel, self.fh, self.is_dir = service, rel, fh, is_dir

    def read(self, size, offset):
        if self.is_dir:
            raise OSError(errno.EISDIR, "is a directory")
        try:
            return self.service.call("read", self.rel, size, offset, self.fh)
        except OSError:
            # the kernel never reads past the end; some daemons refuse to
            if offset >= self.stat().st_size:
                return b""
            raise

    def write(self, data, offset):
        return self.service.call("write", self.rel, data, offset, self.fh)

    def stat(self):
        return self.service.call("getattr", self.rel, self.fh)

    def truncate(self, size):
        self.service.call("truncate", self.rel, size, self.fh)

    def readdir(self):
        return self.service.call("readdir", self.rel, self.fh)

    def fsync(self):
        self.service.call("fsync", self.rel, False, self.fh)

    def release(self):
        """Nobody waits for a release: send it from a worker thread."""
        service, rel, fh, is_dir = self.service, self.rel, self.fh, self.is_dir
        def release():
            try:
                if is_dir:
                    service.ops.releasedir(rel, fh)
                else:
                    service.ops.flush(rel, fh)
                    service.ops.release(rel, fh)
            except OSError:
                pass
        if not service.blocking:
            release()
            return
        def in_worker():
            with service.ctx.unlocked():
                release()
        service.ctx.submit(in_worker)



class FusePathFile(ServedFile):
    """An O_PATH descriptor of a file (a symlink, with O_NOFOLLOW): it can be
    fstat'ed and passed as a dirfd, never read nor written."""

    def __init__(self, service: FuseService, rel: str):
        self.service, self.rel = service, rel

    def read(self, size, offset):
        raise OSError(errno.EBADF, "opened with O_PATH")

    def write(self, data, offset):
        raise OSError(errno.EBADF, "opened with O_PATH")

    def stat(self):
        return self.service.call("getattr", self.rel)


def caller_ids() -> tuple[int, int, int]:
    """(fsuid, fsgid, pid) of the process whose call is being served, the
    ids as the view shows them (virtual root is uid 0 to the daemon)."""
    caller = Caller.current()
    return (*caller.view_ids()[:2], caller.pid)
