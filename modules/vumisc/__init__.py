"""vumisc: time and host names of the view, configured through files.

    vu_insmod vumisc
    vumount -t vumisctime [-o monotonic] none /mnt     # frequency offset base
    vumount -t vumiscuname [-o nodename=N,...] none /etc/uname  # sysname nodename...

Each mount is a directory of settings (see time.py and uname.py); the
newest mount of each kind is the one in force. While a time view is
mounted the view bypasses the vDSO (ServiceContext.bypass_vdso), so that
clock_gettime, gettimeofday and time reach the handlers below even when a
program would have answered them in user space.
"""

from __future__ import annotations

import errno
import struct

from umvu.module import KERNEL, Module, syscall

from .time import NS, TimeService
from .uname import UnameService

EINTR = errno.EINTR
TIMER_ABSTIME = 1
ITIMER_REAL = 0


def _int32(value: int) -> int:
    value &= 0xffffffff
    return value - (1 << 32) if value >> 31 else value


class Vumisc(Module):
    name = "vumisc"
    description = "time and uname of the view (vumisctime, vumiscuname)"
    families = ("path",)        # the settings are files

    def init(self) -> None:
        self.times: list[TimeService] = []
        self.unames: list[UnameService] = []

    def mount(self, request):
        kinds = {"vumisctime": (TimeService, self.times),
                 "vumiscuname": (UnameService, self.unames)}
        if request.fstype not in kinds:
            raise OSError(errno.ENODEV, f"vumisc: unknown type {request.fstype!r} "
                          "(vumisctime or vumiscuname)")
        cls, table = kinds[request.fstype]
        cls.check(request)
        service = cls(self, request)
        table.append(service)
        return service

    def umount(self, service, flags) -> None:
        if service in self.times:
            self.times.remove(service)
            self.ctx.bypass_vdso(service, False)
        elif service in self.unames:
            self.unames.remove(service)
            if getattr(service, "proc", None) is not None:
                self.ctx.remove_service(service.proc)

    def fini(self) -> None:
        for service in list(self.times) + list(self.unames):
            self.umount(service, 0)

    # ---- time (virtual calls: see umvu.vcalls) ------------------------------
    @property
    def time(self) -> TimeService | None:
        # a mount that failed to attach never becomes current
        return next((t for t in reversed(self.times) if hasattr(t, "frequency")), None)

    @syscall("clock_gettime")
    def clock_gettime(self, call, clockid):
        t = self.time
        return KERNEL if t is None else t.now(clockid)

    @syscall("clock_settime")
    def clock_settime(self, call, clockid, ns):
        t = self.time
        if t is None or t.kind(clockid) != "real":
            return KERNEL
        if call.effective_uid() != 0:
            return -errno.EPERM
        return t.settime(clockid, ns)

    # ---- waits, with -o monotonic ---------------------------------------------
    def _paced(self):
        t = self.time
        return t if t is not None and t.monotonic and t.frequency != 1 else None

    def _timespec_in(self, call, t, index: int, writeback: bool = False) -> None:
        """Argument `index` points to a relative struct timespec: run the
        call with it scaled to real time (and the remainder the kernel
        writes back scaled to the view's, if writeback)."""
        addr = call.args[index]
        if not addr:
            return
        sec, nsec = struct.unpack("qq", call.read(addr, 16))
        if sec < 0 or not 0 <= nsec < NS:
            return                      # the kernel says EINVAL
        real = call.scratch(struct.pack("qq", *divmod(t.to_real(sec * NS + nsec), NS)))
        call.set_arg(index, real)
        if writeback:
            def hook(result):
                left = struct.unpack("qq", call.read(real, 16))
                virtual = t._scale(left[0] * NS + left[1])
                call.write(addr, struct.pack("qq", *divmod(virtual, NS)))
            call.on_exit(hook)

    @syscall("nanosleep")
    def nanosleep(self, call):
        t = self._paced()
        if t is None:
            return KERNEL
        self._timespec_in(call, t, 0)
        self._remainder_out(call, t, call.args[1])
        return KERNEL

    @syscall("clock_nanosleep")
    def clock_nanosleep(self, call):
        t = self._paced()
        clockid = _int32(call.args[0])
        if t is None or t.kind(clockid) is None:
            return KERNEL
        if call.args[1] & TIMER_ABSTIME:
            addr = call.args[2]
            if not addr:
                return KERNEL
            sec, nsec = struct.unpack("qq", call.read(addr, 16))
            virtual = sec * NS + nsec
            real = t.real_realtime(virtual) if t.kind(clockid) == "real" else \
                t.real_mono(virtual - (t.now(clockid) - t.now(1)))
            call.set_arg(2, call.scratch(struct.pack("qq", *divmod(max(real, 0), NS))))
            return KERNEL
        self._timespec_in(call, t, 2)
        self._remainder_out(call, t, call.args[3])
        return KERNEL

    @staticmethod
    def _remainder_out(call, t, rem: int) -> None:
        """A sleep broken off by a signal: its remaining time, in the
        view's time."""
        if not rem:
            return

        def hook(result):
            if result == -EINTR:
                sec, nsec = struct.unpack("qq", call.read(rem, 16))
                call.write(rem, struct.pack("qq", *divmod(t._scale(sec * NS + nsec), NS)))
        call.on_exit(hook)

    @syscall("alarm")
    def alarm(self, call):
        t = self._paced()
        if t is None:
            return KERNEL
        seconds = call.args[0] & 0xffffffff
        if seconds:
            call.set_arg(0, max(1, -(-t.to_real(seconds * NS) // NS)))
        call.on_exit(lambda left: round(t._scale(left * NS) / NS) if left > 0 else None)
        return KERNEL

    def _itimer_out(self, call, t, addr: int) -> None:
        """The kernel wrote a struct itimerval of real time at addr."""
        values = struct.unpack("qqqq", call.read(addr, 32))
        out = []
        for sec, usec in (values[:2], values[2:]):
            sec, rest = divmod(t._scale(sec * NS + usec * 1000), NS)
            out += [sec, rest // 1000]
        call.write(addr, struct.pack("qqqq", *out))

    @syscall("setitimer")
    def setitimer(self, call):
        t = self._paced()
        if t is None or call.args[0] & 0xffffffff != ITIMER_REAL:
            return KERNEL
        new, old = call.args[1], call.args[2]
        if new:
            values = struct.unpack("qqqq", call.read(new, 32))
            out = []
            for sec, usec in (values[:2], values[2:]):
                if sec < 0 or not 0 <= usec < 1_000_000:
                    return KERNEL       # EINVAL from the kernel
                sec, rest = divmod(t.to_real(sec * NS + usec * 1000), NS)
                out += [sec, -(-rest // 1000)]
            call.set_arg(1, call.scratch(struct.pack("qqqq", *out)))
        if old:
            call.on_exit(lambda result: self._itimer_out(call, t, old) if result == 0 else None)
        return KERNEL

    # timerfd and POSIX timers: struct itimerspec (interval, value), two
    # timespecs of durations unless the flags say TIMER_ABSTIME (an instant
    # on the timer's own clock, which the view does not follow: left alone)
    @syscall("timerfd_settime", "timer_settime")
    def timer_settime(self, call):
        t = self._paced()
        if t is None or call.args[1] & TIMER_ABSTIME:
            return KERNEL
        new, old = call.args[2], call.args[3]
        if new:
            values = struct.unpack("qqqq", call.read(new, 32))
            out = []
            for sec, nsec in (values[:2], values[2:]):
                if sec < 0 or not 0 <= nsec < NS:
                    return KERNEL       # EINVAL from the kernel
                out += list(divmod(t.to_real(sec * NS + nsec), NS)) if sec or nsec \
                    else [0, 0]         # 0 disarms: it stays 0
            call.set_arg(2, call.scratch(struct.pack("qqqq", *out)))
        if old:
            call.on_exit(lambda result: self._itimerspec_out(call, t, old)
                         if result == 0 else None)
        return KERNEL

    @syscall("timerfd_gettime", "timer_gettime")
    def timer_gettime(self, call):
        t = self._paced()
        if t is None or not call.args[1]:
            return KERNEL
        addr = call.args[1]
        call.on_exit(lambda result: self._itimerspec_out(call, t, addr)
                     if result == 0 else None)
        return KERNEL

    def _itimerspec_out(self, call, t, addr: int) -> None:
        """The kernel wrote a struct itimerspec of real time at addr."""
        values = struct.unpack("qqqq", call.read(addr, 32))
        out = []
        for sec, nsec in (values[:2], values[2:]):
            out += list(divmod(t._scale(sec * NS + nsec), NS))
        call.write(addr, struct.pack("qqqq", *out))

    @syscall("getitimer")
    def getitimer(self, call):
        t = self._paced()
        if t is None or call.args[0] & 0xffffffff != ITIMER_REAL or not call.args[1]:
            return KERNEL
        addr = call.args[1]
        call.on_exit(lambda result: self._itimer_out(call, t, addr) if result == 0 else None)
        return KERNEL

    def _ms_timeout(self, call, index: int):
        t = self._paced()
        if t is not None:
            ms = _int32(call.args[index])
            if ms > 0:
                call.set_arg(index, max(1, -(-t.to_real(ms * 1_000_000) // 1_000_000)))
        return KERNEL

    @syscall("poll")
    def poll(self, call):
        return self._ms_timeout(call, 2)

    @syscall("epoll_wait", "epoll_pwait")
    def epoll_wait(self, call):
        return self._ms_timeout(call, 3)

    @syscall("ppoll")
    def ppoll(self, call):
        t = self._paced()
        if t is not None:
            self._timespec_in(call, t, 2, writeback=True)
        return KERNEL

    @syscall("pselect6")
    def pselect6(self, call):
        t = self._paced()
        if t is not None:
            self._timespec_in(call, t, 4, writeback=True)
        return KERNEL

    @syscall("select")
    def select(self, call):
        t = self._paced()
        addr = call.args[4]
        if t is None or not addr:
            return KERNEL
        sec, usec = struct.unpack("qq", call.read(addr, 16))
        if sec < 0 or not 0 <= usec < 1_000_000:
            return KERNEL
        sec, rest = divmod(t.to_real(sec * NS + usec * 1000), NS)
        real = call.scratch(struct.pack("qq", sec, -(-rest // 1000)))
        call.set_arg(4, real)

        def hook(result):
            left_sec, left_usec = struct.unpack("qq", call.read(real, 16))
            sec, rest = divmod(t._scale(left_sec * NS + left_usec * 1000), NS)
            call.write(addr, struct.pack("qq", sec, rest // 1000))
        call.on_exit(hook)
        return KERNEL

    # ---- names ----------------------------------------------------------------
    @property
    def uname_service(self) -> UnameService | None:
        return next((u for u in reversed(self.unames) if hasattr(u, "names")), None)

    @syscall("uname")
    def uname(self, call):
        u = self.uname_service
        if u is None:
            return KERNEL
        call.write(call.args[0], u.utsname())
        return 0

    @syscall("sethostname", "setdomainname")
    def sethostname(self, call):
        u = self.uname_service
        if u is None:
            return KERNEL
        if call.effective_uid() != 0:
            return -errno.EPERM
        size = call.args[1]
        if size > 64:
            return -errno.EINVAL
        value = call.read(call.args[0], size).split(b"\0")[0].decode(errors="replace")
        u.names["nodename" if call.name == "sethostname" else "domainname"] = value
        return 0
