"""`vumount -t vudevramdisk -o size=100M none /dev/ramdisk`: a disk in the
hypervisor's memory (a memfd: pages are taken when written). size= takes a
K, M, G or T suffix (powers of 1024) or a number of 512-byte sectors;
32 MiB by default. `mbr` writes an empty MBR first; the ramdisk then has
partitions (/dev/ramdisk1...) once a table is written and re-read."""

from __future__ import annotations

import errno
import os
import re

from .device import SECTOR, Backing, BlockDevice, DeviceService, attach_or_refuse, refuse
from .partx import attach_partitions, empty_mbr

DEFAULT_SIZE = 32 << 20
SUFFIX = {"": SECTOR, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_SIZE
    match = re.fullmatch(r"(\d+)([kKmMgGtT]?)(?:i?[bB])?", text.strip())
    if not match or (match.group(2) == "" and text.strip()[-1:] in "bB"):
        raise refuse(errno.EINVAL, f"vudevramdisk: size={text}: not a size (a number "
                     "of 512-byte sectors, or a number with K, M, G or T)")
    size = int(match.group(1)) * SUFFIX[match.group(2).upper()]
    if size < SECTOR or size % SECTOR:
        raise refuse(errno.EINVAL, f"vudevramdisk: size={text}: must be a positive "
                     "multiple of 512 bytes")
    return size


class RamdiskService(DeviceService):
    def __init__(self, module, request, attrs, size: int, mbr: bool):
        super().__init__(module, request)
        self.size, self.mbr, self.attrs = size, mbr, attrs

    def attach(self):
        attach_or_refuse(self, self._attach)

    def _attach(self):
        fd = os.memfd_create("vudev-ramdisk", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, self.size)
        except OSError:
            os.close(fd)
            raise refuse(errno.ENOMEM, f"vudevramdisk: cannot make a ramdisk of "
                         f"{self.size} bytes") from None
        if self.mbr:
            os.pwrite(fd, empty_mbr(), 0)
        self.device = BlockDevice(Backing(fd), 0, self.size, self.attrs,
                                  readonly=bool(self.flags & 1), name=self.target)
        if self.mbr:
            attach_partitions(self, strict=False)


def mount(module, request, words: dict, attrs) -> RamdiskService:
    size = parse_size(words.pop("size", None))
    mbr = "mbr" in words
    words.pop("mbr", None)
    return RamdiskService(module, request, attrs, size, mbr)
