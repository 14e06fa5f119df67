"""The FUSE wire protocol (include/uapi/linux/fuse.h, protocol 7.x) as data.

What a message looks like, and nothing about who sends it: opcodes, INIT
flags, the structure layouts, packing of request bodies and unpacking of
replies (several sized by the negotiated protocol minor version), and the
FuseError errno exceptions.  No threads, no sockets, no state: the session
(session.py) and the path operations (pathops.py) both speak through it,
and tests use it to play a daemon.

The structure layouts are little-endian native x86-64/aarch64 layouts.
Standard library only.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import NamedTuple, Optional

from umvu.module import linux

# --------------------------------------------------------------------------
# Protocol constants (linux/fuse.h)

FUSE_KERNEL_VERSION = 7
FUSE_KERNEL_MINOR_VERSION = 31      # what we offer in INIT
FUSE_ROOT_ID = 1
FUSE_NAME_MAX = 1024                # the kernel refuses longer names
FUSE_MIN_READ_BUFFER = 8192

# opcodes
FUSE_LOOKUP = 1
FUSE_FORGET = 2
FUSE_GETATTR = 3
FUSE_SETATTR = 4
FUSE_READLINK = 5
FUSE_SYMLINK = 6
FUSE_MKNOD = 8
FUSE_MKDIR = 9
FUSE_UNLINK = 10
FUSE_RMDIR = 11
FUSE_RENAME = 12
FUSE_LINK = 13
FUSE_OPEN = 14
FUSE_READ = 15
FUSE_WRITE = 16
FUSE_STATFS = 17
FUSE_RELEASE = 18
FUSE_FSYNC = 20
FUSE_SETXATTR = 21
FUSE_GETXATTR = 22
FUSE_LISTXATTR = 23
FUSE_REMOVEXATTR = 24
FUSE_FLUSH = 25
FUSE_INIT = 26
FUSE_OPENDIR = 27
FUSE_READDIR = 28
FUSE_RELEASEDIR = 29
FUSE_FSYNCDIR = 30
FUSE_GETLK = 31
FUSE_SETLK = 32
FUSE_SETLKW = 33
FUSE_ACCESS = 34
FUSE_CREATE = 35
FUSE_INTERRUPT = 36
FUSE_BMAP = 37
FUSE_DESTROY = 38
FUSE_IOCTL = 39
FUSE_POLL = 40
FUSE_NOTIFY_REPLY = 41
FUSE_BATCH_FORGET = 42
FUSE_FALLOCATE = 43
FUSE_READDIRPLUS = 44
FUSE_RENAME2 = 45
FUSE_LSEEK = 46
FUSE_COPY_FILE_RANGE = 47

# INIT flags
FUSE_ASYNC_READ = 1 << 0
FUSE_POSIX_LOCKS = 1 << 1
FUSE_FILE_OPS = 1 << 2
FUSE_ATOMIC_O_TRUNC = 1 << 3
FUSE_EXPORT_SUPPORT = 1 << 4
FUSE_BIG_WRITES = 1 << 5
FUSE_DONT_MASK = 1 << 6
FUSE_SPLICE_WRITE = 1 << 7
FUSE_SPLICE_MOVE = 1 << 8
FUSE_SPLICE_READ = 1 << 9
FUSE_FLOCK_LOCKS = 1 << 10
FUSE_HAS_IOCTL_DIR = 1 << 11
FUSE_AUTO_INVAL_DATA = 1 << 12
FUSE_DO_READDIRPLUS = 1 << 13
FUSE_READDIRPLUS_AUTO = 1 << 14
FUSE_ASYNC_DIO = 1 << 15
FUSE_WRITEBACK_CACHE = 1 << 16
FUSE_NO_OPEN_SUPPORT = 1 << 17
FUSE_PARALLEL_DIROPS = 1 << 18
FUSE_HANDLE_KILLPRIV = 1 << 19
FUSE_POSIX_ACL = 1 << 20
FUSE_ABORT_ERROR = 1 << 21
FUSE_MAX_PAGES = 1 << 22
FUSE_CACHE_SYMLINKS = 1 << 23
FUSE_NO_OPENDIR_SUPPORT = 1 << 24
FUSE_EXPLICIT_INVAL_DATA = 1 << 25

# What we offer.  Deliberately absent: SPLICE_* (a socket is no pipe),
# WRITEBACK_CACHE / AUTO_INVAL_DATA (we keep no page cache), DONT_MASK (we
# apply the umask ourselves, as the kernel does without it), POSIX/FLOCK
# locks (not forwarded), POSIX_ACL, HANDLE_KILLPRIV.
OFFERED_FLAGS = (FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES
                 | FUSE_DO_READDIRPLUS | FUSE_PARALLEL_DIROPS
                 | FUSE_MAX_PAGES | FUSE_NO_OPEN_SUPPORT
                 | FUSE_NO_OPENDIR_SUPPORT)

# setattr valid bits
FATTR_MODE = 1 << 0
FATTR_UID = 1 << 1
FATTR_GID = 1 << 2
FATTR_SIZE = 1 << 3
FATTR_ATIME = 1 << 4
FATTR_MTIME = 1 << 5
FATTR_FH = 1 << 6
FATTR_ATIME_NOW = 1 << 7
FATTR_MTIME_NOW = 1 << 8
FATTR_LOCKOWNER = 1 << 9
FATTR_CTIME = 1 << 10

FUSE_GETATTR_FH = 1 << 0
FUSE_FSYNC_FDATASYNC = 1 << 0

# notify codes (unique == 0 messages from the daemon)
# fuse_open_out.open_flags
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_STREAM = 1 << 4

FUSE_NOTIFY_POLL = 1
FUSE_NOTIFY_INVAL_INODE = 2
FUSE_NOTIFY_INVAL_ENTRY = 3
FUSE_NOTIFY_STORE = 4
FUSE_NOTIFY_RETRIEVE = 5
FUSE_NOTIFY_DELETE = 6

# utimens() element markers: the kernel's own
UTIME_NOW, UTIME_OMIT = linux.UTIME_NOW, linux.UTIME_OMIT

# --------------------------------------------------------------------------
# Structures

IN_HEADER = struct.Struct("<IIQQIIIHH")         # fuse_in_header, 40
OUT_HEADER = struct.Struct("<IiQ")              # fuse_out_header, 16
ATTR = struct.Struct("<6Q8I2I")                 # fuse_attr, 88
ATTR_COMPAT = struct.Struct("<6Q8I")            # fuse_attr before 7.9, 80
ENTRY_HEAD = struct.Struct("<QQQQII")           # fuse_entry_out minus attr
ATTR_OUT_HEAD = struct.Struct("<QII")           # fuse_attr_out minus attr
KSTATFS = struct.Struct("<5Q4I")                # fuse_kstatfs minus spare
KSTATFS_COMPAT = struct.Struct("<5QII")         # before 7.4 (48 bytes)
INIT_IN = struct.Struct("<IIII")                # fuse_init_in up to 7.35
OPEN_IN = struct.Struct("<II")
OPEN_OUT = struct.Struct("<QII")
CREATE_IN = struct.Struct("<IIII")
RELEASE_IN = struct.Struct("<QIIQ")
FLUSH_IN = struct.Struct("<QIIQ")
IO_IN = struct.Struct("<QQIIQII")               # fuse_read_in / fuse_write_in
IO_IN_COMPAT = struct.Struct("<QQII")           # before 7.9 (24 bytes)
WRITE_OUT = struct.Struct("<II")
FSYNC_IN = struct.Struct("<QII")
SETATTR_IN = struct.Struct("<IIQQQQQQIIIIIIII")  # 88
GETATTR_IN = struct.Struct("<IIQ")
MKNOD_IN = struct.Struct("<IIII")
MKNOD_IN_COMPAT = struct.Struct("<II")
MKDIR_IN = struct.Struct("<II")
RENAME_IN = struct.Struct("<Q")
RENAME2_IN = struct.Struct("<QII")
LINK_IN = struct.Struct("<Q")
SETXATTR_IN = struct.Struct("<II")
GETXATTR_IN = struct.Struct("<II")
GETXATTR_OUT = struct.Struct("<II")
ACCESS_IN = struct.Struct("<II")
INTERRUPT_IN = struct.Struct("<Q")
FORGET_IN = struct.Struct("<Q")
BATCH_FORGET_IN = struct.Struct("<II")
FORGET_ONE = struct.Struct("<QQ")
FALLOCATE_IN = struct.Struct("<QQQII")
LSEEK_IN = struct.Struct("<QQII")
LSEEK_OUT = struct.Struct("<Q")
DIRENT = struct.Struct("<QQII")                 # fuse_dirent minus name
NOTIFY_INVAL_ENTRY = struct.Struct("<QII")
NOTIFY_DELETE = struct.Struct("<QQII")

_U64 = 1 << 64
_S64 = 1 << 63

# opcodes answered with a fuse_entry_out (CREATE: followed by fuse_open_out)
ENTRY_OPS = frozenset((FUSE_LOOKUP, FUSE_CREATE, FUSE_MKNOD, FUSE_MKDIR,
                       FUSE_SYMLINK, FUSE_LINK))


class FuseError(OSError):
    """An errno from the daemon, or from the connection itself (ENOTCONN,
    ETIMEDOUT, EPROTO, EIO for malformed replies).

    Raised errors are also instances of the builtin class OSError(errno)
    maps to (FileNotFoundError for ENOENT, FileExistsError for EEXIST, ...),
    so `except FileNotFoundError` works as with os functions."""

    def __init__(self, err: int, msg: Optional[str] = None):
        super().__init__(err, msg or os.strerror(err))


_ERROR_CLASSES: dict[int, type] = {}


def fuse_error(e: int, msg: Optional[str] = None) -> FuseError:
    """FuseError(e), as an instance of the builtin OSError subclass for e
    too (FileNotFoundError for ENOENT, ...)."""
    cls = _ERROR_CLASSES.get(e)
    if cls is None:
        builtin = type(OSError(e, ""))
        cls = (FuseError if builtin is OSError else
               type("Fuse" + builtin.__name__, (FuseError, builtin),
                    {"__module__": __name__}))
        _ERROR_CLASSES[e] = cls
    return cls(e, msg)



# --------------------------------------------------------------------------
# Plain values


def signed64(v: int) -> int:
    return v - _U64 if v >= _S64 else v


def decode_dev(rdev: int) -> int:
    """The kernel's 32-bit new_encode_dev() value to a userspace dev_t."""
    major = (rdev & 0xFFF00) >> 8
    minor = (rdev & 0xFF) | ((rdev >> 12) & 0xFFF00)
    return os.makedev(major, minor)


