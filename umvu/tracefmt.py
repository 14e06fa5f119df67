"""strace-like formatting of one intercepted syscall (x86_64), for umvu --trace.

Syscall names and most argument formatting come from python-ptrace
(``ptrace.syscall``).  Its object model wants a traced PtraceProcess; here a
small fake process (memory reads go through a caller supplied
``read_mem(addr, size) -> bytes``) and fake registers drive PtraceSyscall and
its SyscallArgument formatting, with a few strace-like corrections layered on
top (double-quoted, C-escaped strings truncated at 32 chars, O_* flags without
the octal suffix, AT_FDCWD for every dirfd, 32/64-bit integer handling,
unpadded hex pointers, the umvu control calls -1..-5).

Public API:
    syscall_name(nr) -> str
    format_call(nr, args, read_mem) -> str
    format_line(pid, nr, args, read_mem, result, answered_by) -> str

Nothing here ever raises: on any internal error the call falls back to
``name(0x..., 0x..., ...)``.
"""

import ctypes
import errno as _errno
import os
import re
import types

__all__ = ["syscall_name", "format_call", "format_line", "STRING_MAX"]

STRING_MAX = 32          # strace's default -s
ARRAY_MAX = 32           # argv entries shown before "..."
_PAGE = 4096
_MASK64 = (1 << 64) - 1

CONTROL_NAMES = {
    -1: "vu_insmod",
    -2: "vu_rmmod",
    -3: "vu_lsmod",
    -4: "vuctl",
    -5: "msocket",
}

# x86_64 numbers newer than python-ptrace's table (0.9.9 stops at 440).
_EXTRA_NAMES = {
    283: "timerfd_create",   # python-ptrace says "timerfd"
    441: "epoll_pwait2", 442: "mount_setattr", 443: "quotactl_fd",
    444: "landlock_create_ruleset", 445: "landlock_add_rule",
    446: "landlock_restrict_self", 447: "memfd_secret",
    448: "process_mrelease", 449: "futex_waitv",
    450: "set_mempolicy_home_node", 451: "cachestat", 452: "fchmodat2",
    453: "map_shadow_stack", 454: "futex_wake", 455: "futex_wait",
    456: "futex_requeue", 457: "statmount", 458: "listmount",
    459: "lsm_get_self_attr", 460: "lsm_set_self_attr",
    461: "lsm_list_modules", 462: "mseal", 463: "setxattrat",
    464: "getxattrat", 465: "listxattrat", 466: "removexattrat",
    467: "open_tree_attr",
}

try:
    # Import the x86_64 table explicitly: ptrace.syscall.SYSCALL_NAMES
    # follows the host CPU.
    from ptrace.syscall.linux.x86_64 import SYSCALL_NAMES as _PT_NAMES
except Exception:  # pragma: no cover - library missing or broken
    _PT_NAMES = {}

try:
    from ptrace.ctypes_tools import formatAddress, formatWordHex
    from ptrace.func_call import FunctionCallOptions
    from ptrace.syscall.prototypes import FILENAME_ARGUMENTS, SYSCALL_PROTOTYPES
    from ptrace.syscall.ptrace_syscall import PtraceSyscall
    from ptrace.syscall.syscall_argument import SyscallArgument
    from ptrace.syscall.syscall_argument import ARGUMENT_CALLBACK
    from ptrace.syscall.linux_constants import SYSCALL_ARG_DICT
    from ptrace.syscall.posix_arg import formatAccessMode, CLONE_FLAGS_BITMASK
    from ptrace.signames import signalName
    from ptrace.syscall.socketcall_constants import SOCKET_FAMILY
    _HAVE_PTRACE = True
except Exception:  # pragma: no cover - library missing or broken
    _HAVE_PTRACE = False


# --------------------------------------------------------------------------
# small helpers (no python-ptrace needed)

def _u64(v):
    return int(v) & _MASK64


def _s64(v):
    v = int(v) & _MASK64
    return v - (1 << 64) if v & (1 << 63) else v


def _s32(v):
    v = int(v) & 0xFFFFFFFF
    return v - (1 << 32) if v & (1 << 31) else v


def _hex(v):
    try:
        return "0x%x" % _u64(v)
    except Exception:
        return "?"


def _ptr(v):
    return "NULL" if not _u64(v) else _hex(v)


