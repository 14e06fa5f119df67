"""A 40-line in-memory file system: a fusepy Operations class that vufuse
mounts inside the hypervisor (no libfuse, no daemon).
    cp examples/pymemfs.py ~/.vu/modules/ && vu_insmod vufuse
    vumount -t vufuse -o rw+,pyfs=pymemfs:MemoryFS none /tmp/mem
"""
import errno, stat, time
from fuse import FuseOSError, Operations


class MemoryFS(Operations):
    def __init__(self, *args):
        self.files, self.data = {"/": self._attrs(stat.S_IFDIR | 0o755)}, {}

    @staticmethod
    def _attrs(mode):
        now = time.time()
        return dict(st_mode=mode, st_nlink=2 if stat.S_ISDIR(mode) else 1,
                    st_ctime=now, st_mtime=now, st_atime=now)

    def getattr(self, path, fh=None):
        if path not in self.files:
            raise FuseOSError(errno.ENOENT)
        return dict(self.files[path], st_size=len(self.data.get(path, b"")))

    def readdir(self, path, fh):
        pre = path.rstrip("/") + "/"
        return [".", ".."] + [p[len(pre):] for p in self.files if p != path
                              and p.startswith(pre) and "/" not in p[len(pre):]]

    def create(self, path, mode, fi=None):
        self.files[path], self.data[path] = self._attrs(stat.S_IFREG | mode), b""
        return 0

    def mkdir(self, path, mode):
        self.files[path] = self._attrs(stat.S_IFDIR | mode)

    def read(self, path, size, offset, fh):
        return self.data[path][offset:offset + size]

    def write(self, path, data, offset, fh):
        old = self.data[path].ljust(offset, b"\0")
        self.data[path] = old[:offset] + data + old[offset + len(data):]
        return len(data)

    def truncate(self, path, length, fh=None):
        self.data[path] = self.data[path][:length].ljust(length, b"\0")

    def unlink(self, path):
        del self.files[path], self.data[path]

    def rmdir(self, path):
        del self.files[path]
