"""--trace: one log line per intercepted syscall."""

from __future__ import annotations

import logging

from . import tracefmt

log = logging.getLogger("umvu.trace")


def attach(view) -> None:
    def on_trace(stop, result):
        if not log.isEnabledFor(logging.DEBUG):
            return
        log.debug("%s", tracefmt.format_line(stop.process.pid, stop.nr, stop.args,
                                             stop.read, result, view.answered_by))
    view.tracer.on_trace = on_trace
