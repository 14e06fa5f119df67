"""What a service sees: the view as it was before the service was mounted.

A service's own file operations go through here, so that they see only
older services (VUOS epochs) and, below them all, the host. A path of the
older view may end at a host file (through redirects) or at a file an
older service serves itself (a FUSE image): every operation but `real`
works on both.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from ..module import Answer, Caller, PathCall, Redirect

MAXSYMLINKS = 40


class LowerView:
    def __init__(self, services, epoch: float):
        self.services = services
        self.epoch = epoch

    # ---- the redirect chain ---------------------------------------------------
    def chain(self, call: PathCall):
        """Run `call` (call.path: a path of this older view) down the
        redirect chain: a Redirect to a host path (with the listing, meta
        and trap_fd gathered on the way), an Answer (its `service` set), or
        an int. A redirect to a path an older service owns reaches that
        service's path_call with the redirected path."""
        return follow_chain(self.services, call, call.path,
                            self.services.for_path(call.path, self.epoch))

    def _ask(self, name: str, op: str, path: str, flags: int = 0, mode: int = 0):
        answer = self.chain(PathCall(name, op, path, flags=flags, mode=mode,
                                     caller=Caller.current()))
        if isinstance(answer, int) and answer < 0:
            raise OSError(-answer, os.strerror(-answer), path)
        return answer

    def real(self, path: str, op: str = "stat", flags: int = 0,
             name: str = "lstat") -> str:
        """The host path that `path` of this older view stands for
        (EOPNOTSUPP when an older service serves it itself)."""
        answer = self._ask(name, op, path, flags)
        if not isinstance(answer, Redirect):
            raise OSError(errno.EOPNOTSUPP, "served by a service, not a host file",
                          path)
        return answer.path

    # ---- what a service may ask of it -------------------------------------------
    def lstat(self, path: str) -> os.stat_result:
        answer = self._ask("lstat", "stat", path)
        if isinstance(answer, Redirect):
            return with_meta(os.lstat(answer.path), answer.meta)
        if isinstance(answer, Answer) and answer.kind == "stat":
            return answer.value
        raise OSError(errno.EIO, "no attributes", path)

    def stat(self, path: str) -> os.stat_result:
        """stat, following symlinks (those of served files in this view)."""
        for _ in range(MAXSYMLINKS):
            answer = self._ask("stat", "stat", path)
            if isinstance(answer, Redirect):
                return with_meta(os.stat(answer.path), answer.meta)
            if not (isinstance(answer, Answer) and answer.kind == "stat"):
                raise OSError(errno.EIO, "no attributes", path)
            if not stat.S_ISLNK(answer.value.st_mode):
                return answer.value
            path = posixpath.normpath(posixpath.join(posixpath.dirname(path),
                                                     self.readlink(path)))
        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)

    def readlink(self, path: str, caller=None) -> str:
        answer = self._ask("readlink", "stat", path)
        if isinstance(answer, Answer) and answer.kind == "link":
            return answer.value
        if not isinstance(answer, Redirect):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        real = answer.path
        # /proc/self seen through a service is the caller's, not ours
        pid = (caller if caller is not None and caller.pid else Caller.current()).pid
        if pid and real in ("/proc/self", "/proc/thread-self"):
            return str(pid) if real == "/proc/self" else f"{pid}/task/{pid}"
        return os.readlink(real)

    def access(self, path: str, mode: int) -> bool:
        """access(2) (os.R_OK, W_OK, X_OK, F_OK), as the older view answers."""
        try:
            answer = self._ask("access", "stat", path, mode=mode)
        except OSError:
            return False
        if isinstance(answer, Redirect):
            return os.access(answer.path, mode)
        return True                     # 0, or a stat answer: allowed

    def read_only(self, path: str) -> bool:
        """Is path on a read-only file system (a read-only service, a
        read-only host mount)? Then no change can reach it (EROFS)."""
        try:
            answer = self._ask("access", "stat", path, mode=os.W_OK)
        except OSError as exc:
            return exc.errno == errno.EROFS
        if isinstance(answer, Redirect):
            try:
                return bool(os.statvfs(answer.path).f_flag & os.ST_RDONLY)
            except OSError:
                return False
        return False

    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
            return True
        except OSError:
            return False

    def scandir(self, path: str) -> list[tuple[str, int, int]]:
        """The entries of a directory as the older view lists it (a layered
        mount's merged listing, a served directory's), '.' and '..' left
        out: [(name, d_type, inode)]."""
        answer = self._ask("open", "open", path,
                           flags=os.O_RDONLY | os.O_DIRECTORY)
        if isinstance(answer, Redirect):
            if answer.listing is not None:
                entries = answer.listing()
            else:
                entries = []
                with os.scandir(answer.path) as it:
                    for entry in it:
                        try:
                            kind = entry.stat(follow_symlinks=False).st_mode
                        except OSError:
                            kind = 0
                        entries.append((entry.name, DT.get(stat.S_IFMT(kind), 0),
                                        entry.inode()))
        elif isinstance(answer, Answer) and answer.kind == "served":
            try:
                entries = answer.value.readdir()
            finally:
                answer.value.release()
        else:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return [e for e in entries if e[0] not in (".", "..")]

    def listdir(self, path: str) -> list[str]:
        return [name for name, _, _ in self.scandir(path)]

    def open(self, path: str):
        """A file object to read `path` from (binary, read-only): the host
        file, or a reader of the file an older service serves."""
        answer = self._ask("open", "open", path, flags=os.O_RDONLY)
        if isinstance(answer, Redirect):
            return open(answer.path, "rb")
        if isinstance(answer, Answer) and answer.kind == "served":
            return ServedReader(answer.value)
        raise OSError(errno.EIO, "cannot be read", path)


