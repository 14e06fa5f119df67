"""vubinfmt: binfmt_misc for the view (foreign executables, interpreters).

    vu_insmod vubinfmt
    vumount -t vubinfmt none /proc/sys/fs/binfmt_misc
    echo ':vux:E::vux::/usr/bin/python3:' > /proc/sys/fs/binfmt_misc/register
    ./hello.vux                     # runs /usr/bin/python3 ./hello.vux

The mount point shows Linux's binfmt_misc files: `register` (write an
entry `:name:type:offset:magic:mask:interpreter:flags`), `status` and one
file per entry (read: its description; write 0, 1 or -1: disable, enable,
remove; to `status`: the same for the whole mount). A source of `/` or
`none` applies the entries to every executable of the view, a path only to
those below it. See docs/vubinfmt.md for what differs from the kernel.
"""

from __future__ import annotations

import abc
import errno
import itertools
import os
import re
import stat
import time

from umvu.module import Caller, Module, PathService, ServedFile

#: the kernel reads this much of a file to match magics (BINPRM_BUF_SIZE)
BUF_SIZE = 256
#: the longest register line the kernel takes
MAX_REGISTER = 1920
DT_DIR, DT_REG = 4, 8
FLAG_CHARS = "POCF"
# permission bits of the files, as binfmt_misc's
MODE_DIR, MODE_REGISTER, MODE_FILE = 0o755, 0o200, 0o644


class Entry:
    """One registered format."""

    def __init__(self, name: str, kind: str, offset: int, magic: bytes,
                 mask: bytes | None, interpreter: str, flags: str):
        self.name = name
        self.kind = kind                # "M": magic, "E": extension
        self.offset = offset
        self.magic = magic              # M: already masked; E: the extension
        self.mask = mask
        self.interpreter = interpreter  # as registered (shown, and argv[0])
        self.fixed = None               # F: the path resolved at registration
        self.flags = flags              # a subset of "POCF", in that order
        self.enabled = True
        self.ino = 0

    def matches(self, head: bytes, filename: str) -> bool:
        if self.kind == "E":
            dot = filename.rfind(".")       # of the whole name, as strrchr
            return dot >= 0 and filename[dot + 1:].encode() == self.magic
        window = head[self.offset:self.offset + len(self.magic)]
        window = window.ljust(len(self.magic), b"\0")  # the kernel's zeroed buffer
        if self.mask is None:
            return window == self.magic
        return all((b ^ m) & k == 0 for b, m, k in zip(window, self.magic, self.mask))

    def describe(self) -> str:
        """The entry's file, as the kernel writes it."""
        text = "enabled\n" if self.enabled else "disabled\n"
        text += f"interpreter {self.interpreter}\nflags: {self.flags}\n"
        if self.kind == "E":
            return text + f"extension .{self.magic.decode(errors='surrogateescape')}\n"
        text += f"offset {self.offset}\nmagic {self.magic.hex()}\n"
        if self.mask is not None:
            text += f"mask {self.mask.hex()}\n"
        return text


def _einval(message: str) -> OSError:
    return OSError(errno.EINVAL, message)


_HEX = re.compile(rb"\\x([0-9A-Fa-f]{2})")


def _unescape(field: bytes, what: str) -> bytes:
    """The kernel's \\xHH escapes (exactly two hex digits); other bytes,
    backslashes included, stand for themselves."""
    for found in re.finditer(rb"\\x", field):
        if not _HEX.match(field, found.start()):
            raise _einval(f"{what}: \\x must be followed by two hex digits")
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), field)


