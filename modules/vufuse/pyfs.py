"""fusepy Operations objects mounted in the hypervisor itself, no libfuse:
`vumount -t vufuse -o pyfs=package.module:Class[,ARG...] SOURCE TARGET`
(the class is built as Class(SOURCE, *ARGS), or Class() if that fails).
"""

from __future__ import annotations

import errno
import importlib
import os
import stat
import sys

DT = {stat.S_IFREG: 8, stat.S_IFDIR: 4, stat.S_IFLNK: 10, stat.S_IFCHR: 2,
      stat.S_IFBLK: 6, stat.S_IFIFO: 1, stat.S_IFSOCK: 12}
FIELDS = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid",
          "st_size", "st_atime", "st_mtime", "st_ctime")


def load(spec: str, source: str, args: list[str]):
    """Import package.module:Class (also from ~/.vu/modules) and build it.

    Only a class that subclasses fusepy's Operations is taken:
    `pyfs=os:system` must not run a shell command. Whatever module code
    raises, SystemExit and KeyboardInterrupt included, becomes an error
    of this mount, never the hypervisor's end."""
    from fuse import Operations
    modname, _, clsname = spec.partition(":")
    if not clsname or not modname:
        raise OSError(errno.EINVAL, f"vufuse: pyfs={spec}: want module:Class")
    user_dir = os.path.join(os.path.expanduser("~"), ".vu", "modules")
    if user_dir not in sys.path:
        sys.path.append(user_dir)
    try:
        cls = getattr(importlib.import_module(modname), clsname)
    except (ImportError, AttributeError) as exc:
        raise OSError(errno.ENOENT, f"vufuse: pyfs={spec}: {exc}") from None
    except BaseException as exc:        # the module raised while importing
        raise OSError(errno.EINVAL, f"vufuse: pyfs={spec}: importing it "
                      f"raised {type(exc).__name__}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Operations)):
        raise OSError(errno.EINVAL, f"vufuse: pyfs={spec}: not a subclass of "
                      "fusepy's fuse.Operations")
    try:
        try:
            return cls(source, *args)
        except TypeError:
            return cls(*args)
    except OSError:
        raise
    except BaseException as exc:
        raise OSError(errno.EINVAL, f"vufuse: pyfs={spec}: {clsname}() raised "
                      f"{type(exc).__name__}: {exc}") from None


def _stat(attrs: dict) -> os.stat_result:
    values = [attrs.get(f, 0) for f in FIELDS]
    if not values[3]:
        values[3] = 2 if stat.S_ISDIR(values[0]) else 1
    return os.stat_result(values)


class FusepyOperations:
    """WireOperations' interface over a fusepy Operations object."""

    def __init__(self, fs):
        self.fs = fs
        self._ino = {}

    def _call(self, name, *args):
        method = getattr(self.fs, name, None)
        if method is None:
            raise OSError(errno.ENOSYS, name)
        return method(*args)

    def getattr(self, path, fh=None):
        return _stat(self._call("getattr", path, fh))

    def readlink(self, path):
        return self._call("readlink", path)

    def opendir(self, path):
        return self._call("opendir", path) if hasattr(self.fs, "opendir") else 0

    def releasedir(self, path, fh):
        if hasattr(self.fs, "releasedir"):
            self._call("releasedir", path, fh)

    def readdir(self, path, fh):
        out = []
        for item in self._call("readdir", path, fh):
            name = item if isinstance(item, str) else item[0]
            attrs = None if isinstance(item, str) or len(item) < 2 else item[1]
            if attrs is None and name not in (".", ".."):
                try:
                    attrs = self._call("getattr", os.path.join(path, name), None)
                except OSError:
                    attrs = None
            mode = (attrs or {}).get("st_mode", stat.S_IFDIR if name in (".", "..") else 0)
            ino = (attrs or {}).get("st_ino") or self._ino.setdefault(
                (path, name), len(self._ino) + 2)
            out.append((name, DT.get(stat.S_IFMT(mode), 0), ino))
        return out

    def open(self, path, flags):
        return self._call("open", path, flags) if hasattr(self.fs, "open") else 0

    def create(self, path, mode, flags, umask=0o022):
        return self._call("create", path, mode)

    def read(self, path, size, offset, fh):
        return bytes(self._call("read", path, size, offset, fh))

    def write(self, path, data, offset, fh):
        return self._call("write", path, data, offset, fh)

    def flush(self, path, fh):
        if hasattr(self.fs, "flush"):
            self._call("flush", path, fh)

    def release(self, path, fh, flags=0):
        if hasattr(self.fs, "release"):
            self._call("release", path, fh)

    def fsync(self, path, datasync, fh):
        if hasattr(self.fs, "fsync"):
            self._call("fsync", path, datasync, fh)

    def truncate(self, path, length, fh=None):
        self._call("truncate", path, length, fh)

    def chmod(self, path, mode):
        self._call("chmod", path, mode)

    def chown(self, path, uid, gid):
        self._call("chown", path, uid, gid)

    def utimens(self, path, times=None):
        if hasattr(self.fs, "utimens"):
            self._call("utimens", path, times)

    def mkdir(self, path, mode):
        self._call("mkdir", path, mode)

    def mknod(self, path, mode, dev):
        self._call("mknod", path, mode, dev)

    def unlink(self, path):
        self._call("unlink", path)

    def rmdir(self, path):
        self._call("rmdir", path)

    def symlink(self, target, source):
        self._call("symlink", target, source)

    def rename(self, old, new, flags=0):
        self._call("rename", old, new)

    def link(self, target, source):
        self._call("link", target, source)

    def access(self, path, mode):
        if hasattr(self.fs, "access"):
            self._call("access", path, mode)

    def destroy(self):
        if hasattr(self.fs, "destroy"):
            self._call("destroy", "/")
