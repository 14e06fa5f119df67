"""The walker: path resolution through the view, one component at a time,
asking the service that owns each prefix (or the host kernel) whether it is
a directory or a symlink, so that symlinks, ".." and mount points are seen
exactly as a process in the view sees them.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass

from ..module import Caller

MAXSYMLINKS = 40
PATH_MAX = 4096
KERNEL_OBJECT = re.compile(r"^[a-z_]+:")   # pipe:[12], anon_inode:[eventfd]
MAGIC = re.compile(r"^/proc/(\d+)(?:/task/(\d+))?/(cwd|root|exe|fd/(\d+))$")


@dataclass
class Resolved:
    path: str                   # canonical path in the view
    service: object = None      # newest service covering it, or None
    touched: bool = False       # the view (not the kernel) shaped the answer
    error: int = 0              # errno met while walking (0: none)
    trailing_slash: bool = False


def join(base: str, name: str) -> str:
    return base + name if base.endswith("/") else base + "/" + name


def parent(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


class Walker:
    """Resolves paths for one calling process.

    `lstat(path, before)` and `readlink(path, before)` of the view decide
    each step; `magic(pid, kind)`, kind being "cwd", "root", "exe" or
    "fd/N", answers /proc/PID/{cwd,root,exe,fd/N} for processes whose state
    differs from the kernel's (None: the kernel's answer is right).
    """

    def __init__(self, services, magic):
        self.services = services
        self.magic = magic

    def service_for(self, path: str, before: float):
        return self.services.for_path(path, before)

    def lstat(self, path: str, before: float, service=False,
              pid: int = 0) -> os.stat_result:
        """lstat in the view (service: the one for_path gave, if known)."""
        if service is False:
            service = self.service_for(path, before)
        if service is None:
            return os.lstat(path)
        return service.lstat(path, Caller(pid))

    def readlink(self, path: str, before: float, pid: int, service=False) -> str:
        if service is False:
            service = self.service_for(path, before)
        if service is not None:
            return service.readlink(path, Caller(pid))
        if path == "/proc/self":
            return str(pid)
        if path == "/proc/thread-self":
            return f"{pid}/task/{pid}"
        return os.readlink(path)

    def resolve(self, path: str, start: str, root: str, follow: bool, pid: int,
                before: float = float("inf"), no_symlinks: bool = False,
                beneath: str | None = None, slash_follows: bool = True) -> Resolved:
        # the kernel counts bytes (with the NUL), not decoded characters
        if len(os.fsencode(path)) >= PATH_MAX:
            return Resolved(path, error=errno.ENAMETOOLONG, touched=True)
        if path == "":
            # as the kernel: AT_EMPTY_PATH (the dirfd itself) is the caller's
            # to handle before walking (umvu/vfs/paths.py does)
            return Resolved(path, error=errno.ENOENT)
        trailing = path.endswith("/") and path.strip("/") != ""
        if path.startswith("/"):
            cur = root
        else:
            cur = start
        touched = root != "/"
        # "." is kept as a component, skipped when met: "x/." must find x a
        # directory and follow it, as "x/.." does (and as the kernel does)
        parts = [p for p in path.split("/") if p != ""]
        parts.reverse()
        links = 0
        while parts:
            name = parts.pop()
            if name == ".":
                continue
            if name == "..":
                if cur != root:
                    cur = parent(cur)
                if beneath is not None and not _under(cur, beneath):
                    return Resolved(cur, touched=True, error=errno.EXDEV)
                continue
            nxt = join(cur, name)
            last = not parts
            if last and not follow and not (trailing and slash_follows):
                cur = nxt
                break
            service = self.service_for(nxt, before)
            if service is not None:
                touched = True
            magic = MAGIC.match(nxt)
            try:
                if magic is not None:
                    target = self.magic(int(magic.group(1)), magic.group(3))
                    if target is not None:
                        # still a symlink to the kernel: it counts toward the
                        # limit, and a magic link jump is refused by
                        # RESOLVE_NO_SYMLINKS (ELOOP) and RESOLVE_BENEATH (EXDEV)
                        links += 1
                        if links > MAXSYMLINKS or no_symlinks:
                            return Resolved(nxt, service, True, errno.ELOOP)
                        if beneath is not None:
                            return Resolved(nxt, service, True, errno.EXDEV)
                        touched = True
                        cur = self._follow(target, root, parts)
                        continue
                st = self.lstat(nxt, before, service, pid)
            except OSError as exc:
                if last and exc.errno == errno.ENOENT:
                    cur = nxt
                    break
                return Resolved(nxt, service, touched, exc.errno or errno.ENOENT)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAXSYMLINKS or no_symlinks:
                    return Resolved(nxt, service, True, errno.ELOOP)
                try:
                    target = self.readlink(nxt, before, pid, service)
                except OSError as exc:
                    return Resolved(nxt, service, touched, exc.errno)
                if KERNEL_OBJECT.match(target) and nxt.startswith("/proc/"):
                    # a kernel object (pipe:[..]): only the kernel can open it
                    cur = nxt
                    if parts:
                        return Resolved(nxt, None, touched, errno.ENOTDIR)
                    break
                if beneath is not None and target.startswith("/"):
                    return Resolved(nxt, service, True, errno.EXDEV)
                cur = self._follow(target, root, parts, base=cur)
                continue
            if not last and not stat.S_ISDIR(st.st_mode):
                return Resolved(nxt, service, touched, errno.ENOTDIR)
            cur = nxt
        service = self.service_for(cur, before)
        return Resolved(cur, service, touched or service is not None, 0, trailing)

    @staticmethod
    def _follow(target: str, root: str, parts: list, base: str = "/") -> str:
        """Push a symlink's components; return where the walk continues."""
        for piece in reversed([p for p in target.split("/") if p != ""]):
            parts.append(piece)
        if target.startswith("/"):
            return root
        return base


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")
