"""Partition tables: MBR (primary, extended and logical partitions) and GPT
(header and entry CRCs checked, the backup header used when the primary one
is damaged, as Linux does); and the partitions of a disk as devices of their
own: /dev/sdx1, /dev/sdx2... (/dev/loop0p1 when the disk's name ends in a
digit).

`vumount -t vudevpartx IMAGE /dev/sdx` mounts the image as the disk."""

from __future__ import annotations

import errno
import os
import struct
import zlib

from umvu.module import MountRequest

from .device import (SECTOR, BlockDevice, DeviceService, attach_or_refuse,
                     image_size, open_image, refuse)

EXTENDED = (0x05, 0x0F, 0x85)
GPT_PROTECTIVE = 0xEE
MAX_LOGICAL = 128
MAX_GPT_ENTRIES = 1024
#: minors of one disk: the disk's, then one per partition
MINORS_PER_DISK = 64
MS_RDONLY = 1


class TableError(Exception):
    """A partition table that cannot be used: the message says why."""


class Part:
    __slots__ = ("number", "start", "sectors", "kind")

    def __init__(self, number: int, start: int, sectors: int, kind: str):
        self.number, self.start, self.sectors, self.kind = number, start, sectors, kind

    def key(self):
        return (self.number, self.start, self.sectors)

    def __repr__(self):
        return f"<Part {self.number} {self.kind} start={self.start} sectors={self.sectors}>"


def _sector(read, lba: int, total: int, what: str) -> bytes:
    if lba >= total:
        raise TableError(f"truncated partition table: {what} at sector {lba} "
                         f"lies past the end ({total} sectors)")
    data = read(SECTOR, lba * SECTOR)
    if len(data) < SECTOR:
        raise TableError(f"truncated partition table: {what} at sector {lba}")
    return data


def scan(read, size: int) -> list[Part]:
    """The partitions of a disk of `size` bytes; read(n, offset) -> bytes.
    Raises TableError."""
    total = size // SECTOR
    if size < SECTOR:
        raise TableError(f"truncated partition table: the image has only {size} "
                         f"bytes, an MBR needs {SECTOR}")
    mbr = read(SECTOR, 0)
    if len(mbr) < SECTOR or mbr[510:512] != b"\x55\xaa":
        raise TableError("no partition table (no MBR signature 55 aa in sector 0)")
    entries = [struct.unpack_from("<B3sB3sII", mbr, 446 + 16 * i) for i in range(4)]
    if any(e[2] == GPT_PROTECTIVE for e in entries):
        return _gpt(read, total)
    parts = []
    logical = 5
    for i, (_, _, ptype, _, start, sectors) in enumerate(entries):
        if ptype == 0 or sectors == 0:
            continue
        _check(i + 1, start, sectors, total)
        if ptype in EXTENDED:
            # Linux shows the extended partition itself as 1 KiB
            parts.append(Part(i + 1, start, min(sectors, 2), "extended"))
            for part in _logical(read, start, sectors, total, logical):
                parts.append(part)
                logical += 1
        else:
            parts.append(Part(i + 1, start, sectors, f"mbr:{ptype:02x}"))
    return parts


def _check(number: int, start: int, sectors: int, total: int) -> None:
    if start + sectors > total:
        raise TableError(f"partition {number} runs past the end of the image "
                         f"(sectors {start}-{start + sectors - 1}, the image "
                         f"has {total})")


def _logical(read, ext_start: int, ext_sectors: int, total: int, first: int):
    """The chain of extended boot records inside an extended partition."""
    ebr, seen, number = ext_start, set(), first
    while True:
        if ebr in seen or len(seen) >= MAX_LOGICAL:
            raise TableError(f"extended partition table loops at sector {ebr}")
        seen.add(ebr)
        data = _sector(read, ebr, total, "extended boot record")
        if data[510:512] != b"\x55\xaa":
            raise TableError(f"bad extended boot record at sector {ebr} "
                             "(no signature 55 aa)")
        this = struct.unpack_from("<B3sB3sII", data, 446)
        nxt = struct.unpack_from("<B3sB3sII", data, 462)
        if this[2] and this[5]:
            start = ebr + this[4]
            _check(number, start, this[5], total)
            if start + this[5] > ext_start + ext_sectors:
                raise TableError(f"logical partition {number} runs past the end "
                                 "of its extended partition")
            yield Part(number, start, this[5], f"mbr:{this[2]:02x}")
            number += 1
        if nxt[2] not in EXTENDED or not nxt[4]:
            return
        ebr = ext_start + nxt[4]


GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")


