"""Making the vDSO's calls reach the hypervisor (ServiceContext.bypass_vdso).

clock_gettime, gettimeofday, time and clock_getres are answered by the vDSO
in user space, without a syscall: no filter sees them. While a module asks
for it (vumisc's time view), every process of the view gets its vDSO's
entry points overwritten with `mov $NR,%eax; syscall; ret`, so each of those
calls becomes the real syscall, which the view traps. Elsewhere (outside
the view, or in it while nothing asks) the vDSO stays untouched and fast.

- A running process is patched through /proc/PID/mem: the kernel writes
  with FOLL_FORCE into a private copy of the vDSO page (copy on write),
  which its children inherit at fork.
- A process that execs gets a new vDSO: it is patched at the exec stop,
  before any of its code runs (the tracer hands exec events to Python
  while `Tracer.exec_hook` is set).
- When the last request goes, the original bytes are put back.

The symbols are found in the vDSO's own ELF dynamic symbol table, read from
the tracee; the result is kept per vDSO image (the same for every process
of a boot, but for its address).
"""

from __future__ import annotations

import logging
import os
import struct

from . import syscall_table

log = logging.getLogger("umvu")

#: vDSO symbol -> syscall it stands for
SYMBOLS = {
    "__vdso_clock_gettime": "clock_gettime",
    "__vdso_gettimeofday": "gettimeofday",
    "__vdso_time": "time",
    "__vdso_clock_getres": "clock_getres",
}


def stub(nr: int) -> bytes:
    """mov $nr,%eax; syscall; ret"""
    return b"\xb8" + struct.pack("<I", nr) + b"\x0f\x05\xc3"


def vdso_range(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[vdso]"):
                    start, end = line.split()[0].split("-")
                    return int(start, 16), int(end, 16)
    except OSError:
        pass
    return None


def elf_symbols(image: bytes) -> dict[str, int]:
    """name -> offset in the image, of the defined dynamic symbols."""
    if image[:4] != b"\x7fELF" or image[4] != 2:        # ELFCLASS64 only
        return {}
    (e_shoff,) = struct.unpack_from("<Q", image, 0x28)
    e_shentsize, e_shnum = struct.unpack_from("<HH", image, 0x3a)
    sections = []
    for i in range(e_shnum):
        off = e_shoff + i * e_shentsize
        (sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link,
         sh_info, sh_addralign, sh_entsize) = struct.unpack_from("<IIQQQQIIQQ", image, off)
        sections.append((sh_type, sh_addr, sh_offset, sh_size, sh_link, sh_entsize))
    found = {}
    for sh_type, _, offset, size, link, entsize in sections:
        if sh_type != 11:       # SHT_DYNSYM
            continue
        str_off = sections[link][2]
        for pos in range(offset, offset + size, entsize or 24):
            st_name, st_info, st_other, st_shndx, st_value, st_size = \
                struct.unpack_from("<IBBHQQ", image, pos)
            if not st_name or not st_shndx or not st_value:
                continue
            end = image.index(b"\0", str_off + st_name)
            found[image[str_off + st_name:end].decode()] = st_value
    # st_value is relative to the image's link address (0 for the vDSO, but
    # use the first PT_LOAD's p_vaddr to be safe)
    (e_phoff,) = struct.unpack_from("<Q", image, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", image, 0x36)
    base = 0
    for i in range(e_phnum):
        p_type, _, p_offset, p_vaddr = struct.unpack_from("<IIQQ", image, e_phoff + i * e_phentsize)
        if p_type == 1:         # PT_LOAD
            base = p_vaddr - p_offset
            break
    return {name: value - base for name, value in found.items()}


class VdsoBypass:
    """The tracer side of ServiceContext.bypass_vdso."""

    def __init__(self, tracer):
        self.tracer = tracer
        self._entries: dict[bytes, list[tuple[int, bytes, bytes]]] = {}   # image -> patches
        self.active = False

    # ---- on / off ------------------------------------------------------
    def enable(self) -> None:
        if self.active:
            return
        self.active = True
        self.tracer.exec_hook = self.patch_process
        self.tracer._update_fast_events()       # exec events reach Python
        for proc in list(self.tracer.processes.values()):
            self.patch(proc.pid)

    def disable(self) -> None:
        if not self.active:
            return
        self.active = False
        self.tracer.exec_hook = None
        self.tracer._update_fast_events()
        for proc in list(self.tracer.processes.values()):
            self.restore(proc.pid)

    # ---- one process -----------------------------------------------------
    def patch_process(self, proc) -> None:
        """At an exec stop: a new vDSO, pristine."""
        self.patch(proc.pid)

    def _patches(self, image: bytes) -> list:
        """[(offset, stub, original bytes)] for a vDSO image, patched or not."""
        for key, patches in self._entries.items():
            if len(key) == len(image) and all(
                    image[off:off + len(code)] in (code, orig)
                    for off, code, orig in patches):
                return patches
        symbols = elf_symbols(image)
        patches = []
        for name, sysname in SYMBOLS.items():
            off = symbols.get(name)
            if off is not None:
                code = stub(syscall_table.NR[sysname])
                patches.append((off, code, image[off:off + len(code)]))
        if patches:
            self._entries[image] = patches
        return patches

    def _rewrite(self, pid: int, to_stub: bool) -> bool:
        where = vdso_range(pid)
        if where is None:
            return False
        start, end = where
        try:
            mem = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        except OSError as exc:
            log.debug("vdso of %d: %s", pid, exc)
            return False
        try:
            image = os.pread(mem, end - start, start)
            for off, code, original in self._patches(image):
                now = image[off:off + len(code)]
                if to_stub and now != code:     # else inherited at fork
                    os.pwrite(mem, code, start + off)
                elif not to_stub and now == code:
                    os.pwrite(mem, original, start + off)
        except OSError as exc:
            if to_stub:
                log.error("cannot redirect the vDSO of %d: %s", pid, exc)
            return False
        finally:
            os.close(mem)
            # the tracer caches a `syscall` instruction of the vDSO for its
            # injected calls: it may be one of ours, which restore takes away
            proc = self.tracer.processes.get(pid)
            if proc is not None:
                proc.syscall_insn = None
        return True

    def patch(self, pid: int) -> bool:
        """Overwrite the vDSO entry points of process pid; False if it has
        no vDSO or cannot be written (it then keeps its fast calls)."""
        return self._rewrite(pid, True)

    def restore(self, pid: int) -> bool:
        """Put back the vDSO entry points of process pid."""
        return self._rewrite(pid, False)
