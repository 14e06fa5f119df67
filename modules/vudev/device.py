"""What every vudev device shares: a window on a host file descriptor
(BlockDevice), the open file a process gets (DeviceFile, a ServedFile with
the block ioctls) and the service that answers the device's path
(DeviceService)."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import time

from umvu.module import PathService, ServedFile, Window

SECTOR = 512
O_ACCMODE, O_CREAT, O_EXCL, O_DIRECTORY = 3, 0o100, 0o200, 0o200000
CHUNK = 1 << 20

# <linux/fs.h> and <linux/hdreg.h>, x86_64
BLKROSET, BLKROGET, BLKRRPART, BLKGETSIZE, BLKFLSBUF = 0x125d, 0x125e, 0x125f, 0x1260, 0x1261
BLKRASET, BLKRAGET, BLKFRASET, BLKFRAGET = 0x1262, 0x1263, 0x1264, 0x1265
BLKSSZGET, BLKBSZGET, BLKBSZSET, BLKGETSIZE64 = 0x1268, 0x80081270, 0x40081271, 0x80081272
BLKDISCARD, BLKIOMIN, BLKIOOPT, BLKALIGNOFF, BLKPBSZGET = 0x1277, 0x1278, 0x1279, 0x127a, 0x127b
BLKDISCARDZEROES, BLKSECDISCARD, BLKROTATIONAL, BLKZEROOUT = 0x127c, 0x127d, 0x127e, 0x127f
HDIO_GETGEO = 0x0301
HEADS, SECTORS_PER_TRACK = 255, 63


_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    return length == 0 or _libc.fallocate(
        fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length) == 0


class Attrs:
    """What stat shows of a device: type, permissions, owner, numbers."""

    def __init__(self, kind=stat.S_IFBLK, mode=0o600, uid=None, gid=None,
                 major=240, minor=0):
        self.kind, self.mode = kind, mode
        self.uid = os.getuid() if uid is None else uid
        self.gid = os.getgid() if gid is None else gid
        self.major, self.minor = major, minor
        self.mtime = time.time()

    def derived(self, minor_offset: int) -> "Attrs":
        """A partition's: the same but the minor number."""
        new = Attrs(self.kind, self.mode, self.uid, self.gid, self.major,
                    self.minor + minor_offset)
        new.mtime = self.mtime
        return new


