"""vufuse: file systems in user space, with no kernel FUSE and no root.

`vumount -t vufuseext2 -o rw+ IMAGE TARGET` starts the unmodified FUSE
program (fuse2fs) as a helper process of the view. Its open of /dev/fuse
gets a socket to the hypervisor, its mount(2) is answered here, and the
hypervisor speaks the kernel's side of the FUSE protocol to it. Any FUSE
program run by hand inside the view works the same way.
`vumount -t vufuse -o pyfs=module:Class SOURCE TARGET` mounts a fusepy
Operations class inside the hypervisor, with no daemon at all.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import threading
import time

from umvu.module import Caller, Module, MountRequest, PathService, Service, linux

from . import programs, pyfs
from .fusefs import FuseService

log = logging.getLogger("umvu")
DEFAULT_TIMEOUT = 30.0


def parse_options(text: str) -> tuple[dict, list[str]]:
    """vufuse's own options (rw+, fakeroot, prog=, pyfs=, timeout=) and the
    words left for the file system."""
    ours, rest = {}, []
    for word in filter(None, text.split(",")):
        key, eq, value = word.partition("=")
        if key in ("prog", "pyfs", "timeout") and eq:
            ours[key] = value
        elif word in ("rw+", "fakeroot"):
            ours[word] = True
        else:
            rest.append(word)
    return ours, rest


class DevFuse(PathService):
    """/dev/fuse in the view: opening it connects a socket to vufuse."""

    def __init__(self, module):
        super().__init__(module, MountRequest("vufuse", "/dev/fuse", "vufuse"))

    def lstat(self, path, caller=None):
        return os.stat_result((stat.S_IFCHR | 0o666, 0, 0, 1, 0, 0, 0, 0, 0, 0))

    def readlink(self, path, caller=None):
        raise OSError(errno.EINVAL, "not a symlink")

    def path_call(self, call):
        if call.op == "open":
            return call.connect(self.module.address, self.module.connected)
        if call.op == "stat":
            return call.stat_result(self.lstat(call.path))
        return -errno.EPERM


class Launch:
    """A daemon started by vumount, until its mount(2) arrives."""

    def __init__(self):
        self.done = threading.Event()
        self.conn = None


class Vufuse(Module):
    name = "vufuse"
    description = "vu virtual file systems (user level FUSE)"
    families = ("path",)
    fstypes = ("fuse", "fuseblk")

    def init(self):
        from .pathops import WireOperations
        from .session import FuseConnection
        self.FuseConnection, self.WireOperations = FuseConnection, WireOperations
        self.address = os.path.join(self.ctx.tmpdir, "vufuse.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.listener.bind(self.address)
        self.listener.listen(64)
        self.pending = {}       # (pid, fd) -> FuseConnection, before its mount(2)
        self.launches = {}      # helper mount point -> Launch
        self.counter = 0
        self.devfuse = DevFuse(self)
        self.ctx.add_service(self.devfuse)

    def fini(self):
        self.ctx.remove_service(self.devfuse)
        self.listener.close()

    def connected(self, pid: int, fd: int) -> None:
        """A process of the view opened /dev/fuse: its socket is our session."""
        sock, _ = self.listener.accept()
        conn = self.FuseConnection(sock, DEFAULT_TIMEOUT)
        conn.should_interrupt = _caller_signalled
        self.pending[(pid, fd)] = conn

    # ---- mount(2) ---------------------------------------------------------------
    def mount(self, request):
        if request.fstype.startswith("vufuse"):
            return self._vumount(request)
        return self._daemon_mount(request)

    def _daemon_mount(self, request):
        """A FUSE program's own mount(2), with fd=N from its /dev/fuse."""
        words = request.words()
        try:
            conn = self.pending.pop((request.caller.pid, int(words.get("fd") or -1)))
        except (KeyError, ValueError):
            raise OSError(errno.EINVAL, "vufuse: mount without a /dev/fuse of ours")
        launch = self.launches.get(request.target)
        if launch is not None:              # started by vumount: it waits
            launch.conn = conn
            launch.done.set()
            # so that the daemon's own umount at its end finds something
            return Service(self, request)
        service = FuseService(self, request, self.WireOperations(conn),
                              blocking=True, conn=conn,
                              readonly=bool(request.flags & linux.MS_RDONLY))
        self.ctx.submit(self._init_later, conn)
        return service

    def _init_later(self, conn):
        with self.ctx.unlocked():
            try:
                conn.init()
            except OSError as exc:
                log.error("vufuse: FUSE INIT failed: %s", exc)

    def _vumount(self, request):
        ours, rest = parse_options(request.options)
        readonly = bool(request.flags & linux.MS_RDONLY) or not ours.get("rw+")
        source, fstype, caller = request.source, request.fstype, request.caller
        if "pyfs" in ours:
            self.ctx.may_wait()             # module code runs on a worker
            fs = pyfs.load(ours["pyfs"], source, [])
            service = FuseService(self, request, pyfs.FusepyOperations(fs),
                                  blocking=False, readonly=readonly)
            service.fakeroot = bool(ours.get("fakeroot"))
            return service
        program, name = programs.program_for(fstype, ours, self.ctx.env.get("PATH"))
        if source not in ("none", "") and not source.startswith(("/", "~")) and \
                "://" not in source:
            source = self.ctx.resolve(caller, source)
        elif source.startswith("/"):
            source = self.ctx.resolve(caller, source)
        request.source = source
        self.ctx.may_wait()                # from here on: a worker thread
        try:
            timeout = float(ours.get("timeout", DEFAULT_TIMEOUT))
            if not 0 < timeout < 1e9:
                raise ValueError
        except ValueError:
            raise OSError(errno.EINVAL, f"vufuse: timeout={ours['timeout']}: "
                          "not a number of seconds") from None
        self.counter += 1
        helper_mnt = os.path.join(self.ctx.tmpdir, f"fuse-{self.counter}")
        os.mkdir(helper_mnt)
        if readonly:
            rest.append("ro")
        elif name == "fusefat":
            rest.append("rw+")
        launch = self.launches[helper_mnt] = Launch()
        argv = programs.argv_for(name, program, source, helper_mnt, rest)
        daemon = None
        try:
            daemon = self.ctx.start_helper(argv)
            with self.ctx.unlocked():
                deadline = time.monotonic() + timeout
                while not launch.done.wait(0.05):
                    if daemon.exited or time.monotonic() > deadline:
                        break
            if launch.conn is None:
                if daemon.exited:
                    raise OSError(errno.EINVAL, f"vufuse: {name} could not mount "
                                  f"{source} (exit status {daemon.status >> 8})")
                raise OSError(errno.ETIMEDOUT, f"vufuse: {name} did not mount "
                              f"{source} within {timeout:g} s")
            launch.conn.timeout = timeout
            with self.ctx.unlocked():
                launch.conn.init()
        except BaseException:
            # a daemon that did not mount (or answer INIT) must not outlive
            # the failed vumount: it would hold its image and the view
            if launch.conn is not None:
                launch.conn.close()
            if daemon is not None and not daemon.exited:
                self.ctx.stop_helper(daemon, 0)
            raise
        finally:
            del self.launches[helper_mnt]
        service = FuseService(self, request, self.WireOperations(launch.conn),
                              blocking=True, readonly=readonly, daemon=daemon,
                              conn=launch.conn)
        service.fakeroot = bool(ours.get("fakeroot"))
        return service

    def umount(self, service, flags):
        if not isinstance(service, FuseService):
            return
        if service.conn is None:
            try:
                service.ops.destroy()
            except OSError:
                pass
            return
        service.may_wait()
        with self.ctx.unlocked():
            try:
                service.conn.destroy()
            except OSError:
                pass
        if service.daemon is not None:
            self.ctx.stop_helper(service.daemon, 10.0)


def _caller_signalled() -> bool:
    """A signal for the process whose call waits: interrupt the request."""
    return Caller.current().signal_pending()
