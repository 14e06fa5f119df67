"""Served files: a file whose data a module's ServedFile gives (no host
file stands for it). The process holds a placeholder (an unlinked empty
file, or an empty directory) and traps descriptor calls; every call on it is
answered here from the service's ServedFile. Offsets live in the OpenFile,
shared by dup'ed descriptors as the kernel shares file offsets. The file is
released when its last descriptor goes."""

from __future__ import annotations

import errno
import logging
import os
import struct
import threading

from .. import ccore, creds
from ..linux import (F_GETFL, F_SETFL, MAP_SHARED, O_ACCMODE, O_APPEND, O_CLOEXEC,
                     O_DIRECTORY, O_NONBLOCK, O_PATH, O_RDWR, O_WRONLY, PROT_WRITE, SEEK_CUR,
                     SEEK_DATA, SEEK_END, SEEK_HOLE, SEEK_SET)
from ..module import Answer, Caller, PathCall, Redirect
from . import decode
from .lower import LowerView
from .state import OpenFile

log = logging.getLogger("umvu")
MAX_IO = 1 << 24            # one call moves at most this much
#: UMVU_WINDOWS=0 keeps every data call of served files in Python (the
#: path the C core's windows must answer as: tests compare the two)
WINDOWS = os.environ.get("UMVU_WINDOWS", "1") != "0"


def _id(value: int) -> int:
    """A chown id for os.lchown: -1 for unchanged."""
    value = decode.unchanged(value)
    return -1 if value is None else value


def _negative(offset: int) -> bool:
    """An loff_t argument below zero (the kernel's EINVAL)."""
    return offset >= 1 << 63


def _readable(entry) -> bool:
    return entry.flags & O_ACCMODE != O_WRONLY


def _writable(entry) -> bool:
    return entry.flags & O_ACCMODE in (O_WRONLY, O_RDWR)


