"""One-shot flags: `umvu --root --cow / -- CMD` and friends.

Each flag is sugar for view-file statements (umvu.viewfile), applied the
same way as `umvu --view FILE` (umvu.viewapply): the modules it needs are
loaded first, then the mounts in the order the flags were given, then the
user, host name and time. Temporary directories (a --cow store by default,
--clear's empty directory) are made here and removed when the view ends.
"""

from __future__ import annotations

import argparse
import os

from .viewfile import Statement, ViewFileError, Where

#: module load order when flags need several
MODULE_ORDER = ("unrealuidgid", "vufs", "vudev", "vufuse", "vunet", "vumisc")
#: what each flag needs
FLAG_MODULES = {"--root": "unrealuidgid", "--cow": "vufs", "--clear": "vufs",
                "--bind": "vufs", "--ro": "vufs", "--disk": "vudev",
                "--image": "vufuse", "--net": "vunet", "--hostname": "vumisc",
                "--time-scale": "vumisc"}
#: where --net puts its stack
NET_STACK = "/dev/net/umvu"


class SetupError(Exception):
    """The view cannot be built: printed as `umvu: ...`, exit status 2."""


class FlagError(SetupError):
    """A flag that cannot work: `umvu: --flag VALUE: why`."""


class _Ordered(argparse.Action):
    """Keep mount-like flags in command-line order (in args.mount_flags)."""

    def __call__(self, parser, namespace, values, option_string=None):
        flag = self.dest.replace("_", "-")
        items = list(getattr(namespace, "mount_flags", None) or [])
        items.append((f"--{flag}", values))
        namespace.mount_flags = items


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "view files", "a saved view (docs/viewfile.md)")
    g.add_argument("--view", metavar="FILE", action="append", default=[],
                   help="build the view FILE describes before CMD (repeatable); "
                        "any error stops umvu before CMD runs")
    g.add_argument("--check", metavar="FILE", action="append",
                   help="check view FILE (syntax, modules, users, values) "
                        "and exit; runs nothing")
    g.add_argument("--dump", action="store_true",
                   help="inside a view: print it as a view file "
                        "(as vuname --dump)")
    g = p.add_argument_group(
        "one-shot views", "flags that build common views; they combine, and "
        "combine with --view (whose statements come first)")
    g.add_argument("-0", "--root", action="store_true",
                   help="virtual root (unrealuidgid): CMD starts as uid 0; with "
                        "--cow, chown and chmod are kept in the store "
                        "(as fakeroot, proot -0)")
    g.add_argument("--cow", metavar="DIR[:STORE]", action=_Ordered,
                   help="DIR copy-on-write: changes go to STORE (default: a "
                        "temporary directory removed at the end) (as vido "
                        "--rw-dirs)")
    g.add_argument("--clear", metavar="DIR", action=_Ordered,
                   help="an empty temporary directory over DIR (as vido "
                        "--clear-dirs)")
    g.add_argument("-b", "--bind", metavar="SRC[:DST]", action=_Ordered,
                   help="SRC seen at DST (default: SRC itself) (as proot -b)")
    g.add_argument("--ro", metavar="DIR", action=_Ordered,
                   help="DIR read-only: every change fails with EROFS")
    g.add_argument("--disk", metavar="IMG", action=_Ordered,
                   help="IMG as the block device /dev/vda, the next as "
                        "/dev/vdb...; $VU_DISK0... name them (as vido --disk)")
    g.add_argument("--image", metavar="IMG:DIR", action=_Ordered,
                   help="the file system in IMG (ext2/3/4, vfat, exfat, "
                        "iso9660, squashfs, zip: guessed) seen read-only at DIR")
    g.add_argument("--net", metavar="slirp|vde:URL|none",
                   help="a network stack of the view's own (vunet)")
    g.add_argument("--hostname", metavar="NAME",
                   help="the view's host name (vumisc's vumiscuname)")
    g.add_argument("--time-scale", metavar="F",
                   help="the view's clocks and waits run F times as fast "
                        "(vumisc's vumisctime; 0.5, 2, 1/3)")
    p.set_defaults(mount_flags=[])


def wants_view(args) -> bool:
    """Do these options build anything before CMD?"""
    return bool(args.view or args.root or args.mount_flags or args.net
                or args.hostname or args.time_scale is not None)


def _where(flag: str, value) -> Where:
    return Where(f"{flag} {value}" if value not in (None, True) else flag, 0, 0)


