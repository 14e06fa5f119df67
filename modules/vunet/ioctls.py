"""Interface ioctls run on a stack's socket for a caller (see
Vunet.ioctl): struct ifreq ones copied in and out, SIOCGIFCONF with its
buffer."""

from __future__ import annotations

import ctypes
import errno
import os
import struct

SIOCGIFCONF = 0x8912
#: requests whose argument is one struct ifreq (40 bytes, no pointers)
IFREQ = frozenset({
    0x8910,                 # SIOCGIFNAME
    0x8913, 0x8914,         # SIOCGIFFLAGS, SIOCSIFFLAGS
    0x8915, 0x8916,         # SIOCGIFADDR, SIOCSIFADDR
    0x8917, 0x8918,         # SIOCGIFDSTADDR, SIOCSIFDSTADDR
    0x8919, 0x891a,         # SIOCGIFBRDADDR, SIOCSIFBRDADDR
    0x891b, 0x891c,         # SIOCGIFNETMASK, SIOCSIFNETMASK
    0x891d, 0x891e,         # SIOCGIFMETRIC, SIOCSIFMETRIC
    0x8921, 0x8922,         # SIOCGIFMTU, SIOCSIFMTU
    0x8923,                 # SIOCSIFNAME
    0x8924, 0x8927,         # SIOCSIFHWADDR, SIOCGIFHWADDR
    0x8933,                 # SIOCGIFINDEX
    0x8942, 0x8943,         # SIOCGIFTXQLEN, SIOCSIFTXQLEN
})
IFREQ_SIZE = 40
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


def _ioctl(fd: int, request: int, buf) -> None:
    if _libc.ioctl(fd, request, ctypes.cast(buf, ctypes.c_void_p)) < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run(call, fd: int, request: int, arg: int) -> int:
    if arg == 0:
        return -errno.EFAULT
    if request == SIOCGIFCONF:
        length, buf_addr = struct.unpack("i4xQ", call.read(arg, 16))
        if length < 0:
            return -errno.EINVAL
        data = ctypes.create_string_buffer(max(length, 1))
        conf = ctypes.create_string_buffer(struct.pack(
            "i4xQ", length, ctypes.addressof(data) if buf_addr else 0), 16)
        _ioctl(fd, request, conf)
        new_len = struct.unpack("i4xQ", conf.raw)[0]
        if buf_addr and new_len:
            call.write(buf_addr, data.raw[:new_len])
        call.write(arg, struct.pack("i", new_len))
        return 0
    buf = ctypes.create_string_buffer(call.read(arg, IFREQ_SIZE), IFREQ_SIZE)
    _ioctl(fd, request, buf)
    call.write(arg, buf.raw)
    return 0
