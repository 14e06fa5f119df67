"""The virtual file system layer: path and descriptor syscalls while a
file-system service is mounted. The view knows only the `Vfs` facade here;
each job has its file:

  decode.py    registers -> what a call is about; structures written back
  paths.py     path calls and the redirect chain; cwd, root, socket names
  fdmirror.py  the descriptor mirror and per-process descriptor trapping
  exec.py      exec of served files, `#!` and modules' interpreters
  walk.py      the walker: a path resolved through the view
  lower.py     the older view a service's own file work sees
  procfs.py    /proc of the view (mounts, the magic links)
  served.py    served files (placeholders answered from a ServedFile)
  state.py     the data model: cwd, root and descriptor table of a process
  feeder.py    the one feeder of the C core's state

The view imports this package at the first vu_insmod, not before (start-up
time): nothing outside it imports from it at module level.
"""

from __future__ import annotations

import functools
import logging

from .. import syscall_table
from ..module import NOBODY, Module, _serve_for
from . import decode
from .exec import ExecCalls
from .fdmirror import FdMirror
from .feeder import CoreFeeder
from .paths import PathCalls
from .procfs import ProcLinks
from .served import ServedCalls
from .state import ProcFs
from .walk import Walker

log = logging.getLogger("umvu")

KEY = "_vfs"        # a process's ProcFs in its Process.data
FD_FAMILIES = ("fd", "fdmeta", "fdattr")


class Vfs:
    #: trapped whenever a file system is loaded, beyond the path family
    ALWAYS = ("fchdir", "io_uring_setup", "bind", "connect")

    def __init__(self, view):
        self.view = view
        self.services = view.services
        self.proc = ProcLinks(self)
        self.walker = Walker(self.services, self.proc.magic)
        self.served = ServedCalls(self)
        self.fds = FdMirror(self)
        self.paths = PathCalls(self)
        self.exec = ExecCalls(self)
        self.feeder = CoreFeeder(self)
        #: nr -> handler(stop, pfs, row)
        self.handlers = {}
        for sc in syscall_table.TABLE:
            method = self._own_method(sc)
            if sc.family in FD_FAMILIES and sc.fd is not None and sc.fd >= 0:
                method = functools.partial(self.fds.fd_call, then=method)
            if method is not None:
                self.handlers[sc.nr] = method

    def _own_method(self, sc):
        """The handler a part of the VFS has for this row, if any."""
        for part in (self.paths, self.fds, self.exec):
            method = getattr(part, "sys_" + sc.name, None)
            if method is not None:
                return method
        if sc.op is None:
            return None
        return self.paths.two_paths if sc.op in ("rename", "link") \
            else self.paths.one_path

    # ---- process state -------------------------------------------------------
    def state(self, proc) -> ProcFs:
        """The view's file-system state of a process (from the kernel's,
        the first time it is asked for)."""
        pfs = proc.data.get(KEY)
        if pfs is None:
            pfs = proc.data[KEY] = ProcFs.from_kernel(proc.pid, self.served.released)
            self.feeder.sync(proc)
        return pfs

    @staticmethod
    def known_state(proc) -> ProcFs | None:
        """The state of a process, if the view has made one."""
        return proc.data.get(KEY)

    def on_new_process(self, parent, child, flags) -> None:
        pfs = parent.data.get(KEY)
        if pfs is not None:
            child.data[KEY] = pfs.fork(flags)
            self.feeder.sync(child)

    def on_new_thread(self, proc, tid: int) -> None:
        if KEY in proc.data:
            self.feeder.sync(proc)

    def on_exec(self, proc) -> None:
        pfs = proc.data.get(KEY)
        if pfs is not None:
            new = proc.data[KEY] = pfs.exec()
            # the view's name of what runs, when the view chose it (else
            # the kernel's /proc/PID/exe is right)
            new.exe = getattr(proc, "pending_exe", None)
            proc.pending_exe = None
            if not self._shared(pfs.files, proc):
                pfs.files.drop_all()
            self.feeder.sync(proc)

    def on_exit(self, proc) -> None:
        pfs = proc.data.get(KEY)
        if pfs is not None and not self._shared(pfs.files, proc):
            pfs.files.drop_all()

    def _shared(self, files, proc) -> bool:
        """Does a process other than proc use this descriptor table?"""
        return any(p is not proc and p.data.get(KEY) is not None and
                   p.data[KEY].files is files
                   for p in self.view.tracer.processes.values())

    # ---- dispatch ---------------------------------------------------------------
    def on_syscall(self, stop):
        """A trapped call the VFS handles (stop.nr in handlers): the result,
        or None to let the kernel run it (maybe rewritten)."""
        handler = self.handlers.get(stop.nr)
        if handler is None:
            return None
        pfs = self.state(stop.process)
        _serve_for(decode.caller(stop))
        try:
            return handler(stop, pfs, syscall_table.BY_NR[stop.nr])
        finally:
            _serve_for(NOBODY)          # Caller.current() outside a call

    @staticmethod
    def answered(stop, by) -> None:
        """For --trace: who shaped this call (a service, or a module)."""
        module = by if isinstance(by, Module) else getattr(by, "module", None)
        stop.answered_by = module.name if module is not None else "umvu"

    # ---- busy mounts -----------------------------------------------------------------------
    def in_use(self, service) -> bool:
        """Is a process's cwd or open file below this service?"""
        for proc in self.view.tracer.processes.values():
            pfs = proc.data.get(KEY)
            if pfs is None:
                continue
            if self.services.for_path(pfs.fs.cwd) is service:
                log.debug("%s is busy: the cwd of process %d", service.target,
                          proc.pid)
                return True
            for fd, (entry, _) in list(pfs.files):
                if entry.service is not service:
                    continue
                if self.fds.still_open(proc.pid, fd, entry):
                    log.debug("%s is busy: process %d has it open as fd %d",
                              service.target, proc.pid, fd)
                    return True
                pfs.files.drop(fd)
        return False