def _split(value: str, flag: str, required: bool = False) -> tuple[str, str | None]:
    first, sep, second = value.partition(":")
    if not first or (sep and not second) or (required and not sep):
        raise FlagError(f"{flag} {value}: expected "
                        + {"--cow": "DIR[:STORE]", "--bind": "SRC[:DST]",
                           "-b": "SRC[:DST]", "--image": "IMG:DIR"}.get(flag, "A:B"))
    return first, (second if sep else None)


def _abs(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


class OneShot:
    """Statements for the flags, and the temporary directories they made."""

    def __init__(self):
        self.tempdirs: list[str] = []

    def _tempdir(self, kind: str) -> str:
        import tempfile
        d = tempfile.mkdtemp(prefix=f"umvu-{kind}-")
        self.tempdirs.append(d)
        return d

    def cleanup(self) -> None:
        for d in self.tempdirs:
            _rmtree(d)
        self.tempdirs.clear()

    def prepare(self, args) -> list[Statement]:
        """Every statement to apply before CMD: the view files', then the
        flags'; checked (SetupError with the file:line:col or the flag)."""
        from . import viewfile
        statements: list[Statement] = []
        try:
            for path in args.view:
                statements += viewfile.parse_file(path)
            flags = self.statements(args)
            missing_modules(flags)
            statements += flags
            viewfile.check(statements)
        except OSError as exc:
            raise SetupError(f"{exc.filename}: {exc.strerror}") from None
        except ViewFileError as exc:
            raise SetupError(str(exc)) from None
        return statements

    def statements(self, args) -> list[Statement]:
        """The statements the flags stand for (FlagError if one cannot work)."""
        needed: list[str] = []
        body: list[Statement] = []

        def need(flag):
            module = FLAG_MODULES[flag]
            if module not in needed:
                needed.append(module)

        disks = 0
        for flag, value in args.mount_flags:
            where = _where(flag, value)
            need(flag)
            if flag == "--cow":
                target, store = _split(value, flag)
                if store is None:
                    store = self._tempdir("cow")
                else:
                    store = _abs(store)
                    os.makedirs(store, exist_ok=True)
                body.append(_mount(where, "vufs", store, _abs(target), "cow"))
            elif flag == "--clear":
                body.append(_mount(where, "vufs", self._tempdir("clear"), _abs(value)))
            elif flag == "--bind":
                src, dst = _split(value, flag)
                body.append(_mount(where, "vufs", _abs(src), _abs(dst or src)))
            elif flag == "--ro":
                ro = _mount(where, "vufs", _abs(value), _abs(value))
                ro.opts["readonly"] = True
                body.append(ro)
            elif flag == "--disk":
                image = _abs(value)
                if not os.path.exists(image):
                    raise FlagError(f"--disk {value}: no such file")
                device = "/dev/vd" + "abcdefghijklmnopqrstuvwxyz"[disks]
                body.append(_mount(where, "vudevloop", image, device))
                body.append(Statement("export", [f"VU_DISK{disks}", device], {}, where))
                disks += 1
            elif flag == "--image":
                image, directory = _split(value, flag, required=True)
                image = _abs(image)
                kind = guess_type(image)        # FlagError if it cannot tell
                body.append(_mount(where, f"vufuse{kind}", image, _abs(directory)))
        tail: list[Statement] = []
        if args.net:
            need("--net")
            where = _where("--net", args.net)
            body += _net(args.net, where)
            tail.append(Statement("stack", [NET_STACK], {}, where))
        if args.root:
            need("--root")
            tail.append(Statement("user", ["root"], {}, _where("--root", None)))
        if args.hostname is not None:
            need("--hostname")
            tail.append(Statement("hostname", [args.hostname], {},
                                  _where("--hostname", args.hostname)))
        if args.time_scale is not None:
            need("--time-scale")
            tail.append(Statement("time-scale", [args.time_scale], {},
                                  _where("--time-scale", args.time_scale)))
        modules = [m for m in MODULE_ORDER if m in needed]
        head = [Statement("insmod", modules, {}, Where("the flags", 0, 0))] if modules else []
        return head + body + tail


def applier_argv(statements, path: str, command: list[str]) -> list[str]:
    """The first process of the view: python -m umvu.viewapply (see there)."""
    import sys
    from .viewfile import dumps
    isolated = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *isolated, "-m", "umvu.viewapply", dumps(statements),
            "--", path, *command]


