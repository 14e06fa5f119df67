"""One session with a FUSE daemon: our end of its "/dev/fuse".

An unmodified FUSE daemon (libfuse 2 or 3, e.g. Debian's fuse2fs) reads
requests from "/dev/fuse" and writes replies to it: one request per read(),
one reply per write()/writev().  A SOCK_SEQPACKET AF_UNIX socketpair keeps
exactly those message boundaries, so a daemon whose /dev/fuse descriptor is
one end of such a pair talks to whoever holds the other end.
`FuseConnection` is that other end, the part of the Linux kernel's fs/fuse
that carries messages: the INIT handshake and version negotiation,
request/reply matching by `unique` (a background thread reads every reply,
any number of threads may send requests at once), waiting with timeouts,
FUSE_INTERRUPT, FORGET, DESTROY, and failing every waiter with ENOTCONN
when the daemon dies.

It knows opcodes and node ids, not paths: the message layouts come from
protocol.py, and pathops.py builds the file operations on top.
"""

from __future__ import annotations

import errno
import itertools
import logging
import select
import socket
import struct
import threading
import time
from typing import Callable, Iterable, Optional

from .protocol import (
    BATCH_FORGET_IN, ENTRY_OPS, FORGET_IN, FORGET_ONE, FUSE_BATCH_FORGET,
    FUSE_CREATE, FUSE_DESTROY, FUSE_FORGET, FUSE_INIT, FUSE_INTERRUPT,
    FUSE_MAX_PAGES, FUSE_MIN_READ_BUFFER, FUSE_KERNEL_MINOR_VERSION,
    FUSE_OPEN, FUSE_OPENDIR, FUSE_RELEASE, FUSE_RELEASEDIR, FUSE_ROOT_ID,
    INTERRUPT_IN, OFFERED_FLAGS, OPEN_OUT, OUT_HEADER, RELEASE_IN,
    entry_out_size, fuse_error, pack_in_header, pack_init_in,
    unpack_init_out)

log = logging.getLogger("umvu.vufuse")

__all__ = ["FuseConnection"]


class _Slot:
    """A request waiting for its reply."""
    __slots__ = ("event", "error", "body", "opcode", "nodeid")

    def __init__(self, opcode: int, nodeid: int):
        self.event = threading.Event()
        self.error = 0
        self.body = b""
        self.opcode = opcode
        self.nodeid = nodeid


class _Parked:
    """A quick request that timed out, kept for the same call tried again:
    key is ((opcode, nodeid, uid, gid, pid), payload bytes)."""
    __slots__ = ("owner", "key", "unique", "slot", "since")

    def __init__(self, owner: int, key: tuple, unique: int, slot: _Slot):
        self.owner, self.key, self.unique, self.slot = owner, key, unique, slot
        self.since = time.monotonic()


