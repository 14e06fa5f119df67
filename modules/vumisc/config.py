"""Configuration as files: a mount point whose files are the settings of
a vumisc service (frequency, offset, base; sysname, nodename...).

`cat` reads a setting; `echo VALUE > FILE` (open with O_TRUNC, write)
changes it. A value the service refuses makes the write fail with EINVAL
(the shell prints "write error: Invalid argument"), a line goes to umvu's
log, and the setting keeps its value.
"""

from __future__ import annotations

import abc
import errno
import os
import stat
import time

from umvu.module import PathService, ServedFile

O_ACCMODE = 3


class SettingError(OSError):
    """A refused value: EINVAL, with a message for the log."""

    def __init__(self, message: str):
        super().__init__(errno.EINVAL, message)


class ConfigFile(ServedFile):
    """One open setting: written data is collected and applied at each write."""

    def __init__(self, service: "ConfigService", name: str, truncate: bool):
        self.service = service
        self.name = name
        self.written = b"" if truncate else service.text(name).encode()

    def read(self, size: int, offset: int) -> bytes:
        return self.service.text(self.name).encode()[offset:offset + size]

    def write(self, data: bytes, offset: int) -> int:
        buf = bytearray(self.written)
        if offset > len(buf):
            buf.extend(b"\0" * (offset - len(buf)))
        buf[offset:offset + len(data)] = data
        try:
            value = bytes(buf).decode()
        except UnicodeDecodeError:
            raise SettingError(f"{self.name}: not text") from None
        try:
            self.service.set(self.name, value.strip())
        except SettingError as exc:
            self.service.ctx.log.error("%s: %s", self.service.fstype, exc.strerror)
            raise
        self.written = bytes(buf)
        return len(data)

    def truncate(self, size: int) -> None:
        self.written = self.written[:size]

    def stat(self):
        return self.service.file_stat(self.name)


class ConfigDir(ServedFile):
    is_dir = True

    def __init__(self, service: "ConfigService"):
        self.service = service

    def readdir(self) -> list:
        ino = self.service.ino
        return [(".", 4, ino), ("..", 4, ino)] + [
            (name, 8, ino + 1 + i) for i, name in enumerate(self.service.FILES)]

    def stat(self):
        return self.service.dir_stat()


class ConfigService(PathService, abc.ABC):
    """A directory of settings at the mount point. Subclasses give FILES,
    text(name) and set(name, value) (raising SettingError)."""

    FILES: tuple[str, ...] = ()
    _next_ino = 0x7f00

    def attach(self) -> None:
        ConfigService._next_ino += 0x100
        self.ino = ConfigService._next_ino
        self.mtime = int(time.time())
        self.uid, self.gid = os.getuid(), os.getgid()

    @abc.abstractmethod
    def text(self, name: str) -> str:
        """The setting's current value, as its file reads."""

    #: the settings `umvu --dump` saves (those a view file sets)
    DUMPED: tuple[str, ...] = ()

    def settings(self) -> dict[str, str]:
        return {name: self.text(name).strip() for name in self.DUMPED}

    def set(self, name: str, value: str) -> None:
        raise SettingError(f"{name} is read-only")

    def _stat(self, mode: int, ino: int, size: int, nlink: int = 1):
        t = self.mtime
        return os.stat_result((mode, ino, 0x76756d69, nlink, self.uid, self.gid,
                               size, t, t, t))

    def dir_stat(self):
        return self._stat(stat.S_IFDIR | 0o755, self.ino, 0, 2)

    def file_stat(self, name: str):
        return self._stat(stat.S_IFREG | 0o644, self.ino + 1 + self.FILES.index(name),
                          len(self.text(name).encode()))

    def name_of(self, path: str) -> str | None:
        """"" for the mount point, a setting's name, or None."""
        rel = path[len(self.target):].strip("/") if self.target != "/" else path.strip("/")
        return rel if rel == "" or rel in self.FILES else None

    def path_call(self, call):
        name = self.name_of(call.path)
        if name is None:
            if call.op in ("create", "rename", "link") or (
                    call.op == "open" and call.flags & os.O_CREAT):
                return -errno.EACCES        # no new settings
            return -errno.ENOENT
        if call.op == "stat":
            if call.name in ("readlink", "readlinkat"):
                return -errno.EINVAL
            return call.stat_result(self.dir_stat() if name == "" else self.file_stat(name))
        if call.op == "open":
            if call.flags & os.O_CREAT and call.flags & os.O_EXCL:
                return -errno.EEXIST
            if name == "":
                if call.flags & O_ACCMODE:
                    return -errno.EISDIR
                return call.serve(ConfigDir(self))
            if call.flags & os.O_DIRECTORY:
                return -errno.ENOTDIR
            truncate = bool(call.flags & os.O_TRUNC and call.flags & O_ACCMODE)
            return call.serve(ConfigFile(self, name, truncate))
        if call.op == "modify" and call.name in ("truncate",) and name:
            return 0                        # the next write sets the value
        if call.op == "modify":
            return 0 if call.name.startswith(("utime", "futimesat")) else -errno.EPERM
        if call.op == "create":
            return -errno.EEXIST
        return -errno.EPERM
