"""The descriptor mirror: the calls that keep a process's table of virtual
descriptors (state.FdTable) as the kernel keeps its own (close, dup*,
fcntl, close_range), the calls the view answers on a mirrored descriptor
(getdents and lseek of a merged directory, metadata changes a service
makes), and trapping a process's descriptor calls from the moment it holds
a descriptor the view must watch."""

from __future__ import annotations

import errno
import os

from .. import ccore, syscall_table
from ..linux import (CLOSE_RANGE_CLOEXEC, CLOSE_RANGE_UNSHARE, F_DUPFD,
                     F_DUPFD_CLOEXEC, F_SETFD, O_CLOEXEC)
from ..module import FdChange, PathService
from . import decode
from .decode import signed32
from .state import OpenFile, ProcFs

#: FS_IOC_SETFLAGS (and its 32-bit twin), FS_IOC_FSSETXATTR: chattr's ioctls
INODE_IOCTLS = frozenset({0x40086602, 0x40046602, 0x401c5820})

#: what a process traps once it holds a descriptor the view must watch
ALL_FD_CALLS = frozenset(sc.nr for sc in syscall_table.TABLE
                         if sc.family in ("fd", "fdmeta", "fdattr"))
#: ... once it holds a file whose metadata changes the view must see
META_FD_CALLS = frozenset(sc.nr for sc in syscall_table.TABLE
                          if sc.family == "fdattr" or sc.name in ("fstat", "ioctl"))
WATCH_META, WATCH_ALL = 1, 2
#: descriptor numbers a process traps one by one before it traps them all
MAX_FD_FILTERS = 16