def check_or_dump(args) -> int:
    """umvu --check FILE... / umvu --dump."""
    import sys
    from . import viewfile
    status = 0
    for path in args.check or ():
        try:
            statements = viewfile.check(viewfile.parse_file(path))
        except OSError as exc:
            print(f"umvu: {path}: {exc.strerror}", file=sys.stderr)
            status = 2
        except ViewFileError as exc:
            print(f"umvu: {exc}", file=sys.stderr)
            status = 2
        else:
            n = len(statements)
            print(f"{path}: ok ({n} statement{'s' if n != 1 else ''})")
    if args.dump:
        try:
            sys.stdout.write(viewfile.dump_running())
        except RuntimeError as exc:
            print(f"umvu: --dump: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"umvu: --dump: {exc.strerror}", file=sys.stderr)
            return 1
    return status


def _mount(where, fstype, source, target, options="") -> Statement:
    opts = {"type": fstype}
    if options:
        opts["options"] = options
    return Statement("mount", [source, target], opts, where)


def _net(spec: str, where) -> list[Statement]:
    """--net: a vunet stack at NET_STACK (then `stack NET_STACK`)."""
    if spec == "slirp":
        fstype, source = "vunetvdestack", "slirp://"
    elif spec.startswith("vde:"):
        fstype, source = "vunetvdestack", spec[4:]
        if not source:
            raise FlagError("--net vde:URL: the URL is missing (vde:///tmp/switch)")
    elif spec == "none":
        fstype, source = "vunetnull", "none"
    else:
        raise FlagError(f"--net {spec}: expected slirp, vde:URL or none")
    return [_mount(where, fstype, source, NET_STACK)]


def missing_modules(statements, find=None) -> None:
    """FlagError naming the first module the flags need that is not
    installed (a view file's own insmod lines are checked with it)."""
    if find is None:
        from .loader import find
    for st in statements:
        if st.kind != "insmod" or st.where is None or st.where.line != 0:
            continue
        for name in st.args:
            try:
                find(name)
            except OSError:
                flags = [f for f, m in FLAG_MODULES.items() if m == name]
                raise FlagError(f"{'/'.join(flags)}: needs module {name}, which "
                                "is not installed") from None


# ---- --image: what file system is in there ----------------------------------

#: blkid's TYPE -> vufuse type suffix
BLKID_TYPES = {"ext2": "ext2", "ext3": "ext3", "ext4": "ext4", "vfat": "fat",
               "msdos": "fat", "exfat": "exfat", "iso9660": "iso9660",
               "squashfs": "squashfs", "udf": "iso9660"}


def guess_type(image: str) -> str:
    """The vufuse type of an image: blkid -p, else the magic numbers."""
    try:
        with open(image, "rb") as f:
            head = f.read(0x8010)
    except OSError as exc:
        raise FlagError(f"--image {image}: {exc.strerror}") from None
    if head[:4] == b"PK\x03\x04" or head[:4] == b"PK\x05\x06":
        return "zip"
    import shutil
    import subprocess
    blkid = shutil.which("blkid") or next(
        (p for p in ("/sbin/blkid", "/usr/sbin/blkid") if os.access(p, os.X_OK)), None)
    if blkid:
        try:
            out = subprocess.run([blkid, "-p", "-o", "value", "-s", "TYPE", image],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        if out in BLKID_TYPES:
            return BLKID_TYPES[out]
    return _magic(head, image)


def _magic(head: bytes, image: str) -> str:
    if head[:4] in (b"hsqs", b"sqsh"):
        return "squashfs"
    if head[0x8001:0x8006] == b"CD001":
        return "iso9660"
    if head[0x438:0x43a] == b"\x53\xef":
        compat = int.from_bytes(head[0x45c:0x460], "little")
        incompat = int.from_bytes(head[0x460:0x464], "little")
        if incompat & 0x40 or incompat & 0x200:     # extents, flex_bg
            return "ext4"
        return "ext3" if compat & 0x4 else "ext2"  # has_journal
    if head[3:11] == b"EXFAT   ":
        return "exfat"
    if head[0x36:0x39] == b"FAT" or head[0x52:0x57] == b"FAT32":
        return "fat"
    raise FlagError(f"--image {image}: cannot tell its file system (ext2/3/4, "
                    "vfat, exfat, iso9660, squashfs, zip)")


def _rmtree(path: str) -> None:
    """Remove a temporary store, whatever modes the view left in it."""
    import shutil
    import stat
    def unlock(func, name, _exc):
        try:
            parent = os.path.dirname(name)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, os.stat(name).st_mode | stat.S_IRWXU)
            func(name)
        except OSError:
            pass
    shutil.rmtree(path, onerror=unlock)
