"""vudev: virtual block and character devices, as VUOS's vudev.

    vu_insmod vudev
    vumount -t vudevramdisk -o size=100M none /dev/ramdisk
    vumount -t vudevpartx IMAGE /dev/sdx          # and /dev/sdx1, /dev/sdx2...
    vumount -t vudevloop IMAGE /dev/loop0
    vumount -t vudevnull none /dev/mynull

The fs type after "vudev" picks the kind of device (ramdisk.py, partx.py,
loop.py, null.py). Options every kind takes: mode= (octal, default 0600),
uid=, gid= (default: the hypervisor's), major=, minor= (default 240 and a
new block of 64 minors per device), chrdev | blkdev; `ro` makes the device
read-only. The device is the mount point itself; opening it gives a served
file (device.py) whose reads, writes and ioctls the hypervisor answers.
docs/vudev.md has the details.
"""

from __future__ import annotations

import errno
import stat

from umvu.module import Module

from . import loop, null, partx, ramdisk
from .device import Attrs, DeviceService, refuse

KINDS = {"ramdisk": ramdisk, "partx": partx, "loop": loop, "null": null}
MNT_FORCE, MNT_DETACH = 1, 2
DEFAULT_MAJOR = 240


def _number(words: dict, key: str, base: int, fstype: str, limit: int) -> int | None:
    text = words.pop(key, None)
    if text is None:
        return None
    try:
        value = int(text, base)
        if not 0 <= value <= limit:
            raise ValueError
    except ValueError:
        raise refuse(errno.EINVAL, f"{fstype}: {key}={text}: not a valid "
                     f"{'octal mode' if base == 8 else 'number'}") from None
    return value


class Vudev(Module):
    name = "vudev"
    description = "vu virtual devices (ramdisk, partx, loop, null)"
    families = ("path",)

    def init(self):
        self.next_minor = 0

    def attrs(self, words: dict, fstype: str, default_kind: int) -> Attrs:
        kind = default_kind
        if "chrdev" in words and "blkdev" in words:
            raise refuse(errno.EINVAL, f"{fstype}: chrdev or blkdev, not both")
        if words.pop("chrdev", 0) is None:
            kind = stat.S_IFCHR
        if words.pop("blkdev", 0) is None:
            kind = stat.S_IFBLK
        mode = _number(words, "mode", 8, fstype, 0o7777)
        uid = _number(words, "uid", 10, fstype, 0xfffffffe)
        gid = _number(words, "gid", 10, fstype, 0xfffffffe)
        major = _number(words, "major", 10, fstype, 0xfff)
        minor = _number(words, "minor", 10, fstype, 0xfffff)
        if minor is None:
            minor = self.next_minor
            self.next_minor += partx.MINORS_PER_DISK
        return Attrs(kind, 0o600 if mode is None else mode, uid, gid,
                     DEFAULT_MAJOR if major is None else major, minor)

    def mount(self, request):
        kind = request.fstype[len(self.name):]
        maker = KINDS.get(kind)
        if maker is None:
            raise refuse(errno.ENODEV, f"vudev: {request.fstype}: unknown device type "
                         f"(vudev{', vudev'.join(KINDS)})")
        words = request.words()
        words.pop("rw", None)
        attrs = self.attrs(words, request.fstype,
                           getattr(maker, "DEFAULT_KIND", stat.S_IFBLK))
        service = maker.mount(self, request, words, attrs)
        if words:
            raise refuse(errno.EINVAL, f"{request.fstype}: unknown option "
                         f"{','.join(words)}")
        return service

    def umount(self, service, flags):
        if not isinstance(service, DeviceService) or service.device is None:
            return
        if service.disk is not None:            # one partition, by hand
            if service in service.disk.partitions:
                service.disk.partitions.remove(service)
                service.disk.keeper.current.pop(service.part_number, None)
            service.device.retire()
            return
        busy = [p.target for p in service.partitions if p.busy()]
        if not flags & (MNT_FORCE | MNT_DETACH) and busy:
            raise OSError(errno.EBUSY, f"vudev: {', '.join(busy)} in use")
        if service.keeper is not None:
            service.keeper.remove_all()
        service.device.retire()