def syscall_name(nr):
    """Name of syscall ``nr`` (x86_64), umvu control calls for -1..-5."""
    try:
        nr = int(nr)
        if nr in CONTROL_NAMES:
            return CONTROL_NAMES[nr]
        if nr in _EXTRA_NAMES:
            return _EXTRA_NAMES[nr]
        # 512..547 in python-ptrace's table are x32-only numbers
        if 0 <= nr < 512 and nr in _PT_NAMES:
            return _PT_NAMES[nr]
        return "syscall_%d" % nr
    except Exception:
        return "syscall_%s" % (nr,)


_SIMPLE_ESCAPES = {
    0x22: '\\"', 0x5C: "\\\\", 0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r",
    0x0C: "\\f", 0x0B: "\\v",
}


def _quote(data):
    """C-style double-quoted string, octal escapes like strace."""
    out = ['"']
    n = len(data)
    for i, b in enumerate(data):
        esc = _SIMPLE_ESCAPES.get(b)
        if esc is not None:
            out.append(esc)
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        elif i + 1 < n and 0x30 <= data[i + 1] <= 0x37:
            out.append("\\%03o" % b)
        else:
            out.append("\\%o" % b)
    out.append('"')
    return "".join(out)


# Linux-internal errnos that may leak to a tracer (include/linux/errno.h)
_KERNEL_ERRNO = {
    512: ("ERESTARTSYS", "To be restarted if SA_RESTART is set"),
    513: ("ERESTARTNOINTR", "To be restarted"),
    514: ("ERESTARTNOHAND", "To be restarted if no handler"),
    515: ("ENOIOCTLCMD", "No ioctl command"),
    516: ("ERESTART_RESTARTBLOCK", "Interrupted by signal"),
    517: ("EPROBE_DEFER", "Requested probe deferral"),
    518: ("EOPENSTALE", "Open found a stale dentry"),
    519: ("ENOPARAM", "Parameter not supported"),
    521: ("EBADHANDLE", "Illegal NFS file handle"),
    522: ("ENOTSYNC", "Update synchronization mismatch"),
    523: ("EBADCOOKIE", "Cookie is stale"),
    524: ("ENOTSUPP", "Operation is not supported"),
    525: ("ETOOSMALL", "Buffer or request is too small"),
    526: ("ESERVERFAULT", "An untranslatable error occurred"),
    527: ("EBADTYPE", "Type not supported by server"),
    528: ("EJUKEBOX", "Request initiated, but will not complete before timeout"),
    529: ("EIOCBQUEUED", "iocb queued, will get completion event"),
    530: ("ERECALLCONFLICT", "Conflict with recalled state"),
}
# errno.errorcode picks the "other" alias for these; strace shows these names
_ERRNO_PREFERRED = {11: "EAGAIN", 35: "EDEADLK", 95: "EOPNOTSUPP"}

_PTR_RESULT = {"mmap", "mremap", "brk", "shmat"}


def _format_result(name, result):
    if result is None:
        return "?"
    r = _s64(result)
    if -4095 <= r <= -1:
        e = -r
        if e in _KERNEL_ERRNO:
            ename, desc = _KERNEL_ERRNO[e]
        else:
            ename = _ERRNO_PREFERRED.get(e) or _errno.errorcode.get(e) or str(e)
            try:
                desc = os.strerror(e)
            except Exception:
                desc = "Unknown error %d" % e
        return "-1 %s (%s)" % (ename, desc)
    if name in _PTR_RESULT:
        return _hex(r)
    return str(r)


def _fallback_call(nr, args):
    try:
        name = syscall_name(nr)
    except Exception:
        name = "syscall_?"
    try:
        parts = [_hex(a) for a in (args or ())]
    except Exception:
        parts = ["?"]
    return "%s(%s)" % (name, ", ".join(parts))


# --------------------------------------------------------------------------
# strace-like value formatters

