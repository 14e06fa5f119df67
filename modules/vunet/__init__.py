"""vunet: network stacks per process.

    vu_insmod vunet
    vumount -t vunetvdestack vde:///tmp/switch /dev/net/mynet   # any VDE URL
    vumount -t vunetpicox slirp:// /dev/net/slirp     # seed 004's name: the same
    vumount -t vunetnull none /dev/net/none           # no network (EAFNOSUPPORT)
    vumount -t vunetreal none /dev/net/host           # the host's stack
    vustack /dev/net/mynet ip addr                    # msocket(..., SOCK_DEFAULT)

A stack is a file of type stack (VUOS's S_IFSTACK) at its mount point. A
process's default stacks (one per address family) are its own, inherited
by its children and kept across exec; `msocket(path, domain, SOCK_DEFAULT,
0)` (control call -5, VUOS's ABI; domain 0: every family the stack serves)
sets them. socket() of a family with a default stack makes the socket in
that stack: a real kernel socket of the stack's network namespace, handed
to the caller (Call.answer_fd), so its I/O never stops in the tracer. Only
socket() is trapped; with no stack chosen a process uses the host's
network as before. docs/vunet.md says more.
"""

from __future__ import annotations

import errno
import os
import socket
import threading

from umvu.module import KERNEL, Module, syscall

from . import ioctls
from .stack import (AF_MAX, SOCK_DEFAULT, NullStack, RealStack, StackService)
from .vdestack import VdeStack

SOCK_CLOEXEC = socket.SOCK_CLOEXEC
SOCK_TYPE_MASK = 0xf
TYPES = {"vunetvdestack": VdeStack, "vunetpicox": VdeStack,
         "vunetnull": NullStack, "vunetreal": RealStack}


def _int(value: int) -> int:
    value &= 0xffffffff
    return value - (1 << 32) if value >> 31 else value


