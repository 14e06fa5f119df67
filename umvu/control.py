"""The control path: VUOS virtual syscalls with negative numbers.

Shared by the hypervisor (which answers them) and the helper commands
(which issue them). Outside umvu the kernel answers ENOSYS.
"""

from __future__ import annotations

import ctypes
import os
import struct

VU_INSMOD, VU_RMMOD, VU_LSMOD, VUCTL, MSOCKET = -1, -2, -3, -4, -5

VUCTL_GETINFO = 1
VUCTL_SETNAME = 2
VUCTL_GET_DEBUGTAGS = 3
VUCTL_ADD_DEBUGTAGS = 4
VUCTL_DEL_DEBUGTAGS = 5
VUCTL_GET_DEBUGTAGNAME = 6
VUCTL_SET_DEBUGCOLOR = 7
#: tags past VUOS's go to the modules that handle "vuctl": unrealuidgid
#: makes the caller root (vusu)
VUCTL_SU = 0x5553
#: umvu's own: the view as JSON (umvu.viewstate), for vuname --dump;
#: args (buf, size), returns the size needed
VUCTL_DUMP = 0x4455

#: struct vu_info: struct utsname (6 x char[65]), vu_serverid[65], vu_name[65]
VU_INFO = struct.Struct("65s" * 8)
FIELD = 65

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


#: a signal broke the call off before the hypervisor took it; the kernel
#: restarts no negative number, so the caller does (ERESTART*)
RESTART = {512, 513, 514, 516}


def vucall(nr: int, *args) -> int:
    """Issue a control call; raise OSError on failure."""
    while True:
        ret = _libc.syscall(ctypes.c_long(nr), *args)
        if ret != -1:
            return ret
        err = ctypes.get_errno()
        if err not in RESTART:
            raise OSError(err, os.strerror(err))


def get_info() -> dict[str, str] | None:
    """The hypervisor's vu_info, or None when not running under umvu."""
    buf = ctypes.create_string_buffer(VU_INFO.size)
    try:
        vucall(VUCTL, ctypes.c_int(VUCTL_GETINFO), buf)
    except OSError:
        return None
    fields = [f.split(b"\0", 1)[0].decode(errors="replace")
              for f in VU_INFO.unpack(buf.raw)]
    keys = ("sysname", "nodename", "release", "version", "machine",
            "domainname", "serverid", "name")
    return dict(zip(keys, fields))


def pack_info(uname: os.uname_result, serverid: str, name: str) -> bytes:
    def field(text: str) -> bytes:
        return os.fsencode(text)[:FIELD - 1]
    return VU_INFO.pack(*(field(x) for x in (
        uname.sysname, uname.nodename, uname.release, uname.version,
        uname.machine, "", serverid, name)))
