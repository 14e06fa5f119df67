"""vumisctime: the pace of time of the view.

    vumount -t vumisctime [-o monotonic] none /mnt

/mnt/frequency, /mnt/offset and /mnt/base (seconds, with nanoseconds) set

    T = (t - base) * frequency + base + offset

for CLOCK_REALTIME (and its coarse, alarm and TAI variants), gettimeofday
and time. Writing frequency keeps time continuous: base becomes now and
offset the difference so far. clock_settime/settimeofday as (virtual) root
move offset. With -o monotonic, CLOCK_MONOTONIC/BOOTTIME run at the same
pace (from the mount on) and so do the waits: nanosleep, clock_nanosleep,
alarm, setitimer(ITIMER_REAL), and the timeouts of poll, ppoll, select,
pselect6, epoll_wait and epoll_pwait.
"""

from __future__ import annotations

import errno
import time as _time
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from .config import ConfigService, SettingError

NS = 1_000_000_000
CLOCK_REALTIME, CLOCK_MONOTONIC = 0, 1
REALTIME_CLOCKS = {0: 0, 5: 5, 8: 0}            # realtime, _COARSE, _ALARM -> read as
MONOTONIC_CLOCKS = {1: 1, 4: 4, 6: 6, 7: 7, 9: 7}   # monotonic, _RAW, _COARSE, BOOTTIME, _ALARM
CLOCK_TAI = 11


def _seconds(ns: int) -> str:
    sign = "-" if ns < 0 else ""
    sec, rest = divmod(abs(ns), NS)
    return f"{sign}{sec}.{rest:09d}"


def _parse_seconds(name: str, text: str) -> int:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SettingError(f"{name}: {text!r} is not a number of seconds") from None
    if not value.is_finite():
        raise SettingError(f"{name}: {text!r} is not a number of seconds")
    return int(value * NS)


def _frequency_text(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else repr(float(f))


class TimeService(ConfigService):
    FILES = ("frequency", "offset", "base")
    DUMPED = ("frequency",)

    @staticmethod
    def check(request) -> dict:
        """The -o words, or OSError with a message for the user."""
        words = request.words()
        unknown = set(words) - {"monotonic"}
        if unknown:
            raise OSError(errno.EINVAL, f"vumisctime: unknown option {sorted(unknown)[0]!r} "
                          "(known: monotonic)")
        return words

    def attach(self) -> None:
        super().attach()
        self.monotonic = "monotonic" in self.check(self.request)
        self.frequency = Fraction(1)
        self.base = 0                   # ns of CLOCK_REALTIME
        self.offset = 0
        self.mbase = _time.clock_gettime_ns(CLOCK_MONOTONIC)
        self.moffset = 0
        # clock_gettime & co. must reach us even from the vDSO
        self.ctx.bypass_vdso(self, True)

    # ---- the settings ------------------------------------------------------
    def text(self, name: str) -> str:
        if name == "frequency":
            return _frequency_text(self.frequency) + "\n"
        return _seconds(self.offset if name == "offset" else self.base) + "\n"

    def set(self, name: str, value: str) -> None:
        if name == "frequency":
            try:
                f = Fraction(value)
            except (ValueError, ZeroDivisionError):
                raise SettingError(f"frequency: {value!r} is not a number") from None
            if f < 0:
                raise SettingError(f"frequency: {value} is negative")
            if f == 0 and self.monotonic:
                raise SettingError("frequency: 0 would stop every wait (-o monotonic)")
            self.set_frequency(f)
        elif name == "offset":
            self.offset = _parse_seconds(name, value)
        else:
            self.base = _parse_seconds(name, value)

    def set_frequency(self, f: Fraction) -> None:
        """Time goes on from where it is: base is now, offset what was gained."""
        now = _time.clock_gettime_ns(CLOCK_REALTIME)
        virtual = self.realtime(now)
        self.base, self.offset = now, virtual - now
        mnow = _time.clock_gettime_ns(CLOCK_MONOTONIC)
        mvirtual = self.mono(mnow)
        self.mbase, self.moffset = mnow, mvirtual - mnow
        self.frequency = f

    # ---- the clocks ----------------------------------------------------------
    def _scale(self, delta: int) -> int:
        f = self.frequency
        return delta * f.numerator // f.denominator

    def realtime(self, t: int) -> int:
        return self._scale(t - self.base) + self.base + self.offset

    def mono(self, m: int) -> int:
        return self._scale(m - self.mbase) + self.mbase + self.moffset

    def real_realtime(self, virtual: int) -> int:
        """The real CLOCK_REALTIME instant the view calls `virtual`."""
        return self.to_real(virtual - self.base - self.offset) + self.base

    def real_mono(self, virtual: int) -> int:
        return self.to_real(virtual - self.mbase - self.moffset) + self.mbase

    def to_real(self, duration: int) -> int:
        """A span of the view's time in real nanoseconds (rounded up)."""
        f = self.frequency
        if f == 1:
            return duration
        return -(-duration * f.denominator // f.numerator)

    def kind(self, clockid: int) -> str | None:
        """"real", "mono" or None (a clock this service leaves alone)."""
        if clockid in REALTIME_CLOCKS or clockid == CLOCK_TAI:
            return "real"
        if self.monotonic and clockid in MONOTONIC_CLOCKS:
            return "mono"
        return None

    def now(self, clockid: int) -> int | None:
        """The view's time of a clock in ns, None for the kernel's."""
        if clockid in REALTIME_CLOCKS:
            return self.realtime(_time.clock_gettime_ns(REALTIME_CLOCKS[clockid]))
        if clockid == CLOCK_TAI:
            real = _time.clock_gettime_ns(CLOCK_REALTIME)
            return self.realtime(real) + _time.clock_gettime_ns(CLOCK_TAI) - real
        if self.monotonic and clockid in MONOTONIC_CLOCKS:
            mnow = _time.clock_gettime_ns(CLOCK_MONOTONIC)
            clock = MONOTONIC_CLOCKS[clockid]
            other = _time.clock_gettime_ns(clock) - mnow if clock != CLOCK_MONOTONIC else 0
            return self.mono(mnow) + other
        return None

    def settime(self, clockid: int, ns: int) -> int | None:
        """clock_settime by a (virtual) root: offset moves."""
        if clockid != CLOCK_REALTIME:
            return None
        self.offset += ns - self.realtime(_time.clock_gettime_ns(CLOCK_REALTIME))
        return 0