class ServedCalls:
    """name -> handler(stop, entry); None lets the kernel run the call on the
    placeholder (close, dup, fcntl F_SETFD...)."""

    def __init__(self, vfs):
        self.vfs = vfs
        self._placeholders = 0
        self._windows: dict[int, set] = {}     # id(service) -> windowed OpenFiles
        self._owners: dict[int, object] = {}   # id(service) -> service, mapped ranges

    def handle(self, name: str, stop, entry):
        method = getattr(self, "sys_" + name, None)
        if method is None:
            return None
        return method(stop, entry)

    def fd_call(self, stop, sc, entry):
        """A descriptor call on a served file: the answer, or None when the
        kernel runs it on the placeholder."""
        if entry.window and ccore.window_handles(sc.nr):
            # as the C core answers at the stop (here: a thread it does not
            # decide for, such as one in a chroot)
            return ccore.window_call(entry.window, stop.tid, sc.nr, stop.args)
        result = self.handle(sc.name, stop, entry)
        if self._windows and result is not None:
            self._refresh_windows(entry.service)
        if result is None and sc.name == "mmap":
            ph = entry.private.get("ph_fd")
            if ph is None and entry.private.get("write_back"):
                entry.private["ph_fd"] = os.open(
                    f"/proc/{stop.process.pid}/fd/{decode.signed32(stop.args[4])}",
                    os.O_RDWR)
        return result

    # ---- open and release -----------------------------------------------------
    def open(self, stop, pfs, name: str, vpath: str, answer, flags: int,
             pidx: int, atidx: int | None):
        """An open the service answered with a ServedFile: the kernel opens
        a placeholder instead, and the mirror remembers whose it is."""
        if name not in ("open", "openat", "creat", "openat2"):
            return -errno.ENOTSUP
        # the placeholder: an empty file, or an empty directory so that
        # fchdir works natively
        is_dir = getattr(answer.value, "is_dir", False)
        if flags & O_DIRECTORY and not is_dir:
            answer.value.release()      # as the kernel: only a directory
            return -errno.ENOTDIR
        self._placeholders += 1
        ph = os.path.join(self.vfs.view.tmpdir, f"served-{self._placeholders}")
        if is_dir:
            os.mkdir(ph)
        else:
            open(ph, "wb").close()
        give(ph, stop)
        ph_flags = (O_DIRECTORY if is_dir else O_PATH if flags & O_PATH else O_RDWR) \
            | (flags & O_CLOEXEC)
        self.vfs.paths.rewrite(stop, pidx, ph, atidx)
        flag_at = {"open": 1, "openat": 2}.get(name)
        if flag_at is not None:
            stop.set_arg(flag_at, ph_flags)
        elif name == "creat":
            return -errno.ENOTSUP
        else:                                       # openat2: struct open_how
            stop.set_arg(2, stop.scratch(decode.OPEN_HOW.pack(ph_flags, 0, 0)))
        open_file = OpenFile(vpath, answer.service, flags & ~O_CLOEXEC, ph,
                             served=answer.value)
        def opened(fd):
            os.rmdir(ph) if is_dir else os.unlink(ph)
            if fd < 0:
                answer.value.release()
                return None
            if WINDOWS and not is_dir and not flags & (O_PATH | O_APPEND):
                self._open_window(open_file)
            pfs.files.add(fd, open_file, bool(flags & O_CLOEXEC))
            self.vfs.fds.watch(stop, pfs, fd)
            self.vfs.feeder.changed(pfs)
            return None
        stop.on_exit(opened)
        return None

    # ---- windows: data calls answered by the C core -------------------------
    def _open_window(self, entry: OpenFile) -> None:
        """A served file that is a range of a host file (ServedFile.window):
        the C core answers its data calls from now on."""
        try:
            win = entry.served.window()
            if win is None:
                return
            access = entry.flags & O_ACCMODE
            mode = (0 if access == O_WRONLY else ccore.WIN_READ) | \
                (ccore.WIN_WRITE if access in (O_WRONLY, O_RDWR) else 0) | \
                (ccore.WIN_RDONLY if win.readonly else 0)
            owner = id(entry.service)
            entry.window = ccore.window_open(win.fd, win.offset, win.size, mode, owner)
            self._owners[owner] = entry.service
        except OSError as exc:
            log.warning("%s: data calls stay in Python (%s)", entry.path, exc)
            return
        self._windows.setdefault(id(entry.service), set()).add(entry)

    def _refresh_windows(self, service) -> None:
        """After a call the service answered: what it says of its files'
        windows now (BLKROSET makes a device read-only for every open)."""
        for entry in self._windows.get(id(service), ()):
            win = entry.served.window()
            ccore.window_set_flags(entry.window, ccore.WIN_RDONLY
                                   if win is None or win.readonly else 0)

    def _close_window(self, entry: OpenFile, stop) -> None:
        """From now on every data call of this file comes here again (its
        offset taken back from the C core)."""
        entry.pos = ccore.window_pos(entry.window)
        ccore.window_close(entry.window)
        self._windows.get(id(entry.service), set()).discard(entry)
        entry.window = 0
        self.vfs.feeder.changed(self.vfs.known_state(stop.process))

    def unmounted(self, mounted) -> None:
        """The services no longer mounted give back their mapped ranges."""
        for owner, service in list(self._owners.items()):
            if service not in mounted:
                ccore.window_forget(owner)
                del self._owners[owner]

    def released(self, entry: OpenFile) -> None:
        """The last descriptor of an open file is gone (FdTable.on_release)."""
        if entry.served is None:
            return
        if entry.window:
            ccore.window_close(entry.window)
            opened = self._windows.get(id(entry.service), set())
            opened.discard(entry)
            if not opened:
                self._windows.pop(id(entry.service), None)
            entry.window = 0
        ph = entry.private.get("ph_fd")

        def release():
            try:
                if ph is not None:
                    write_back(entry, f"/proc/self/fd/{ph}")
                entry.served.release()
            except Exception:
                log.exception("release of %s failed", entry.path)
            finally:
                if ph is not None:
                    os.close(ph)
        if entry.service is not None and entry.service.blocking and \
                threading.current_thread() is threading.main_thread():
            self.vfs.view.submit(release)       # it may wait for a daemon
        else:
            release()                           # (on a worker: it may wait)

    # ---- data ----------------------------------------------------------------
    def _read_into(self, stop, entry, buf: int, size: int, offset: int) -> int:
        if not _readable(entry):
            return -errno.EBADF
        data = entry.served.read(min(size, MAX_IO), offset)
        if data:
            stop.write(buf, data)
        return len(data)

    def _write_from(self, stop, entry, buf: int, size: int, offset: int) -> int:
        if not _writable(entry):
            return -errno.EBADF
        data = stop.read(buf, min(size, MAX_IO)) if size else b""
        return entry.served.write(data, offset)

    def sys_read(self, stop, entry):
        n = self._read_into(stop, entry, stop.args[1], stop.args[2], entry.pos)
        if n > 0:
            entry.pos += n
        return n

    def sys_pread64(self, stop, entry):
        if _negative(stop.args[3]):
            return -errno.EINVAL
        return self._read_into(stop, entry, stop.args[1], stop.args[2], stop.args[3])

    def sys_write(self, stop, entry):
        if entry.flags & O_APPEND:
            entry.pos = entry.served.stat().st_size
        n = self._write_from(stop, entry, stop.args[1], stop.args[2], entry.pos)
        if n > 0:
            entry.pos += n
        return n

    def sys_pwrite64(self, stop, entry):
        if _negative(stop.args[3]):
            return -errno.EINVAL
        return self._write_from(stop, entry, stop.args[1], stop.args[2], stop.args[3])

    def _vector(self, stop, entry, offset, write: bool):
        if offset is not None and _negative(offset):
            return -errno.EINVAL
        total, pos = 0, entry.pos if offset is None else offset
        if write and offset is None and entry.flags & O_APPEND:
            pos = entry.served.stat().st_size
        for base, length in decode.read_iovec(stop, stop.args[1], stop.args[2]):
            if not length:
                continue
            io = self._write_from if write else self._read_into
            n = io(stop, entry, base, length, pos)
            if n < 0:
                return n if total == 0 else total
            total += n
            pos += n
            if n < length:
                break
        if offset is None:
            entry.pos = pos
        return total

    def sys_readv(self, stop, entry):
        return self._vector(stop, entry, None, False)

    def sys_writev(self, stop, entry):
        return self._vector(stop, entry, None, True)

    def sys_preadv(self, stop, entry):
        return self._vector(stop, entry, stop.args[3], False)

    def sys_pwritev(self, stop, entry):
        return self._vector(stop, entry, stop.args[3], True)

    def sys_preadv2(self, stop, entry):
        off = stop.args[3]
        return self._vector(stop, entry, None if off == (1 << 64) - 1 else off, False)

    def sys_pwritev2(self, stop, entry):
        off = stop.args[3]
        return self._vector(stop, entry, None if off == (1 << 64) - 1 else off, True)

    def sys_lseek(self, stop, entry):
        offset = struct.unpack("q", struct.pack("Q", stop.args[1]))[0]
        whence = stop.args[2] & 0xffffffff
        if entry.listing is not None:               # a directory: rewinddir
            if whence != SEEK_SET:
                return -errno.EINVAL
            entry.pos = offset
            return offset
        size = entry.served.stat().st_size
        if whence == SEEK_SET:
            new = offset
        elif whence == SEEK_CUR:
            new = entry.pos + offset
        elif whence == SEEK_END:
            new = size + offset
        elif whence in (SEEK_DATA, SEEK_HOLE):
            if offset >= size:
                return -errno.ENXIO
            new = offset if whence == SEEK_DATA else size
        else:
            return -errno.EINVAL
        if new < 0:
            return -errno.EINVAL
        entry.pos = new
        return new

    # ---- attributes -------------------------------------------------------------
    def sys_fstat(self, stop, entry):
        stop.write(stop.args[1], decode.pack_stat(entry.served.stat()))
        return 0

    def fstatat_empty(self, stop, entry, name: str):
        """newfstatat/statx on the descriptor itself (AT_EMPTY_PATH)."""
        st = entry.served.stat()
        if name == "statx":
            stop.write(stop.args[4], decode.pack_statx(st))
        else:
            stop.write(stop.args[2], decode.pack_stat(st))
        return 0

    def sys_ftruncate(self, stop, entry):
        if not _writable(entry):
            return -errno.EINVAL
        entry.served.truncate(stop.args[1])
        return 0

    def sys_fsync(self, stop, entry):
        entry.served.fsync()
        return 0

    sys_fdatasync = sys_fsync

    def sys_ioctl(self, stop, entry):
        return entry.served.ioctl(stop.args[1] & 0xffffffff, stop.args[2], stop)

    def sys_fcntl(self, stop, entry):
        cmd = stop.args[1] & 0xffffffff
        if cmd == F_GETFL:
            return entry.flags & ~0o2000000     # O_CLOEXEC is a descriptor flag
        if cmd == F_SETFL:
            keep = entry.flags & ~(O_APPEND | O_NONBLOCK)
            entry.flags = keep | (stop.args[2] & (O_APPEND | O_NONBLOCK))
            if entry.flags & O_APPEND and entry.window:
                self._close_window(entry, stop)     # appends: Python's
            return 0
        return None                 # F_SETFD, locks, F_DUPFD: on the placeholder

    def sys_getdents64(self, stop, entry):
        if entry.listing is None:
            entry.listing = entry.served.readdir
        return None             # the view's getdents64 serves the listing

    def sys_getdents(self, stop, entry):
        return -errno.ENOSYS

    def sys_fallocate(self, stop, entry):
        return -errno.EOPNOTSUPP

    def _nothing(self, stop, entry):
        return 0

    sys_flock = sys_fadvise64 = sys_readahead = sys_syncfs = _nothing

    def sys_sendfile(self, stop, entry):
        return -errno.EINVAL        # callers fall back to read/write

    sys_splice = sys_tee = sys_vmsplice = sys_sendfile

    def sys_copy_file_range(self, stop, entry):
        return -errno.EXDEV

    def sys_fstatfs(self, stop, entry):
        info = self._ask(entry, PathCall("fstatfs", "stat", entry.path))
        if isinstance(info, int):
            return info
        if isinstance(info, Redirect):
            vfs = os.statvfs(info.path)
            info = Answer("stat", {k: getattr(vfs, k) for k in dir(vfs)
                                   if k.startswith("f_")})
        stop.write(stop.args[1], decode.pack_statfs(info.value))
        return 0

    # ---- metadata through the descriptor: the service's path calls ------------
    def _ask(self, entry, call):
        """The path call on the file's name in the view, down the redirect
        chain (a file served below a cow: its change is the cow's)."""
        call.name = "statfs" if call.name == "fstatfs" else call.name
        return LowerView(self.vfs.services, float("inf")).chain(call)

    def fd_modify(self, stop, entry, name, **fields):
        caller = Caller(stop.process.pid, stop.tid)
        call = PathCall(name, "modify", entry.path, caller=caller)
        for key, value in fields.items():
            setattr(call, key, value)
        answer = self._ask(entry, call)
        if isinstance(answer, Redirect) and name in ("chmod", "chown"):
            with caller.acting_as():    # a copy made above: change it
                try:
                    if name == "chmod":
                        os.chmod(answer.path, call.mode)
                    else:
                        os.lchown(answer.path, _id(call.uid), _id(call.gid))
                except OSError as exc:
                    return -(exc.errno or errno.EIO)
            return 0
        return answer if isinstance(answer, int) else -errno.EOPNOTSUPP

    def sys_fchmod(self, stop, entry):
        return self.fd_modify(stop, entry, "chmod", mode=stop.args[1] & 0o7777)

    def sys_fchown(self, stop, entry):
        return self.fd_modify(stop, entry, "chown", uid=stop.args[1] & 0xffffffff,
                              gid=stop.args[2] & 0xffffffff)

    # ---- memory maps ------------------------------------------------------------
    def sys_mmap(self, stop, entry):
        """The kernel maps the placeholder once it holds the file's data."""
        fill_placeholder(stop.process.pid, stop.args[4] & 0xffffffff, entry)
        if stop.args[3] & MAP_SHARED and stop.args[2] & PROT_WRITE:
            entry.private["write_back"] = True
        return None