class Backing:
    """A host descriptor shared by a disk, its partitions and their open
    files: closed when the last of them lets it go."""

    def __init__(self, fd: int):
        self.fd = fd
        self.refs = 0

    def hold(self) -> int:
        self.refs += 1
        return self.fd

    def drop(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class BlockDevice:
    """Bytes [offset, offset + size) of a host descriptor, as a device.

    Reads stop at the end; a write that starts at or past the end fails
    with ENOSPC and one that crosses it is cut short (as the kernel does),
    so nothing outside the window is ever written."""

    def __init__(self, backing: Backing | None, offset: int, size: int,
                 attrs: Attrs, *, readonly: bool = False, start_sector: int = 0,
                 name: str = ""):
        self.backing, self.offset, self.size = backing, offset, size
        self.fd = backing.hold() if backing is not None else -1
        self.retired = False
        self.attrs = attrs
        self.readonly = readonly
        self.start_sector = start_sector    # HDIO_GETGEO's start (partitions)
        self.name = name
        self.opens = 0
        self.disk = None                    # a partition's whole disk
        self.rescan = None                  # a disk with partitions: BLKRRPART

    def retire(self) -> None:
        """Unmounted: the descriptor goes once no open file needs it."""
        if not self.retired and self.backing is not None:
            self.retired = True
            self.backing.drop()

    # ---- data -------------------------------------------------------------
    def read(self, size: int, offset: int) -> bytes:
        if offset >= self.size or size <= 0:
            return b""
        size = min(size, self.size - offset)
        data = os.pread(self.fd, size, self.offset + offset)
        if len(data) < size:                # a short (sparse, cut) backing file
            data += b"\0" * (size - len(data))
        return data

    def write(self, data, offset: int) -> int:
        if self.readonly:
            raise OSError(errno.EPERM, "read-only device")
        if not data:
            return 0
        if offset >= self.size:
            raise OSError(errno.ENOSPC, "past the end of the device")
        view = memoryview(data)[:self.size - offset]
        done = 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], self.offset + offset + done)
        return done

    def zero(self, start: int, length: int) -> None:
        """BLKDISCARD, BLKZEROOUT: the range reads back as zeros (a hole
        punched in the backing file where it can be: a ramdisk gives its
        memory back)."""
        if _punch_hole(self.fd, self.offset + start, length):
            return
        zeros = bytes(min(CHUNK, length))
        end = start + length
        while start < end:
            n = min(CHUNK, end - start)
            os.pwrite(self.fd, zeros[:n], self.offset + start)
            start += n

    def fsync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:   # a memfd or pipe: nothing to sync
                raise

    # ---- attributes ---------------------------------------------------------
    def stat(self) -> os.stat_result:
        a = self.attrs
        mtime = int(a.mtime)
        return os.stat_result(
            (a.kind | a.mode, 0x7600000 + (a.major << 12) + a.minor, 0x5, 1,
             a.uid, a.gid, self.size, mtime, mtime, mtime),
            {"st_rdev": os.makedev(a.major, a.minor), "st_blksize": 4096,
             "st_blocks": 0})

    # ---- ioctl --------------------------------------------------------------
    def ioctl(self, request: int, arg: int, call) -> int:
        if self.attrs.kind != stat.S_IFBLK:
            return -errno.ENOTTY
        put = lambda fmt, *values: call.write(arg, struct.pack(fmt, *values)) or 0
        if request == BLKGETSIZE64:
            return put("Q", self.size)
        if request == BLKGETSIZE:
            return put("Q", self.size // SECTOR)
        if request in (BLKSSZGET, BLKPBSZGET, BLKIOMIN):
            return put("i", SECTOR)
        if request == BLKBSZGET:
            return put("i", 4096)
        if request in (BLKIOOPT, BLKALIGNOFF, BLKDISCARDZEROES, BLKROTATIONAL):
            return put("i", 0)
        if request in (BLKRAGET, BLKFRAGET):
            return put("Q", 0)
        if request in (BLKRASET, BLKFRASET, BLKBSZSET):
            return 0
        if request == BLKROGET:
            return put("i", 1 if self.readonly or self.backing_ro else 0)
        if request == BLKROSET:
            flag = struct.unpack("i", call.read(arg, 4))[0]
            if not flag and self.backing_ro:
                return -errno.EACCES
            self.readonly = bool(flag)
            return 0
        if request == BLKFLSBUF:
            self.fsync()
            return 0
        if request in (BLKDISCARD, BLKZEROOUT, BLKSECDISCARD):
            start, length = struct.unpack("QQ", call.read(arg, 16))
            if start % SECTOR or length % SECTOR:
                return -errno.EINVAL
            if start + length > self.size:
                return -errno.EINVAL
            if self.readonly:
                return -errno.EPERM
            self.zero(start, length)
            return 0
        if request == HDIO_GETGEO:
            cylinders = min(self.size // (HEADS * SECTORS_PER_TRACK * SECTOR), 0xffff)
            return put("BBHxxxxQ", HEADS, SECTORS_PER_TRACK, cylinders,
                       self.start_sector)
        if request == BLKRRPART:
            if self.rescan is None:
                return -errno.EINVAL
            self.rescan()
            return 0
        return -errno.ENOTTY

    #: the host file was opened read-only: BLKROSET 0 cannot help
    backing_ro = False


class DeviceFile(ServedFile):
    """One open of a device."""

    def __init__(self, device: BlockDevice):
        self.device = device
        device.opens += 1
        if device.backing is not None:
            device.backing.hold()
        self._open = True

    def read(self, size, offset):
        return self.device.read(size, offset)

    def write(self, data, offset):
        return self.device.write(data, offset)

    def stat(self):
        return self.device.stat()

    def truncate(self, size):
        raise OSError(errno.EINVAL, "a device has a fixed size")

    def fsync(self):
        self.device.fsync()

    def ioctl(self, request, arg, call):
        return self.device.ioctl(request, arg, call)

    def window(self):
        """Data calls go straight to the host file, clamped to the device."""
        dev = self.device
        if dev.fd < 0 or dev.retired and dev.backing.fd < 0:
            return None
        return Window(dev.fd, dev.offset, dev.size, readonly=dev.readonly)

    def release(self):
        if self._open:
            self._open = False
            self.device.opens -= 1
            if self.device.backing is not None:
                self.device.backing.drop()


class DeviceService(PathService):
    """A device node: the mount point itself is the device."""

    part_number = 0         # a partition's number
    keeper = None           # a disk with partitions: its partx.Partitioned

    def __init__(self, module, request, device: BlockDevice | None = None):
        super().__init__(module, request)
        self.device = device
        self.partitions: list["DeviceService"] = []    # a disk's
        self.disk: "DeviceService | None" = None        # a partition's

    @property
    def readonly(self):
        return self.device is not None and self.device.readonly

    def busy(self) -> bool:
        """Open by a process, itself or one of its partitions."""
        return bool(self.device.opens) or any(p.busy() for p in self.partitions)

    def new_file(self) -> ServedFile:
        return DeviceFile(self.device)

    def lstat(self, path, caller=None):
        if path != self.target:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        return self.device.stat()

    def readlink(self, path, caller=None):
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)

    def path_call(self, call):
        if call.path != self.target:
            return -errno.ENOTDIR           # nothing lies below a device
        dev, attrs = self.device, self.device.attrs
        if call.op == "stat":
            if call.name == "readlink" or call.name == "readlinkat":
                return -errno.EINVAL
            if call.name in ("statfs", "fstatfs"):
                return call.statfs_result({"f_bsize": 4096, "f_frsize": 4096,
                                           "f_namemax": 255})
            if call.name.endswith("xattr"):
                return -errno.ENODATA if "get" in call.name else 0
            return call.stat_result(dev.stat())
        if call.op == "open":
            if call.flags & O_CREAT and call.flags & O_EXCL:
                return -errno.EEXIST
            if call.flags & O_DIRECTORY:
                return -errno.ENOTDIR
            if call.flags & O_ACCMODE and (dev.readonly or dev.backing_ro):
                return -errno.EROFS
            return call.serve(self.new_file())
        if call.op == "modify":
            if call.name in ("chmod", "fchmodat", "fchmodat2", "fchmod"):
                attrs.mode = call.mode & 0o7777
                return 0
            if call.name in ("chown", "lchown", "fchownat", "fchown"):
                if call.uid not in (-1, 0xffffffff):
                    attrs.uid = call.uid
                if call.gid not in (-1, 0xffffffff):
                    attrs.gid = call.gid
                return 0
            if call.name.startswith(("utime", "futime")):
                attrs.mtime = call.times[1] / 1e9 if call.times else time.time()
                return 0
            if call.name in ("truncate", "ftruncate"):
                return -errno.EINVAL
            return -errno.EOPNOTSUPP        # xattrs
        if call.op == "create":
            return -errno.EEXIST
        if call.op == "link":
            return -errno.EXDEV
        return -errno.EBUSY                 # delete, rename: a mount point


def open_image(service: PathService, path: str, readonly: bool) -> tuple[Backing, bool]:
    """Open the file behind `path` of the view (as the service's older view
    sees it, with the rights of the process that mounted it): read-write
    unless readonly; a file it may only read is opened read-only (as
    losetup does). Returns the Backing and whether it is read-only."""
    host = service.lower.real(path, op="open", name="open")
    flags = os.O_RDONLY if readonly else os.O_RDWR
    with service.request.caller.acting_as():
        try:
            fd = os.open(host, flags | os.O_CLOEXEC)
        except OSError as exc:
            if readonly or exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise
            fd = os.open(host, os.O_RDONLY | os.O_CLOEXEC)
            readonly = True
    if not stat.S_ISREG(os.fstat(fd).st_mode) and not stat.S_ISBLK(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
    return Backing(fd), readonly


def image_size(fd: int) -> int:
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


class Refused(OSError):
    """A mount refused with a message for the user."""


def refuse(err: int, message: str) -> Refused:
    return Refused(err, message)


def attach_or_refuse(service: PathService, work) -> None:
    """Run work() while attaching; an error is logged as one line (the view
    logs mount()'s messages, not attach()'s) and refuses the mount."""
    try:
        work()
    except OSError as exc:
        if isinstance(exc, Refused):
            message = exc.strerror
        else:
            where = exc.filename or service.source
            message = f"{service.fstype}: {where}: {exc.strerror or os.strerror(exc.errno)}"
        service.ctx.log.error("%s", message)
        raise OSError(exc.errno or errno.EIO, message) from None
