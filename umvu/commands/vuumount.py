"""vuumount [-f|-l] TARGET: umount2(2) with no checks of its own."""

import ctypes
import os
import sys

from .common import Parser, prog

from ..linux import MNT_DETACH, MNT_FORCE  # noqa: E402
_libc = ctypes.CDLL(None, use_errno=True)


def build_parser() -> Parser:
    p = Parser("vuumount", __doc__)
    p.add_argument("-f", "--force", action="store_true",
                   help="unmount even while in use (MNT_FORCE)")
    p.add_argument("-l", "--lazy", "-d", "--detach", action="store_true",
                   dest="lazy", help="detach now, even while in use (MNT_DETACH)")
    p.add_argument("target", help="the mount point")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    flags = (MNT_FORCE if args.force else 0) | (MNT_DETACH if args.lazy else 0)
    if _libc.umount2(os.fsencode(args.target), flags) != 0:
        err = ctypes.get_errno()
        print(f"{prog()}: {args.target}: {os.strerror(err)}", file=sys.stderr)
        return 1
    return 0
