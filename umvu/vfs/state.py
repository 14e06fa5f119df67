"""The data model of the VFS: per-process file-system state the view keeps
beside the kernel's (the virtual cwd and root, and a mirror of the
descriptors opened through a service). Descriptors the kernel opened on its
own are not mirrored: for them the kernel's answer is already the view's.
The calls that keep the mirror up to date are in fdmirror.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..linux import CLONE_FILES, CLONE_FS


@dataclass
class FsState:
    """Shared by processes created with CLONE_FS."""
    cwd: str
    root: str = "/"

    def copy(self) -> "FsState":
        return FsState(self.cwd, self.root)


@dataclass(eq=False)
class OpenFile:
    """An open file description created through a service (shared by dup)."""
    path: str                   # canonical path in the view
    service: object             # the service that answered the open
    flags: int = 0
    host: str = ""              # the real file the kernel opened
    listing: object = None      # callable -> entries, for merged directories
    served: object = None       # a ServedFile: the service answers its calls
    trap: bool = False          # the service wants its descriptor calls
    meta: dict | None = None    # stat fields the service shows instead
    entries: list | None = None
    pos: int = 0                # (a window's is kept by the C core)
    window: int = 0             # the C core's window on the file, or 0
    refs: int = 0               # descriptors referring to it, in all tables
    private: dict = field(default_factory=dict)


def _nobody(open_file: OpenFile) -> None:
    """No one to tell of a released open file."""


class FdTable:
    """Shared by processes created with CLONE_FILES.

    Open files count their descriptors (in every table) so that a served
    file is released when its last descriptor goes, as the kernel releases
    an open file description; `on_release(open_file)` hears about it (the
    tables copied from this one, by fork and exec, tell the same)."""

    def __init__(self, fds: dict | None = None, on_release=None):
        self.on_release = on_release or _nobody
        self.shared = False     # by processes made with CLONE_FILES
        self.fds: dict[int, tuple[OpenFile, bool]] = {}
        for fd, (open_file, cloexec) in (fds or {}).items():
            self.add(fd, open_file, cloexec)

    def get(self, fd: int) -> OpenFile | None:
        entry = self.fds.get(fd)
        return entry[0] if entry else None

    def add(self, fd: int, open_file: OpenFile, cloexec: bool) -> None:
        self.drop(fd)
        open_file.refs += 1
        self.fds[fd] = (open_file, cloexec)

    def drop(self, fd: int) -> None:
        entry = self.fds.pop(fd, None)
        if entry is not None:
            entry[0].refs -= 1
            if entry[0].refs == 0:
                self.on_release(entry[0])

    def dup(self, old: int, new: int, cloexec: bool = False) -> None:
        entry = self.fds.get(old)
        if entry is None:
            self.drop(new)
        elif new != old:
            self.add(new, entry[0], cloexec)

    def set_cloexec(self, fd: int, cloexec: bool) -> None:
        entry = self.fds.get(fd)
        if entry:
            self.fds[fd] = (entry[0], cloexec)

    def drop_range(self, first: int, last: int) -> None:
        for fd in [fd for fd in self.fds if first <= fd <= last]:
            self.drop(fd)

    def drop_all(self) -> None:
        self.drop_range(0, 1 << 31)

    def after_exec(self) -> "FdTable":
        return FdTable({fd: e for fd, e in self.fds.items() if not e[1]},
                       self.on_release)

    def copy(self) -> "FdTable":
        return FdTable(dict(self.fds), self.on_release)

    def __iter__(self):
        return iter(list(self.fds.items()))


class ProcFs:
    """The view's file-system state of one process."""

    __slots__ = ("fs", "files", "exe")

    def __init__(self, fs: FsState, files: FdTable, exe: str | None = None):
        self.fs = fs
        self.files = files
        self.exe = exe

    @classmethod
    def from_kernel(cls, pid: int, on_release=None) -> "ProcFs":
        """As the kernel has it now: its cwd, no descriptor mirrored yet
        (on_release: see FdTable)."""
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            cwd = "/"
        return cls(FsState(cwd), FdTable(on_release=on_release))

    def fork(self, flags: int) -> "ProcFs":
        fs = self.fs if flags & CLONE_FS else self.fs.copy()
        files = self.files if flags & CLONE_FILES else self.files.copy()
        if flags & CLONE_FILES:
            files.shared = True
        return ProcFs(fs, files, self.exe)

    def exec(self) -> "ProcFs":
        """exec unshares the descriptor table and closes CLOEXEC ones (the
        caller drops the old table if nobody else uses it)."""
        return ProcFs(self.fs, self.files.after_exec(), self.exe)
