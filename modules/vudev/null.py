"""`vumount -t vudevnull none /dev/mynull`: reads find nothing, writes
vanish (a character device unless `blkdev` is given, then of size 0)."""

from __future__ import annotations

import stat

from .device import BlockDevice, DeviceService


class NullDevice(BlockDevice):
    def read(self, size, offset):
        return b""

    def write(self, data, offset):
        return len(data)

    def zero(self, start, length):
        pass

    def fsync(self):
        pass


def mount(module, request, words: dict, attrs) -> DeviceService:
    return DeviceService(module, request,
                         NullDevice(None, 0, 0, attrs, name=request.target))


DEFAULT_KIND = stat.S_IFCHR
