"""vu_rmmod MODULE...: remove modules from the current view."""

import os
import sys

from .. import control
from .common import Parser, describe, prog, require_view


def build_parser() -> Parser:
    p = Parser("vu_rmmod", __doc__)
    p.add_argument("modules", nargs="+", metavar="MODULE",
                   help="a loaded module (EBUSY while something is mounted)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    require_view()
    status = 0
    for name in args.modules:
        try:
            control.vucall(control.VU_RMMOD, os.fsencode(name))
        except OSError as exc:
            if exc.errno == 2:
                print(f"{prog()}: {name}: module not loaded", file=sys.stderr)
            else:
                print(f"{prog()}: {describe(exc, name)}", file=sys.stderr)
            status = 1
    return status