class FdMirror:
    def __init__(self, vfs):
        self.vfs = vfs

    # ---- the mirror's entries -------------------------------------------------
    def get(self, stop, pfs: ProcFs, fd: int) -> OpenFile | None:
        """The mirror's entry for fd, if it still is the file we opened: a
        process that does not trap descriptor calls closes and reuses
        descriptors without our seeing it."""
        entry = pfs.files.get(fd)
        proc = stop.process
        if entry is None or proc.fd_watch == WATCH_ALL or fd in proc.fd_trapped:
            return entry
        if self.still_open(proc.pid, fd, entry):
            return entry
        pfs.files.drop(fd)
        return None

    @staticmethod
    def still_open(pid: int, fd: int, entry: OpenFile) -> bool:
        """A process that does not trap descriptor calls closes descriptors
        without our seeing it: check that the kernel's descriptor is still
        the file we opened."""
        try:
            real = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            return False
        return real in (entry.host, entry.host + " (deleted)") or not entry.host

    def watch(self, stop, pfs: ProcFs, fd: int) -> None:
        """A descriptor whose calls the view must see: from now on this
        process traps every descriptor call (a served file, a merged
        directory) or the metadata ones (a file of a cow mount's lower
        layer, whose reads stay native); the C core lets the calls on other
        descriptors go at once."""
        entry = pfs.files.get(fd)
        if entry is None:
            return
        proc = stop.process
        want = WATCH_ALL if entry.served is not None or entry.listing is not None \
            else WATCH_META if entry.trap else 0
        if want == WATCH_ALL and proc.fd_watch < WATCH_ALL and \
                len(proc.fd_trapped) < MAX_FD_FILTERS:
            # only the calls naming this descriptor stop (a filter per
            # number: the process's other reads and writes stay native)
            if fd not in proc.fd_trapped:
                stop.tighten(ALL_FD_CALLS, on_fds=frozenset({fd}))
                proc.fd_trapped.add(fd)
        elif want > proc.fd_watch:
            stop.tighten(ALL_FD_CALLS if want == WATCH_ALL else META_FD_CALLS)
            proc.fd_watch = want

    # ---- changes the C core made (its journal) ---------------------------------------
    def journaled(self, proc, kind: int, fd: int, other: int, flags: int,
                  path: str | None) -> None:
        """A descriptor table change the C core made for proc, replayed
        in order: an open below a plain bind, a close, a dup, F_SETFD."""
        if kind == ccore.EV_FD_OPENED:
            self.vfs.paths.opened_in_c(proc, fd, flags, path)
            return
        pfs = self.vfs.known_state(proc)
        if pfs is None:
            return
        if kind == ccore.EV_FD_CLOSED:
            pfs.files.drop(fd)
        elif kind == ccore.EV_FD_DUP:
            pfs.files.dup(other, fd, bool(flags))
        elif kind == ccore.EV_FD_CLOEXEC:
            pfs.files.set_cloexec(fd, bool(flags))
        self.vfs.feeder.changed_later(pfs)

    # ---- every descriptor call ---------------------------------------------------
    def fd_call(self, stop, pfs: ProcFs, sc, then=None):
        """A descriptor call: served files answer here; the rest keeps the
        mirror up to date (`then`, the call's own handler, if it has one)."""
        entry = self.get(stop, pfs, signed32(stop.args[sc.fd]))
        if (entry is None or entry.served is None) and sc.fd2 is not None:
            entry = self.get(stop, pfs, signed32(stop.args[sc.fd2]))
        if entry is not None and entry.served is not None:
            self.vfs.answered(stop, entry.service)
            result = self.vfs.served.fd_call(stop, sc, entry)
            if result is not None:
                return result
        elif entry is not None and entry.meta and sc.name == "fstat":
            decode.patch_on_exit(stop, "fstat", entry.meta)
        return then(stop, pfs, sc) if then is not None else None

    # ---- the descriptor table ------------------------------------------------------
    def sys_close(self, stop, pfs, sc):
        fd = signed32(stop.args[0])
        entry = self.get(stop, pfs, fd)
        if entry is not None and entry.refs == 1 and entry.served is not None and \
                entry.private.get("ph_fd") is not None and entry.service.blocking:
            # the last close of a mapped served file writes the mapping back
            # through a daemon: the close ends after it (on a worker), so a
            # read that follows sees the data
            entry.service.may_wait()
        if entry is not None:
            pfs.files.drop(fd)
            self.vfs.feeder.changed(pfs)
        return None

    def _dup_hook(self, stop, pfs, old: int, new: int | None, cloexec: bool):
        if self.get(stop, pfs, old) is None and (
                new is None or self.get(stop, pfs, new) is None):
            return None
        def done(result):
            if result >= 0:
                pfs.files.dup(old, result if new is None else new, cloexec)
                self.watch(stop, pfs, result)
                self.vfs.feeder.changed(pfs)
            return None
        stop.on_exit(done)
        return None

    def sys_dup(self, stop, pfs, sc):
        return self._dup_hook(stop, pfs, signed32(stop.args[0]), None, False)

    def sys_dup2(self, stop, pfs, sc):
        return self._dup_hook(stop, pfs, signed32(stop.args[0]),
                              signed32(stop.args[1]), False)

    def sys_dup3(self, stop, pfs, sc):
        return self._dup_hook(stop, pfs, signed32(stop.args[0]),
                              signed32(stop.args[1]),
                              bool(stop.args[2] & O_CLOEXEC))

    def sys_fcntl(self, stop, pfs, sc):
        fd, cmd = signed32(stop.args[0]), signed32(stop.args[1])
        if self.get(stop, pfs, fd) is None:
            return None
        if cmd in (F_DUPFD, F_DUPFD_CLOEXEC):
            return self._dup_hook(stop, pfs, fd, None, cmd == F_DUPFD_CLOEXEC)
        if cmd == F_SETFD:
            pfs.files.set_cloexec(fd, bool(stop.args[2] & 1))
        return None

    def sys_close_range(self, stop, pfs, sc):
        first, last, flags = stop.args[0] & 0xffffffff, stop.args[1] & 0xffffffff, stop.args[2]
        if flags & CLOSE_RANGE_UNSHARE:
            pfs.files = pfs.files.copy()
        if flags & CLOSE_RANGE_CLOEXEC:
            for fd, _ in list(pfs.files):
                if first <= fd <= last:
                    pfs.files.set_cloexec(fd, True)
        else:
            pfs.files.drop_range(first, last)
        self.vfs.feeder.changed(pfs)
        return None

    # ---- merged directories ------------------------------------------------------------
    def sys_getdents64(self, stop, pfs, sc):
        entry = self.get(stop, pfs, signed32(stop.args[0]))
        if entry is None or entry.listing is None:
            return None
        if entry.entries is None:
            entry.entries = list(entry.listing())
        data, entry.pos = decode.pack_dirents(entry.entries, entry.pos,
                                              stop.args[2] & 0xffffffff)
        if not data and entry.pos < len(entry.entries):
            return -errno.EINVAL
        if data:
            stop.write(stop.args[1], data)
        return len(data)

    def sys_getdents(self, stop, pfs, sc):
        entry = self.get(stop, pfs, signed32(stop.args[0]))
        return None if entry is None or entry.listing is None else -errno.ENOSYS

    def sys_lseek(self, stop, pfs, sc):
        entry = self.get(stop, pfs, signed32(stop.args[0]))
        if entry is None or entry.listing is None:
            return None
        offset, whence = stop.args[1], stop.args[2]
        if whence != 0:
            return -errno.EINVAL
        entry.pos = offset
        if offset == 0:
            entry.entries = None    # rewinddir: the directory as it is now
        return offset

    # ---- metadata changes on descriptors ----------------------------------------------
    def _fd_modify(self, stop, pfs, sc):
        entry = self.get(stop, pfs, signed32(stop.args[0]))
        if entry is None:
            return None
        if not isinstance(entry.service, PathService):
            return None
        args = stop.args
        if sc.name == "fchmod":
            change = FdChange("chmod", mode=args[1] & 0o7777)
        elif sc.name == "fchown":
            change = FdChange("chown", uid=decode.unchanged(args[1]),
                              gid=decode.unchanged(args[2]))
        else:
            change = FdChange(sc.name[1:], xattr=decode.read_path(stop, args[1]))
        return entry.service.fd_modify(entry.path, change, decode.caller(stop))

    sys_fchmod = sys_fchown = sys_fsetxattr = sys_fremovexattr = _fd_modify

    def empty_path_modify(self, stop, pfs, sc, entry):
        """A path-form change with AT_EMPTY_PATH on a watched descriptor:
        what the descriptor form of the same change would do."""
        if not isinstance(entry.service, PathService):
            return None
        args = stop.args
        if sc.name == "utimensat":
            return self.fd_redirect(stop, pfs, args[0], 1, 0)
        if sc.mode is not None:             # fchmodat, fchmodat2
            change = FdChange("chmod", mode=args[sc.mode] & 0o7777)
        elif sc.uid is not None:            # fchownat
            change = FdChange("chown", uid=decode.unchanged(args[sc.uid]),
                              gid=decode.unchanged(args[sc.gid]))
        elif sc.name in ("setxattrat", "removexattrat"):
            change = FdChange(sc.name[:-2], xattr=decode.read_path(stop, args[3]))
        else:
            return -errno.EPERM             # file_setattr & co: not on a lower file
        return entry.service.fd_modify(entry.path, change, decode.caller(stop))

    def sys_ioctl(self, stop, pfs, sc):
        """chattr on a watched descriptor would change the inode it refers
        to, a lower layer's file (or one whose metadata the view keeps):
        refused, as a read-only file system would. Other ioctls run."""
        request = stop.args[1] & 0xffffffff
        if request not in INODE_IOCTLS:
            return None
        entry = self.get(stop, pfs, signed32(stop.args[0]))
        if entry is None or entry.served is not None:
            return None
        return -errno.EPERM

    def fd_redirect(self, stop, pfs, fd: int, path_at: int, at_at: int):
        """An fd call that would change a lower-layer file (futimens): make it
        a path call on the file the service gives (a copy in its top layer)."""
        entry = self.get(stop, pfs, signed32(fd))
        if entry is None or not isinstance(entry.service, PathService):
            return None
        host = entry.service.fd_redirect(entry.path, decode.caller(stop))
        if host is None or isinstance(host, int):
            return host
        self.vfs.paths.rewrite(stop, path_at, host, at_at)
        return None