def _gpt_header(read, lba: int, total: int):
    """(header fields, entries bytes) of the GPT header at lba, or TableError."""
    data = _sector(read, lba, total, "GPT header")
    (sig, _rev, hsize, crc, _res, current, backup, first, last, _guid,
     entries_lba, count, esize, ecrc) = GPT_HEADER.unpack_from(data)
    if sig != b"EFI PART":
        raise TableError(f"no GPT header at sector {lba} (protective MBR found)")
    if not 92 <= hsize <= SECTOR:
        raise TableError(f"bad GPT header size {hsize} at sector {lba}")
    check = bytearray(data[:hsize])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) != crc:
        raise TableError(f"GPT header at sector {lba}: bad CRC")
    if esize < 128 or esize % 8 or count > MAX_GPT_ENTRIES:
        raise TableError(f"bad GPT entry array ({count} entries of {esize} bytes)")
    nbytes = count * esize
    end_lba = entries_lba + (nbytes + SECTOR - 1) // SECTOR
    if end_lba > total:
        raise TableError(f"truncated partition table: GPT entries up to sector "
                         f"{end_lba - 1}, the image has {total}")
    table = read(nbytes, entries_lba * SECTOR)
    if len(table) < nbytes:
        raise TableError("truncated partition table: GPT entries cut short")
    if zlib.crc32(table) != ecrc:
        raise TableError(f"GPT entries of the header at sector {lba}: bad CRC")
    return backup, esize, count, table


def _gpt(read, total: int) -> list[Part]:
    try:
        _backup, esize, count, table = _gpt_header(read, 1, total)
    except TableError as primary:
        try:                            # Linux falls back to the backup header
            _backup, esize, count, table = _gpt_header(read, total - 1, total)
        except TableError:
            raise primary from None
    parts = []
    for i in range(count):
        entry = table[i * esize:(i + 1) * esize]
        ptype, _uuid, first, last = struct.unpack_from("<16s16sQQ", entry)
        if ptype == bytes(16):
            continue
        if last < first:
            raise TableError(f"partition {i + 1} ends before it starts")
        _check(i + 1, first, last - first + 1, total)
        parts.append(Part(i + 1, first, last - first + 1, "gpt"))
    return parts


def empty_mbr() -> bytes:
    """An MBR with no partitions (a random disk identifier)."""
    mbr = bytearray(SECTOR)
    mbr[440:444] = os.urandom(4)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


# ---- partitions as devices -------------------------------------------------------

def part_path(disk: str, number: int) -> str:
    return f"{disk}{'p' if disk[-1:].isdigit() else ''}{number}"


class Partitioned:
    """Keeps the partition services of a disk service in step with its table
    (at mount and on BLKRRPART). The partitions are the module's own
    services (ServiceContext.add_service): not in /proc/mounts, removed with
    the disk."""

    def __init__(self, disk: DeviceService):
        self.disk = disk
        self.current: dict[int, tuple] = {}

    def parts(self) -> list[Part]:
        dev = self.disk.device
        return scan(dev.read, dev.size)

    def apply(self, parts: list[Part]) -> None:
        disk, ctx = self.disk, self.disk.ctx
        wanted = {p.number: p for p in parts}
        for service in list(disk.partitions):
            number = service.part_number
            if number not in wanted or wanted[number].key() != self.current.get(number):
                ctx.remove_service(service)
                service.device.retire()
                disk.partitions.remove(service)
                self.current.pop(number, None)
        for number, part in sorted(wanted.items()):
            if number in self.current:
                continue
            dev = disk.device
            pdev = BlockDevice(dev.backing, dev.offset + part.start * SECTOR,
                               part.sectors * SECTOR,
                               dev.attrs.derived(number), readonly=dev.readonly,
                               start_sector=part.start,
                               name=part_path(disk.target, number))
            pdev.backing_ro = dev.backing_ro
            pdev.disk = dev
            request = MountRequest(disk.source, pdev.name, disk.fstype,
                                   disk.flags, disk.options, disk.request.caller)
            service = DeviceService(disk.module, request, pdev)
            service.part_number = number
            service.disk = disk
            ctx.add_service(service)
            disk.partitions.append(service)
            self.current[number] = part.key()

    def rescan(self) -> None:
        """BLKRRPART: a table that cannot be read leaves no partitions."""
        try:
            parts = self.parts()
        except TableError as exc:
            self.disk.ctx.log.warning("%s: %s", self.disk.target, exc)
            parts = []
        self.apply(parts)

    def remove_all(self) -> None:
        self.apply([])


def attach_partitions(disk: DeviceService, strict: bool) -> None:
    """Scan the disk and add its partitions; strict: a bad table refuses the
    mount (OSError EINVAL with the reason), else it leaves no partitions."""
    keeper = Partitioned(disk)
    disk.device.rescan = keeper.rescan
    disk.keeper = keeper
    if strict:
        try:
            parts = keeper.parts()
        except TableError as exc:
            raise refuse(errno.EINVAL, f"{disk.fstype}: {disk.source}: {exc}") from None
        keeper.apply(parts)
    else:
        keeper.rescan()


# ---- vumount -t vudevpartx IMAGE /dev/sdx ------------------------------------------

class PartxService(DeviceService):
    def __init__(self, module, request, attrs):
        super().__init__(module, request)
        self.attrs = attrs

    def attach(self):
        attach_or_refuse(self, self._attach)

    def _attach(self):
        backing, ro = open_image(self, self.source, bool(self.flags & MS_RDONLY))
        size = image_size(backing.fd)
        self.device = BlockDevice(backing, 0, size - size % SECTOR, self.attrs,
                                  readonly=ro, name=self.target)
        self.device.backing_ro = ro
        try:
            attach_partitions(self, strict=True)
        except OSError:
            self.device.retire()
            raise


def mount(module, request, words: dict, attrs) -> PartxService:
    request.source = module.ctx.resolve(request.caller, request.source)
    return PartxService(module, request, attrs)
