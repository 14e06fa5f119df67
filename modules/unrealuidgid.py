"""unrealuidgid: virtual user and group ids (a fakeroot for the whole view).

Like VUOS: each process starts with its real ids and keeps its own copy
(taken at fork, kept at exec); files are still accessed with the real
credentials. The set*id calls follow the kernel's rules for these virtual
ids: a process whose virtual effective uid is 0 may set any id, any other
may only move between its own real, effective and saved ids (EPERM
otherwise), so programs that check that a privilege drop took (mount,
ssh... try setuid(0) and insist it fails) work. `vusu` becomes root by
asking this module (vuctl tag VUCTL_SU), as su does by being setuid root.
"""

from __future__ import annotations

import dataclasses
import errno
import struct

from umvu.module import Module, syscall

NGROUPS_MAX = 65536
#: the vuctl tag vusu sends to become root (umvu.control.VUCTL_SU)
VUCTL_SU = 0x5553


@dataclasses.dataclass
class Ids:
    r: int
    e: int
    s: int
    fs: int

    def set(self, r: int, e: int, s: int, fs: int) -> None:
        """setresfuid: -1 leaves an id unchanged; no permission checks."""
        for name, value in zip("r e s fs".split(), (r, e, s, fs)):
            if value != -1:
                setattr(self, name, value)


@dataclasses.dataclass
class Creds:
    uid: Ids
    gid: Ids
    groups: list

    def __copy__(self):
        return Creds(dataclasses.replace(self.uid), dataclasses.replace(self.gid),
                     list(self.groups))

    @property
    def privileged(self) -> bool:
        """CAP_SETUID and CAP_SETGID, as the kernel gives them to euid 0."""
        return self.uid.e == 0

    def set(self, ids: Ids, values) -> int:
        """setres[f]uid/gid: without privilege each id must be one the
        process has (the fs id may also stay what it is)."""
        if not self.privileged:
            allowed = {ids.r, ids.e, ids.s}
            if not all(v == -1 or v in allowed or (n == 3 and v == ids.fs)
                       for n, v in enumerate(values)):
                return -errno.EPERM
        ids.set(*values)
        return 0


def real_creds(pid: int) -> Creds:
    """The kernel's view of a process's credentials (from /proc)."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    uid = [int(x) for x in fields["Uid"]]
    gid = [int(x) for x in fields["Gid"]]
    return Creds(Ids(*uid), Ids(*gid), [int(x) for x in fields.get("Groups", [])])


class UnrealUidGid(Module):
    name = "unrealuidgid"
    description = "virtual uid/gid"

    def new_state(self, pid: int) -> Creds:
        return real_creds(pid)

    # virtual calls (umvu.vcalls): the get/set*id family in four handlers,
    # the kernel's rules for each variant applied by the view, as in VUOS
    @syscall("getresfuid")
    def getresfuid(self, call):
        ids = call.state.uid
        return ids.r, ids.e, ids.s, ids.fs

    @syscall("getresfgid")
    def getresfgid(self, call):
        ids = call.state.gid
        return ids.r, ids.e, ids.s, ids.fs

    @syscall("setresfuid")
    def setresfuid(self, call, r, e, s, fs):
        return call.state.set(call.state.uid, (r, e, s, fs))

    @syscall("setresfgid")
    def setresfgid(self, call, r, e, s, fs):
        return call.state.set(call.state.gid, (r, e, s, fs))

    @syscall("getgroups")
    def getgroups(self, call):
        groups = call.state.groups
        size = _int(call.args[0])
        if size < 0:
            return -errno.EINVAL
        if size == 0:
            return len(groups)
        if size < len(groups):
            return -errno.EINVAL
        if groups:
            call.write(call.args[1], struct.pack(f"{len(groups)}I", *groups))
        return len(groups)

    @syscall("setgroups")
    def setgroups(self, call):
        size = _int(call.args[0])
        if not call.state.privileged:       # checked first, as the kernel does
            return -errno.EPERM
        if not 0 <= size <= NGROUPS_MAX:
            return -errno.EINVAL
        data = call.read(call.args[1], 4 * size) if size else b""
        call.state.groups = list(struct.unpack(f"{size}I", data))
        return 0


    @syscall("vuctl")
    def su(self, call):
        """vuctl(VUCTL_SU): the calling process becomes root (vusu)."""
        if call.args[0] & 0xffffffff != VUCTL_SU:
            return None                 # not ours: the view says EINVAL
        call.state.uid.set(0, 0, 0, 0)
        call.state.gid.set(0, 0, 0, 0)
        call.state.groups = [0]
        return 0


def _int(value: int) -> int:
    """A syscall's int argument (the low 32 bits, signed)."""
    value &= 0xffffffff
    return value - (1 << 32) if value >> 31 else value
