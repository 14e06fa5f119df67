"""vuname [-snrvmoUVa] [NAME]: print view and system information, or name the view."""

import argparse
import os
import sys

from .. import control
from .common import prog, require_view

FIELDS = [("s", "kernel-name", "sysname"), ("n", "nodename", "nodename"),
          ("r", "kernel-release", "release"), ("v", "kernel-version", "version"),
          ("m", "machine", "machine"), ("o", "operating-system", None),
          ("U", "serverid", "serverid"), ("V", "viewname", "name")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=prog(), description=__doc__)
    for short, long, _ in FIELDS:
        p.add_argument(f"-{short}", f"--{long}", action="store_true")
    p.add_argument("-a", "--all", action="store_true", help="all fields")
    p.add_argument("name", nargs="?", help="set the view name")
    args = p.parse_args(argv)
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
