"""Loggers that cost nothing until a message needs them.

`import logging` takes about 5 ms (it pulls in traceback, string, weakref,
threading...), a sixth of what `umvu true` may take. The hypervisor's own
files log through `getLogger(name)` here: a stand-in that drops debug and
info messages while `logging` has not been imported by anyone (then nobody
can have asked for them: no level was set, no handler added), and hands
everything else to the real logger, importing `logging` and running the
configuration umvu.cli left (`configure_later`) first.

Once `logging` is loaded, each stand-in binds the real logger's methods on
itself, so a hot path pays one attribute lookup, as with a real logger.
"""

from __future__ import annotations

import sys

DEBUG, INFO, WARNING = 10, 20, 30
_pending = []           # configuration to run when logging is first needed


def configure_later(func) -> None:
    """Run func() (which sets up handlers and levels) when `logging` is
    first needed; at once if it is loaded already."""
    if "logging" in sys.modules:
        func()
    else:
        _pending.append(func)


def ensure() -> None:
    """Import `logging` and run the pending configuration (before loading
    code that logs through `logging` itself, as modules do)."""
    import logging  # noqa: F401
    while _pending:
        _pending.pop(0)()


class LazyLogger:
    """logging.getLogger(name), fetched at the first message it must show."""

    def __init__(self, name: str):
        self.name = name

    def _bind(self):
        ensure()
        import logging
        real = logging.getLogger(self.name)
        for attr in ("debug", "info", "warning", "error", "exception",
                     "critical", "log", "isEnabledFor"):
            setattr(self, attr, getattr(real, attr))
        return real

    def __getattr__(self, attr):
        # reached only before _bind (bound methods then live on self)
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(self._bind(), attr)

    def debug(self, *args, **kw):
        if "logging" in sys.modules:
            self._bind().debug(*args, **kw)

    def info(self, *args, **kw):
        if "logging" in sys.modules:
            self._bind().info(*args, **kw)

    def isEnabledFor(self, level: int) -> bool:
        if level < WARNING and "logging" not in sys.modules:
            return False
        return self._bind().isEnabledFor(level)

    def warning(self, *args, **kw):
        self._bind().warning(*args, **kw)

    def error(self, *args, **kw):
        self._bind().error(*args, **kw)

    def exception(self, *args, **kw):
        kw.setdefault("exc_info", True)
        self._bind().error(*args, **kw)

    def critical(self, *args, **kw):
        self._bind().critical(*args, **kw)

    def log(self, level, *args, **kw):
        if level < WARNING and "logging" not in sys.modules:
            return
        self._bind().log(level, *args, **kw)


def format_exc() -> str:
    """traceback.format_exc(), importing traceback (~2 ms) only then."""
    import traceback
    return traceback.format_exc()


def getLogger(name: str) -> LazyLogger:
    return LazyLogger(name)
