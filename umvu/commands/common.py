"""What the helper commands share: the 'am I in a view' check and errors."""

from __future__ import annotations

import argparse
import errno
import os
import sys

from .. import __version__, control

EXIT_STATUS = """\
exit status: 0 on success; 1 when the operation failed (one line
`NAME: what went wrong` on stderr); 2 for a usage error."""


class Parser(argparse.ArgumentParser):
    """The parser of every helper: --help and --version, and a usage
    error is one line, `NAME: what went wrong` (exit status 2)."""

    def __init__(self, name: str, doc: str, epilog: str | None = EXIT_STATUS, **kw):
        super().__init__(prog=name, description=doc.strip(), epilog=epilog,
                         formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
        self.add_argument("--version", action="version",
                          version=f"{name} (umvu) {__version__}")

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def prog() -> str:
    return os.path.basename(sys.argv[0])


def require_view() -> dict:
    info = control.get_info()
    if info is None:
        print(f"{prog()}: not running under umvu", file=sys.stderr)
        sys.exit(1)
    return info


def fail(message: str, status: int = 1):
    print(f"{prog()}: {message}", file=sys.stderr)
    sys.exit(status)


def describe(exc: OSError, name: str, what: str = "module") -> str:
    """One clear message for a failed control call."""
    special = {
        errno.ENOENT: f"{name}: no such {what}",
        errno.EEXIST: f"{name}: {what} already loaded",
        errno.EBUSY: f"{name}: {what} is in use",
        errno.EINVAL: f"{name}: invalid {what} name",
        errno.ENOEXEC: f"{name}: {what} cannot be loaded (see the umvu log)",
    }
    return special.get(exc.errno) or f"{name}: {exc.strerror}"
