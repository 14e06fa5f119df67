"""countfs: a third-party umvu module written from docs/modules.md alone.

Install:  cp countfs.py ~/.vu/modules/
Use:      vu_insmod countfs
          vumount -t countfs [-o start=N] none DIR
          cat DIR/count        # 1, 2, 3... (N+1, N+2... with start=N)
          uname -n             # "countfs" while a countfs is mounted

DIR shows one read-only file, `count`: the number of times it has been
opened so far, then a newline. The directory and the file belong to the
fs uid/gid of the process that mounted it.
"""

import errno
import itertools
import os
import stat
import struct
import time

from umvu.module import Module, PathService, ServedFile, syscall

_inodes = itertools.count(2)
COUNTFS_MAGIC = 0x636f756e            # "coun"
STATFS = {"f_type": COUNTFS_MAGIC, "f_bsize": 4096, "f_blocks": 0, "f_bfree": 0,
          "f_bavail": 0, "f_files": 2, "f_ffree": 0, "f_namelen": 255,
          "f_frsize": 4096, "f_flags": 1}          # ST_RDONLY
DT_DIR, DT_REG = 4, 8
# Mount words that vumount turns into MS_* flags.  The page's example says
# request.words() of "-o ro,size=10M" holds "ro"; in practice vumount takes
# them out first, but accept them either way rather than refuse "-o ro".
GENERIC_WORDS = {"ro", "rw", "nosuid", "suid", "nodev", "dev", "noexec", "exec",
                 "noatime", "atime", "relatime", "defaults"}


class CountFile(ServedFile):
    """One open of `count`: the content is fixed at open time."""

    def __init__(self, service, data):
        self.service, self.data = service, data
        self.is_dir = False

    def read(self, size, offset):
        return self.data[offset:offset + size]

    def write(self, data, offset):
        raise OSError(errno.EBADF, "countfs: count is read-only")

    def truncate(self, size):
        raise OSError(errno.EROFS, "countfs: read-only")

    def stat(self):
        return self.service.file_stat(len(self.data))


class CountDir(ServedFile):
    def __init__(self, service):
        self.service = service
        self.is_dir = True

    def read(self, size, offset):
        raise OSError(errno.EISDIR, "is a directory")

    def stat(self):
        return self.service.dir_stat()

    def readdir(self):
        s = self.service
        return [(".", DT_DIR, s.dir_ino), ("..", DT_DIR, s.dir_ino),
                ("count", DT_REG, s.file_ino)]


class CountService(PathService):
    readonly = True

    def attach(self):
        self.dir_ino, self.file_ino = next(_inodes), next(_inodes)
        self.mtime = int(time.time())

    # set by CountFs.mount before the service is returned
    count = 0
    uid = gid = 0

    def _stat(self, mode, ino, nlink, size):
        t = self.mtime
        return os.stat_result((mode, ino, 0x636f, nlink, self.uid, self.gid,
                               size, t, t, t))

    def dir_stat(self):
        return self._stat(stat.S_IFDIR | 0o555, self.dir_ino, 2, 0)

    def file_stat(self, size=None):
        if size is None:
            size = len(b"%d\n" % self.count)
        return self._stat(stat.S_IFREG | 0o444, self.file_ino, 1, size)

    def _which(self, path):
        rel = path[len(self.target):].strip("/")
        if rel == "":
            return "dir"
        if rel == "count":
            return "file"
        if rel.startswith("count/"):
            raise OSError(errno.ENOTDIR, path)
        return None

    def path_call(self, call):
        what = self._which(call.path)
        if call.op == "stat":
            if what is None:
                return -errno.ENOENT
            if call.name in ("readlink", "readlinkat"):
                return -errno.EINVAL
            if call.name in ("access", "faccessat", "faccessat2"):
                # access calls arrive as op "stat", the mode in call.mode
                return -errno.EROFS if call.mode & os.W_OK else 0
            if call.name == "statfs":
                return call.statfs_result(STATFS)
            return call.stat_result(self.dir_stat() if what == "dir" else self.file_stat())
        if call.op == "open":
            if what is None:
                return -errno.EROFS if call.flags & os.O_CREAT else -errno.ENOENT
            if call.flags & os.O_CREAT and call.flags & os.O_EXCL:
                return -errno.EEXIST
            if call.flags & os.O_ACCMODE != os.O_RDONLY or call.flags & os.O_TRUNC:
                return -errno.EISDIR if what == "dir" else -errno.EROFS
            if what == "dir":
                return call.serve(CountDir(self))
            self.count += 1
            return call.serve(CountFile(self, b"%d\n" % self.count))
        if what is None and call.op in ("modify", "delete"):
            return -errno.ENOENT
        return -errno.EROFS           # create, delete, modify, rename, link


class CountFs(Module):
    name = "countfs"
    description = "a directory with a file counting its opens"
    families = ("path",)

    def init(self):
        self.mounted = []

    def mount(self, request):
        start = 0
        for word, value in request.words().items():
            if word == "start":
                try:
                    start = int(value)
                except (TypeError, ValueError):
                    raise OSError(errno.EINVAL,
                                  f"countfs: start needs an integer, not {value!r}")
                if start < 0:
                    raise OSError(errno.EINVAL, "countfs: start must be >= 0")
            elif word not in GENERIC_WORDS:
                raise OSError(errno.EINVAL, f"countfs: unknown option {word!r}")
        service = CountService(self, request)
        service.count = start
        service.uid, service.gid = request.caller.fs_ids()
        self.mounted.append(service)
        self.ctx.log.info("countfs: mounted on %s, start=%d, owner %d:%d",
                          request.target, start, service.uid, service.gid)
        return service

    def umount(self, service, flags):
        if service in self.mounted:
            self.mounted.remove(service)

    @syscall("uname")
    def uname(self, call):
        """While a countfs is mounted the view's host name is "countfs"."""
        if not self.mounted:
            return None                         # KERNEL: the real uname
        fields = list(os.uname())[:5] + [""]    # sysname nodename release version machine domain
        fields[1] = "countfs"
        call.write(call.args[0], b"".join(struct.pack("65s", f.encode()[:64]) for f in fields))
        return 0