def fill_placeholder(pid: int, fd: int, entry) -> None:
    st = entry.served.stat()
    with open(f"/proc/{pid}/fd/{fd}", "r+b") as ph:
        ph.truncate(0)
        offset = 0
        while offset < st.st_size:
            chunk = entry.served.read(min(1 << 20, st.st_size - offset), offset)
            if not chunk:
                break
            ph.write(chunk)
            offset += len(chunk)


def write_back(entry, path: str) -> None:
    """A shared writable mapping's changes go back to the service."""
    try:
        with open(path, "rb") as ph:
            data = ph.read()
    except OSError:
        return
    entry.served.truncate(len(data))
    if data:
        entry.served.write(data, 0)


def materialize(file, path: str) -> None:
    """A served file copied to a host file (for exec)."""
    st = file.stat()
    with open(path, "wb") as out:
        offset = 0
        while offset < st.st_size:
            chunk = file.read(min(1 << 20, st.st_size - offset), offset)
            if not chunk:
                break
            out.write(chunk)
            offset += len(chunk)
    os.chmod(path, 0o700)


def give(path: str, stop) -> None:
    """A file of the view's own that the calling process opens itself (a
    placeholder, an exec copy): in a root session, make it the caller's."""
    if os.geteuid() == 0:
        uid, gid = creds.fs_ids(stop.process.pid)
        if (uid, gid) != (0, 0):
            os.chown(path, uid, gid)
