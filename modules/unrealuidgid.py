"""unrealuidgid: virtual user and group ids (a fakeroot for the whole view).

Like VUOS: each process starts with its real ids, keeps its own copy (taken
at fork, kept at exec) and may set any id, root included, without checks;
files are still accessed with the real credentials.
"""

from __future__ import annotations

import dataclasses
import errno
import struct

from umvu.module import Module, syscall

KEEP = 0xffffffff       # (uid_t)-1: "leave unchanged"
NGROUPS_MAX = 65536


@dataclasses.dataclass
class Ids:
    r: int
    e: int
    s: int
    fs: int

    def set_one(self, value: int) -> None:
        """setuid/setgid: all ids as root, else the effective one."""
        if self.e == 0:
            self.r = self.s = value
        self.e = self.fs = value

    def set_re(self, r: int, e: int) -> None:
        old_r = self.r
        if r != KEEP:
            self.r = r
        if e != KEEP:
            self.e = self.fs = e
        if r != KEEP or (e != KEEP and e != old_r):
            self.s = self.e

    def set_res(self, r: int, e: int, s: int) -> None:
        if r != KEEP:
            self.r = r
        if e != KEEP:
            self.e = e
        if s != KEEP:
            self.s = s
        self.fs = self.e


@dataclasses.dataclass
class Creds:
    uid: Ids
    gid: Ids
    groups: list

    def __copy__(self):
        return Creds(dataclasses.replace(self.uid), dataclasses.replace(self.gid),
                     list(self.groups))


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

    def _ids(self, call) -> Ids:
        return call.state.uid if "uid" in call.name else call.state.gid

    @syscall("getuid", "getgid")
    def get_real(self, call):
        return self._ids(call).r

    @syscall("geteuid", "getegid")
    def get_effective(self, call):
        return self._ids(call).e

    @syscall("getresuid", "getresgid")
    def getres(self, call):
        ids = self._ids(call)
        for addr, value in zip(call.args[:3], (ids.r, ids.e, ids.s)):
            call.write(addr, struct.pack("I", value))
        return 0

    @syscall("setuid", "setgid")
    def set_one(self, call):
        self._ids(call).set_one(call.args[0] & KEEP)
        return 0

    @syscall("setreuid", "setregid")
    def set_re(self, call):
        self._ids(call).set_re(call.args[0] & KEEP, call.args[1] & KEEP)
        return 0

    @syscall("setresuid", "setresgid")
    def set_res(self, call):
        self._ids(call).set_res(*(a & KEEP for a in call.args[:3]))
        return 0

    @syscall("setfsuid", "setfsgid")
    def set_fs(self, call):
        ids = self._ids(call)
        old = ids.fs
        if call.args[0] & KEEP != KEEP:
            ids.fs = call.args[0] & KEEP
        return old

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
        if not 0 <= size <= NGROUPS_MAX:
            return -errno.EINVAL
        data = call.read(call.args[1], 4 * size) if size else b""
        call.state.groups = list(struct.unpack(f"{size}I", data))
        return 0


def _int(value: int) -> int:
    """A syscall's int argument (the low 32 bits, signed)."""
    value &= 0xffffffff
    return value - (1 << 32) if value >> 31 else value
