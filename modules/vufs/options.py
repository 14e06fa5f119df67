"""vufs mount options, as VUOS parses them (plus the generic `ro`)."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from umvu.module import linux

MODES = ("bind", "move", "merge", "cow", "mincow")


class OptionError(OSError):
    def __init__(self, message: str):
        super().__init__(errno.EINVAL, message)
        self.message = message


@dataclass
class Options:
    mode: str = "bind"
    excepts: list = field(default_factory=list)
    nochcopy: bool = False
    ro: bool = False


def parse(text: str, flags: int) -> Options:
    """Parse `-o` words; mount(2) flags carry what vumount turned into flags."""
    opts = Options(ro=bool(flags & linux.MS_RDONLY))
    modes = [m for m, bit in (("bind", linux.MS_BIND), ("move", linux.MS_MOVE)) if flags & bit]
    for word in filter(None, text.split(",")):
        key, eq, value = word.partition("=")
        if key in MODES and not eq:
            modes.append(key)
        elif key == "except" and eq:
            if not value.startswith("/") or ".." in value.split("/"):
                raise OptionError(f"vufs: except={value}: must be an absolute "
                                  "path inside the mount, without '..'")
            opts.excepts.append(value.rstrip("/") or "/")
        elif key == "nochcopy" and not eq:
            opts.nochcopy = True
        elif key in ("ro", "rw") and not eq:
            opts.ro = key == "ro"
        else:
            raise OptionError(f"vufs: unknown option {word}")
    if len(set(modes) - {"bind"}) > 1:
        raise OptionError("vufs: choose one of move, merge, cow and mincow")
    non_bind = [m for m in modes if m != "bind"]
    opts.mode = non_bind[0] if non_bind else "bind"
    return opts
