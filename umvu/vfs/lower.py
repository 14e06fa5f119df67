"""What a service sees: the view as it was before the service was mounted.

A service's own file operations go through here, so that they see only
older services (VUOS epochs) and, below them all, the host.
"""

from __future__ import annotations

import errno
import os

from ..module import Caller, PathCall, Redirect


class LowerView:
    def __init__(self, services, epoch: float):
        self.services = services
        self.epoch = epoch

    def real(self, path: str, op: str = "stat", flags: int = 0,
             name: str = "lstat") -> str:
        """The host path that `path` of this older view stands for."""
        before = self.epoch
        while True:
            service = self.services.for_path(path, before)
            if service is None:
                return path
            answer = service.path_call(PathCall(name, op, path, flags=flags))
            if not isinstance(answer, Redirect):
                if isinstance(answer, int) and answer < 0:
                    raise OSError(-answer, os.strerror(-answer), path)
                raise OSError(errno.EOPNOTSUPP, "served file below a service", path)
            path, before = answer.path, service.epoch

    def lstat(self, path: str) -> os.stat_result:
        return os.lstat(self.real(path))

    def stat(self, path: str) -> os.stat_result:
        return os.stat(self.real(path))

    def readlink(self, path: str, caller=None) -> str:
        real = self.real(path, name="readlink")
        # /proc/self seen through a service is the caller's, not ours
        pid = (caller if caller is not None and caller.pid else Caller.current()).pid
        if pid and real in ("/proc/self", "/proc/thread-self"):
            return str(pid) if real == "/proc/self" else f"{pid}/task/{pid}"
        return os.readlink(real)

    def exists(self, path: str) -> bool:
        try:
            self.lstat(path)
            return True
        except OSError:
            return False

    def listdir(self, path: str) -> list[str]:
        return os.listdir(self.real(path, op="open", name="open"))