def encode_dev(dev: int) -> int:
    major, minor = os.major(dev), os.minor(dev)
    return ((minor & 0xFF) | (major << 8) | ((minor & ~0xFF) << 12)) & 0xFFFFFFFF


def fsname(name) -> bytes:
    """A name as the bytes a request carries."""
    return name if isinstance(name, bytes) else os.fsencode(name)


# --------------------------------------------------------------------------
# Requests


def pack_in_header(opcode: int, unique: int, nodeid: int, body_len: int,
                   uid: int = 0, gid: int = 0, pid: int = 0) -> bytes:
    """fuse_in_header of a request whose body is `body_len` bytes long."""
    return IN_HEADER.pack(IN_HEADER.size + body_len, opcode, unique, nodeid,
                          uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, pid & 0xFFFFFFFF,
                          0, 0)


def pack_init_in(max_readahead: int) -> bytes:
    """fuse_init_in: we offer 7.31 and OFFERED_FLAGS."""
    return INIT_IN.pack(FUSE_KERNEL_VERSION, FUSE_KERNEL_MINOR_VERSION,
                        max_readahead, OFFERED_FLAGS)


def pack_io_in(fh: int, offset: int, size: int, flags: int, minor: int,
               rw_flags: int = 0) -> bytes:
    """fuse_read_in / fuse_write_in (also READDIR and READDIRPLUS)."""
    if minor >= 9:
        return IO_IN.pack(fh, offset, size, rw_flags, 0, flags & 0xFFFFFFFF,
                          0)
    return IO_IN_COMPAT.pack(fh, offset, size, rw_flags)


