"""The kernel side of the FUSE wire protocol, spoken over a socket.

An unmodified FUSE daemon (libfuse 2 or 3, e.g. Debian's fuse2fs) reads
requests from "/dev/fuse" and writes replies to it: one request per read(),
one reply per write()/writev().  A SOCK_SEQPACKET AF_UNIX socketpair keeps
exactly those message boundaries, so a daemon whose /dev/fuse descriptor is
one end of such a pair talks to whoever holds the other end.  This module is
that other end: it plays the role of the Linux kernel's fs/fuse.

`FuseConnection` is the session: INIT handshake and version negotiation,
request/reply matching by `unique` (a background thread reads every reply,
any number of threads may send requests at once), FORGET, INTERRUPT on
timeouts, DESTROY.

`WireOperations` is a path based, fusepy-Operations-like view of a
connection: it turns paths into node ids with LOOKUP (keeping the lookup
counts the daemon expects, and sending FORGET when it drops them) and packs
and unpacks the per-operation structures, sized by the negotiated protocol
minor version.

Everything here follows include/uapi/linux/fuse.h (protocol 7.x); the
structure layouts are little-endian native x86-64/aarch64 layouts.
Standard library only.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import select
import socket
import stat
import struct
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

log = logging.getLogger("umvu.vufuse")

__all__ = ["FuseError", "FuseConnection", "WireOperations", "UTIME_NOW",
           "UTIME_OMIT"]

# --------------------------------------------------------------------------
# Protocol constants (linux/fuse.h)

FUSE_KERNEL_VERSION = 7
FUSE_KERNEL_MINOR_VERSION = 31      # what we offer in INIT
FUSE_ROOT_ID = 1
FUSE_NAME_MAX = 1024                # the kernel refuses longer names
FUSE_MIN_READ_BUFFER = 8192

# opcodes
FUSE_LOOKUP = 1
FUSE_FORGET = 2
FUSE_GETATTR = 3
FUSE_SETATTR = 4
FUSE_READLINK = 5
FUSE_SYMLINK = 6
FUSE_MKNOD = 8
FUSE_MKDIR = 9
FUSE_UNLINK = 10
FUSE_RMDIR = 11
FUSE_RENAME = 12
FUSE_LINK = 13
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_WRITE = 16
FUSE_STATFS = 17
FUSE_RELEASE = 18
FUSE_FSYNC = 20
FUSE_SETXATTR = 21
FUSE_GETXATTR = 22
FUSE_LISTXATTR = 23
FUSE_REMOVEXATTR = 24
FUSE_FLUSH = 25
FUSE_INIT = 26
FUSE_OPENDIR = 27
FUSE_READDIR = 28
FUSE_RELEASEDIR = 29
FUSE_FSYNCDIR = 30
FUSE_GETLK = 31
FUSE_SETLK = 32
FUSE_SETLKW = 33
FUSE_ACCESS = 34
FUSE_CREATE = 35
FUSE_INTERRUPT = 36
FUSE_BMAP = 37
FUSE_DESTROY = 38
FUSE_IOCTL = 39
FUSE_POLL = 40
FUSE_NOTIFY_REPLY = 41
FUSE_BATCH_FORGET = 42
FUSE_FALLOCATE = 43
FUSE_READDIRPLUS = 44
FUSE_RENAME2 = 45
FUSE_LSEEK = 46
FUSE_COPY_FILE_RANGE = 47

# INIT flags
FUSE_ASYNC_READ = 1 << 0
FUSE_POSIX_LOCKS = 1 << 1
FUSE_FILE_OPS = 1 << 2
FUSE_ATOMIC_O_TRUNC = 1 << 3
FUSE_EXPORT_SUPPORT = 1 << 4
FUSE_BIG_WRITES = 1 << 5
FUSE_DONT_MASK = 1 << 6
FUSE_SPLICE_WRITE = 1 << 7
FUSE_SPLICE_MOVE = 1 << 8
FUSE_SPLICE_READ = 1 << 9
FUSE_FLOCK_LOCKS = 1 << 10
FUSE_HAS_IOCTL_DIR = 1 << 11
FUSE_AUTO_INVAL_DATA = 1 << 12
FUSE_DO_READDIRPLUS = 1 << 13
FUSE_READDIRPLUS_AUTO = 1 << 14
FUSE_ASYNC_DIO = 1 << 15
FUSE_WRITEBACK_CACHE = 1 << 16
FUSE_NO_OPEN_SUPPORT = 1 << 17
FUSE_PARALLEL_DIROPS = 1 << 18
FUSE_HANDLE_KILLPRIV = 1 << 19
FUSE_POSIX_ACL = 1 << 20
FUSE_ABORT_ERROR = 1 << 21
FUSE_MAX_PAGES = 1 << 22
FUSE_CACHE_SYMLINKS = 1 << 23
FUSE_NO_OPENDIR_SUPPORT = 1 << 24
FUSE_EXPLICIT_INVAL_DATA = 1 << 25

# What we offer.  Deliberately absent: SPLICE_* (a socket is no pipe),
# WRITEBACK_CACHE / AUTO_INVAL_DATA (we keep no page cache), DONT_MASK (we
# apply the umask ourselves, as the kernel does without it), POSIX/FLOCK
# locks (not forwarded), POSIX_ACL, HANDLE_KILLPRIV.
OFFERED_FLAGS = (FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES
                 | FUSE_DO_READDIRPLUS | FUSE_PARALLEL_DIROPS
                 | FUSE_MAX_PAGES | FUSE_NO_OPEN_SUPPORT
                 | FUSE_NO_OPENDIR_SUPPORT)

# setattr valid bits
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_LOCKOWNER = 1 << 9
FATTR_CTIME = 1 << 10

FUSE_GETATTR_FH = 1 << 0
FUSE_FSYNC_FDATASYNC = 1 << 0

# notify codes (unique == 0 messages from the daemon)
FUSE_NOTIFY_POLL = 1
FUSE_NOTIFY_INVAL_INODE = 2
FUSE_NOTIFY_INVAL_ENTRY = 3
FUSE_NOTIFY_STORE = 4
FUSE_NOTIFY_RETRIEVE = 5
FUSE_NOTIFY_DELETE = 6

# utimens() element markers (same values as the kernel's UTIME_NOW/OMIT)
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2

# --------------------------------------------------------------------------
# Structures

IN_HEADER = struct.Struct("<IIQQIIIHH")         # fuse_in_header, 40
OUT_HEADER = struct.Struct("<IiQ")              # fuse_out_header, 16
ATTR = struct.Struct("<6Q8I2I")                 # fuse_attr, 88
ATTR_COMPAT = struct.Struct("<6Q8I")            # fuse_attr before 7.9, 80
ENTRY_HEAD = struct.Struct("<QQQQII")           # fuse_entry_out minus attr
ATTR_OUT_HEAD = struct.Struct("<QII")           # fuse_attr_out minus attr
KSTATFS = struct.Struct("<5Q4I")                # fuse_kstatfs minus spare
KSTATFS_COMPAT = struct.Struct("<5QII")         # before 7.4 (48 bytes)
INIT_IN = struct.Struct("<IIII")                # fuse_init_in up to 7.35
OPEN_IN = struct.Struct("<II")
OPEN_OUT = struct.Struct("<QII")
CREATE_IN = struct.Struct("<IIII")
RELEASE_IN = struct.Struct("<QIIQ")
FLUSH_IN = struct.Struct("<QIIQ")
IO_IN = struct.Struct("<QQIIQII")               # fuse_read_in / fuse_write_in
IO_IN_COMPAT = struct.Struct("<QQII")           # before 7.9 (24 bytes)
WRITE_OUT = struct.Struct("<II")
FSYNC_IN = struct.Struct("<QII")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")  # 88
GETATTR_IN = struct.Struct("<IIQ")
MKNOD_IN = struct.Struct("<IIII")
MKNOD_IN_COMPAT = struct.Struct("<II")
MKDIR_IN = struct.Struct("<II")
RENAME_IN = struct.Struct("<Q")
RENAME2_IN = struct.Struct("<QII")
LINK_IN = struct.Struct("<Q")
SETXATTR_IN = struct.Struct("<II")
GETXATTR_IN = struct.Struct("<II")
GETXATTR_OUT = struct.Struct("<II")
ACCESS_IN = struct.Struct("<II")
INTERRUPT_IN = struct.Struct("<Q")
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
FALLOCATE_IN = struct.Struct("<QQQII")
LSEEK_IN = struct.Struct("<QQII")
LSEEK_OUT = struct.Struct("<Q")
DIRENT = struct.Struct("<QQII")                 # fuse_dirent minus name
NOTIFY_INVAL_ENTRY = struct.Struct("<QII")
NOTIFY_DELETE = struct.Struct("<QQII")

_U64 = 1 << 64
_S64 = 1 << 63


class FuseError(OSError):
    """An errno from the daemon, or from the connection itself (ENOTCONN,
    ETIMEDOUT, EPROTO, EIO for malformed replies).

    Raised errors are also instances of the builtin class OSError(errno)
    maps to (FileNotFoundError for ENOENT, FileExistsError for EEXIST, ...),
    so `except FileNotFoundError` works as with os functions."""

    def __init__(self, err: int, msg: Optional[str] = None):
        super().__init__(err, msg or os.strerror(err))


_ERROR_CLASSES: dict[int, type] = {}


def _err(e: int, msg: Optional[str] = None) -> FuseError:
    cls = _ERROR_CLASSES.get(e)
    if cls is None:
        builtin = type(OSError(e, ""))
        cls = (FuseError if builtin is OSError else
               type("Fuse" + builtin.__name__, (FuseError, builtin),
                    {"__module__": __name__}))
        _ERROR_CLASSES[e] = cls
    return cls(e, msg)


# --------------------------------------------------------------------------
# The session

class _Slot:
    __slots__ = ("event", "error", "body", "opcode", "nodeid")

    def __init__(self, opcode: int, nodeid: int):
        self.event = threading.Event()
        self.error = 0
        self.body = b""
        self.opcode = opcode
        self.nodeid = nodeid


class FuseConnection:
    """Our end of one FUSE session.

    `sock` must be a connected SOCK_SEQPACKET (message preserving) socket
    whose peer is the daemon's /dev/fuse.  The connection owns a daemon
    thread reading replies; requests can be sent from any thread.

    After `init()`: `minor` (the negotiated protocol minor, i.e. the smaller
    of ours and the daemon's), `flags` (negotiated INIT flags), `max_write`,
    `max_readahead`, `max_background`, `congestion_threshold`, `time_gran`,
    `max_pages`, and the derived I/O chunk sizes `max_read` (READ and
    READDIR size) and `write_chunk` (WRITE payload size).
    """

    def __init__(self, sock: socket.socket, timeout: float = 30.0, *,
                 max_read: int = 128 * 1024, max_readahead: int = 128 * 1024,
                 on_notify: Optional[Callable[[int, bytes], None]] = None):
        self.sock = sock
        self.timeout = timeout
        #: .timeout, per thread: wait this long only, then ETIMEDOUT quietly
        self.quick = threading.local()
        self.major: Optional[int] = None
        self.minor: Optional[int] = None
        self.daemon_minor: Optional[int] = None
        self.flags = 0
        self.max_readahead = max_readahead
        self.max_write = 4096
        self.max_background = 0
        self.congestion_threshold = 0
        self.time_gran = 1
        self.max_pages = 0
        self._max_read_opt = max(4096, int(max_read))
        self.max_read = self._max_read_opt
        self.write_chunk = 4096
        self.on_notify = on_notify
        self._lock = threading.Lock()
        self._pending: dict[int, _Slot] = {}
        self._abandoned: dict[int, tuple[int, int, float]] = {}
        self._uniques = itertools.count(2, 2)   # odd uniques are interrupts
        self._alive = True
        self._closing = False
        # every reply fits: data replies never exceed what we asked for
        self._bufsize = max(FUSE_MIN_READ_BUFFER, self._max_read_opt) + 64 * 1024
        sock.settimeout(None)       # blocking fd; sends use MSG_DONTWAIT+poll
        if sock.type != socket.SOCK_SEQPACKET:
            log.warning("vufuse: socket type %r does not keep message "
                        "boundaries", sock.type)
        self._reader = threading.Thread(target=self._read_loop,
                                        name="vufuse-reader", daemon=True)
        self._reader.start()

    # -- state ------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._alive

    def _fail_all(self) -> None:
        with self._lock:
            if not self._alive and not self._pending:
                return
            self._alive = False
            slots = list(self._pending.values())
            self._pending.clear()
        for slot in slots:
            slot.error = -errno.ENOTCONN
            slot.event.set()

    # -- reading ----------------------------------------------------------

    def _read_loop(self) -> None:
        buf = bytearray(self._bufsize)
        view = memoryview(buf)
        trunc = getattr(socket, "MSG_TRUNC", 0x20)
        try:
            while True:
                try:
                    n, _anc, mflags, _addr = self.sock.recvmsg_into([buf])
                except InterruptedError:
                    continue
                except OSError:
                    break
                if n == 0:
                    break
                if n < OUT_HEADER.size:
                    log.warning("vufuse: short reply (%d bytes) ignored", n)
                    continue
                length, error, unique = OUT_HEADER.unpack_from(buf)
                if unique == 0:
                    self._notify(error, bytes(view[OUT_HEADER.size:n]))
                    continue
                with self._lock:
                    slot = self._pending.pop(unique, None)
                if slot is None:
                    self._late_reply(unique, error, view[OUT_HEADER.size:n])
                    continue
                if mflags & trunc or length != n:
                    log.warning("vufuse: malformed reply to opcode %d "
                                "(len %d, got %d)", slot.opcode, length, n)
                    error = -errno.EIO
                elif error > 0 or error < -4095:
                    error = -errno.EIO
                elif error == 0:
                    slot.body = bytes(view[OUT_HEADER.size:n])
                slot.error = error
                slot.event.set()
        finally:
            self._fail_all()

    def _notify(self, code: int, body: bytes) -> None:
        cb = self.on_notify
        if cb is None:
            return
        try:
            cb(code, body)
        except Exception:       # never kill the reader
            log.exception("vufuse: notification handler failed")

    def _late_reply(self, unique: int, error: int, body) -> None:
        """A reply nobody waits for any more (the request timed out), or
        the answer to an INTERRUPT.  Undo what a successful late reply did
        to the daemon's state: lookup counts and open handles."""
        with self._lock:
            info = self._abandoned.pop(unique, None)
        if info is None or error != 0:
            return
        opcode, nodeid, _t = info
        try:
            if opcode in _ENTRY_OPS and len(body) >= 8:
                child = struct.unpack_from("<Q", body)[0]
                if child:
                    self.forget(child, 1)
                if opcode == FUSE_CREATE:
                    off = self.entry_out_size
                    if len(body) >= off + OPEN_OUT.size and child:
                        fh = OPEN_OUT.unpack_from(body, off)[0]
                        self._send_noreply(FUSE_RELEASE, child,
                                           RELEASE_IN.pack(fh, 0, 0, 0))
            elif opcode in (FUSE_OPEN, FUSE_OPENDIR) and len(body) >= 8:
                fh = struct.unpack_from("<Q", body)[0]
                op = FUSE_RELEASE if opcode == FUSE_OPEN else FUSE_RELEASEDIR
                self._send_noreply(op, nodeid, RELEASE_IN.pack(fh, 0, 0, 0))
        except OSError:
            pass

    # -- sending ----------------------------------------------------------

    def _send(self, parts: list, deadline: float) -> None:
        total = sum(len(p) for p in parts)
        flags = socket.MSG_DONTWAIT | getattr(socket, "MSG_NOSIGNAL", 0)
        while True:
            try:
                sent = self.sock.sendmsg(parts, (), flags)
            except (BlockingIOError, InterruptedError):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise _err(errno.ETIMEDOUT)
                try:
                    p = select.poll()
                    p.register(self.sock.fileno(), select.POLLOUT)
                    p.poll(remaining * 1000.0)
                except (OSError, ValueError):
                    self._fail_all()
                    raise _err(errno.ENOTCONN) from None
                continue
            except OSError as e:
                if e.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise _err(e.errno) from None
                self._fail_all()
                raise _err(errno.ENOTCONN) from None
            if sent != total:       # cannot happen on SEQPACKET
                raise _err(errno.EIO, "partial FUSE request sent")
            return

    @staticmethod
    def _parts(payload) -> list:
        if isinstance(payload, (list, tuple)):
            return [p for p in payload if len(p)]
        return [payload] if len(payload) else []

    def _send_noreply(self, opcode: int, nodeid: int, payload=b"",
                      unique: Optional[int] = None) -> None:
        """Send a request whose reply (if any) nobody waits for."""
        if not self._alive:
            raise _err(errno.ENOTCONN)
        parts = self._parts(payload)
        if unique is None:
            unique = next(self._uniques)
        length = IN_HEADER.size + sum(len(p) for p in parts)
        hdr = IN_HEADER.pack(length, opcode, unique, nodeid, 0, 0, 0, 0, 0)
        self._send([hdr] + parts, time.monotonic() + min(self.timeout, 5.0))

    def request(self, opcode: int, nodeid: int, payload=b"", *, uid: int = 0,
                gid: int = 0, pid: int = 0,
                timeout: Optional[float] = None) -> bytes:
        """Send one request and wait for its reply; returns the reply body.

        `payload` is a bytes-like object or a list of them (sent with one
        sendmsg, without joining).  Raises FuseError(errno) for an error
        reply, FuseError(ENOTCONN) when the daemon is gone and
        FuseError(ETIMEDOUT) after `timeout` (default: self.timeout)
        seconds, after sending FUSE_INTERRUPT for the request."""
        quick = getattr(self.quick, "timeout", None)
        if quick is not None:           # a short try: no INTERRUPT after it
            return self._request(opcode, nodeid, payload, uid, gid, pid,
                                 quick, False)
        return self._request(opcode, nodeid, payload, uid, gid, pid,
                             self.timeout if timeout is None else timeout,
                             True)

    #: called now and then while a request waits: True when the process it
    #: serves got a signal, so the request is interrupted (FUSE_INTERRUPT)
    should_interrupt = None

    def _wait_reply(self, slot, deadline) -> bool:
        """Wait for the reply; on a signal to the caller, ask the daemon to
        interrupt and give it a moment to answer (EINTR, or the reply)."""
        check = self.should_interrupt
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return slot.event.is_set()
            if slot.event.wait(min(left, 0.05) if check else left):
                return True
            if check is not None and check():
                deadline = min(deadline, time.monotonic() + 1.0)
                return self._interrupt_wait(slot, deadline)

    def _interrupt_wait(self, slot, deadline) -> bool:
        with self._lock:
            unique = next((u for u, v in self._pending.items() if v is slot), None)
        if unique is not None and self._alive:
            try:
                self._send_noreply(FUSE_INTERRUPT, 0, INTERRUPT_IN.pack(unique),
                                   unique=unique | 1)
            except OSError:
                pass
        if slot.event.wait(max(0.0, deadline - time.monotonic())):
            return True
        raise _err(errno.EINTR)

    def _request(self, opcode, nodeid, payload, uid, gid, pid, timeout,
                 interrupt) -> bytes:
        if not self._alive:
            raise _err(errno.ENOTCONN)
        parts = self._parts(payload)
        unique = next(self._uniques)
        length = IN_HEADER.size + sum(len(p) for p in parts)
        hdr = IN_HEADER.pack(length, opcode, unique, nodeid,
                             uid & 0xFFFFFFFF, gid & 0xFFFFFFFF,
                             pid & 0xFFFFFFFF, 0, 0)
        slot = _Slot(opcode, nodeid)
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._alive:
                raise _err(errno.ENOTCONN)
            self._pending[unique] = slot
        try:
            self._send([hdr] + parts, deadline)
        except BaseException:
            with self._lock:
                self._pending.pop(unique, None)
            raise
        if not self._wait_reply(slot, deadline):
            with self._lock:
                gone = self._pending.pop(unique, None) is not None
                if gone and self._alive:
                    self._abandoned[unique] = (opcode, nodeid,
                                               time.monotonic())
                    self._prune_abandoned()
            if gone:
                if interrupt and self._alive:
                    try:
                        self._send_noreply(FUSE_INTERRUPT, 0,
                                           INTERRUPT_IN.pack(unique),
                                           unique=unique | 1)
                    except OSError:
                        pass
                raise _err(errno.ETIMEDOUT)
            slot.event.wait()       # the reply raced with the timeout
        if slot.error:
            raise _err(-slot.error)
        return slot.body

    def _prune_abandoned(self) -> None:
        if len(self._abandoned) > 1024:
            cutoff = time.monotonic() - 600.0
            for u in [u for u, v in self._abandoned.items() if v[2] < cutoff]:
                del self._abandoned[u]
            while len(self._abandoned) > 1024:
                del self._abandoned[next(iter(self._abandoned))]

    # -- session ------------------------------------------------------------

    def init(self) -> None:
        """FUSE_INIT: offer 7.31 and our flags, adopt the daemon's answer."""
        body = self._request(FUSE_INIT, 0,
                             INIT_IN.pack(FUSE_KERNEL_VERSION,
                                          FUSE_KERNEL_MINOR_VERSION,
                                          self.max_readahead, OFFERED_FLAGS),
                             0, 0, 0, self.timeout, False)
        if len(body) < 8:
            raise _err(errno.EPROTO, "short FUSE_INIT reply")
        major, minor = struct.unpack_from("<II", body)
        if major != FUSE_KERNEL_VERSION:
            raise _err(errno.EPROTO, f"FUSE daemon speaks protocol {major}.x")
        self.major = major
        self.daemon_minor = minor
        self.minor = min(minor, FUSE_KERNEL_MINOR_VERSION)
        if len(body) >= 16:
            readahead, flags = struct.unpack_from("<II", body, 8)
            self.max_readahead = min(self.max_readahead, readahead)
            self.flags = flags & OFFERED_FLAGS
        max_write = 4096
        if self.minor >= 5 and len(body) >= 24:
            (self.max_background, self.congestion_threshold,
             max_write) = struct.unpack_from("<HHI", body, 16)
        self.max_write = max(4096, max_write)
        if self.minor >= 23 and len(body) >= 32:
            self.time_gran, self.max_pages = struct.unpack_from("<IH", body, 24)
            self.time_gran = self.time_gran or 1
        max_read = self._max_read_opt
        if self.flags & FUSE_MAX_PAGES and self.max_pages:
            max_read = min(max_read, self.max_pages * 4096)
        self.max_read = max_read
        # the kernel's direct-I/O path sends up to max_write per WRITE even
        # without BIG_WRITES; keep messages within the socket buffer too
        self.write_chunk = min(self.max_write, self._max_read_opt)

    @property
    def entry_out_size(self) -> int:
        return ENTRY_HEAD.size + (ATTR.size if (self.minor or 0) >= 9
                                  else ATTR_COMPAT.size)

    def forget(self, nodeid: int, nlookup: int) -> None:
        """FUSE_FORGET: drop `nlookup` lookups of `nodeid`; no reply."""
        if nodeid in (0, FUSE_ROOT_ID) or nlookup <= 0 or not self._alive:
            return
        try:
            self._send_noreply(FUSE_FORGET, nodeid, FORGET_IN.pack(nlookup))
        except OSError:
            pass

    def forget_many(self, items: Iterable[tuple[int, int]]) -> None:
        """Forget several (nodeid, nlookup) pairs, with BATCH_FORGET when
        the daemon speaks 7.16 or later."""
        items = [(n, c) for n, c in items
                 if n not in (0, FUSE_ROOT_ID) and c > 0]
        if not items or not self._alive:
            return
        if len(items) == 1 or (self.minor or 0) < 16:
            for n, c in items:
                self.forget(n, c)
            return
        for i in range(0, len(items), 256):
            chunk = items[i:i + 256]
            payload = [BATCH_FORGET_IN.pack(len(chunk), 0)]
            payload += [FORGET_ONE.pack(n, c) for n, c in chunk]
            try:
                self._send_noreply(FUSE_BATCH_FORGET, 0, payload)
            except OSError:
                return

    def destroy(self) -> None:
        """FUSE_DESTROY (the daemon flushes and closes its file system),
        wait for the reply (at most `timeout`), then shut the socket down
        and stop the reader.  Idempotent."""
        if self._alive and self.minor is not None and not self._closing:
            self._closing = True
            try:
                self._request(FUSE_DESTROY, 0, b"", 0, 0, 0, self.timeout,
                              False)
            except OSError:
                pass
        self.shutdown()

    def shutdown(self) -> None:
        """Stop without DESTROY: shut the socket down, fail what waits."""
        self._closing = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
        self._fail_all()

    def close(self) -> None:
        self.shutdown()
        try:
            self.sock.close()
        except OSError:
            pass


_ENTRY_OPS = frozenset((FUSE_LOOKUP, FUSE_CREATE, FUSE_MKNOD, FUSE_MKDIR,
                        FUSE_SYMLINK, FUSE_LINK))

# --------------------------------------------------------------------------
# Decoding helpers


def _signed64(v: int) -> int:
    return v - _U64 if v >= _S64 else v


def _decode_dev(rdev: int) -> int:
    """The kernel's 32-bit new_encode_dev() value to a userspace dev_t."""
    major = (rdev & 0xFFF00) >> 8
    minor = (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)
    return os.makedev(major, minor)


def _encode_dev(dev: int) -> int:
    major, minor = os.major(dev), os.minor(dev)
    return ((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)) & 0xFFFFFFFF


def _stat_from(fields: tuple) -> os.stat_result:
    (ino, size, blocks, atime, mtime, ctime, atns, mtns, ctns, mode, nlink,
     uid, gid, rdev) = fields[:14]
    blksize = fields[14] if len(fields) > 14 else 0
    atime, mtime, ctime = _signed64(atime), _signed64(mtime), _signed64(ctime)
    return os.stat_result(
        (mode, ino, 0, nlink, uid, gid, size, atime, mtime, ctime),
        {"st_atime": atime + atns / 1e9, "st_mtime": mtime + mtns / 1e9,
         "st_ctime": ctime + ctns / 1e9,
         "st_atime_ns": atime * 1_000_000_000 + atns,
         "st_mtime_ns": mtime * 1_000_000_000 + mtns,
         "st_ctime_ns": ctime * 1_000_000_000 + ctns,
         "st_blksize": blksize or 4096, "st_blocks": blocks,
         "st_rdev": _decode_dev(rdev)})


class _Entry:
    """A parsed fuse_entry_out."""
    __slots__ = ("nodeid", "generation", "entry_valid", "attr")

    def __init__(self, nodeid, generation, entry_valid, attr):
        self.nodeid = nodeid
        self.generation = generation
        self.entry_valid = entry_valid
        self.attr = attr


class _Cached:
    __slots__ = ("nodeid", "generation", "ftype", "nlookup", "expires",
                 "parent", "children")

    def __init__(self, nodeid, generation, ftype, expires, parent):
        self.nodeid = nodeid
        self.generation = generation
        self.ftype = ftype              # S_IFMT bits: a node never changes type
        self.nlookup = 0
        self.expires = expires
        self.parent = parent
        self.children: set[str] = set()


def _fsname(name) -> bytes:
    return name if isinstance(name, bytes) else os.fsencode(name)


def _split(path) -> list[str]:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    parts: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if parts:
                parts.pop()
            continue
        parts.append(c)
    return parts


def _key(parts: Sequence[str]) -> str:
    return "/" + "/".join(parts)


_DT_DIR = 4
_NOCTTY_EXCL_CREAT = os.O_CREAT | os.O_EXCL | os.O_NOCTTY

# --------------------------------------------------------------------------
# Path based operations


def _op(fn):
    """Public operations run with a per-thread list of pinned node ids:
    every node id an operation resolves stays pinned (its FORGET deferred)
    until the operation ends, so that a concurrent unlink, rename or cache
    eviction can never make the daemon forget a node id that is about to be
    used (libfuse's high-level layer aborts on unknown node ids)."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        tls = self._tls
        if getattr(tls, "pins", None) is not None:      # nested operation
            return fn(self, *args, **kwargs)
        tls.pins = []
        try:
            return fn(self, *args, **kwargs)
        finally:
            pins, tls.pins = tls.pins, None
            if pins:
                self._unpin(pins)
    return wrapper


class WireOperations:
    """fusepy-Operations-like, path-based view of a connection.

    Paths are '/'-rooted inside the file system, with symbolic links
    already resolved by the caller ('.' and '..' are folded lexically).
    Every method takes an optional `ctx=(uid, gid, pid)` keyword: the
    credentials the requests carry (default `self.ctx`, initially (0, 0, 0));
    the daemon does its own permission checks with them.  Failures raise
    FuseError (an OSError) with the errno.

    What the kernel does for a daemon is done here too:
      * path -> node id: a cache of (nodeid, generation, lookup count, type)
        per path, filled by LOOKUP (walking from node 1) and by the entry
        replies of CREATE/MKNOD/MKDIR/SYMLINK/LINK/READDIRPLUS.  Entries
        are dropped on unlink, rmdir, rename, a changed node id, daemon
        notifications (INVAL_ENTRY, DELETE) and beyond `max_cached`, and
        FORGET (BATCH_FORGET from 7.16) returns their lookup counts.
        Entries past the daemon's entry timeout are revalidated with a new
        LOOKUP unless `honor_entry_timeout` is False.
      * node ids in use are pinned: by open handles until release, and by
        every operation while it runs, so no node id is used after its
        FORGET (libfuse's high-level layer aborts on unknown node ids).
      * a lookup reply that may predate a concurrent namespace change is
        used but not cached (an epoch counter), so renames and unlinks
        racing with lookups leave no stale names behind.
      * the VFS checks daemons rely on (fuse2fs would e.g. UNLINK a
        directory): EISDIR/ENOTDIR for unlink/rmdir/open/truncate/rename
        type mismatches, EEXIST before creating an existing name, EPERM
        for hard links to directories, EINVAL for renaming a directory into
        itself, ENOTDIR below non-directories.
      * handles not handed out by open/create/opendir are refused (EBADF):
        daemons may take fh for a pointer.
      * O_TRUNC without FUSE_ATOMIC_O_TRUNC is a SETATTR after OPEN, the
        umask is applied here (FUSE_DONT_MASK is not offered), ENOSYS
        answers are remembered (no-op for flush/fsync/access, EOPNOTSUPP
        for xattrs/fallocate, MKNOD+OPEN for CREATE, READDIR for
        READDIRPLUS, zero-message open/opendir when offered).
    """

    def __init__(self, conn: FuseConnection, *, ctx=(0, 0, 0),
                 max_cached: int = 65536, honor_entry_timeout: bool = True):
        self.conn = conn
        self.ctx = tuple(ctx)
        self.max_cached = max_cached
        self.honor_entry_timeout = honor_entry_timeout
        self._lock = threading.RLock()
        self._cache: dict[str, _Cached] = {}
        self._root_children: set[str] = set()
        self._by_nodeid: dict[int, set[str]] = {}
        # open handles: (is_dir, fh) -> [nodeid or None, flags, count]
        self._handles: dict[tuple[bool, int], list] = {}
        # nodeid -> open handles + operations in progress using it
        self._pins: dict[int, int] = {}
        self._deferred: dict[int, int] = {}      # nodeid -> nlookup to forget
        self._tls = threading.local()
        # bumped by every namespace change: a reply to a request sent before
        # the change may describe a name that no longer exists, so it is
        # used by its operation but not cached
        self._epoch = 0
        self._no_open = False
        self._no_opendir = False
        self._no_create = False
        self._no_readdirplus = False
        self._no_rename2 = False
        self._no_access = False
        self._no_flush = False
        self._no_fsync = False
        self._no_fsyncdir = False
        self._no_fallocate = False
        self._no_lseek = False
        if conn.on_notify is None:
            conn.on_notify = self._on_notify

    # -- plumbing -----------------------------------------------------------

    def _req(self, opcode, nodeid, payload=b"", ctx=None) -> bytes:
        uid, gid, pid = self.ctx if ctx is None else ctx
        return self.conn.request(opcode, nodeid, payload, uid=uid, gid=gid,
                                 pid=pid)

    @property
    def _minor(self) -> int:
        return self.conn.minor or 0

    def _parse_attr(self, body, off: int) -> os.stat_result:
        if self._minor >= 9 and len(body) >= off + ATTR.size:
            return _stat_from(ATTR.unpack_from(body, off))
        if len(body) >= off + ATTR_COMPAT.size:
            return _stat_from(ATTR_COMPAT.unpack_from(body, off))
        raise _err(errno.EIO, "short attribute reply")

    def _parse_entry(self, body, off: int = 0) -> _Entry:
        if len(body) < off + ENTRY_HEAD.size:
            raise _err(errno.EIO, "short entry reply")
        nodeid, gen, ev, _av, evn, _avn = ENTRY_HEAD.unpack_from(body, off)
        attr = (self._parse_attr(body, off + ENTRY_HEAD.size) if nodeid
                else None)
        return _Entry(nodeid, gen, ev + evn / 1e9, attr)

    def _parse_attr_out(self, body) -> os.stat_result:
        return self._parse_attr(body, ATTR_OUT_HEAD.size)

    def _io_in(self, fh, offset, size, flags, rw_flags=0) -> bytes:
        if self._minor >= 9:
            return IO_IN.pack(fh, offset, size, rw_flags, 0, flags & 0xFFFFFFFF,
                              0)
        return IO_IN_COMPAT.pack(fh, offset, size, rw_flags)

    # -- the lookup cache -----------------------------------------------------

    def _expiry(self, valid: float) -> float:
        if not self.honor_entry_timeout:
            return float("inf")
        return time.monotonic() + valid

    def _children_of(self, key: str) -> set[str]:
        if key == "/":
            return self._root_children
        return self._cache[key].children

    def _remember(self, key: str, entry: _Entry, epoch: int) -> None:
        """Account one lookup of entry.nodeid under `key`; `epoch` is
        self._epoch read before the request was sent."""
        forgets: list[tuple[int, int]] = []
        with self._lock:
            self._pin_locked(entry.nodeid)     # the caller may use it
            old = self._cache.get(key)
            parent = key.rsplit("/", 1)[0] or "/"
            if old is not None and old.nodeid == entry.nodeid:
                old.nlookup += 1
                if epoch == self._epoch:
                    old.generation = entry.generation
                    old.expires = self._expiry(entry.entry_valid)
            elif (epoch != self._epoch
                  or (parent != "/" and parent not in self._cache)):
                # possibly stale, or its parent was dropped meanwhile:
                # cache nothing, give the lookup back after the operation
                forgets.append((entry.nodeid, 1))
            else:
                if old is not None:
                    self._drop_locked(key, forgets)
                    self._epoch += 1
                ent = _Cached(entry.nodeid, entry.generation,
                              stat.S_IFMT(entry.attr.st_mode),
                              self._expiry(entry.entry_valid), parent)
                ent.nlookup = 1
                self._cache[key] = ent
                self._children_of(parent).add(key)
                self._by_nodeid.setdefault(entry.nodeid, set()).add(key)
                if len(self._cache) > self.max_cached:
                    self._evict_locked(forgets)
        self._forget(forgets)

    def _now_epoch(self) -> int:
        with self._lock:
            return self._epoch

    def _drop_locked(self, key: str, forgets: list) -> None:
        ent = self._cache.pop(key, None)
        if ent is None:
            return
        for child in list(ent.children):
            self._drop_locked(child, forgets)
        if ent.parent == "/":
            self._root_children.discard(key)
        else:
            p = self._cache.get(ent.parent)
            if p is not None:
                p.children.discard(key)
        keys = self._by_nodeid.get(ent.nodeid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_nodeid[ent.nodeid]
        forgets.append((ent.nodeid, ent.nlookup))

    def _evict_locked(self, forgets: list) -> None:
        target = int(self.max_cached * 0.9)
        for key in list(self._cache):
            if len(self._cache) <= target:
                break
            ent = self._cache.get(key)
            if ent is not None and not ent.children:
                self._drop_locked(key, forgets)

    def _forget(self, forgets: list) -> None:
        """Send FORGET for dropped lookups, unless the node is open."""
        if not forgets:
            return
        now: list[tuple[int, int]] = []
        with self._lock:
            for nodeid, n in forgets:
                if self._pins.get(nodeid):
                    self._deferred[nodeid] = self._deferred.get(nodeid, 0) + n
                else:
                    now.append((nodeid, n))
        self.conn.forget_many(now)

    def _pin_locked(self, nodeid: int) -> None:
        pins = getattr(self._tls, "pins", None)
        if pins is None or nodeid == FUSE_ROOT_ID:
            return
        self._pins[nodeid] = self._pins.get(nodeid, 0) + 1
        pins.append(nodeid)

    def _unpin(self, nodeids) -> None:
        forgets = []
        with self._lock:
            for nodeid in nodeids:
                n = self._pins.get(nodeid, 0) - 1
                if n > 0:
                    self._pins[nodeid] = n
                    continue
                self._pins.pop(nodeid, None)
                d = self._deferred.pop(nodeid, 0)
                if d:
                    forgets.append((nodeid, d))
        self.conn.forget_many(forgets)

    @_op
    def drop(self, path, _changed: bool = True) -> None:
        """Drop the cached entries for `path` and below (sending FORGET),
        e.g. after the file system changed behind our back."""
        parts = _split(path)
        forgets: list = []
        with self._lock:
            if parts:
                self._drop_locked(_key(parts), forgets)
            else:
                for child in list(self._root_children):
                    self._drop_locked(child, forgets)
            if _changed or forgets:
                self._epoch += 1
        self._forget(forgets)

    def forget_all(self) -> None:
        self.drop("/")

    def cached(self, path) -> Optional[tuple[int, int, int]]:
        """(nodeid, generation, lookup count) cached for `path`, or None."""
        parts = _split(path)
        if not parts:
            return (FUSE_ROOT_ID, 0, 1)
        with self._lock:
            ent = self._cache.get(_key(parts))
            return None if ent is None else (ent.nodeid, ent.generation,
                                             ent.nlookup)

    def _lookup(self, parent: int, name: str, key: str, ctx) -> _Entry:
        bname = _fsname(name)
        if len(bname) > FUSE_NAME_MAX:
            raise _err(errno.ENAMETOOLONG)
        epoch = self._now_epoch()
        try:
            body = self._req(FUSE_LOOKUP, parent, bname + b"\0", ctx)
        except OSError as e:
            if e.errno == errno.ENOENT:
                self.drop(key, False)
            raise
        entry = self._parse_entry(body)
        if entry.nodeid == 0:           # negative entry
            self.drop(key, False)
            raise _err(errno.ENOENT)
        self._remember(key, entry, epoch)
        return entry

    def _resolve(self, parts: Sequence[str], ctx):
        """Node of a path, looking up what the cache lacks.  Returns
        (nodeid, stat_result or None, S_IFMT type): the attributes when the
        last component was just looked up.  A component below a
        non-directory gives ENOTDIR, as in the kernel."""
        nodeid = FUSE_ROOT_ID
        attr = None
        ftype = stat.S_IFDIR
        now = time.monotonic()
        for i in range(len(parts)):
            if ftype != stat.S_IFDIR:
                raise _err(errno.ENOTDIR)
            key = _key(parts[:i + 1])
            with self._lock:
                ent = self._cache.get(key)
                hit = ent is not None and ent.expires > now
                if hit:
                    nodeid, ftype = ent.nodeid, ent.ftype
                    self._pin_locked(nodeid)
            if hit:
                attr = None
                continue
            entry = self._lookup(nodeid, parts[i], key, ctx)
            nodeid, attr = entry.nodeid, entry.attr
            ftype = stat.S_IFMT(attr.st_mode)
        return nodeid, attr, ftype

    def _node(self, path, ctx) -> int:
        return self._resolve(_split(path), ctx)[0]

    def _typed(self, path, ctx) -> tuple[int, int]:
        """(nodeid, S_IFMT type) of a path."""
        nodeid, _attr, ftype = self._resolve(_split(path), ctx)
        return nodeid, ftype

    def _probe(self, parts, ctx):
        """(nodeid, type) of an existing path, None when it does not exist."""
        try:
            nodeid, _attr, ftype = self._resolve(parts, ctx)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return nodeid, ftype

    def _parent(self, path, ctx) -> tuple[int, str, str]:
        """(parent nodeid, last component, cache key) for a path."""
        parts = _split(path)
        if not parts:
            raise _err(errno.EBUSY)     # the root has no name to change
        parent, _attr, ptype = self._resolve(parts[:-1], ctx)
        if ptype != stat.S_IFDIR:
            raise _err(errno.ENOTDIR)
        name = parts[-1]
        if len(_fsname(name)) > FUSE_NAME_MAX:
            raise _err(errno.ENAMETOOLONG)
        return parent, name, _key(parts)

    def _new_name(self, path, ctx) -> tuple[int, str, str]:
        """_parent() for a name about to be created: EEXIST if it exists
        (the VFS looks the name up before asking the file system)."""
        parent, name, key = self._parent(path, ctx)
        if self._probe(_split(path), ctx) is not None:
            raise _err(errno.EEXIST)
        return parent, name, key

    def _on_notify(self, code: int, body: bytes) -> None:
        """Daemon notifications (reader thread: must not wait)."""
        if code == FUSE_NOTIFY_INVAL_ENTRY and len(body) >= NOTIFY_INVAL_ENTRY.size:
            parent, namelen, _f = NOTIFY_INVAL_ENTRY.unpack_from(body)
            name = body[NOTIFY_INVAL_ENTRY.size:NOTIFY_INVAL_ENTRY.size + namelen]
        elif code == FUSE_NOTIFY_DELETE and len(body) >= NOTIFY_DELETE.size:
            parent, _child, namelen, _p = NOTIFY_DELETE.unpack_from(body)
            name = body[NOTIFY_DELETE.size:NOTIFY_DELETE.size + namelen]
        else:
            return
        name = os.fsdecode(name)
        with self._lock:
            parents = (["/"] if parent == FUSE_ROOT_ID
                       else list(self._by_nodeid.get(parent, ())))
        for pk in parents:
            self.drop(pk.rstrip("/") + "/" + name)

    # -- handles --------------------------------------------------------------

    def _add_handle(self, is_dir: bool, fh: int, nodeid: int, flags: int,
                    ftype: int):
        with self._lock:
            h = self._handles.get((is_dir, fh))
            if h is None:
                self._handles[(is_dir, fh)] = [[nodeid], flags, ftype]
            else:                       # fh reused (no-open daemons: fh 0)
                h[0].append(nodeid)
            self._pins[nodeid] = self._pins.get(nodeid, 0) + 1

    def _handle(self, is_dir: bool, fh, path, ctx) -> tuple[int, int, int]:
        """(nodeid, open flags, type) of an open handle: the node it was
        opened on (valid even after an unlink or rename).  Handles we did
        not hand out are refused: daemons may take fh for a pointer."""
        with self._lock:
            h = self._handles.get((is_dir, fh))
            if h is None:
                raise _err(errno.EBADF)
            nodes, flags, ftype = h
            if len(set(nodes)) == 1:
                return nodes[0], flags, ftype
        nodeid, ftype = self._typed(path, ctx)  # shared fh 0: by path
        return nodeid, flags, ftype

    def _drop_handle(self, is_dir: bool, fh: int, nodeid: int) -> None:
        with self._lock:
            h = self._handles.get((is_dir, fh))
            if h is None:
                return
            nodes = h[0]
            nodeid = nodeid if nodeid in nodes else nodes[-1]
            nodes.remove(nodeid)
            if not nodes:
                del self._handles[(is_dir, fh)]
        self._unpin([nodeid])

    # -- attributes -------------------------------------------------------------

    @_op
    def getattr(self, path, fh=None, *, ctx=None) -> os.stat_result:
        """Attributes; with the `fh` of an open regular file, GETATTR
        carries it (FUSE_GETATTR_FH), as the kernel's fstat does."""
        if fh is not None:
            with self._lock:
                h = self._handles.get((False, fh))
                if h is None or len(set(h[0])) != 1:
                    h = None
                else:
                    node, ftype = h[0][0], h[2]
            if h is not None:
                return self._getattr(node, fh if ftype == stat.S_IFREG
                                     else None, ctx)
        parts = _split(path)
        nodeid, attr, _t = self._resolve(parts, ctx)
        if attr is not None:
            return attr             # fresh from the LOOKUP just done
        try:
            return self._getattr(nodeid, None, ctx)
        except OSError as e:
            if e.errno != errno.ESTALE or not parts:
                raise
        self.drop(path)
        return self._getattr(self._node(path, ctx), None, ctx)

    def _getattr(self, nodeid, fh, ctx) -> os.stat_result:
        if self._minor >= 9:
            payload = GETATTR_IN.pack(FUSE_GETATTR_FH if fh is not None else 0,
                                      0, fh or 0)
        else:
            payload = b""
        return self._parse_attr_out(self._req(FUSE_GETATTR, nodeid, payload,
                                              ctx))

    def _setattr(self, path, valid, *, fh=None, size=0, mode=0, uid=0, gid=0,
                 atime=(0, 0), mtime=(0, 0), ctx=None) -> os.stat_result:
        if fh is not None:
            nodeid, _flags, ftype = self._handle(False, fh, path, ctx)
            if ftype == stat.S_IFREG:
                valid |= FATTR_FH
            else:
                fh = None
        else:
            nodeid = self._node(path, ctx)
        payload = SETATTR_IN.pack(valid, 0, fh or 0, size, 0,
                                  atime[0] & (_U64 - 1), mtime[0] & (_U64 - 1),
                                  0, atime[1], mtime[1], 0, mode, 0,
                                  uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, 0)
        return self._parse_attr_out(self._req(FUSE_SETATTR, nodeid, payload,
                                              ctx))

    @_op
    def truncate(self, path, length, fh=None, *, ctx=None):
        if length < 0:
            raise _err(errno.EINVAL)
        if fh is None:
            ftype = self._typed(path, ctx)[1]
            if ftype == stat.S_IFDIR:
                raise _err(errno.EISDIR)
            if ftype != stat.S_IFREG:
                raise _err(errno.EINVAL)
        self._setattr(path, FATTR_SIZE, fh=fh, size=length, ctx=ctx)

    @_op
    def chmod(self, path, mode, *, ctx=None):
        self._setattr(path, FATTR_MODE, mode=mode & 0o7777, ctx=ctx)

    @_op
    def chown(self, path, uid, gid, *, ctx=None):
        valid = 0
        if uid is not None and uid != -1 and uid != 0xFFFFFFFF:
            valid |= FATTR_UID
        if gid is not None and gid != -1 and gid != 0xFFFFFFFF:
            valid |= FATTR_GID
        if not valid:
            self._node(path, ctx)       # still report a missing path
            return
        self._setattr(path, valid, uid=uid if valid & FATTR_UID else 0,
                      gid=gid if valid & FATTR_GID else 0, ctx=ctx)

    @_op
    def utimens(self, path, times=None, *, ctx=None):
        """times: None (both now) or (atime, mtime), each nanoseconds since
        the epoch, UTIME_NOW, or UTIME_OMIT/None."""
        if times is None:
            times = (UTIME_NOW, UTIME_NOW)
        valid = 0
        vals = []
        for t, bit, now_bit in ((times[0], FATTR_ATIME, FATTR_ATIME_NOW),
                                (times[1], FATTR_MTIME, FATTR_MTIME_NOW)):
            if t is None or t == UTIME_OMIT:
                vals.append((0, 0))
                continue
            valid |= bit
            if t == UTIME_NOW:
                if self._minor >= 9:
                    valid |= now_bit
                    vals.append((0, 0))
                    continue
                t = time.time_ns()
            vals.append(divmod(int(t), 1_000_000_000))
        if not valid:
            self._node(path, ctx)
            return
        self._setattr(path, valid, atime=vals[0], mtime=vals[1], ctx=ctx)

    @_op
    def readlink(self, path, *, ctx=None) -> str:
        nodeid, ftype = self._typed(path, ctx)
        if ftype != stat.S_IFLNK:
            raise _err(errno.EINVAL)
        body = self._req(FUSE_READLINK, nodeid, b"", ctx)
        return os.fsdecode(body.split(b"\0", 1)[0])

    @_op
    def statfs(self, path="/", *, ctx=None) -> dict:
        body = self._req(FUSE_STATFS, self._node(path, ctx), b"", ctx)
        if len(body) >= KSTATFS.size:
            (blocks, bfree, bavail, files, ffree, bsize, namelen, frsize,
             _pad) = KSTATFS.unpack_from(body)
        elif len(body) >= KSTATFS_COMPAT.size:
            (blocks, bfree, bavail, files, ffree, bsize,
             namelen) = KSTATFS_COMPAT.unpack_from(body)
            frsize = 0
        else:
            raise _err(errno.EIO, "short statfs reply")
        return {"f_bsize": bsize, "f_frsize": frsize or bsize,
                "f_blocks": blocks, "f_bfree": bfree, "f_bavail": bavail,
                "f_files": files, "f_ffree": ffree, "f_favail": ffree,
                "f_namemax": namelen}

    @_op
    def access(self, path, mode, *, ctx=None):
        nodeid = self._node(path, ctx)
        mask = mode & 7
        if mask == 0 or self._no_access:
            return
        try:
            self._req(FUSE_ACCESS, nodeid, ACCESS_IN.pack(mask, 0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_access = True      # as the kernel: permit

    # -- directories --------------------------------------------------------------

    @_op
    def opendir(self, path, *, ctx=None) -> int:
        nodeid, ftype = self._typed(path, ctx)
        if ftype != stat.S_IFDIR:
            raise _err(errno.ENOTDIR)
        fh = 0
        if not self._no_opendir:
            try:
                body = self._req(FUSE_OPENDIR, nodeid,
                                 OPEN_IN.pack(os.O_RDONLY | os.O_DIRECTORY, 0),
                                 ctx)
                fh = OPEN_OUT.unpack_from(body)[0] if len(body) >= 8 else 0
            except OSError as e:
                if not (e.errno == errno.ENOSYS
                        and self.conn.flags & FUSE_NO_OPENDIR_SUPPORT):
                    raise
                self._no_opendir = True
        self._add_handle(True, fh, nodeid, os.O_RDONLY | os.O_DIRECTORY,
                         stat.S_IFDIR)
        return fh

    @_op
    def readdir(self, path, fh=None, *, ctx=None) -> list[tuple[str, int, int]]:
        """All entries as (name, d_type, ino), '.' and '..' included.
        Without `fh`, the directory is opened and released around it."""
        if fh is None:
            fh = self.opendir(path, ctx=ctx)
            try:
                return self.readdir(path, fh, ctx=ctx)
            finally:
                self.releasedir(path, fh, ctx=ctx)
        nodeid = self._handle(True, fh, path, ctx)[0]
        parts = _split(path)
        key = _key(parts)
        out: list[tuple[str, int, int]] = []
        plus = (bool(self.conn.flags & FUSE_DO_READDIRPLUS)
                and not self._no_readdirplus)
        size = min(self.conn.max_read, 64 * 1024)
        offset = 0
        while True:
            payload = self._io_in(fh or 0, offset, size,
                                  os.O_RDONLY | os.O_DIRECTORY)
            epoch = self._now_epoch()
            if plus:
                try:
                    body = self._req(FUSE_READDIRPLUS, nodeid, payload, ctx)
                except OSError as e:
                    if e.errno != errno.ENOSYS:
                        raise
                    self._no_readdirplus = True
                    plus = False
                    continue
            else:
                body = self._req(FUSE_READDIR, nodeid, payload, ctx)
            if not body:
                break
            last = offset
            offset = self._parse_dirents(body, plus, key, out, offset,
                                         epoch)
            if offset == last:
                break
        names = {e[0] for e in out}
        if ".." not in names:
            pparts = parts[:-1]
            try:
                ino = self.getattr(_key(pparts), ctx=ctx).st_ino
            except OSError:
                ino = 0
            out.insert(0, ("..", _DT_DIR, ino))
        if "." not in names:
            try:
                ino = self.getattr(key, ctx=ctx).st_ino
            except OSError:
                ino = 0
            out.insert(0, (".", _DT_DIR, ino))
        return out

    def _parse_dirents(self, body, plus, key, out, offset, epoch) -> int:
        pos = 0
        n = len(body)
        esize = self.conn.entry_out_size
        remembered: list[tuple[str, _Entry]] = []
        while pos < n:
            entry = None
            if plus:
                if pos + esize + DIRENT.size > n:
                    break
                entry = self._parse_entry(body, pos)
                pos += esize
            if pos + DIRENT.size > n:
                break
            ino, off, namelen, dtype = DIRENT.unpack_from(body, pos)
            start = pos + DIRENT.size
            if start + namelen > n:
                break
            name = os.fsdecode(bytes(body[start:start + namelen]))
            pos = (start + namelen + 7) & ~7
            out.append((name, dtype, ino))
            offset = off
            if entry is not None and entry.nodeid and name not in (".", ".."):
                remembered.append((name, entry))
        for name, entry in remembered:
            self._remember(key.rstrip("/") + "/" + name, entry, epoch)
        return offset

    @_op
    def releasedir(self, path, fh, *, ctx=None):
        nodeid = self._handle(True, fh, path, ctx)[0]
        try:
            if not self._no_opendir:
                self._req(FUSE_RELEASEDIR, nodeid,
                          RELEASE_IN.pack(fh, os.O_RDONLY | os.O_DIRECTORY,
                                          0, 0), ctx)
        finally:
            self._drop_handle(True, fh, nodeid)

    @_op
    def fsyncdir(self, path, datasync, fh, *, ctx=None):
        if self._no_fsyncdir:
            return
        nodeid = self._handle(True, fh, path, ctx)[0]
        try:
            self._req(FUSE_FSYNCDIR, nodeid,
                      FSYNC_IN.pack(fh, FUSE_FSYNC_FDATASYNC if datasync else 0,
                                    0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_fsyncdir = True

    # -- files ------------------------------------------------------------------

    @_op
    def open(self, path, flags, *, ctx=None) -> int:
        nodeid, ftype = self._typed(path, ctx)
        self._check_open(ftype, flags)
        return self._open(nodeid, ftype, path, flags, ctx)

    @staticmethod
    def _check_open(ftype, flags) -> None:
        """The VFS's may_open() checks the daemon relies on."""
        if ftype == stat.S_IFLNK:
            raise _err(errno.ELOOP)     # paths arrive with links resolved
        if ftype == stat.S_IFDIR:
            if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
                raise _err(errno.EISDIR)
        elif flags & os.O_DIRECTORY:
            raise _err(errno.ENOTDIR)

    def _open(self, nodeid, ftype, path, flags, ctx) -> int:
        oflags = flags & ~_NOCTTY_EXCL_CREAT
        trunc_after = False
        if oflags & os.O_TRUNC and not self.conn.flags & FUSE_ATOMIC_O_TRUNC:
            oflags &= ~os.O_TRUNC
            trunc_after = (ftype == stat.S_IFREG
                           and (flags & os.O_ACCMODE) != os.O_RDONLY)
        fh = 0
        if not self._no_open:
            try:
                body = self._req(FUSE_OPEN, nodeid, OPEN_IN.pack(
                    oflags & 0xFFFFFFFF, 0), ctx)
                fh = OPEN_OUT.unpack_from(body)[0] if len(body) >= 8 else 0
            except OSError as e:
                if not (e.errno == errno.ENOSYS
                        and self.conn.flags & FUSE_NO_OPEN_SUPPORT):
                    raise
                self._no_open = True
        self._add_handle(False, fh, nodeid, oflags, ftype)
        if trunc_after:
            try:
                self._setattr(path, FATTR_SIZE, fh=fh, size=0, ctx=ctx)
            except BaseException:
                self.release(path, fh, ctx=ctx)
                raise
        return fh

    @_op
    def create(self, path, mode, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
               umask=0o022, *, ctx=None) -> int:
        parts = _split(path)
        # as the kernel's atomic_open: an existing name is simply opened
        found = self._probe(parts, ctx)
        if found is not None:
            if flags & os.O_EXCL:
                raise _err(errno.EEXIST)
            self._check_open(found[1], flags & ~os.O_CREAT)
            return self._open(found[0], found[1], path, flags & ~os.O_CREAT,
                              ctx)
        parent, name, key = self._parent(path, ctx)
        fmode = stat.S_IFREG | (mode & 0o7777 & ~umask)
        if not self._no_create:
            oflags = (flags | os.O_CREAT) & ~os.O_NOCTTY
            if not self.conn.flags & FUSE_ATOMIC_O_TRUNC:
                oflags &= ~os.O_TRUNC
            if self._minor >= 12:
                head = CREATE_IN.pack(oflags & 0xFFFFFFFF, fmode, umask, 0)
            else:
                head = OPEN_IN.pack(oflags & 0xFFFFFFFF, fmode)
            epoch = self._now_epoch()
            try:
                body = self._req(FUSE_CREATE, parent,
                                 [head, _fsname(name) + b"\0"], ctx)
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                self._no_create = True
            else:
                entry = self._parse_entry(body)
                if not entry.nodeid:
                    raise _err(errno.EIO, "CREATE returned node 0")
                self._remember(key, entry, epoch)
                esize = self.conn.entry_out_size
                fh = (OPEN_OUT.unpack_from(body, esize)[0]
                      if len(body) >= esize + 8 else 0)
                self._add_handle(False, fh, entry.nodeid,
                                 oflags & ~_NOCTTY_EXCL_CREAT, stat.S_IFREG)
                return fh
        # no CREATE: MKNOD then OPEN, as the kernel falls back
        self._mknod(parent, name, key, fmode, 0, 0, ctx)
        return self.open(path, flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC),
                         ctx=ctx)

    @_op
    def read(self, path, size, offset, fh, *, ctx=None) -> bytes:
        """Up to `size` bytes at `offset`, in READs of at most max_read
        bytes; short at end of file.  An error after some data was read
        returns that data, as read(2) does."""
        nodeid, flags, _t = self._handle(False, fh, path, ctx)
        if offset < 0:
            raise _err(errno.EINVAL)
        chunk = self.conn.max_read
        pieces = []
        while size > 0:
            n = min(size, chunk)
            try:
                body = self._req(FUSE_READ, nodeid,
                                 self._io_in(fh, offset, n, flags), ctx)
            except OSError:
                if pieces:
                    break
                raise
            if len(body) > n:
                body = body[:n]
            pieces.append(body)
            offset += len(body)
            size -= len(body)
            if len(body) < n:
                break
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    @_op
    def write(self, path, data, offset, fh, *, ctx=None) -> int:
        """Write `data` at `offset` in WRITEs of at most write_chunk bytes;
        returns the count written (short if the daemon wrote less, or if
        an error came after some data was written)."""
        nodeid, flags, _t = self._handle(False, fh, path, ctx)
        if offset < 0:
            raise _err(errno.EINVAL)
        view = memoryview(data).cast("B")
        chunk = self.conn.write_chunk
        done = 0
        while done < len(view):
            piece = view[done:done + chunk]
            try:
                body = self._req(FUSE_WRITE, nodeid,
                                 [self._io_in(fh, offset + done, len(piece),
                                              flags), piece], ctx)
            except OSError:
                if done:
                    break
                raise
            if len(body) < WRITE_OUT.size:
                raise _err(errno.EIO, "short write reply")
            n = WRITE_OUT.unpack_from(body)[0]
            if n > len(piece):
                raise _err(errno.EIO, "daemon wrote more than asked")
            done += n
            if n < len(piece):
                break
        return done

    @_op
    def flush(self, path, fh, *, ctx=None):
        if self._no_flush:
            return
        nodeid = self._handle(False, fh, path, ctx)[0]
        try:
            self._req(FUSE_FLUSH, nodeid, FLUSH_IN.pack(fh, 0, 0, 0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_flush = True

    @_op
    def release(self, path, fh, flags=0, *, ctx=None):
        nodeid, oflags, _t = self._handle(False, fh, path, ctx)
        try:
            if not self._no_open:
                self._req(FUSE_RELEASE, nodeid,
                          RELEASE_IN.pack(fh, (flags or oflags) & 0xFFFFFFFF,
                                          0, 0), ctx)
        finally:
            self._drop_handle(False, fh, nodeid)

    @_op
    def fsync(self, path, datasync, fh, *, ctx=None):
        if self._no_fsync:
            return
        nodeid = self._handle(False, fh, path, ctx)[0]
        try:
            self._req(FUSE_FSYNC, nodeid,
                      FSYNC_IN.pack(fh, FUSE_FSYNC_FDATASYNC if datasync else 0,
                                    0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_fsync = True

    @_op
    def fallocate(self, path, mode, offset, length, fh, *, ctx=None):
        nodeid = self._handle(False, fh, path, ctx)[0]
        if offset < 0 or length <= 0:
            raise _err(errno.EINVAL)
        if self._no_fallocate or self._minor < 19:
            raise _err(errno.EOPNOTSUPP)
        try:
            self._req(FUSE_FALLOCATE, nodeid,
                      FALLOCATE_IN.pack(fh, offset, length, mode, 0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_fallocate = True
            raise _err(errno.EOPNOTSUPP) from None

    @_op
    def lseek(self, path, offset, whence, fh, *, ctx=None) -> int:
        """SEEK_SET/SEEK_END are answered here; SEEK_DATA/SEEK_HOLE go to
        the daemon when it implements LSEEK, else the whole file is data."""
        if whence == os.SEEK_SET:
            if offset < 0:
                raise _err(errno.EINVAL)
            return offset
        if whence == os.SEEK_END:
            pos = self.getattr(path, fh, ctx=ctx).st_size + offset
            if pos < 0:
                raise _err(errno.EINVAL)
            return pos
        if whence not in (getattr(os, "SEEK_DATA", 3), getattr(os, "SEEK_HOLE", 4)):
            raise _err(errno.EINVAL)
        if not self._no_lseek and self._minor >= 24:
            nodeid = self._handle(False, fh, path, ctx)[0]
            try:
                body = self._req(FUSE_LSEEK, nodeid,
                                 LSEEK_IN.pack(fh, offset, whence, 0), ctx)
                return _signed64(LSEEK_OUT.unpack_from(body)[0])
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                self._no_lseek = True
        size = self.getattr(path, fh, ctx=ctx).st_size
        if offset < 0 or offset >= size:
            raise _err(errno.ENXIO)
        return offset if whence == getattr(os, "SEEK_DATA", 3) else size

    # -- names ------------------------------------------------------------------

    def _entry_op(self, key: str, opcode: int, parent: int, payload,
                  ctx) -> os.stat_result:
        """A request answered with fuse_entry_out (MKNOD, MKDIR, SYMLINK,
        LINK): the new name gets cached with its lookup."""
        epoch = self._now_epoch()
        entry = self._parse_entry(self._req(opcode, parent, payload, ctx))
        if not entry.nodeid:
            raise _err(errno.EIO, "entry reply with node 0")
        self._remember(key, entry, epoch)
        return entry.attr

    @_op
    def mkdir(self, path, mode, *, umask=0, ctx=None):
        parent, name, key = self._new_name(path, ctx)
        payload = [MKDIR_IN.pack(mode & 0o1777 & ~umask, umask),
                   _fsname(name) + b"\0"]
        self._entry_op(key, FUSE_MKDIR, parent, payload, ctx)

    @_op
    def mknod(self, path, mode, dev=0, *, umask=0, ctx=None):
        ftype = stat.S_IFMT(mode)
        if ftype == 0:
            mode |= stat.S_IFREG
        elif ftype == stat.S_IFDIR:
            raise _err(errno.EPERM)
        elif ftype not in (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK,
                           stat.S_IFIFO, stat.S_IFSOCK):
            raise _err(errno.EINVAL)
        parent, name, key = self._new_name(path, ctx)
        self._mknod(parent, name, key, mode & ~(umask & 0o7777), dev, umask,
                    ctx)

    def _mknod(self, parent, name, key, mode, dev, umask, ctx):
        rdev = _encode_dev(dev)
        head = (MKNOD_IN.pack(mode, rdev, umask, 0) if self._minor >= 12
                else MKNOD_IN_COMPAT.pack(mode, rdev))
        self._entry_op(key, FUSE_MKNOD, parent, [head, _fsname(name) + b"\0"],
                       ctx)

    @_op
    def symlink(self, target, source, *, ctx=None):
        """Create `target` (the new name), a symlink whose content is
        `source` (fusepy's argument order)."""
        if not source:
            raise _err(errno.ENOENT)
        parent, name, key = self._new_name(target, ctx)
        payload = [_fsname(name) + b"\0", _fsname(source) + b"\0"]
        self._entry_op(key, FUSE_SYMLINK, parent, payload, ctx)

    @_op
    def link(self, target, source, *, ctx=None):
        """Create `target` (the new name), a hard link to `source`."""
        old, ftype = self._typed(source, ctx)
        if ftype == stat.S_IFDIR:
            raise _err(errno.EPERM)
        parent, name, key = self._new_name(target, ctx)
        payload = [LINK_IN.pack(old), _fsname(name) + b"\0"]
        self._entry_op(key, FUSE_LINK, parent, payload, ctx)

    def _remove(self, opcode, path, ctx):
        parent, name, key = self._parent(path, ctx)
        ftype = self._typed(path, ctx)[1]
        if opcode == FUSE_UNLINK and ftype == stat.S_IFDIR:
            raise _err(errno.EISDIR)
        if opcode == FUSE_RMDIR and ftype != stat.S_IFDIR:
            raise _err(errno.ENOTDIR)
        try:
            self._req(opcode, parent, _fsname(name) + b"\0", ctx)
        except OSError as e:
            if e.errno == errno.ENOENT:
                self.drop(key)
            raise
        self.drop(key)

    @_op
    def unlink(self, path, *, ctx=None):
        self._remove(FUSE_UNLINK, path, ctx)

    @_op
    def rmdir(self, path, *, ctx=None):
        self._remove(FUSE_RMDIR, path, ctx)

    @_op
    def rename(self, old, new, flags=0, *, ctx=None):
        """RENAME, or RENAME2 when `flags` (RENAME_NOREPLACE=1,
        RENAME_EXCHANGE=2, RENAME_WHITEOUT=4) are given and offered."""
        if flags & ~7 or (flags & 1 and flags & 6):
            raise _err(errno.EINVAL)
        oparent, oname, okey = self._parent(old, ctx)
        nparent, nname, nkey = self._parent(new, ctx)
        oparts, nparts = _split(old), _split(new)
        onode, otype = self._typed(old, ctx)
        found = self._probe(nparts, ctx)
        if len(nparts) > len(oparts) and nparts[:len(oparts)] == oparts:
            raise _err(errno.EINVAL)        # into its own subtree
        if len(oparts) > len(nparts) and oparts[:len(nparts)] == nparts:
            raise _err(errno.EINVAL if flags & 2 else errno.ENOTEMPTY)
        if found is None:
            if flags & 2:
                raise _err(errno.ENOENT)
        else:
            nnode, ntype = found
            if flags & 1:
                raise _err(errno.EEXIST)
            if nnode == onode:
                return                      # same node: nothing to do
            if not flags & 2:
                if otype == stat.S_IFDIR and ntype != stat.S_IFDIR:
                    raise _err(errno.ENOTDIR)
                if otype != stat.S_IFDIR and ntype == stat.S_IFDIR:
                    raise _err(errno.EISDIR)
        names = [_fsname(oname) + b"\0", _fsname(nname) + b"\0"]
        if flags:
            if self._no_rename2 or self._minor < 23:
                raise _err(errno.EINVAL)
            try:
                self._req(FUSE_RENAME2, oparent,
                          [RENAME2_IN.pack(nparent, flags, 0)] + names, ctx)
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                self._no_rename2 = True
                raise _err(errno.EINVAL) from None
        else:
            self._req(FUSE_RENAME, oparent, [RENAME_IN.pack(nparent)] + names,
                      ctx)
        forgets: list = []
        with self._lock:
            self._drop_locked(okey, forgets)
            self._drop_locked(nkey, forgets)
            self._epoch += 1
        self._forget(forgets)

    # -- extended attributes -------------------------------------------------------

    def _xattr(self, opcode, nodeid, size, name, ctx) -> bytes:
        payload = [GETXATTR_IN.pack(size, 0)]
        if name is not None:
            payload.append(_fsname(name) + b"\0")
        try:
            return self._req(opcode, nodeid, payload, ctx)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                raise _err(errno.EOPNOTSUPP) from None
            raise

    def _xattr_value(self, opcode, path, name, ctx) -> bytes:
        nodeid = self._node(path, ctx)
        for _ in range(8):
            body = self._xattr(opcode, nodeid, 0, name, ctx)
            if len(body) < GETXATTR_OUT.size:
                raise _err(errno.EIO, "short xattr size reply")
            size = GETXATTR_OUT.unpack_from(body)[0]
            if size == 0:
                return b""
            try:
                return self._xattr(opcode, nodeid, size, name, ctx)
            except OSError as e:
                if e.errno != errno.ERANGE:     # grew meanwhile: ask again
                    raise
        raise _err(errno.ERANGE)

    @_op
    def getxattr(self, path, name, position=0, *, ctx=None) -> bytes:
        return self._xattr_value(FUSE_GETXATTR, path, name, ctx)

    @_op
    def listxattr(self, path, *, ctx=None) -> list[str]:
        body = self._xattr_value(FUSE_LISTXATTR, path, None, ctx)
        return [os.fsdecode(n) for n in body.split(b"\0") if n]

    @_op
    def setxattr(self, path, name, value, options=0, position=0, *, ctx=None):
        nodeid = self._node(path, ctx)
        value = bytes(value)
        payload = [SETXATTR_IN.pack(len(value), options),
                   _fsname(name) + b"\0", value]
        try:
            self._req(FUSE_SETXATTR, nodeid, payload, ctx)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                raise _err(errno.EOPNOTSUPP) from None
            raise

    @_op
    def removexattr(self, path, name, *, ctx=None):
        nodeid = self._node(path, ctx)
        try:
            self._req(FUSE_REMOVEXATTR, nodeid, _fsname(name) + b"\0", ctx)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                raise _err(errno.EOPNOTSUPP) from None
            raise

    # -- session ----------------------------------------------------------------

    def init(self) -> None:
        self.conn.init()

    def destroy(self, path=None):
        """FUSE_DESTROY; the daemon forgets every node by itself."""
        with self._lock:
            self._cache.clear()
            self._root_children.clear()
            self._by_nodeid.clear()
            self._deferred.clear()
        self.conn.destroy()
