"""/proc/mounts and /proc/PID/mountinfo inside a view: the kernel's lines
followed by the view's own mounts, served from a file the hypervisor writes
when the file is opened."""

from __future__ import annotations

import errno
import os
import re

from .module import MountRequest, PathService

MOUNTS = re.compile(r"^/proc/(?:\d+/(?:task/\d+/)?)?(mounts|mountinfo)$")
from .linux import MS_RDONLY


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
