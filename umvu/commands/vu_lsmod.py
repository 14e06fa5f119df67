"""vu_lsmod: list the modules loaded in the current view."""

import argparse
import ctypes
import sys

from .. import control
from .common import prog, require_view


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=prog(), description=__doc__)
    p.parse_args(argv)
    require_view()
    size = control.vucall(control.VU_LSMOD, None, 0)
    buf = ctypes.create_string_buffer(size)
    size = control.vucall(control.VU_LSMOD, buf, size)
    sys.stdout.write(buf.raw[:size].split(b"\0", 1)[0].decode(errors="replace"))
    return 0
