"""--trace: one log line per intercepted syscall; --trace=summary: a table
at the end (calls by name, by module, by kind of answer), like strace -c."""

from __future__ import annotations

import collections
import logging
import time

from . import tracefmt

log = logging.getLogger("umvu.trace")


def attach(view, lines: bool = True, summary: "Summary | None" = None) -> None:
    def on_trace(stop, result):
        if summary is not None:
            summary.add(stop, result)
        if not lines or not log.isEnabledFor(logging.DEBUG):
            return
        log.debug("%s", tracefmt.format_line(stop.process.pid, stop.nr, stop.args,
                                             stop.read, result, stop.answered_by))
    view.tracer.on_trace = on_trace
    if summary is not None:
        summary.wrap(view)


def answer_kind(stop, result) -> str:
    """How a call was answered: by a value, an error, a redirect (its
    arguments rewritten), watched (the kernel ran it, the view looked at
    the result) or passed to the kernel untouched."""
    if result is not None:
        return "error" if result < 0 else "value"
    if getattr(stop, "new_args", None):
        return "redirect"
    if getattr(stop, "exit_hook", None):
        return "watched"
    return "kernel"


class Summary:
    """Counts of the calls that reached Python, and their time there
    (from the stop to the answer, waits for a FUSE daemon included)."""

    def __init__(self):
        self.calls = collections.Counter()      # name -> calls
        self.errors = collections.Counter()     # name -> calls that failed
        self.seconds = collections.Counter()    # name -> time in the view
        self.modules = collections.Counter()    # module -> calls
        self.kinds = collections.Counter()      # answer kind -> calls
        self._start: dict[int, float] = {}
        self._view = None

    def wrap(self, view) -> None:
        """Time each call from its arrival in Python to its answer."""
        self._view = view
        on_syscall = view.on_syscall
        start = self._start

        def timed(stop):
            start[id(stop)] = time.perf_counter()
            return on_syscall(stop)
        view.on_syscall = timed

    def add(self, stop, result) -> None:
        name = tracefmt.syscall_name(stop.nr)
        t0 = self._start.pop(id(stop), None)
        if t0 is not None:
            self.seconds[name] += time.perf_counter() - t0
        self.calls[name] += 1
        if result is not None and result < 0:
            self.errors[name] += 1
        self.modules[getattr(stop, "answered_by", None) or "kernel"] += 1
        self.kinds[answer_kind(stop, result)] += 1

    def report(self) -> str:
        total = sum(self.calls.values())
        seconds = sum(self.seconds.values())
        lines = [f"trace summary: {total} calls reached the hypervisor's Python "
                 f"({seconds * 1e3:.1f} ms)"]
        try:
            from . import ccore
            fast = ccore.stats()
            lines.append(f"  and {fast['resumed']} were decided in C without it "
                         f"(path calls {fast['paths']}, descriptor calls {fast['fds']})")
        except Exception:
            pass
        lines.append("")
        lines.append(f"{'% time':>6} {'seconds':>9} {'usecs/call':>10} "
                     f"{'calls':>7} {'errors':>6} syscall")
        lines.append(f"{'-' * 6} {'-' * 9} {'-' * 10} {'-' * 7} {'-' * 6} {'-' * 16}")
        order = sorted(self.calls, key=lambda n: (-self.seconds[n], -self.calls[n], n))
        for name in order:
            s, n = self.seconds[name], self.calls[name]
            share = 100 * s / seconds if seconds else 0.0
            errors = self.errors[name] or ""
            lines.append(f"{share:6.2f} {s:9.6f} {int(s * 1e6 / n):10d} {n:7d} "
                         f"{errors!s:>6} {name}")
        lines.append(f"{'-' * 6} {'-' * 9} {'-' * 10} {'-' * 7} {'-' * 6} {'-' * 16}")
        lines.append(f"100.00 {seconds:9.6f} {int(seconds * 1e6 / total) if total else 0:10d} "
                     f"{total:7d} {sum(self.errors.values()) or ''!s:>6} total")
        lines.append("")
        lines.append(f"{'calls':>7} answered by")
        for module, n in self.modules.most_common():
            lines.append(f"{n:7d} {module}")
        lines.append("")
        lines.append(f"{'calls':>7} answer")
        for kind, n in self.kinds.most_common():
            lines.append(f"{n:7d} {kind}")
        return "\n".join(lines)