def _joined(parts) -> bytes:
    return b"".join(bytes(p) for p in parts)


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
        #: .timeout, per thread: wait this long only, then ETIMEDOUT quietly;
        #: .owner: whose call the request is for (its thread id), so that
        #: the request stays with the daemon for that call's retry (park)
        self.quick = threading.local()
        #: .owner, per thread: whose call the requests are for (its retry)
        self.serving = threading.local()
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
        self._parked: dict[int, _Parked] = {}      # by owner
        self._uniques = itertools.count(2, 2)   # odd uniques are interrupts
        #: requests sent, by opcode (the debug log shows them at the end)
        self.counts: dict[int, int] = {}
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
        the answer to an INTERRUPT."""
        with self._lock:
            info = self._abandoned.pop(unique, None)
        if info is None or error != 0:
            return
        self._undo(info[0], info[1], body)

    def _undo(self, opcode: int, nodeid: int, body) -> None:
        """Undo what a successful reply nobody used did to the daemon's
        state: lookup counts and open handles."""
        try:
            if opcode in ENTRY_OPS and len(body) >= 8:
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
                    raise fuse_error(errno.ETIMEDOUT)
                try:
                    p = select.poll()
                    p.register(self.sock.fileno(), select.POLLOUT)
                    p.poll(remaining * 1000.0)
                except (OSError, ValueError):
                    self._fail_all()
                    raise fuse_error(errno.ENOTCONN) from None
                continue
            except OSError as e:
                if e.errno in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise fuse_error(e.errno) from None
                self._fail_all()
                raise fuse_error(errno.ENOTCONN) from None
            if sent != total:       # cannot happen on SEQPACKET
                raise fuse_error(errno.EIO, "partial FUSE request sent")
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
            raise fuse_error(errno.ENOTCONN)
        parts = self._parts(payload)
        if unique is None:
            unique = next(self._uniques)
        hdr = pack_in_header(opcode, unique, nodeid,
                             sum(len(p) for p in parts))
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
                                 quick, False, getattr(self.quick, "owner", None))
        timeout = self.timeout if timeout is None else timeout
        owner = getattr(self.serving, "owner", None)
        if owner is not None and self._parked:
            parked = self._claim(owner, (opcode, nodeid, uid, gid, pid), payload)
            if parked is not None:      # asked already: wait for that reply
                return self._reply(opcode, nodeid, parked.unique, parked.slot,
                                   time.monotonic() + timeout, True)
        return self._request(opcode, nodeid, payload, uid, gid, pid, timeout,
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
        raise fuse_error(errno.EINTR)

    def _request(self, opcode, nodeid, payload, uid, gid, pid, timeout,
                 interrupt, owner=None) -> bytes:
        """Send and wait. A request of a quick try (`owner` given) that
        times out is not abandoned: the daemon still works on it, and the
        same call tried again on a worker thread (by `owner`, the caller's
        thread) takes its reply instead of asking again, as the kernel
        never sends a request twice (a READ, say, moves a daemon's file
        position: fusefat reads the wrong bytes when asked again)."""
        if not self._alive:
            raise fuse_error(errno.ENOTCONN)
        parts = self._parts(payload)
        if owner is not None:
            self._drop_parked(owner)    # a new call of the owner: no retry
        unique = next(self._uniques)
        hdr = pack_in_header(opcode, unique, nodeid,
                             sum(len(p) for p in parts), uid, gid, pid)
        slot = _Slot(opcode, nodeid)
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._alive:
                raise fuse_error(errno.ENOTCONN)
            self._pending[unique] = slot
            self.counts[opcode] = self.counts.get(opcode, 0) + 1
        try:
            self._send([hdr] + parts, deadline)
        except BaseException:
            with self._lock:
                self._pending.pop(unique, None)
            raise
        park = None if owner is None else (owner, (uid, gid, pid), parts)
        return self._reply(opcode, nodeid, unique, slot, deadline, interrupt, park)

    def _reply(self, opcode, nodeid, unique, slot, deadline, interrupt,
               park=None) -> bytes:
        if not self._wait_reply(slot, deadline):
            if park is not None:
                owner, ids, parts = park
                park = _Parked(owner, ((opcode, nodeid, *ids), _joined(parts)),
                               unique, slot)
            with self._lock:
                if park is not None and unique in self._pending and self._alive:
                    self._parked[park.owner] = park
                    raise fuse_error(errno.ETIMEDOUT)
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
                raise fuse_error(errno.ETIMEDOUT)
            slot.event.wait()       # the reply raced with the timeout
        if slot.error:
            raise fuse_error(-slot.error)
        return slot.body

    #: a parked request not taken by its call's retry within this time is
    #: given up (the retry comes at once, unless the view is very busy)
    PARK_SECONDS = 30.0

    def _claim(self, owner: int, head: tuple, payload) -> Optional[_Parked]:
        """The request `owner` parked, if it is this very one (the call
        tried again); else None, and it stays parked for a later request
        of the retry (a retry may ask other things first)."""
        with self._lock:
            parked = self._parked.get(owner)
            if parked is None:
                return None
            stale = time.monotonic() - parked.since > self.PARK_SECONDS
            if not stale and (parked.key[0] != head
                              or parked.key[1] != _joined(self._parts(payload))):
                return None
            del self._parked[owner]
        if stale:
            self._give_up(parked)
            return None
        return parked

    def _drop_parked(self, owner: int) -> None:
        with self._lock:
            parked = self._parked.pop(owner, None)
        if parked is not None:
            self._give_up(parked)

    def _give_up(self, parked: _Parked) -> None:
        """Nobody will take a parked request's reply: abandon it like a
        timed-out request (or undo its reply if it came already)."""
        opcode, nodeid = parked.key[0][:2]
        with self._lock:
            waiting = self._pending.pop(parked.unique, None) is not None
            if waiting and self._alive:
                self._abandoned[parked.unique] = (opcode, nodeid, time.monotonic())
                self._prune_abandoned()
        if not waiting and parked.slot.event.wait(1.0) and not parked.slot.error:
            self._undo(opcode, nodeid, parked.slot.body)

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
        reply = unpack_init_out(self._request(FUSE_INIT, 0,
                                              pack_init_in(self.max_readahead),
                                              0, 0, 0, self.timeout, False))
        self.major = reply.major
        self.daemon_minor = reply.minor
        self.minor = min(reply.minor, FUSE_KERNEL_MINOR_VERSION)
        if reply.flags is not None:
            self.max_readahead = min(self.max_readahead, reply.max_readahead)
            self.flags = reply.flags & OFFERED_FLAGS
        max_write = 4096
        if reply.max_write is not None:
            self.max_background = reply.max_background
            self.congestion_threshold = reply.congestion_threshold
            max_write = reply.max_write
        self.max_write = max(4096, max_write)
        if reply.time_gran is not None:
            self.time_gran = reply.time_gran or 1
            self.max_pages = reply.max_pages
        max_read = self._max_read_opt
        if self.flags & FUSE_MAX_PAGES and self.max_pages:
            max_read = min(max_read, self.max_pages * 4096)
        self.max_read = max_read
        # the kernel's direct-I/O path sends up to max_write per WRITE even
        # without BIG_WRITES; keep messages within the socket buffer too
        self.write_chunk = min(self.max_write, self._max_read_opt)

    @property
    def entry_out_size(self) -> int:
        return entry_out_size(self.minor or 0)

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

    def describe_counts(self) -> str:
        """"READ 160, LOOKUP 12, ...": the requests sent so far."""
        from .protocol import opcode_name
        with self._lock:
            counts = sorted(self.counts.items(), key=lambda kv: -kv[1])
        return ", ".join(f"{opcode_name(op)} {n}" for op, n in counts) or "none"

    def destroy(self) -> None:
        """FUSE_DESTROY (the daemon flushes and closes its file system),
        wait for the reply (at most `timeout`), then shut the socket down
        and stop the reader.  Idempotent."""
        if self.minor is not None and not self._closing:
            log.debug("vufuse: requests sent: %s", self.describe_counts())
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

