"""vu_lsmod: list the modules loaded in the current view."""

import ctypes
import sys

from .. import control
from .common import Parser, require_view


def build_parser() -> Parser:
    p = Parser("vu_lsmod", __doc__)
    return p


def main(argv=None) -> int:
    p = build_parser()
    p.parse_args(argv)
    require_view()
    size = control.vucall(control.VU_LSMOD, None, 0)
    buf = ctypes.create_string_buffer(size)
    size = control.vucall(control.VU_LSMOD, buf, size)
    sys.stdout.write(buf.raw[:size].split(b"\0", 1)[0].decode(errors="replace"))
    return 0
