"""The ABI side of the VFS: a trapped call's registers decoded into what
the call is about (which argument is the path, its dirfd, the flags, whether
a last symlink is followed: all from the call's row of umvu.syscall_table),
and the kernel structures the view writes into a process (stat, statx,
statfs, dirents). Nothing here decides anything of the view."""

from __future__ import annotations

import os
import stat
import struct
from dataclasses import dataclass

from .. import syscall_table
from ..linux import (AT_EMPTY_PATH, AT_FDCWD, AT_REMOVEDIR, AT_SYMLINK_NOFOLLOW,
                     O_CREAT, O_EXCL, O_NOFOLLOW, O_TRUNC, UTIME_NOW, UTIME_OMIT)
from ..module import Caller, PathCall


# ---- registers -----------------------------------------------------------------
def signed32(value: int) -> int:
    """An int argument (a descriptor, a dirfd, a command)."""
    value &= 0xffffffff
    return value - (1 << 32) if value >> 31 else value


def is_cwd(dirfd: int) -> bool:
    return signed32(dirfd) == AT_FDCWD


def unchanged(value: int) -> int | None:
    """A chown id argument: None for (uid_t)-1."""
    value &= 0xffffffff
    return None if value == 0xffffffff else value


def caller(stop) -> Caller:
    return Caller(stop.process.pid, stop.tid)


def read_path(stop, addr: int) -> str:
    return os.fsdecode(stop.read_str(addr, 4097))


@dataclass
class PathArgs:
    """A path call as its registers give it, by its table row."""
    name: str                   # as services see it (unlinkat(AT_REMOVEDIR): rmdir)
    op: str | None              # module.PathCall.op
    path_at: int | None         # the path argument (symlink: the new name's)
    dirfd_at: int | None        # its dirfd argument
    path: str | None            # None: a NULL pointer (futimens)
    dirfd: int | None           # the dirfd argument as given
    flags: int = 0              # open flags (the open family), else 0
    follow: bool = True         # is a last symlink followed
    empty: bool = False         # "" with AT_EMPTY_PATH: the dirfd itself


def path_args(stop, sc) -> PathArgs:
    """Decode a path call (family "path") of the row sc."""
    args = stop.args
    # symlink(target, linkpath): the name created is the second path
    pidx, atidx = (sc.path, sc.at) if sc.path is not None else (sc.path2, sc.at2)
    dirfd = args[atidx] if atidx is not None else None
    if pidx is None or args[pidx] == 0:
        return PathArgs(sc.name, sc.op, pidx, atidx, None, dirfd)
    path = read_path(stop, args[pidx])
    if path == "" and sc.empty is not None and (   # empty=-1: always (readlinkat)
            sc.empty < 0 or args[sc.empty] & AT_EMPTY_PATH):
        return PathArgs(sc.name, sc.op, pidx, atidx, path, dirfd, empty=True)
    name = sc.name
    if name == "unlinkat" and args[2] & AT_REMOVEDIR:
        name = "rmdir"
    flags = open_flags(sc.name, args) if sc.op == "open" else 0
    return PathArgs(name, sc.op, pidx, atidx, path, dirfd, flags, follows(sc, args))


def follows(sc, args) -> bool:
    """Is a last symlink followed (the row's nofollow rule)?"""
    rule = sc.nofollow
    if rule is None:
        return True
    if rule == "always":
        return False
    kind, _, index = rule.partition(":")
    flags = args[int(index)]
    if kind == "o":
        return not (flags & O_NOFOLLOW) and not (
            flags & O_CREAT and flags & O_EXCL)
    return not flags & AT_SYMLINK_NOFOLLOW


def open_flags(name: str, args) -> int:
    if name == "open":
        return args[1]
    if name == "creat":
        return O_CREAT | O_TRUNC | 1
    return args[2] & 0xffffffff if name == "openat" else 0


def path_call(name: str, op: str, path: str, flags: int, args, caller):
    """The PathCall for a syscall, with the arguments services need."""
    call = PathCall(name, op, path, flags=flags, caller=caller)
    row = syscall_table.BY_NAME[name]
    for field in ("mode", "dev", "uid", "gid", "length"):
        index = getattr(row, field)
        if index is not None:
            value = args[index]
            setattr(call, field, value & 0o177777 if field == "mode"
                    else value & 0xffffffff if field in ("uid", "gid") else value)
    if row.flags is not None:
        call.flags = args[row.flags] & 0xffffffff
    return call


def times(stop, name: str, addr: int):
    """(atime_ns, mtime_ns) a utime* call asks for; None: now. Either
    may be UTIME_NOW or UTIME_OMIT as in utimensat."""
    if not addr:
        return None
    if name in ("utimensat",):
        a_s, a_ns, m_s, m_ns = struct.unpack("qqqq", stop.read(addr, 32))
        def one(sec, nsec):
            return nsec if nsec in (UTIME_NOW, UTIME_OMIT) else sec * 10**9 + nsec
        return one(a_s, a_ns), one(m_s, m_ns)
    if name in ("utimes", "futimesat"):
        a_s, a_us, m_s, m_us = struct.unpack("qqqq", stop.read(addr, 32))
        return a_s * 10**9 + a_us * 1000, m_s * 10**9 + m_us * 1000
    actime, modtime = struct.unpack("qq", stop.read(addr, 16))  # utime
    return actime * 10**9, modtime * 10**9


#: struct open_how (openat2): flags, mode, resolve
OPEN_HOW = struct.Struct("QQQ")


def argv_pointers(stop, addr: int) -> list[int]:
    """The pointers of a NULL-terminated argv in the caller's memory."""
    found = []
    while addr:
        ptr = struct.unpack("Q", stop.read(addr, 8))[0]
        if not ptr:
            break
        found.append(ptr)
        addr += 8
    return found