def pack_getattr_in(fh: Optional[int], minor: int) -> bytes:
    """fuse_getattr_in (empty before 7.9); with `fh`: FUSE_GETATTR_FH."""
    if minor >= 9:
        return GETATTR_IN.pack(FUSE_GETATTR_FH if fh is not None else 0,
                               0, fh or 0)
    return b""


def pack_setattr_in(valid: int, fh: Optional[int], size: int = 0,
                    mode: int = 0, uid: int = 0, gid: int = 0,
                    atime=(0, 0), mtime=(0, 0)) -> bytes:
    """fuse_setattr_in; atime and mtime are (seconds, nanoseconds)."""
    return SETATTR_IN.pack(valid, 0, fh or 0, size, 0,
                           atime[0] & (_U64 - 1), mtime[0] & (_U64 - 1),
                           0, atime[1], mtime[1], 0, mode, 0,
                           uid & 0xFFFFFFFF, gid & 0xFFFFFFFF, 0)


def pack_create_in(flags: int, mode: int, umask: int, minor: int) -> bytes:
    """fuse_create_in (fuse_open_in with the mode before 7.12)."""
    if minor >= 12:
        return CREATE_IN.pack(flags & 0xFFFFFFFF, mode, umask, 0)
    return OPEN_IN.pack(flags & 0xFFFFFFFF, mode)


