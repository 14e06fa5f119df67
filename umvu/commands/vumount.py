"""vumount [-t TYPE] [-o OPTIONS] SOURCE TARGET: mount(2) with no checks of its own."""

import ctypes
import os
import sys

from .common import Parser, prog

MS = {"ro": 1, "nosuid": 2, "nodev": 4, "noexec": 8, "sync": 16, "remount": 32,
      "mand": 64, "dirsync": 128, "noatime": 1024, "nodiratime": 2048,
      "bind": 4096, "move": 8192, "silent": 32768, "relatime": 1 << 21,
      "strictatime": 1 << 24, "lazytime": 1 << 25}
CLEARS = {"rw": "ro", "suid": "nosuid", "dev": "nodev", "exec": "noexec",
          "async": "sync", "atime": "noatime", "diratime": "nodiratime"}

_libc = ctypes.CDLL(None, use_errno=True)


def split_options(text: str) -> tuple[int, str]:
    """Turn mount(8)-style words into MS_* flags plus the data string."""
    flags, data = 0, []
    for word in filter(None, text.split(",")):
        if word in MS:
            flags |= MS[word]
        elif word in CLEARS:
            flags &= ~MS[CLEARS[word]]
        elif word != "defaults":
            data.append(word)
    return flags, ",".join(data)


def build_parser() -> Parser:
    p = Parser("vumount", __doc__)
    p.add_argument("-t", "--types", default="", metavar="TYPE",
                   help="the file system type: the newest loaded module whose "
                        "name prefixes it answers (vufs, vufuseext4, vudevloop, "
                        "vumisctime, vunetvdestack...)")
    p.add_argument("-o", "--options", default="", metavar="OPTIONS",
                   help="comma-separated options: mount(8)'s flags (ro, nosuid, "
                        "noexec...) and the module's own (cow, size=10M...)")
    p.add_argument("-r", "--read-only", action="store_true", help="mount read-only")
    p.add_argument("-w", "--rw", action="store_true", help="mount read-write (default)")
    p.add_argument("-B", "--bind", action="store_true", help="MS_BIND")
    p.add_argument("-M", "--move", action="store_true", help="MS_MOVE")
    p.add_argument("source", help="what to mount (a directory, an image, a URL, none)")
    p.add_argument("target", help="where: a path of the view (it need not exist)")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    flags, data = split_options(args.options)
    flags |= (MS["ro"] if args.read_only else 0) | (MS["bind"] if args.bind else 0) \
        | (MS["move"] if args.move else 0)
    ret = _libc.mount(os.fsencode(args.source), os.fsencode(args.target),
                      os.fsencode(args.types) or None, ctypes.c_ulong(flags),
                      os.fsencode(data) or None)
    if ret != 0:
        err = ctypes.get_errno()
        print(f"{prog()}: {args.target}: {os.strerror(err)}", file=sys.stderr)
        return 1
    return 0
