"""vumiscuname: the system's names as the view shows them (VUOS's sysinfo).

    vumount -t vumiscuname [-o nodename=NAME,...] none /mnt

/mnt/sysname, nodename, release, version, machine and domainname start as
the host's (or as given with -o). uname(2), sethostname/setdomainname (as
virtual root) and /proc/sys/kernel/{ostype,hostname,osrelease,version,
domainname} follow them.
"""

from __future__ import annotations

import errno
import os
import struct

from umvu.module import PathService

from .config import ConfigFile, ConfigService, SettingError

FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")
FIELD_LEN = 65                  # struct utsname: six char[65]
#: /proc/sys/kernel/NAME -> field
PROC_FILES = {"ostype": "sysname", "hostname": "nodename", "osrelease": "release",
              "version": "version", "domainname": "domainname"}
PROC_KERNEL = "/proc/sys/kernel"


def host_names() -> dict[str, str]:
    names = dict(zip(FIELDS, os.uname()))
    try:
        with open(f"{PROC_KERNEL}/domainname") as f:
            names["domainname"] = f.read().strip()
    except OSError:
        names["domainname"] = "(none)"
    return names


class UnameService(ConfigService):
    FILES = FIELDS
    DUMPED = ("nodename", "domainname")

    @staticmethod
    def check(request) -> dict:
        """The -o words, or OSError with a message for the user."""
        words = request.words()
        for key, value in words.items():
            if key not in FIELDS:
                raise OSError(errno.EINVAL, f"vumiscuname: unknown option {key!r} "
                              f"(known: {', '.join(FIELDS)})")
            if len((value or "").encode()) >= FIELD_LEN:
                raise OSError(errno.EINVAL, f"vumiscuname: {key}: at most "
                              f"{FIELD_LEN - 1} bytes")
        return words

    def attach(self) -> None:
        super().attach()
        self.names = host_names()
        for key, value in self.check(self.request).items():
            self.set(key, value or "")
        self.proc = ProcKernel(self.module, self.request, self)
        self.ctx.add_service(self.proc)

    def text(self, name: str) -> str:
        return self.names[name] + "\n"

    def set(self, name: str, value: str) -> None:
        data = value.encode()
        if len(data) >= FIELD_LEN or b"\0" in data:
            raise SettingError(f"{name}: at most {FIELD_LEN - 1} bytes, no NUL")
        self.names[name] = value

    def utsname(self) -> bytes:
        return b"".join(struct.pack("65s", self.names[f].encode()) for f in FIELDS)


class ProcKernel(PathService):
    """/proc/sys/kernel/{ostype,hostname,...}: an internal service of a
    UnameService, serving its settings under the kernel's names."""

    def __init__(self, module, request, owner: UnameService):
        super().__init__(module, request)
        self.target = PROC_KERNEL
        self.owner = owner

    def confirm(self, path: str) -> bool:
        return path.rpartition("/")[0] == PROC_KERNEL and \
            path.rpartition("/")[2] in PROC_FILES

    def path_call(self, call):
        name = PROC_FILES[call.path.rpartition("/")[2]]
        owner = self.owner
        if call.op == "stat":
            if call.name in ("readlink", "readlinkat"):
                return -errno.EINVAL
            st = owner.file_stat(name)
            return call.stat_result(os.stat_result((st.st_mode, st.st_ino, 0x50524f43, 1,
                                                    0, 0, 0, *st[7:10])))
        if call.op == "open":
            truncate = bool(call.flags & os.O_TRUNC and call.flags & 3)
            return call.serve(ConfigFile(owner, name, truncate))
        if call.op == "modify" and call.name == "truncate":
            return 0
        return -errno.EPERM