def pack_mknod_in(mode: int, dev: int, umask: int, minor: int) -> bytes:
    """fuse_mknod_in (without the umask before 7.12)."""
    rdev = encode_dev(dev)
    if minor >= 12:
        return MKNOD_IN.pack(mode, rdev, umask, 0)
    return MKNOD_IN_COMPAT.pack(mode, rdev)


# --------------------------------------------------------------------------
# Replies


class InitOut(NamedTuple):
    """A decoded fuse_init_out; None for what the daemon's reply lacks."""
    major: int
    minor: int                          # the daemon's own minor version
    max_readahead: Optional[int]
    flags: Optional[int]
    max_background: Optional[int]       # these three from 7.5
    congestion_threshold: Optional[int]
    max_write: Optional[int]
    time_gran: Optional[int]            # these two from 7.23
    max_pages: Optional[int]


def unpack_init_out(body) -> InitOut:
    """The INIT reply; EPROTO unless it speaks protocol 7.  Fields are
    read as far as the negotiated minor (ours or the daemon's, the
    smaller) defines them and the reply holds them."""
    if len(body) < 8:
        raise fuse_error(errno.EPROTO, "short FUSE_INIT reply")
    major, minor = struct.unpack_from("<II", body)
    if major != FUSE_KERNEL_VERSION:
        raise fuse_error(errno.EPROTO,
                         f"FUSE daemon speaks protocol {major}.x")
    negotiated = min(minor, FUSE_KERNEL_MINOR_VERSION)
    readahead = flags = background = congestion = max_write = None
    time_gran = max_pages = None
    if len(body) >= 16:
        readahead, flags = struct.unpack_from("<II", body, 8)
    if negotiated >= 5 and len(body) >= 24:
        background, congestion, max_write = struct.unpack_from("<HHI", body,
                                                               16)
    if negotiated >= 23 and len(body) >= 32:
        time_gran, max_pages = struct.unpack_from("<IH", body, 24)
    return InitOut(major, minor, readahead, flags, background, congestion,
                   max_write, time_gran, max_pages)


def entry_out_size(minor: int) -> int:
    """sizeof(struct fuse_entry_out) under protocol minor `minor`."""
    return ENTRY_HEAD.size + (ATTR.size if minor >= 9 else ATTR_COMPAT.size)


def stat_from_attr(fields: tuple) -> os.stat_result:
    """An os.stat_result from the unpacked fields of a fuse_attr."""
    (ino, size, blocks, atime, mtime, ctime, atns, mtns, ctns, mode, nlink,
     uid, gid, rdev) = fields[:14]
    blksize = fields[14] if len(fields) > 14 else 0
    atime, mtime, ctime = signed64(atime), signed64(mtime), signed64(ctime)
    return os.stat_result(
        (mode, ino, 0, nlink, uid, gid, size, atime, mtime, ctime),
        {"st_atime": atime + atns / 1e9, "st_mtime": mtime + mtns / 1e9,
         "st_ctime": ctime + ctns / 1e9,
         "st_atime_ns": atime * 1_000_000_000 + atns,
         "st_mtime_ns": mtime * 1_000_000_000 + mtns,
         "st_ctime_ns": ctime * 1_000_000_000 + ctns,
         "st_blksize": blksize or 4096, "st_blocks": blocks,
         "st_rdev": decode_dev(rdev)})


def unpack_attr(body, off: int, minor: int) -> os.stat_result:
    """The fuse_attr at `off` (the compat layout before 7.9)."""
    if minor >= 9 and len(body) >= off + ATTR.size:
        return stat_from_attr(ATTR.unpack_from(body, off))
    if len(body) >= off + ATTR_COMPAT.size:
        return stat_from_attr(ATTR_COMPAT.unpack_from(body, off))
    raise fuse_error(errno.EIO, "short attribute reply")


def unpack_attr_out(body, minor: int) -> os.stat_result:
    """The attributes of a fuse_attr_out (GETATTR, SETATTR)."""
    return unpack_attr(body, ATTR_OUT_HEAD.size, minor)


def unpack_attr_valid(body) -> float:
    """attr_valid of a fuse_attr_out, in seconds: how long the attributes
    may be used without asking again (0 for a short reply)."""
    if len(body) < ATTR_OUT_HEAD.size:
        return 0.0
    sec, nsec, _dummy = ATTR_OUT_HEAD.unpack_from(body)
    return sec + nsec / 1e9


