"""/proc as the view shows it: /proc/mounts and /proc/PID/mountinfo (the
kernel's lines followed by the view's own mounts, served from a file the
hypervisor writes when the file is opened), and the magic links
/proc/PID/{cwd,root,exe,fd/N} of processes whose answer is the view's."""

from __future__ import annotations

import errno
import os
import re

from ..linux import MS_RDONLY
from ..module import MountRequest, PathService
from .state import ProcFs

MOUNTS = re.compile(r"^/proc/(?:\d+/(?:task/\d+/)?)?(mounts|mountinfo)$")


class ProcMounts(PathService):
    def __init__(self, view):
        super().__init__(None, MountRequest("proc", "/proc", "proc"))
        self.view = view

    def confirm(self, path: str) -> bool:
        return MOUNTS.match(path) is not None and any(
            s.module is not None for s in self.view.services)

    def lstat(self, path, caller=None):
        return os.lstat(path)

    def readlink(self, path, caller=None):
        return os.readlink(path)

    def path_call(self, call):
        if call.op not in ("stat", "open"):
            return -errno.EACCES
        kind = MOUNTS.match(call.path).group(1)
        with open(call.path) as real:
            text = real.read()
        extra = [s for s in self.view.services
                 if s.module is not None and not s.internal]
        for n, s in enumerate(extra):
            readonly = s.flags & MS_RDONLY or s.readonly
            opts = ("ro" if readonly else "rw") + \
                (f",{s.options}" if s.options else "")
            source, target = _escape(s.source or "none"), _escape(s.target)
            if kind == "mounts":
                text += f"{source} {target} {s.fstype} {opts} 0 0\n"
            else:
                text += (f"{100000 + n} 1 0:0 / {target} {opts} - "
                         f"{s.fstype} {source} {opts}\n")
        out = os.path.join(self.view.tmpdir, f"{kind}.{call.pid}")
        with open(out + ".new", "w") as f:
            f.write(text)
        os.replace(out + ".new", out)
        return call.redirect(out)


def _escape(field: str) -> str:
    """As the kernel writes mount fields: space, tab, newline and backslash
    in octal (findmnt and getmntent undo it)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in field)


class ProcLinks:
    """/proc/PID/{cwd,root,exe,fd/N} as the view sees them (the walker's
    `magic`, readlink of them)."""

    def __init__(self, vfs):
        self.vfs = vfs

    def magic(self, pid: int, kind: str) -> str | None:
        """The link's target when the view's answer differs from the
        kernel's; else None. kind: "cwd", "root", "exe" or "fd/N"."""
        proc = self.vfs.view.tracer.processes.get(pid)
        pfs = self.vfs.known_state(proc) if proc else None
        if pfs is None:
            return None
        chrooted = pfs.fs.root != "/"
        if kind == "cwd":
            virtual = chrooted or self.vfs.services.for_path(pfs.fs.cwd) is not None
            return rooted(pfs, pfs.fs.cwd) if virtual else None
        if kind == "root":
            return "/" if chrooted else None
        if kind == "exe":
            return rooted(pfs, pfs.exe) if pfs.exe else None
        fd = int(kind[3:])
        entry = pfs.files.get(fd)
        if entry is not None and not self.vfs.fds.still_open(pid, fd, entry):
            pfs.files.drop(fd)
            return None
        return rooted(pfs, entry.path) if entry else None


def rooted(pfs: ProcFs, path: str) -> str:
    """A view path as a chrooted process names it (from its own root)."""
    root = pfs.fs.root
    if root == "/" or not (path == root or path.startswith(root + "/")):
        return path
    return path[len(root):] or "/"