_O_FLAGS = (  # x86_64 values; composite masks first
    (0o20200000, "O_TMPFILE"),
    (0o4010000, "O_SYNC"),
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"),
    (0o1000, "O_TRUNC"), (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"),
    (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"), (0o40000, "O_DIRECT"),
    (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"),
    (0o2000000, "O_CLOEXEC"), (0o10000000, "O_PATH"),
)
_O_ACCMODE = ("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")
_O_CREAT = 0o100
_O_TMPFILE_BIT = 0o20000000


def _bits(value, table, start=None):
    parts = list(start or [])
    for mask, name in table:
        if value & mask == mask:
            parts.append(name)
            value &= ~mask
    if value:
        parts.append(_hex(value))
    return parts


def _open_flags(value):
    v = value & 0xFFFFFFFF
    return "|".join(_bits(v & ~3, _O_FLAGS, [_O_ACCMODE[v & 3]]))


_AT_FLAGS = (
    (0x100, "AT_SYMLINK_NOFOLLOW"), (0x200, "AT_REMOVEDIR"),
    (0x400, "AT_SYMLINK_FOLLOW"), (0x800, "AT_NO_AUTOMOUNT"),
    (0x1000, "AT_EMPTY_PATH"), (0x2000, "AT_STATX_FORCE_SYNC"),
    (0x4000, "AT_STATX_DONT_SYNC"), (0x8000, "AT_RECURSIVE"),
)


def _at_flags(value, eaccess=False):
    v = value & 0xFFFFFFFF
    if not v:
        return "0"
    table = _AT_FLAGS
    if eaccess:
        table = tuple((m, "AT_EACCESS" if m == 0x200 else n) for m, n in table)
    return "|".join(_bits(v, table))


_SOCK_TYPES = {
    0: "SOCK_DEFAULT",   # umvu msocket only (vulib.h); socket() never has 0
    1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 4: "SOCK_RDM",
    5: "SOCK_SEQPACKET", 6: "SOCK_DCCP", 10: "SOCK_PACKET",
}


def _sock_type(value):
    v = value & 0xFFFFFFFF
    parts = [_SOCK_TYPES.get(v & 0xF, str(v & 0xF))]
    v &= ~0xF
    return "|".join(_bits(v, ((0o4000, "SOCK_NONBLOCK"), (0o2000000, "SOCK_CLOEXEC")), parts))


def _sock_family(value):
    v = _s32(value)
    if v == 1:
        return "AF_UNIX"
    if _HAVE_PTRACE and v in SOCKET_FAMILY:
        return SOCKET_FAMILY[v]
    return str(v)


_MAP_FLAGS = (  # x86_64; the low two bits are the mapping type
    (0x10, "MAP_FIXED"), (0x20, "MAP_ANONYMOUS"), (0x40, "MAP_32BIT"),
    (0x100, "MAP_GROWSDOWN"), (0x800, "MAP_DENYWRITE"),
    (0x1000, "MAP_EXECUTABLE"), (0x2000, "MAP_LOCKED"),
    (0x4000, "MAP_NORESERVE"), (0x8000, "MAP_POPULATE"),
    (0x10000, "MAP_NONBLOCK"), (0x20000, "MAP_STACK"),
    (0x40000, "MAP_HUGETLB"), (0x80000, "MAP_SYNC"),
    (0x100000, "MAP_FIXED_NOREPLACE"),
)
_MAP_TYPES = ("0", "MAP_SHARED", "MAP_PRIVATE", "MAP_SHARED_VALIDATE")

_BITSET_RE = re.compile(r"^<([^<>]*)> \([0-9]+\)$")


def _map_flags(value):
    v = value & 0xFFFFFFFF
    parts = _bits(v & ~3, _MAP_FLAGS, [_MAP_TYPES[v & 3]] if v & 3 else [])
    return "|".join(parts) or "0"


def _dirfd(value):
    v = _s32(value)
    return "AT_FDCWD" if v == -100 else str(v)


def _mode(value):
    return "0%02o" % (value & 0xFFFFFFFF)


_VUCTL_TAGS = {  # vulib.h: vuctl(tag, ...)
    1: ("VUCTL_GETINFO", (("struct vu_info *", "info"),)),
    2: ("VUCTL_SETNAME", (("const char *", "name"),)),
    3: ("VUCTL_GET_DEBUGTAGS", (("char *", "buf"), ("size_t", "len"), ("int", "local"))),
    4: ("VUCTL_ADD_DEBUGTAGS", (("const char *", "debugtags"), ("int", "local"))),
    5: ("VUCTL_DEL_DEBUGTAGS", (("const char *", "debugtags"), ("int", "local"))),
    6: ("VUCTL_GET_DEBUGTAGNAME", (("int", "tag"), ("char *", "buf"), ("size_t", "len"))),
    7: ("VUCTL_SET_DEBUGCOLOR", (("const char *", "debugcolor"),)),
}

# Prototypes python-ptrace lacks (or the umvu control calls).
_EXTRA_PROTOTYPES = {
    "vu_insmod": ("long", (("const char *", "name"), ("int", "permanent"))),
    "vu_rmmod": ("long", (("const char *", "name"),)),
    "vu_lsmod": ("long", (("char *", "buf"), ("size_t", "len"))),
    "msocket": ("long", (("const char *", "path"), ("int", "domain"),
                         ("int", "type"), ("int", "protocol"))),
    "umount2": ("long", (("const char *", "target"), ("int", "flags"))),
    "openat2": ("long", (("int", "dirfd"), ("const char *", "filename"),
                         ("struct open_how *", "how"), ("size_t", "size"))),
    "faccessat2": ("long", (("int", "dirfd"), ("const char *", "filename"),
                            ("int", "mode"), ("int", "flags"))),
    "fchmodat2": ("long", (("int", "dirfd"), ("const char *", "filename"),
                           ("umode_t", "mode"), ("int", "flags"))),
    "close_range": ("long", (("unsigned int", "fd"), ("unsigned int", "max_fd"),
                             ("unsigned int", "flags"))),
    "pidfd_open": ("long", (("pid_t", "pid"), ("unsigned int", "flags"))),
    "clone3": ("long", (("struct clone_args *", "cl_args"), ("size_t", "size"))),
    "arch_prctl": ("long", (("int", "code"), ("unsigned long", "addr"))),
    "open_tree": ("long", (("int", "dfd"), ("const char *", "filename"),
                           ("unsigned int", "flags"))),
    "move_mount": ("long", (("int", "from_dfd"), ("const char *", "from_pathname"),
                            ("int", "to_dfd"), ("const char *", "to_pathname"),
                            ("unsigned int", "flags"))),
    "fsopen": ("long", (("const char *", "fs_name"), ("unsigned int", "flags"))),
    "fspick": ("long", (("int", "dfd"), ("const char *", "path"),
                        ("unsigned int", "flags"))),
    "mount_setattr": ("long", (("int", "dfd"), ("const char *", "path"),
                               ("unsigned int", "flags"),
                               ("struct mount_attr *", "uattr"), ("size_t", "usize"))),
}

# "char *" arguments read as C strings besides python-ptrace's
# FILENAME_ARGUMENTS (filename, pathname, path, oldname, newname, old, new).
_STRING_ARGS = {
    "vu_insmod": {"name"}, "vu_rmmod": {"name"}, "msocket": {"path"},
    "vuctl": {"name", "debugtags", "debugcolor"},
    "mount": {"dev_name", "dir_name", "type"}, "umount2": {"target"},
    "umount": {"name"}, "move_mount": {"from_pathname", "to_pathname"},
    "fsopen": {"fs_name"}, "sethostname": {"name"},
    "setxattr": {"name"}, "lsetxattr": {"name"}, "fsetxattr": {"name"},
    "getxattr": {"name"}, "lgetxattr": {"name"}, "fgetxattr": {"name"},
    "removexattr": {"name"}, "lremovexattr": {"name"}, "fremovexattr": {"name"},
    "memfd_create": {"uname"}, "init_module": {"uargs"},
    "finit_module": {"uargs"}, "delete_module": {"name_user"},
    "acct": {"name"}, "swapon": {"specialfile"}, "swapoff": {"specialfile"},
}
# Output buffers that python-ptrace would otherwise read at entry
_NOT_STRINGS = {("getcwd", "pathname")}

_DIRFD_NAMES = {"dirfd", "dfd", "olddfd", "newdfd", "from_dfd", "to_dfd"}
_AT_FLAG_ARGS = {
    ("newfstatat", "flag"), ("fstatat64", "flag"), ("unlinkat", "flag"),
    ("fchownat", "flag"), ("linkat", "flags"), ("utimensat", "flags"),
    ("statx", "flags"), ("fchmodat2", "flags"), ("faccessat2", "flags"),
    ("name_to_handle_at", "flag"), ("execveat", "flags"),
}

_SIGNED32 = {"int", "pid_t", "uid_t", "gid_t", "clockid_t", "socklen_t",
             "key_serial_t", "mqd_t", "qid_t", "timer_t", "__s32", "s32"}
_UNSIGNED32 = {"unsigned int", "u32", "__u32", "unsigned"}
_SIGNED64 = {"long", "off_t", "loff_t", "ssize_t", "__s64", "s64"}
_UNSIGNED64 = {"size_t", "unsigned long", "u64", "__u64", "aio_context_t"}


if _HAVE_PTRACE:

    class _FakeProcess(object):
        """The part of PtraceProcess that python-ptrace's formatters use."""

        def __init__(self, read_mem, regs, pid=0):
            self._read_mem = read_mem
            self.regs = regs
            self.pid = pid

        def getregs(self):
            return self.regs

        def getreg(self, name):
            return getattr(self.regs, name)

        def getStackPointer(self):
            return self.regs.rsp

        def getInstrPointer(self):
            return self.regs.rip

        def readBytes(self, address, size):
            size = int(size)
            if size <= 0:
                return b""
            data = self._read_mem(_u64(address), size)
            if data is None or len(data) < size:
                raise OSError(_errno.EFAULT, "short read at %s" % _hex(address))
            return bytes(data[:size])

        def readWord(self, address):
            return int.from_bytes(self.readBytes(address, 8), "little")

        def readStruct(self, address, struct):
            return struct.from_buffer_copy(self.readBytes(address, ctypes.sizeof(struct)))

        def readArray(self, address, basetype, count):
            atype = basetype * count
            return atype.from_buffer_copy(self.readBytes(address, ctypes.sizeof(atype)))

        def readCString(self, address, max_size, chunk_length=None):
            """Return (bytes, truncated): at most max_size bytes before the
            NUL; truncated iff the string is longer than max_size.  Reads never
            cross a page boundary past the terminating NUL."""
            out = bytearray()
            addr = _u64(address)
            want_total = max_size + 1
            while len(out) < want_total:
                want = min(_PAGE - addr % _PAGE, want_total - len(out))
                chunk = self.readBytes(addr, want)
                pos = chunk.find(b"\0")
                if pos >= 0:
                    out += chunk[:pos]
                    return bytes(out), False
                out += chunk
                addr += want
            return bytes(out[:max_size]), True

    class _Arg(SyscallArgument):
        """SyscallArgument with strace-like output and no logging."""

        def __init__(self, function, index, options, value=None, type=None, name=None):
            if value is not None:
                value = _u64(value)
                bare = _bare(type)
                if bare in _SIGNED32:
                    # sign-extend the low 32 bits, as the kernel sees an int
                    value = _u64(_s32(value))
                elif bare in _UNSIGNED32:
                    value &= 0xFFFFFFFF
            SyscallArgument.__init__(self, function, index, options, value, type, name)

        def getText(self):
            # python-ptrace's getText logs every exception at ERROR level
            # (with a backtrace) and shows repr(value): avoid both.
            if self.text is None:
                try:
                    text = self.createText()
                    self.text = _ptr(self.value) if text is None else str(text)
                except Exception:
                    self.text = _ptr(self.value)
            return self.text

        def createText(self):
            value = self.value
            name = self.name
            if not self.type or not name:
                return _hex(value)
            fn = self.function.name
            bare = _bare(self.type)
            key = (fn, name)

            special = _SPECIAL.get(key)
            if special is not None:
                text = special(self)
                match = _BITSET_RE.match(text) if isinstance(text, str) else None
                return match.group(1) if match else text
            if key in _NOT_STRINGS:
                return _ptr(value)
            if bare in ("char *", "char*") and (
                    name in FILENAME_ARGUMENTS or name in _STRING_ARGS.get(fn, ())):
                return self.readCString(value)
            if name in _DIRFD_NAMES and bare == "int":
                return _dirfd(value)
            if key in _AT_FLAG_ARGS:
                return _at_flags(value, eaccess=(fn == "faccessat2"))
            if bare == "umode_t":
                return _mode(value)
            library_special = (
                name in ARGUMENT_CALLBACK.get(fn, ())
                or value in SYSCALL_ARG_DICT.get(fn, {}).get(name, ())
                or name == "signum")
            if not library_special:
                if bare in _SIGNED32:
                    return str(_s32(value))
                if bare in _UNSIGNED32:
                    return str(value & 0xFFFFFFFF)
                if bare in _SIGNED64:
                    return str(_s64(value))
                if bare in _UNSIGNED64:
                    return str(value)
            text = SyscallArgument.createText(self)
            if text is None:
                return None
            text = str(text)
            # python-ptrace pads pointers/hex to 16 digits
            if value and text == formatWordHex(value):
                return _hex(value)
            if text == formatAddress(value):
                return _ptr(value)
            # python-ptrace bit sets look like "<PROT_READ|PROT_WRITE> (3)"
            match = _BITSET_RE.match(text)
            if match:
                return match.group(1)
            return text

        def formatValuePointer(self, argtype):
            # python-ptrace logs failures here; unreadable -> plain address
            try:
                return SyscallArgument.formatValuePointer(self, argtype)
            except Exception:
                return None

        def readCString(self, address):
            if not address:
                return "NULL"
            data, truncated = self.function.process.readCString(
                address, self.options.string_max_length)
            return _quote(data) + ("..." if truncated else "")

        def readString(self, address, size):
            if not address:
                return "NULL"
            size = _s64(size)
            if size < 0:
                return _ptr(address)
            max_len = self.options.string_max_length
            data = self.function.process.readBytes(address, min(size, max_len))
            return _quote(data) + ("..." if size > max_len else "")

        def readCStringArray(self, address):
            if not address:
                return "NULL"
            proc = self.function.process
            items = []
            addr = address
            while True:
                ptr = proc.readWord(addr)
                if not ptr:
                    break
                if len(items) >= self.options.max_array_count:
                    items.append("...")
                    break
                try:
                    items.append(self.readCString(ptr))
                except Exception:
                    items.append(_ptr(ptr))
                addr += 8
            return "[%s]" % ", ".join(items)

        def countPointers(self, address, limit=65536):
            proc = self.function.process
            n = 0
            while n < limit and proc.readWord(address + 8 * n):
                n += 1
            return n

    def _bare(argtype):
        t = (argtype or "").strip()
        if t.startswith("const "):
            t = t[6:]
        return t

    def _arg_value(arg, name):
        try:
            return arg.function[name].value
        except Exception:
            return 0

    def _fmt_open_mode(arg):
        flags = _arg_value(arg, "flags")
        if flags & (_O_CREAT | _O_TMPFILE_BIT):
            return _mode(arg.value)
        return ""   # trailing empty arguments are dropped by FunctionCall.format

    def _fmt_write_buf(arg):
        return arg.readString(arg.value, _arg_value(arg, "count"))

    def _fmt_envp(arg):
        if not arg.value:
            return "NULL"
        n = arg.countPointers(arg.value)
        return "%s /* %d var%s */" % (_hex(arg.value), n, "" if n == 1 else "s")

    def _fmt_clone_flags(arg):
        # python-ptrace's formatCloneFlags also prints the exit signal bits
        # again as a trailing number ("SIGCHLD|CLONE_VM|17")
        v = arg.value
        start = [signalName(v & 0xFF)] if v & 0xFF else []
        return "|".join(_bits(v & ~0xFF, CLONE_FLAGS_BITMASK, start)) or "0"

    def _fmt_vuctl_tag(arg):
        tag = _s32(arg.value)
        return _VUCTL_TAGS[tag][0] if tag in _VUCTL_TAGS else str(tag)

    _SEEK = {0: "SEEK_SET", 1: "SEEK_CUR", 2: "SEEK_END", 3: "SEEK_DATA", 4: "SEEK_HOLE"}

    _SPECIAL = {
        ("open", "flags"): lambda a: _open_flags(a.value),
        ("openat", "flags"): lambda a: _open_flags(a.value),
        ("open", "mode"): _fmt_open_mode,
        ("openat", "mode"): _fmt_open_mode,
        ("write", "buf"): _fmt_write_buf,
        ("pwrite64", "buf"): _fmt_write_buf,
        ("socket", "domain"): lambda a: _sock_family(a.value),
        ("socket", "type"): lambda a: _sock_type(a.value),
        ("socketpair", "family"): lambda a: _sock_family(a.value),
        ("socketpair", "type"): lambda a: _sock_type(a.value),
        ("msocket", "domain"): lambda a: _sock_family(a.value),
        ("msocket", "type"): lambda a: _sock_type(a.value),
        ("lseek", "whence"): lambda a: _SEEK.get(a.value & 0xFFFFFFFF, str(a.value & 0xFFFFFFFF)),
        ("faccessat", "mode"): formatAccessMode,
        ("faccessat2", "mode"): formatAccessMode,
        ("execve", "envp"): _fmt_envp,
        ("execveat", "envp"): _fmt_envp,
        ("vuctl", "tag"): _fmt_vuctl_tag,
        ("mmap", "addr"): lambda a: _ptr(a.value),
        ("clone", "flags"): _fmt_clone_flags,
        ("clone", "child_stack"): lambda a: _ptr(a.value),
        ("mmap", "flags"): lambda a: _map_flags(a.value),
        ("mmap", "fd"): lambda a: str(_s32(a.value)),
    }

    class _Syscall(PtraceSyscall):
        """PtraceSyscall driven by fake regs, x86_64 names, extra prototypes."""

        def __init__(self, process, options, regs, nargs):
            self._nargs = nargs
            PtraceSyscall.__init__(self, process, options, regs)
            self.argument_class = _Arg

        def readSyscall(self, regs):
            self.syscall = _s64(regs.orig_rax)
            self.name = syscall_name(self.syscall)

        def readArgumentValues(self, regs):
            # always x86_64, whatever ptrace.cpu_info says about the host
            return (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9)

        def readArguments(self, values):
            name = self.name
            if name == "vuctl":
                tag = _s32(values[0])
                formats = (("int", "tag"),)
                if tag in _VUCTL_TAGS:
                    formats += _VUCTL_TAGS[tag][1]
                else:
                    formats += tuple((None, None) for _ in values[1:self._nargs])
                proto = ("long", formats)
            else:
                proto = _EXTRA_PROTOTYPES.get(name) or SYSCALL_PROTOTYPES.get(name)
            if proto is None:
                for value in values[:self._nargs]:
                    self.addArgument(value=value)
                return
            self.restype, formats = proto
            for value, (argtype, argname) in zip(values, formats):
                self.addArgument(value=value, name=argname, type=argtype)

    def _make_regs(nr, args):
        vals = [_u64(a) for a in tuple(args or ())[:6]]
        vals += [0] * (6 - len(vals))
        return types.SimpleNamespace(
            orig_rax=_u64(nr), rax=_u64(nr), rdi=vals[0], rsi=vals[1],
            rdx=vals[2], r10=vals[3], r8=vals[4], r9=vals[5], rip=0, rsp=0)

    def _format_call(nr, args, read_mem):
        args = tuple(args or ())
        regs = _make_regs(nr, args)
        process = _FakeProcess(read_mem, regs)
        options = FunctionCallOptions(
            write_types=False, write_argname=False, replace_socketcall=False,
            string_max_length=STRING_MAX, write_address=False,
            max_array_count=ARRAY_MAX)
        call = _Syscall(process, options, regs, nargs=min(len(args), 6))
        call.enter(regs)
        return call.format()

else:  # pragma: no cover
    def _format_call(nr, args, read_mem):
        return _fallback_call(nr, args)


# --------------------------------------------------------------------------
# public API

def format_call(nr, args, read_mem):
    """``name(arg, ...)`` for one syscall; never raises."""
    try:
        text = _format_call(nr, args, read_mem)
        if isinstance(text, str):
            return text
    except Exception:
        pass
    return _fallback_call(nr, args)


def format_line(pid, nr, args, read_mem, result, answered_by):
    """``[pid] name(args) = result <answered_by>``; never raises."""
    try:
        call = format_call(nr, args, read_mem)
        try:
            res = _format_result(syscall_name(nr), result)
        except Exception:
            res = "?" if result is None else str(result)
        line = "[%s] %s = %s" % (pid, call, res)
        if answered_by:
            line += " <%s>" % (answered_by,)
        return line
    except Exception:
        try:
            return "[%s] %s = ?" % (pid, _fallback_call(nr, args))
        except Exception:
            return "[?] syscall_? = ?"
