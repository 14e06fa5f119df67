"""`vumount -t vudevloop IMAGE /dev/loop0`: a file as a block device
(losetup). `offset=` and `sizelimit=` (bytes) take a part of it. Read-only
when mounted ro, or when the file may not be written. The size is the
file's, cut to whole 512-byte sectors; the device does not grow."""

from __future__ import annotations

import errno

from .device import (SECTOR, BlockDevice, DeviceService, attach_or_refuse,
                     image_size, open_image, refuse)

MS_RDONLY = 1


def _bytes(words: dict, key: str) -> int | None:
    text = words.pop(key, None)
    if text is None:
        return None
    try:
        value = int(text, 0)
        if value < 0:
            raise ValueError
    except ValueError:
        raise refuse(errno.EINVAL, f"vudevloop: {key}={text}: not a number of bytes") from None
    return value


class LoopService(DeviceService):
    def __init__(self, module, request, attrs, offset: int, sizelimit: int | None):
        super().__init__(module, request)
        self.attrs, self.offset, self.sizelimit = attrs, offset, sizelimit

    def attach(self):
        attach_or_refuse(self, self._attach)

    def _attach(self):
        backing, ro = open_image(self, self.source, bool(self.flags & MS_RDONLY))
        backing.refs = 0
        size = image_size(backing.fd) - self.offset
        if self.sizelimit is not None:
            size = min(size, self.sizelimit)
        size -= size % SECTOR
        if size <= 0:
            backing.hold()
            backing.drop()
            raise refuse(errno.EINVAL, f"{self.fstype}: {self.source}: no data "
                         f"(the file is smaller than offset + one sector)")
        self.device = BlockDevice(backing, self.offset, size, self.attrs,
                                  readonly=ro, name=self.target)
        self.device.backing_ro = ro


def mount(module, request, words: dict, attrs) -> LoopService:
    request.source = module.ctx.resolve(request.caller, request.source)
    offset = _bytes(words, "offset") or 0
    sizelimit = _bytes(words, "sizelimit")
    return LoopService(module, request, attrs, offset, sizelimit)