def parse_register(data: bytes) -> Entry:
    """An entry from a register line, checked as Linux's create_entry does;
    OSError(EINVAL, why) when malformed."""
    if not MAX_REGISTER >= len(data) >= 11:
        raise _einval(f"a line is 11 to {MAX_REGISTER} bytes, "
                      ":name:type:offset:magic:mask:interpreter:flags")
    delim = data[:1]
    fields = data[1:].split(delim)
    if len(fields) < 7:
        raise _einval(f"{len(fields)} fields where 7 are needed: "
                      ":name:type:offset:magic:mask:interpreter:flags")
    if len(fields) > 7:
        raise _einval("too many fields (flags are P, O, C and F)")
    name_b, kind_b, offset_b, magic_b, mask_b, interp_b, flags_b = fields
    name = os.fsdecode(name_b)
    if not name or name in (".", "..") or "/" in name:
        raise _einval(f"bad name {name!r}")
    if kind_b not in (b"M", b"E"):
        raise _einval(f"type is M (magic) or E (extension), not {kind_b.decode(errors='replace')!r}")
    kind = kind_b.decode()
    offset, mask = 0, None
    if kind == "M":
        if offset_b and not offset_b.isdigit():
            raise _einval(f"offset {offset_b.decode(errors='replace')!r} is not a number")
        offset = int(offset_b or b"0")
        if not magic_b:
            raise _einval("empty magic")
        magic = _unescape(magic_b, "magic")
        if mask_b:
            mask = _unescape(mask_b, "mask")
            if len(mask) != len(magic):
                raise _einval(f"the mask has {len(mask)} bytes, the magic {len(magic)}")
            magic = bytes(a & b for a, b in zip(magic, mask))
        if len(magic) + offset > BUF_SIZE:
            raise _einval(f"offset + magic beyond the first {BUF_SIZE} bytes")
    else:
        if not magic_b or b"/" in magic_b:
            raise _einval(f"bad extension {magic_b.decode(errors='replace')!r}")
        magic = magic_b
    interpreter = os.fsdecode(interp_b)
    if not interpreter:
        raise _einval("empty interpreter")
    flags = flags_b[:-1] if flags_b.endswith(b"\n") else flags_b
    if not set(flags.decode(errors="replace")) <= set(FLAG_CHARS):
        raise _einval(f"flags {flags.decode(errors='replace')!r}: only P, O, C and F")
    given = set(flags.decode())
    if "C" in given:
        given.add("O")                  # C implies O
    return Entry(name, kind, offset, magic, mask, interpreter,
                 "".join(c for c in FLAG_CHARS if c in given))


def parse_command(data: bytes) -> int:
    """0, 1 or -1 (a newline may follow), as the kernel's parse_command."""
    if len(data) > 3:
        raise OSError(errno.EINVAL, "write 0 (disable), 1 (enable) or -1 (remove)")
    text = data[:-1] if data.endswith(b"\n") else data
    if text in (b"0", b"1", b"-1"):
        return int(text)
    raise OSError(errno.EINVAL, "write 0 (disable), 1 (enable) or -1 (remove)")


# ---- the files ------------------------------------------------------------------

class _File(ServedFile):
    def __init__(self, service: "BinfmtService", ino: int, mode: int):
        self.service = service
        self.ino = ino
        self.mode = mode

    def stat(self):
        return self.service.stat_of(self.ino, self.mode)

    def truncate(self, size: int) -> None:
        pass                            # `echo ... > file` opens with O_TRUNC


class _Dir(_File):
    is_dir = True

    def readdir(self) -> list:
        svc = self.service
        return [(".", DT_DIR, 1), ("..", DT_DIR, 1), ("register", DT_REG, 2),
                ("status", DT_REG, 3)] + [
            (e.name, DT_REG, e.ino) for e in svc.entries.values()]

    def read(self, size: int, offset: int) -> bytes:
        raise OSError(errno.EISDIR, "is a directory")


class _Text(_File, abc.ABC):
    """A file whose content is text computed when read (status, an entry)."""

    @abc.abstractmethod
    def text(self) -> str:
        """The file's content now."""

    def read(self, size: int, offset: int) -> bytes:
        return self.text().encode(errors="surrogateescape")[offset:offset + size]


class _Register(_File):
    def read(self, size: int, offset: int) -> bytes:
        raise OSError(errno.EINVAL, "register is write-only")

    def write(self, data: bytes, offset: int) -> int:
        self.service.command("register", lambda: self.service.register(data))
        return len(data)


