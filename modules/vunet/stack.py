"""What every vunet stack shares: the file at its mount point (type
"stack", VUOS's S_IFSTACK) and the families it serves."""

from __future__ import annotations

import errno
import os
import socket
import time
from types import SimpleNamespace

from umvu.module import PathService

#: VUOS's S_IFSTACK: a file type of its own, which no file system uses
#: (stat's S_IFMT bits 0160000; `ls -l` shows it as `?`)
S_IFSTACK = 0o160000
#: msocket's type that sets the default stack (VUOS's SOCK_DEFAULT)
SOCK_DEFAULT = 0
#: the families of a network stack (vustack -f ip)
IP_FAMILIES = frozenset({socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK,
                         socket.AF_PACKET})
AF_MAX = 46


class StackService(PathService):
    """A network stack mounted at a path. Subclasses say which families
    they serve and make sockets.

    socket(domain, type, protocol) returns a descriptor of the
    hypervisor's (the caller gets a copy), or None: the kernel makes it
    (the host's stack); raises OSError to fail."""

    families = IP_FAMILIES
    kind = "stack"

    def __init__(self, module, request):
        super().__init__(module, request)
        uid, gid = request.caller.fs_ids()
        self.mode = S_IFSTACK | 0o777
        self.uid, self.gid = uid, gid
        self.mtime = time.time()
        self.alive = True

    def supports(self, domain: int) -> bool:
        return domain in self.families

    def socket(self, domain: int, type_: int, protocol: int) -> int | None:
        raise OSError(errno.EAFNOSUPPORT, os.strerror(errno.EAFNOSUPPORT))

    def ioctl_fd(self) -> int | None:
        """A socket of the stack the interface ioctls (SIOCGIFINDEX...) of
        its processes run on; None: the kernel's (the host's)."""
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))

    def stop(self) -> None:
        """Unmounted (or the view ends): let go of everything."""
        self.alive = False

    # ---- the file at the mount point ---------------------------------------
    def stat(self):
        t = self.mtime
        return SimpleNamespace(
            st_mode=self.mode, st_ino=id(self) & 0xffffffff, st_dev=0, st_nlink=1,
            st_uid=self.uid, st_gid=self.gid, st_size=0, st_rdev=0,
            st_blksize=4096, st_blocks=0, st_atime=t, st_mtime=t, st_ctime=t,
            st_atime_ns=int(t * 1e9), st_mtime_ns=int(t * 1e9),
            st_ctime_ns=int(t * 1e9))

    def path_call(self, call):
        if call.path != self.target:
            return -errno.ENOTDIR           # a stack has nothing below it
        if call.op == "stat":
            if call.name == "readlink" or call.name == "readlinkat":
                return -errno.EINVAL
            if call.name in ("chdir", "fchdir"):
                return -errno.ENOTDIR
            if call.name.startswith("exec"):
                return -errno.EACCES
            return call.stat_result(self.stat())
        if call.op == "open":
            return -errno.ENXIO             # as a socket file: nothing to open
        if call.op == "modify":
            if call.name in ("chmod", "fchmodat", "fchmodat2"):
                self.mode = S_IFSTACK | (call.mode & 0o7777)
                return 0
            if call.name in ("chown", "lchown", "fchownat"):
                if call.uid != 0xffffffff and call.uid != -1:
                    self.uid = call.uid
                if call.gid != 0xffffffff and call.gid != -1:
                    self.gid = call.gid
                return 0
            if call.name.startswith("utime"):
                self.mtime = time.time()
                return 0
            return -errno.EPERM
        if call.op in ("delete", "rename", "link"):
            return -errno.EBUSY             # a mount point
        return -errno.EEXIST


class NullStack(StackService):
    """vunetnull: a stack with no network at all (EAFNOSUPPORT)."""

    kind = "null"


class RealStack(StackService):
    """vunetreal: the host's own stack, as a stack one may choose."""

    kind = "real"

    def socket(self, domain, type_, protocol):
        return None

    def ioctl_fd(self):
        return None