def read_iovec(stop, addr: int, count: int) -> list[tuple[int, int]]:
    """(base, length) pairs of a struct iovec array in the process."""
    if count == 0:
        return []
    raw = stop.read(addr, 16 * count)
    return [struct.unpack_from("QQ", raw, 16 * i) for i in range(count)]


# ---- structures written into a process (x86_64 layouts) --------------------------
#: struct stat (asm/stat.h, x86_64): 144 bytes
STAT = struct.Struct("QQQIIIIQqqqqqqqqq24x")
STATX_BASIC_STATS = 0x7ff


def _split_ns(st, name: str) -> tuple[int, int]:
    ns = getattr(st, name + "_ns", None)
    if ns is None:
        ns = int((getattr(st, name, 0) or 0) * 1_000_000_000)
    return ns // 1_000_000_000, ns % 1_000_000_000


def _get(st, name: str, default: int) -> int:
    """An optional st_* field (None in a stat_result built from a tuple)."""
    value = getattr(st, name, None)
    return default if value is None else value


def pack_stat(st) -> bytes:
    """struct stat from anything with os.stat_result's st_* attributes."""
    a, m, c = (_split_ns(st, n) for n in ("st_atime", "st_mtime", "st_ctime"))
    return STAT.pack(st.st_dev, st.st_ino, st.st_nlink, st.st_mode, st.st_uid,
                     st.st_gid, 0, _get(st, "st_rdev", 0), st.st_size,
                     _get(st, "st_blksize", 4096),
                     _get(st, "st_blocks", (st.st_size + 511) // 512),
                     a[0], a[1], m[0], m[1], c[0], c[1])


def pack_statx(st) -> bytes:
    """struct statx (linux/stat.h): the basic fields, 256 bytes."""
    times = [_split_ns(st, n) for n in ("st_atime", "st_ctime", "st_ctime", "st_mtime")]
    rdev = _get(st, "st_rdev", 0)
    head = struct.pack("IIQIIIHxxQQQQ", STATX_BASIC_STATS,
                       _get(st, "st_blksize", 4096), 0, st.st_nlink,
                       st.st_uid, st.st_gid, st.st_mode, st.st_ino, st.st_size,
                       _get(st, "st_blocks", (st.st_size + 511) // 512), 0)
    stamps = b"".join(struct.pack("qIi", sec, nsec, 0) for sec, nsec in times)
    devs = struct.pack("IIII", os.major(rdev), os.minor(rdev),
                       os.major(st.st_dev), os.minor(st.st_dev))
    data = head + stamps + devs
    return data + b"\0" * (256 - len(data))


def pack_dirents(entries, start: int, size: int) -> tuple[bytes, int]:
    """linux_dirent64 records for entries[start:], fitting in size bytes;
    returns them and the index of the first entry left out."""
    out = bytearray()
    pos = start
    while pos < len(entries):
        name, dtype, ino = entries[pos]
        raw = os.fsencode(name) + b"\0"
        reclen = (19 + len(raw) + 7) & ~7
        if len(out) + reclen > size:
            break
        rec = struct.pack("QqHB", ino, pos + 1, reclen, dtype) + raw
        out += rec + b"\0" * (reclen - len(rec))
        pos += 1
    return bytes(out), pos


#: struct statfs (x86_64): 120 bytes
STATFS = struct.Struct("qqQQQQQiiqqq32x")
FUSE_SUPER_MAGIC = 0x65735546


def pack_statfs(info: dict) -> bytes:
    """struct statfs from os.statvfs-like names."""
    return STATFS.pack(info.get("f_type", FUSE_SUPER_MAGIC), info.get("f_bsize", 4096),
                       info.get("f_blocks", 0), info.get("f_bfree", 0),
                       info.get("f_bavail", 0), info.get("f_files", 0),
                       info.get("f_ffree", 0), 0, 0, info.get("f_namemax", 255),
                       info.get("f_frsize", info.get("f_bsize", 4096)),
                       info.get("f_flag", 0))


def patch_stat(stop, result: int, name: str, buf: int, meta: dict):
    """Show a service's metadata (owner, mode, device) in a stat buffer the
    kernel has just filled."""
    if result != 0 or not buf:
        return None
    layout = syscall_table.BY_NAME[name].stat_layout[1]
    if layout == "stat":
        mode_at, uid_at, gid_at, fmt = 24, 28, 32, "I"
    else:
        mode_at, uid_at, gid_at, fmt = 28, 20, 24, "H"
    if "mode" in meta:
        kind, perm = meta["mode"]
        old = struct.unpack(fmt, stop.read(buf + mode_at, struct.calcsize(fmt)))[0]
        new = (kind or stat.S_IFMT(old)) | (old & 0o7777 if perm is None else perm)
        stop.write(buf + mode_at, struct.pack(fmt, new))
    for key, at in (("uid", uid_at), ("gid", gid_at)):
        if key in meta:
            stop.write(buf + at, struct.pack("I", meta[key]))
    if "rdev" in meta:
        if layout == "stat":
            stop.write(buf + 40, struct.pack("Q", meta["rdev"]))
        else:
            stop.write(buf + 128, struct.pack("II", os.major(meta["rdev"]),
                                              os.minor(meta["rdev"])))
    return None


def patch_on_exit(stop, name: str, meta: dict) -> None:
    """At the exit stop, patch the stat buffer of this call (see patch_stat)."""
    buf = stop.args[syscall_table.BY_NAME[name].stat_layout[0]]
    stop.on_exit(lambda r: patch_stat(stop, r, name, buf, meta))
