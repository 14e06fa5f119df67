"""vustack [-f FAMILIES] [-s] [-v] STACK CMD [ARGS...]: run CMD with STACK as
its default network stack (as VUOS's vustack; CMD's own options need no --).

FAMILIES is a comma-separated list of address family names or numbers
(inet, inet6, netlink, packet...; aliases ip = inet,inet6,netlink,packet,
ipv4/ip4 = inet, ipv6/ip6 = inet6, bt = bluetooth, ir = irda). Without -f
(or -s) the stack serves every family it supports; -s adds every family
the stack supports; -v says which families were chosen."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys

from .. import control
from .common import prog, require_view

S_IFSTACK = 0o160000
SOCK_DEFAULT = 0
PF_NAMES = ["unspec", "local", "inet", "ax25", "ipx", "appletalk", "netrom",
            "bridge", "atmpvc", "x25", "inet6", "rose", "decnet", "netbeui",
            "security", "key", "netlink", "packet", "ash", "econet", "atmsvc",
            "rds", "sna", "irda", "pppox", "wanpipe", "llc", "ib", "mpls", "can",
            "tipc", "bluetooth", "iucv", "rxrpc", "isdn", "phonet", "ieee802154",
            "caif", "alg", "nfc", "vsock", "kcm", "qipcrtr", "smc", "xdp", "mctp"]
PF_MAX = len(PF_NAMES) + 10
ALIASES = {"ip": (2, 10, 16, 17), "ipv4": (2,), "ip4": (2,), "ipv6": (10,),
           "ip6": (10,), "bt": (31,), "ir": (23,), "unix": (1,)}

USAGE = """usage: {prog} [options] STACK CMD [ARGS...]
set the default networking stack of CMD

  -h, --help              print this short usage message
  -f, --family[ies] LIST  the address families (comma separated) to use STACK for
  -s, --supported         all families supported by the stack
  -v, --verbose           verbose mode
"""


def usage(verbose: bool = False, status: int = 1):
    text = USAGE.format(prog=prog())
    if verbose:
        text += "\naddress family names and numbers:\n" + "".join(
            f"{n:5d}: {name}\n" for n, name in enumerate(PF_NAMES) if n) + \
            "\naliases:\n  ip: inet,inet6,netlink,packet\n" \
            "  ipv4: inet, ip4: inet, ipv6: inet6, ip6: inet6, bt: bluetooth, ir: irda\n"
    print(text, end="", file=sys.stderr if status else sys.stdout)
    sys.exit(status)


def parse_families(text: str) -> set[int]:
    found = set()
    for word in text.split(","):
        word = word.strip().lower()
        if not word:
            continue
        if word in ALIASES:
            found.update(ALIASES[word])
        elif word.isdigit():
            n = int(word)
            if not 0 < n < PF_MAX:
                raise ValueError(word)
            found.add(n)
        elif word in PF_NAMES[1:]:
            found.add(PF_NAMES.index(word))
        else:
            raise ValueError(word)
    return found


def msocket(path: bytes, domain: int, type_: int) -> int:
    return control.vucall(control.MSOCKET, ctypes.c_char_p(path),
                          ctypes.c_int(domain), ctypes.c_int(type_), ctypes.c_int(0))


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    families: set[int] | None = None
    supported = verbose = False
    # options come first; the first word that is not one is STACK, and
    # everything after it belongs to CMD (no -- needed)
    while args and args[0].startswith("-") and args[0] != "-":
        opt = args.pop(0)
        if opt == "--":
            break
        value = None
        if opt.startswith("--"):
            opt, eq, value = opt.partition("=")
            value = value if eq else None
            names = {"--help": "h", "--verbose": "v", "--supported": "s",
                     "--family": "f", "--families": "f"}
            if opt not in names:
                print(f"{prog()}: unknown option {opt}", file=sys.stderr)
                usage(verbose)
            letters = [names[opt]]
        else:
            letters = list(opt[1:])
        while letters:
            letter = letters.pop(0)
            if letter == "h":
                usage(verbose, 0)
            elif letter == "v":
                verbose = True
            elif letter == "s":
                supported = True
            elif letter == "f":
                if value is None:
                    value = "".join(letters) if letters else (args.pop(0) if args else None)
                    letters = []
                if value is None:
                    print(f"{prog()}: -f needs a list of families", file=sys.stderr)
                    usage(verbose)
                try:
                    families = (families or set()) | parse_families(value)
                except ValueError as exc:
                    print(f"{prog()}: unknown protocol family {exc}", file=sys.stderr)
                    return 1
                value = None
            else:
                print(f"{prog()}: unknown option -{letter}", file=sys.stderr)
                usage(verbose)
    if len(args) < 2:
        usage(verbose)
    require_view()
    stack, command = args[0], args[1:]
    try:
        st = os.stat(stack)
    except OSError as exc:
        print(f"{prog()}: {stack}: {exc.strerror}", file=sys.stderr)
        return 1
    if stat.S_IFMT(st.st_mode) != S_IFSTACK:
        print(f"{prog()}: {stack}: not a network stack", file=sys.stderr)
        return 1
    path = os.fsencode(stack)
    if supported:
        families = families or set()
        for family in range(1, PF_MAX):
            try:
                os.close(msocket(path, family, -1))
                families.add(family)
            except OSError as exc:
                if exc.errno == errno.EINVAL:
                    families.add(family)
    try:
        if families is None:
            if verbose:
                print(f"Using {stack} for ALL address families", file=sys.stderr)
            msocket(path, 0, SOCK_DEFAULT)
        else:
            if verbose:
                names = " ".join(f"{PF_NAMES[f] if f < len(PF_NAMES) else 'unknown'}({f})"
                                 for f in sorted(families))
                print(f"Using {stack} for the following address families:\n    {names}",
                      file=sys.stderr)
            for family in sorted(families):
                msocket(path, family, SOCK_DEFAULT)
    except OSError as exc:
        print(f"{prog()}: {stack}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"{prog()}: {command[0]}: {exc.strerror}", file=sys.stderr)
        return 127 if exc.errno == errno.ENOENT else 126