class Vunet(Module):
    name = "vunet"
    description = "virtual networking: per-process stacks (vdestack, slirp, null, real)"
    families = ("path",)        # a stack is a file at its mount point
    # socket() is trapped through its handler; send/recv/connect never are

    def init(self) -> None:
        self.stacks: dict[str, StackService] = {}
        self.lock = threading.Lock()

    def fini(self) -> None:
        for service in list(self.stacks.values()):
            self._stop(service)

    # per process: {family: stack}, copied at fork, kept at exec
    def new_state(self, pid):
        return {}

    def fork_state(self, state, flags):
        return dict(state) if state else {}

    def dump_state(self, state):
        """`umvu --dump`: the process's default stack, when one stack
        serves every family it set."""
        targets = {getattr(s, "target", None) for s in (state or {}).values()}
        if len(targets) == 1 and None not in targets:
            return {"stack": targets.pop()}
        return {}

    # ---- mounting ----------------------------------------------------------
    def mount(self, request):
        cls = TYPES.get(request.fstype)
        if cls is None:
            raise OSError(errno.ENODEV, f"vunet: unknown stack type "
                          f"{request.fstype!r} (vunetvdestack, vunetpicox, "
                          "vunetnull, vunetreal)")
        if request.target in self.stacks:
            raise OSError(errno.EBUSY, f"vunet: a stack is mounted on {request.target}")
        service = cls(self, request)
        if isinstance(service, VdeStack):
            self.ctx.may_wait()             # a namespace takes a while: a worker
            with self.ctx.unlocked():
                try:
                    service.start()
                except BaseException:
                    service.stop()
                    raise
        self.stacks[request.target] = service
        return service

    def umount(self, service, flags) -> None:
        self._stop(service)

    def _stop(self, service) -> None:
        if self.stacks.get(service.target) is service:
            del self.stacks[service.target]
        service.stop()

    # ---- sockets -----------------------------------------------------------
    @syscall("socket")
    def socket(self, call):
        defaults = call.state
        if not defaults:
            return KERNEL
        domain = _int(call.args[0])
        stack = defaults.get(domain)
        if stack is None:
            return KERNEL
        return self._make(call, stack, domain, _int(call.args[1]), _int(call.args[2]))

    def _make(self, call, stack, domain, type_, protocol):
        if not stack.alive:
            return -errno.ENETDOWN          # its stack was unmounted
        if not stack.supports(domain):
            return -errno.EAFNOSUPPORT
        fd = stack.socket(domain, type_, protocol)
        if fd is None:
            return KERNEL if not _is_notified(call) else self._host(call, domain, type_, protocol)
        try:
            return call.answer_fd(fd, cloexec=bool(type_ & SOCK_CLOEXEC))
        finally:
            os.close(fd)

    def _host(self, call, domain, type_, protocol):
        """msocket on the host's stack: the view makes the socket."""
        if os.geteuid() == 0 and call.effective_uid() != 0 and (
                domain == socket.AF_PACKET
                or type_ & SOCK_TYPE_MASK in (socket.SOCK_RAW, socket.SOCK_PACKET)):
            return -errno.EPERM             # not with the hypervisor's rights
        sock = socket.socket(domain, type_, protocol)
        try:
            return call.answer_fd(sock.fileno(), cloexec=bool(type_ & SOCK_CLOEXEC))
        finally:
            sock.close()

    @syscall("ioctl")
    def ioctl(self, call):
        """Interface ioctls (SIOCGIFINDEX...) reach the stack of the
        caller's netlink default whatever descriptor they name, as in VUOS:
        glibc's if_nametoindex asks them of an AF_UNIX socket, which lives
        in the host's namespace."""
        request = call.args[1] & 0xffffffff
        if request not in ioctls.IFREQ and request != ioctls.SIOCGIFCONF:
            return KERNEL
        defaults = call.state
        stack = defaults.get(socket.AF_NETLINK) if defaults else None
        if stack is None:
            return KERNEL
        if not stack.alive:
            return -errno.ENODEV
        fd = stack.ioctl_fd()
        if fd is None:
            return KERNEL
        return ioctls.run(call, fd, request, call.args[2])

    @syscall("msocket")
    def msocket(self, call):
        """msocket(path, domain, type, protocol): a socket of the stack at
        path (NULL: the caller's default for domain), or with type
        SOCK_DEFAULT, make that stack the caller's default for domain
        (0: for every family it serves)."""
        path_addr = call.args[0]
        domain, type_, protocol = (_int(a) for a in call.args[1:4])
        if domain < 0 or domain > AF_MAX:
            return -errno.EAFNOSUPPORT
        defaults = call.state
        if path_addr:
            stack = self._stack_at(call, path_addr)
        else:
            stack = defaults.get(domain) if defaults else None
            if stack is None:
                if type_ == SOCK_DEFAULT:
                    return -errno.EINVAL
                return self._host(call, domain, type_, protocol)
        if type_ == SOCK_DEFAULT:
            if not stack.alive:
                return -errno.ENETDOWN
            new = dict(defaults or {})
            if domain == 0:
                for family in stack.families:
                    new[family] = stack
            else:
                new[domain] = stack
            call.state = new
            return 0
        if type_ == -1:                     # vustack -s probes families
            return -errno.EINVAL if stack.supports(domain) else -errno.EAFNOSUPPORT
        return self._make(call, stack, domain, type_, protocol)

    def _stack_at(self, call, addr) -> StackService:
        try:
            raw = call.read_str(addr)
        except OSError:
            raise OSError(errno.EFAULT, "bad path") from None
        if not raw:
            raise OSError(errno.ENOENT, "empty path")
        path = self.ctx.resolve(call.caller, raw)
        stack = self.stacks.get(path)
        if stack is None:
            # not a stack: ENOTSUP if something is there (the view's path
            # walk found it), else ENOENT
            if os.path.lexists(path):
                raise OSError(errno.ENOTSUP, f"{raw}: not a stack")
            raise OSError(errno.ENOENT, f"{raw}: no such stack")
        return stack


def _is_notified(call) -> bool:
    """A control call (msocket) is answered with a value: the kernel can
    not be asked to make the socket."""
    return call.name == "msocket"