class _Status(_Text):
    def text(self) -> str:
        return "enabled\n" if self.service.enabled else "disabled\n"

    def write(self, data: bytes, offset: int) -> int:
        svc = self.service
        svc.command("status", lambda: svc.set_all(parse_command(data)))
        return len(data)


class _EntryFile(_Text):
    def __init__(self, service, entry: Entry):
        super().__init__(service, entry.ino, MODE_FILE)
        self.entry = entry

    def text(self) -> str:
        return self.entry.describe()

    def write(self, data: bytes, offset: int) -> int:
        svc = self.service
        svc.command(self.entry.name,
                    lambda: svc.set_entry(self.entry, parse_command(data)))
        return len(data)


# ---- the service ----------------------------------------------------------------

class BinfmtService(PathService):
    """One binfmt_misc instance: its entries apply below `scope` (None:
    everywhere)."""

    def __init__(self, module, request, scope: str | None):
        super().__init__(module, request)
        self.scope = scope
        self.entries: dict[str, Entry] = {}     # registration order
        self.enabled = True
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.time = int(time.time())
        self._inodes = itertools.count(4)

    # -- what exec asks -----------------------------------------------------------
    def interpret(self, request) -> list[str] | None:
        if not self.enabled:
            return None
        if self.scope is not None and not _under(request.path, self.scope):
            return None
        for entry in reversed(list(self.entries.values())):    # newest first
            if entry.enabled and entry.matches(request.head, request.filename):
                return self.argv_for(entry, request)
        return None

    def argv_for(self, entry: Entry, request) -> list[str]:
        """binfmt_misc's argv: interpreter, the file's name (with O:
        /proc/self/fd/N, a descriptor of it), argv[0] with P; the view
        appends argv[1:]."""
        interp = entry.fixed or entry.interpreter
        if "/" not in interp:
            interp = "./" + interp      # the kernel does not search PATH
        keep = [request.argv0] if "P" in entry.flags else []
        if "O" not in entry.flags:
            return [interp, request.filename] + keep
        # open-binary: a shell opens the file on the lowest descriptor free
        # after the exec (as the kernel's AT_EXECFD) and execs the interpreter
        fd = _lowest_free_fd(request.caller.tid)
        shell = "/bin/sh" if fd < 10 else "/bin/bash"   # dash: one digit only
        script = f'exec {fd}<"$0" || exit 126; exec "$@"'
        return [shell, "-c", script, request.filename, interp,
                f"/proc/self/fd/{fd}"] + keep

    # -- the files ----------------------------------------------------------------
    def stat_of(self, ino: int, mode: int):
        kind = stat.S_IFDIR if ino == 1 else stat.S_IFREG
        return os.stat_result((kind | mode, ino, 0x42494e4d, 2 if ino == 1 else 1,
                               self.uid, self.gid, 0, self.time, self.time, self.time))

    def _node(self, rel: str) -> _File | None:
        if rel == "":
            return _Dir(self, 1, MODE_DIR)
        if rel == "register":
            return _Register(self, 2, MODE_REGISTER)
        if rel == "status":
            return _Status(self, 3, MODE_FILE)
        entry = self.entries.get(rel)
        return _EntryFile(self, entry) if entry is not None else None

    def path_call(self, call):
        rel = call.path[len(self.target):].strip("/")
        if "/" in rel:
            parent = self._node(rel.split("/", 1)[0])
            return -errno.ENOTDIR if parent is not None else -errno.ENOENT
        node = self._node(rel)
        if node is None:
            if call.op == "open" and call.flags & os.O_CREAT or call.op == "create":
                return -errno.EACCES    # nothing is created here but by register
            return -errno.ENOENT
        if call.op == "stat":
            if call.name in ("readlink", "readlinkat"):
                return -errno.EINVAL
            if call.name == "statfs":
                return call.statfs_result({"f_bsize": 4096, "f_frsize": 4096,
                                           "f_namemax": 255})
            if call.name in ("access", "faccessat", "faccessat2"):
                return 0 if self._permitted(call.caller, node.mode, call.mode) \
                    else -errno.EACCES
            return call.stat_result(node.stat())
        if call.op == "open":
            if call.flags & os.O_CREAT and call.flags & os.O_EXCL:
                return -errno.EEXIST
            acc = call.flags & os.O_ACCMODE
            want = (4 if acc != os.O_WRONLY else 0) | (2 if acc != os.O_RDONLY else 0)
            if node.is_dir and want & 2:
                return -errno.EISDIR
            if call.flags & os.O_DIRECTORY and not node.is_dir:
                return -errno.ENOTDIR
            if not self._permitted(call.caller, node.mode, want):
                return -errno.EACCES
            return call.serve(node)
        if call.op == "modify" and call.name == "truncate":
            return 0
        return -errno.EPERM

    def _permitted(self, caller, mode: int, want: int) -> bool:
        """The owner's bits for the mount's owner, the others' for the rest."""
        uid = caller.fs_ids()[0]
        if uid == 0:
            return True
        bits = mode >> 6 if uid == self.uid else mode
        return bits & want == want

    # -- changes ------------------------------------------------------------------
    def command(self, what: str, change) -> None:
        """Run a change; a refusal is told on umvu's log stream too (the
        writer sees only its errno)."""
        try:
            change()
        except OSError as exc:
            self.ctx.log.warning("vubinfmt: %s: %s", what,
                                 exc.strerror or os.strerror(exc.errno))
            raise

    def register(self, data: bytes) -> None:
        entry = parse_register(data)
        if entry.name in self.entries or entry.name in ("register", "status"):
            raise OSError(errno.EEXIST, f"{entry.name} exists")
        if "F" in entry.flags:
            entry.fixed = self._fix(entry.interpreter)
        entry.ino = next(self._inodes)
        self.entries[entry.name] = entry

    def _fix(self, interpreter: str) -> str:
        """F: the interpreter is looked up now, by the writer, and must be
        there (as the kernel opens it at registration). A last symlink is
        kept (and followed at exec): qemu's name tells it its flags."""
        caller = Caller.current()
        try:
            path = self.ctx.resolve(caller, interpreter, follow=False)
            st = self.lower.stat(path) if self.lower is not None else os.stat(path)
        except OSError as exc:
            raise OSError(exc.errno, f"interpreter {interpreter}: "
                          f"{os.strerror(exc.errno)}") from None
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EACCES, f"interpreter {interpreter}: "
                          "not a regular file")
        return path

    def set_entry(self, entry: Entry, command: int) -> None:
        if command == -1:
            if self.entries.get(entry.name) is entry:
                del self.entries[entry.name]
        else:
            entry.enabled = bool(command)

    def set_all(self, command: int) -> None:
        if command == -1:
            self.entries.clear()
        else:
            self.enabled = bool(command)


