"""vuname [-snrvmoUVa] [NAME]: print view and system information, or name the view."""

import os
import sys

from .. import control
from .common import Parser, prog, require_view

FIELDS = [("s", "kernel-name", "sysname"), ("n", "nodename", "nodename"),
          ("r", "kernel-release", "release"), ("v", "kernel-version", "version"),
          ("m", "machine", "machine"), ("o", "operating-system", None),
          ("U", "serverid", "serverid"), ("V", "viewname", "name")]


def build_parser() -> Parser:
    p = Parser("vuname", __doc__)
    for short, long, key in FIELDS:
        p.add_argument(f"-{short}", f"--{long}", action="store_true",
                       help=f"print the {long.replace('-', ' ')}")
    p.add_argument("-a", "--all", action="store_true", help="all fields")
    p.add_argument("--dump", action="store_true",
                   help="print the view as a view file (umvu --view FILE "
                        "builds it again)")
    p.add_argument("name", nargs="?", help="set the view name")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.dump:
        require_view()
        from ..viewfile import dump_running
        try:
            sys.stdout.write(dump_running())
        except OSError as exc:
            print(f"{prog()}: --dump: {exc.strerror}", file=sys.stderr)
            return 1
        return 0
    if args.name is not None:
        require_view()
        try:
            control.vucall(control.VUCTL, control.VUCTL_SETNAME, os.fsencode(args.name))
        except OSError as exc:
            print(f"{prog()}: {exc.strerror}", file=sys.stderr)
            return 1
        return 0
    info = control.get_info()
    if info is None:
        u = os.uname()
        info = dict(sysname=u.sysname, nodename=u.nodename, release=u.release,
                    version=u.version, machine=u.machine)
    info["o"] = "GNU/Linux/VUOS" if "serverid" in info else "GNU/Linux"
    chosen = [f for f in FIELDS if args.all or getattr(args, f[1].replace("-", "_"))]
    if not chosen:      # inside a view: everything; outside: as uname
        chosen = FIELDS if "serverid" in info else FIELDS[:1]
    words = [info["o"] if key is None else info.get(key, "") for _, _, key in chosen]
    print(" ".join(w for w in words if w))
    return 0
