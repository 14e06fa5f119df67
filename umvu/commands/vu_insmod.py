"""vu_insmod [-p] MODULE...: load modules into the current view."""

import os
import sys

from .. import control
from .common import Parser, describe, prog, require_view


def build_parser() -> Parser:
    p = Parser("vu_insmod", __doc__)
    p.add_argument("-p", "--permanent", action="store_true",
                   help="the module cannot be removed")
    p.add_argument("modules", nargs="+", metavar="MODULE",
                   help="a module: built in (unrealuidgid, vufs, vufuse, vudev, "
                        "vunet, vumisc, vubinfmt), installed (entry point "
                        "umvu.modules) or ~/.vu/modules/MODULE.py")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    require_view()
    status = 0
    for name in args.modules:
        try:
            control.vucall(control.VU_INSMOD, os.fsencode(name), int(args.permanent))
        except OSError as exc:
            print(f"{prog()}: {describe(exc, name)}", file=sys.stderr)
            status = 1
    return status
