"""Answering a call with a descriptor of the hypervisor's (Call.answer_fd).

A module that made a descriptor itself (vunet: a socket created in a
stack's network namespace) gives the caller a copy of it, so that the
caller's I/O on it runs natively, never stopping in the tracer.

- A control call (a seccomp notification: msocket) gets it through
  SECCOMP_IOCTL_NOTIF_ADDFD: the kernel installs it under the lowest free
  number and the call returns that number.
- A trapped call (a ptrace stop: socket) is run as
  socket(AF_UNIX, SOCK_SEQPACKET) instead; at its exit the caller is made to
  connect that socket to the hypervisor's listener, receive the descriptor
  with SCM_RIGHTS (recvmsg) and dup3 it over the unix socket, so it ends
  up under the number the kernel chose for the call, as natively; the call
  returns it. Four injected syscalls, once per socket.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import socket
import struct
import threading

from . import syscall_table

NR = syscall_table.NR
O_CLOEXEC = os.O_CLOEXEC
MSG_CMSG_CLOEXEC = 0x40000000
#: _IOW('!', 3, struct seccomp_notif_addfd) (24 bytes)
SECCOMP_IOCTL_NOTIF_ADDFD = 0x40182103
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()
_listener: socket.socket | None = None
_address = b""


def answer(stop, fd: int, cloexec: bool) -> int | None:
    """Give stop's caller a copy of fd; the value the handler returns."""
    if hasattr(stop, "listener"):                   # a NotifiedCall
        return _addfd(stop, fd, cloexec)
    return _inject(stop, fd, cloexec)


def _addfd(stop, fd: int, cloexec: bool) -> int:
    req = struct.pack("QIIII", stop.id, 0, fd, 0, O_CLOEXEC if cloexec else 0)
    try:
        return _ioctl_int(stop.listener, req)
    except OSError as exc:
        return -(exc.errno or errno.EIO)


def _ioctl_int(fd: int, req: bytes) -> int:
    """ioctl whose result is the int return value (fcntl.ioctl with a bytes
    argument returns the buffer, not the value)."""
    buf = ctypes.create_string_buffer(req, len(req))
    res = _libc.ioctl(fd, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_ADDFD), buf)
    if res < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return res


def _get_listener() -> tuple[socket.socket, bytes]:
    global _listener, _address
    with _lock:
        if _listener is None:
            # abstract: no path the caller's view could hide or remap; the
            # peer's pid is checked at accept
            name = b"\0umvu-fdpass-%d-%s" % (os.getpid(), secrets.token_hex(8).encode())
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            sock.bind(name)
            sock.listen(64)
            sock.setblocking(False)
            _listener, _address = sock, name
        return _listener, _address


def _accept_from(listener: socket.socket, pid: int) -> socket.socket | None:
    while True:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if struct.unpack("iII", creds)[0] == pid:
            return conn
        conn.close()            # someone else knocking: not for them


def _inject(stop, fd: int, cloexec: bool) -> None:
    mine = os.dup(fd)           # the module may close its own at once
    listener, address = _get_listener()
    flags = socket.SOCK_CLOEXEC if cloexec else 0
    stop.set_arg(0, socket.AF_UNIX)
    stop.set_arg(1, socket.SOCK_SEQPACKET | flags)
    stop.set_arg(2, 0)

    def hook(result: int):
        try:
            if result < 0:
                return None     # EMFILE...: the caller gets the kernel's error
            return _receive(stop, result, mine, listener, address, cloexec)
        finally:
            os.close(mine)
    stop.on_exit(hook)
    return None


def _receive(stop, sock: int, mine: int, listener, address: bytes,
             cloexec: bool) -> int | None:
    def fail(err):
        stop.run(NR["close"], sock)
        return err if err is not None and err < 0 else -errno.EIO
    sockaddr = struct.pack("H", socket.AF_UNIX) + address
    addr = stop.scratch(sockaddr)
    err = stop.run(NR["connect"], sock, addr, len(sockaddr))
    if err is None:
        return None
    if err < 0:
        return fail(err)
    conn = _accept_from(listener, stop.process.pid)
    if conn is None:
        return fail(-errno.ECONNREFUSED)
    with conn:
        conn.sendmsg([b"F"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               struct.pack("i", mine))])
    cmsg_space = socket.CMSG_SPACE(4)
    control = stop.scratch(b"\0" * cmsg_space)
    data = stop.scratch(b"\0" * 8)
    iov = stop.scratch(struct.pack("QQ", data, 1))
    # struct msghdr: name, namelen, iov, iovlen, control, controllen, flags
    msg = stop.scratch(struct.pack("QI4xQQQQi4x", 0, 0, iov, 1, control,
                                   cmsg_space, 0))
    got = stop.run(NR["recvmsg"], sock, msg,
                   MSG_CMSG_CLOEXEC if cloexec else 0)
    if got is None:
        return None
    if got < 0:
        return fail(got)
    raw = stop.read(control, cmsg_space)
    length, level, kind = struct.unpack("QII", raw[:16])
    if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS or length < 20:
        return fail(-errno.EIO)
    received = struct.unpack("i", raw[16:20])[0]
    err = stop.run(NR["dup3"], received, sock, O_CLOEXEC if cloexec else 0)
    stop.run(NR["close"], received)
    if err is None:
        return None
    if err < 0:
        return fail(err)
    return sock
