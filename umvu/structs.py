"""Kernel structures the view writes into a process (x86_64 layouts)."""

from __future__ import annotations

import os
import struct

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


def read_iovec(stop, addr: int, count: int) -> list[tuple[int, int]]:
    """(base, length) pairs of a struct iovec array in the process."""
    if count == 0:
        return []
    raw = stop.read(addr, 16 * count)
    return [struct.unpack_from("QQ", raw, 16 * i) for i in range(count)]


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
