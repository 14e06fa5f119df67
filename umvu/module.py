"""The API a module is written against. Modules import only this file.

A module is a class with a name, a description, the syscall families or
names it wants to see, handlers for those calls, and optional hooks:

    from umvu.module import Module, syscall

    class Hello(Module):
        name = "hello"
        description = "says hello"

        @syscall("getpid")
        def getpid(self, call):
            return 42          # answer; return KERNEL to let the kernel run it

A module that can be mounted (`vumount -t NAME...`) implements mount(), which
returns a Service; umount() is called when it goes away.
"""

from __future__ import annotations

import copy
import errno
import os
from typing import Any

#: returned by a handler: the call is not ours, the kernel runs it
KERNEL = None


def syscall(*names: str):
    """Mark a method as the handler of the named syscalls."""
    def mark(func):
        func.umvu_syscalls = names
        return func
    return mark


class Call:
    """One intercepted call, as a module sees it."""

    __slots__ = ("name", "nr", "args", "_stop", "view", "module")

    def __init__(self, name: str, stop, view, module: "Module"):
        self.name = name
        self.nr = stop.nr
        self.args = stop.args
        self._stop = stop
        self.view = view
        self.module = module

    @property
    def pid(self) -> int:
        return self._stop.process.pid

    @property
    def tid(self) -> int:
        return self._stop.tid

    @property
    def state(self) -> Any:
        """This module's per-process state for the calling process."""
        return self.view.process_state(self._stop.process, self.module)

    @state.setter
    def state(self, value: Any) -> None:
        self._stop.process.data[self.module.name] = value

    def read(self, addr: int, size: int) -> bytes:
        return self._stop.read(addr, size)

    def read_str(self, addr: int, limit: int = 4096) -> str:
        return os.fsdecode(self._stop.read_str(addr, limit))

    def write(self, addr: int, data: bytes) -> None:
        if addr == 0:
            raise OSError(errno.EFAULT, "NULL pointer")
        self._stop.write(addr, data)


class Service:
    """One mounted instance of a module: what `vumount` created."""

    def __init__(self, module: "Module", source: str, target: str,
                 fstype: str, flags: int, options: str):
        self.module = module
        self.source = source
        self.target = target
        self.fstype = fstype
        self.flags = flags
        self.options = options
        self.epoch = 0          # set by the service table

    def confirm(self, path: str) -> bool:
        """False lets an older service (or the kernel) answer for path."""
        return True

    def __repr__(self):
        return (f"<{type(self).__name__} {self.fstype} {self.source} on "
                f"{self.target} epoch={self.epoch}>")


class Module:
    name: str = ""
    description: str = ""
    #: syscall families (see umvu.syscall_table) trapped while loaded
    families: tuple[str, ...] = ()

    def __init__(self, view):
        self.view = view

    # optional hooks -------------------------------------------------------
    def init(self) -> None:
        """Called once when loaded."""

    def fini(self) -> None:
        """Called once when removed."""

    def new_state(self, pid: int) -> Any:
        """Per-process state for a process first seen by this module."""
        return None

    def fork_state(self, state: Any, flags: int) -> Any:
        """State of a new child, from its parent's (default: a copy)."""
        return copy.copy(state)

    def exec_state(self, state: Any) -> Any:
        return state

    def mount(self, source: str, target: str, fstype: str, flags: int,
              options: str) -> Service:
        raise OSError(errno.ENODEV, f"{self.name} cannot be mounted")

    def umount(self, service: Service, flags: int) -> None:
        """Called when service goes away."""

    # ----------------------------------------------------------------------
    @classmethod
    def handlers(cls) -> dict[str, str]:
        """syscall name -> method name, from @syscall marks."""
        found = {}
        for attr in dir(cls):
            func = getattr(cls, attr, None)
            for name in getattr(func, "umvu_syscalls", ()):
                found[name] = attr
        return found
