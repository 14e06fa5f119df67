"""What the helper commands share: the 'am I in a view' check and errors."""

from __future__ import annotations

import errno
import os
import sys

from .. import control


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
