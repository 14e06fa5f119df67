"""Virtual calls: one call a module answers for a whole family of syscall
variants (syscall_table's vcall= column), as VUOS's vu_syscalls.conf does.

A module that handles `getresfuid` and `setresfuid` answers getuid,
geteuid, getresuid, setuid, setreuid, setresuid and setfsuid: the adapters
here read the arguments of each variant, apply the kernel's rules for it
(setuid as root sets every id, setreuid may move the saved id...) and call
the module with four ids (real, effective, saved, fs; -1 unchanged).

    getresfuid(call) -> (r, e, s, fs), or KERNEL
    setresfuid(call, r, e, s, fs) -> 0 or a negative errno

A module that handles `clock_gettime` answers time, gettimeofday and
clock_gettime with the time of one clock, in nanoseconds; `clock_settime`
takes settimeofday and clock_settime (the adapters read and write the
timespec, timeval and time_t of each variant):

    clock_gettime(call, clockid) -> nanoseconds (>= 0), or KERNEL
    clock_settime(call, clockid, nanoseconds) -> 0 or a negative errno, or KERNEL
"""

from __future__ import annotations

import struct

from .module import KERNEL

KEEP = 0xffffffff           # (uid_t)-1 in a syscall's argument: "unchanged"


def _id(value: int) -> int:
    value &= 0xffffffff
    return -1 if value == KEEP else value


def _getter(kind: str, handlers: dict):
    return handlers.get(f"getresf{kind}")


def adapt(sysname: str, vname: str, handlers: dict):
    """A handler for the syscall `sysname` built on the module's handlers of
    virtual calls (name -> bound method); None if it cannot be built."""
    if vname in _TIME_ADAPTERS:
        handler = handlers.get(vname)
        return None if handler is None else _TIME_ADAPTERS[vname](sysname, handler)
    kind = "uid" if sysname.endswith("uid") else "gid"
    get = _getter(kind, handlers)
    put = handlers.get(f"setresf{kind}")
    if vname.startswith("get"):
        if get is None:
            return None
        pick = {"getuid": 0, "getgid": 0, "geteuid": 1, "getegid": 1}

        def getter(call):
            ids = get(call)
            if ids is KERNEL or isinstance(ids, int):
                return ids
            if sysname in pick:
                return ids[pick[sysname]]
            for addr, value in zip(call.args[:3], ids[:3]):
                call.write(addr, struct.pack("I", value & 0xffffffff))
            return 0
        return getter
    if get is None or put is None:
        return None
    rule = _SETTERS[sysname.replace("gid", "uid")]

    def setter(call):
        ids = get(call)
        if ids is KERNEL or isinstance(ids, int):
            return ids
        new, result = rule(tuple(ids), [_id(a) for a in call.args[:3]])
        answer = put(call, *new)
        if rule is _setfsuid and answer is not KERNEL:
            return result               # setfsuid never fails: the old id
        if answer is KERNEL or (isinstance(answer, int) and answer < 0):
            return answer
        return result
    return setter


def _setuid(ids, args):
    value = args[0]
    if value < 0:
        return (-1, -1, -1, -1), -22            # EINVAL, as the kernel
    if ids[1] == 0:
        return (value, value, value, value), 0
    return (-1, value, -1, value), 0


def _setreuid(ids, args):
    r, e = args[0], args[1]
    new_e = e if e >= 0 else ids[1]
    saved = new_e if r >= 0 or (e >= 0 and e != ids[0]) else -1
    return (r, e, saved, e), 0


def _setresuid(ids, args):
    r, e, s = args
    return (r, e, s, e), 0


def _setfsuid(ids, args):
    return (-1, -1, -1, args[0]), ids[3]        # returns the old fs id


_SETTERS = {"setuid": _setuid, "setreuid": _setreuid, "setresuid": _setresuid,
            "setfsuid": _setfsuid}


# ---- time: clock_gettime, clock_settime ---------------------------------------

NS = 1_000_000_000
CLOCK_REALTIME = 0
EFAULT, EINVAL = 14, 22


def _clockid(value: int) -> int:
    value &= 0xffffffff
    return value - (1 << 32) if value >> 31 else value


def _gettime(sysname: str, get):
    def clock_gettime(call):
        if not call.args[1]:
            return -EFAULT
        ns = get(call, _clockid(call.args[0]))
        if ns is KERNEL or ns < 0:
            return ns
        call.write(call.args[1], struct.pack("qq", *divmod(ns, NS)))
        return 0

    def gettimeofday(call):
        tv, tz = call.args[0], call.args[1]
        if not tv:
            return KERNEL               # the time zone only: the kernel's
        ns = get(call, CLOCK_REALTIME)
        if ns is KERNEL or ns < 0:
            return ns
        sec, rest = divmod(ns, NS)
        call.write(tv, struct.pack("qq", sec, rest // 1000))
        if tz:
            call.write(tz, bytes(8))    # struct timezone: UTC, as the kernel's default
        return 0

    def time(call):
        ns = get(call, CLOCK_REALTIME)
        if ns is KERNEL or ns < 0:
            return ns
        sec = ns // NS
        if call.args[0]:
            call.write(call.args[0], struct.pack("q", sec))
        return sec
    return {"clock_gettime": clock_gettime, "gettimeofday": gettimeofday,
            "time": time}.get(sysname)


def _settime(sysname: str, put):
    def clock_settime(call):
        if not call.args[1]:
            return -EFAULT
        sec, nsec = struct.unpack("qq", call.read(call.args[1], 16))
        if sec < 0 or not 0 <= nsec < NS:
            return -EINVAL
        return put(call, _clockid(call.args[0]), sec * NS + nsec)

    def settimeofday(call):
        if not call.args[0]:
            return KERNEL               # the time zone only: the kernel's
        sec, usec = struct.unpack("qq", call.read(call.args[0], 16))
        if sec < 0 or not 0 <= usec < 1_000_000:
            return -EINVAL
        return put(call, CLOCK_REALTIME, sec * NS + usec * 1000)
    return {"clock_settime": clock_settime,
            "settimeofday": settimeofday}.get(sysname)


_TIME_ADAPTERS = {"clock_gettime": _gettime, "clock_settime": _settime}