def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top.rstrip("/") + "/")


def _lowest_free_fd(tid: int) -> int:
    """The lowest descriptor the process will have free once it has exec'd
    (its close-on-exec ones go then)."""
    used = set()
    try:
        for name in os.listdir(f"/proc/{tid}/fd"):
            try:
                with open(f"/proc/{tid}/fdinfo/{name}") as info:
                    flags = next((int(line.split()[1], 8) for line in info
                                  if line.startswith("flags:")), 0)
            except (OSError, ValueError):
                continue
            if not flags & os.O_CLOEXEC:
                used.add(int(name))
    except OSError:
        pass
    fd = 0
    while fd in used:
        fd += 1
    return fd


class Vubinfmt(Module):
    name = "vubinfmt"
    description = "binfmt_misc: interpreters for foreign executables"
    families = ("path",)

    def init(self) -> None:
        self.mounts: list[BinfmtService] = []

    def mount(self, request):
        source = request.source
        scope = None
        if source not in ("", "none", "/"):
            scope = self.ctx.resolve(request.caller, source)
            if scope == "/":
                scope = None
        service = BinfmtService(self, request, scope)
        self.mounts.append(service)
        return service

    def umount(self, service, flags: int) -> None:
        if service in self.mounts:
            self.mounts.remove(service)

    def exec_interpreter(self, request):
        for service in reversed(self.mounts):
            argv = service.interpret(request)
            if argv:
                return argv
        return None
