"""vu_insmod [-p] MODULE...: load modules into the current view."""

import os
import argparse
import sys

from .. import control
from .common import describe, prog, require_view


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=prog(), description=__doc__)
    p.add_argument("-p", "--permanent", action="store_true",
                   help="the module cannot be removed")
    p.add_argument("modules", nargs="+", metavar="MODULE")
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