class EntryOut:
    """A decoded fuse_entry_out; `attr` is None for a negative entry."""
    __slots__ = ("nodeid", "generation", "entry_valid", "attr", "attr_valid")

    def __init__(self, nodeid, generation, entry_valid, attr, attr_valid=0.0):
        self.nodeid = nodeid
        self.generation = generation
        self.entry_valid = entry_valid      # seconds
        self.attr = attr
        self.attr_valid = attr_valid        # seconds, for attr


def unpack_entry_out(body, off: int, minor: int) -> EntryOut:
    """The fuse_entry_out at `off`."""
    if len(body) < off + ENTRY_HEAD.size:
        raise fuse_error(errno.EIO, "short entry reply")
    nodeid, gen, ev, av, evn, avn = ENTRY_HEAD.unpack_from(body, off)
    attr = (unpack_attr(body, off + ENTRY_HEAD.size, minor) if nodeid
            else None)
    return EntryOut(nodeid, gen, ev + evn / 1e9, attr, av + avn / 1e9)


def unpack_statfs(body) -> dict:
    """fuse_statfs_out as os.statvfs-like fields."""
    if len(body) >= KSTATFS.size:
        (blocks, bfree, bavail, files, ffree, bsize, namelen, frsize,
         _pad) = KSTATFS.unpack_from(body)
    elif len(body) >= KSTATFS_COMPAT.size:
        (blocks, bfree, bavail, files, ffree, bsize,
         namelen) = KSTATFS_COMPAT.unpack_from(body)
        frsize = 0
    else:
        raise fuse_error(errno.EIO, "short statfs reply")
    return {"f_bsize": bsize, "f_frsize": frsize or bsize,
            "f_blocks": blocks, "f_bfree": bfree, "f_bavail": bavail,
            "f_files": files, "f_ffree": ffree, "f_favail": ffree,
            "f_namemax": namelen}


def unpack_dirents(body, plus: bool, minor: int) -> list:
    """The entries of a READDIR (or, with `plus`, READDIRPLUS) reply as
    (name, d_type, ino, offset of the next entry, EntryOut or None)
    tuples; a truncated last entry is left out."""
    out = []
    pos = 0
    n = len(body)
    esize = entry_out_size(minor)
    while pos < n:
        entry = None
        if plus:
            if pos + esize + DIRENT.size > n:
                break
            entry = unpack_entry_out(body, pos, minor)
            pos += esize
        if pos + DIRENT.size > n:
            break
        ino, off, namelen, dtype = DIRENT.unpack_from(body, pos)
        start = pos + DIRENT.size
        if start + namelen > n:
            break
        name = os.fsdecode(bytes(body[start:start + namelen]))
        pos = (start + namelen + 7) & ~7
        out.append((name, dtype, ino, off, entry))
    return out


def unpack_inval_notify(code: int, body) -> Optional[tuple[int, bytes]]:
    """(parent nodeid, name) of a name the daemon says is gone or stale
    (FUSE_NOTIFY_INVAL_ENTRY, FUSE_NOTIFY_DELETE); None for any other
    notification, or a short one."""
    if code == FUSE_NOTIFY_INVAL_ENTRY and len(body) >= NOTIFY_INVAL_ENTRY.size:
        parent, namelen, _f = NOTIFY_INVAL_ENTRY.unpack_from(body)
        name = body[NOTIFY_INVAL_ENTRY.size:NOTIFY_INVAL_ENTRY.size + namelen]
    elif code == FUSE_NOTIFY_DELETE and len(body) >= NOTIFY_DELETE.size:
        parent, _child, namelen, _p = NOTIFY_DELETE.unpack_from(body)
        name = body[NOTIFY_DELETE.size:NOTIFY_DELETE.size + namelen]
    else:
        return None
    return parent, name


def opcode_name(opcode: int) -> str:
    """"READ" for FUSE_READ (for request counts in the debug log)."""
    for name, value in globals().items():
        if (value == opcode and name.startswith("FUSE_") and isinstance(value, int)
                and name[5:] in _OPCODE_WORDS):
            return name[5:]
    return str(opcode)


_OPCODE_WORDS = frozenset(
    "LOOKUP FORGET GETATTR SETATTR READLINK SYMLINK MKNOD MKDIR UNLINK RMDIR "
    "RENAME LINK OPEN READ WRITE STATFS RELEASE FSYNC SETXATTR GETXATTR "
    "LISTXATTR REMOVEXATTR FLUSH INIT OPENDIR READDIR RELEASEDIR FSYNCDIR "
    "GETLK SETLK SETLKW ACCESS CREATE INTERRUPT BMAP DESTROY IOCTL POLL "
    "BATCH_FORGET FALLOCATE READDIRPLUS RENAME2 LSEEK".split())