DT = {stat.S_IFREG: 8, stat.S_IFDIR: 4, stat.S_IFLNK: 10, stat.S_IFCHR: 2,
      stat.S_IFBLK: 6, stat.S_IFIFO: 1, stat.S_IFSOCK: 12}


class ServedReader:
    """A served file read as a Python file object (released when closed)."""

    def __init__(self, served):
        self.served, self.pos, self.closed = served, 0, False

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            chunks = []
            while True:
                data = self.read(1 << 20)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
        data = self.served.read(size, self.pos)
        self.pos += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.served.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


ACCESS_CALLS = ("access", "faccessat", "faccessat2")


def follow_chain(services, call: PathCall, path: str, service, on_service=None):
    """The redirect chain from `service` (the newest owner of path) down:
    each service answers, or redirects to a path of its older view, whose
    owner answers next. A Redirect to a host path at the end (listing, meta
    and trap_fd gathered on the way), an Answer (its `service` set, with
    what the redirects above it show instead), or an int.
    on_service(service) hears of each service asked (--trace)."""
    final = Redirect(path)
    while service is not None:
        call.path = path
        if on_service is not None:
            on_service(service)
        answer = erofs(service, call) or service.path_call(call)
        if not isinstance(answer, Redirect):
            if isinstance(answer, Answer):
                answer.service = service
                return decorate(answer, final)
            return answer
        gather(final, answer)
        path = final.path = answer.path
        service = services.for_path(path, service.epoch)
    return final


def erofs(service, call) -> int:
    """access(W_OK) below a read-only service: EROFS, as the kernel says
    for a read-only mount (0: ask the service)."""
    if getattr(service, "readonly", False) and call.name in ACCESS_CALLS \
            and call.mode & os.W_OK:
        return -errno.EROFS
    return 0


# ---- what the services above a served file add to it ----------------------------

def gather(final: Redirect, answer: Redirect) -> None:
    """Keep what a redirect on the chain asks for (the newest wins)."""
    final.listing = final.listing or answer.listing
    final.meta = final.meta or answer.meta
    final.trap_fd = final.trap_fd or answer.trap_fd


def with_meta(st, meta: dict | None):
    """st with a service's metadata (Redirect.meta) shown instead."""
    if not meta:
        return st
    if not isinstance(st, os.stat_result):     # a service's own st_* object
        st = os.stat_result([getattr(st, n, 0) for n in STAT_FIELDS],
                            {n: getattr(st, n) for n in
                             ("st_atime_ns", "st_mtime_ns", "st_ctime_ns",
                              "st_blksize", "st_blocks", "st_rdev") if hasattr(st, n)})
    fields = list(st)
    extra = {name: getattr(st, name) for name in dir(st)
             if name.startswith("st_") and name not in STAT_FIELDS}
    if "mode" in meta:
        kind, perm = meta["mode"]
        old = st.st_mode
        fields[0] = (kind or stat.S_IFMT(old)) | (old & 0o7777 if perm is None else perm)
    for key, index in (("uid", 4), ("gid", 5)):
        if key in meta:
            fields[index] = meta[key]
    if "rdev" in meta:
        extra["st_rdev"] = meta["rdev"]
    return os.stat_result(fields[:10], extra) if extra else os.stat_result(fields[:10])


STAT_FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid",
               "st_size", "st_atime", "st_mtime", "st_ctime")


class _Decorated:
    """A served file with what services above it show instead: their merged
    listing (a layered mount over a served directory), their metadata."""

    def __init__(self, served, listing, meta):
        self._served, self._listing, self._meta = served, listing, meta

    def __getattr__(self, name):
        return getattr(self._served, name)

    def readdir(self):
        return list(self._listing()) if self._listing else self._served.readdir()

    def stat(self):
        return with_meta(self._served.stat(), self._meta)


def decorate(answer: Answer, final: Redirect) -> Answer:
    """An Answer met at the end of a redirect chain, with the listing and
    metadata the redirects above it asked for."""
    if not (final.listing or final.meta):
        return answer
    if answer.kind == "stat" and not isinstance(answer.value, dict):
        answer.value = with_meta(answer.value, final.meta)
    elif answer.kind == "served":
        listing = final.listing if getattr(answer.value, "is_dir", False) else None
        answer.value = _Decorated(answer.value, listing, final.meta)
    return answer
