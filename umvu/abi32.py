"""Calls of the other ABIs (i386 by int $0x80, x32) that a mounted file
system cannot allow: umvu virtualizes only the native x86_64 table, so a
32-bit open, chmod or fchown would reach the host's files behind every
mount. While a file system is mounted they fail with ENOSYS, as io_uring
does; the rest of a 32-bit program (memory, signals, time, read and write
on descriptors it has) runs.
"""

from __future__ import annotations

#: i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl) that name a path,
#: change what a descriptor refers to, change a file through a descriptor,
#: or open a way around the view (namespaces, io_uring, new mount API)
I386_REFUSED = frozenset({
    5, 8, 9, 10, 11, 12, 14, 15, 16, 18, 21, 22, 30, 33, 38, 39, 40, 51, 52,
    61, 83, 84, 85, 86, 87, 92, 99, 106, 107, 115, 131, 182, 183, 193, 195,
    196, 198, 212, 217, 226, 227, 229, 230, 232, 233, 235, 236, 268, 271,
    292, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305, 306, 307,
    320, 339, 341, 342, 353, 358, 383, 412, 428, 429, 430, 431, 432, 433,
    437, 439, 442, 443, 452, 463, 464, 465, 466, 468, 469,
    # descriptors: dup/fcntl/fchdir/fchmod/fchown/fxattr/ioctl/sendfile/splice
    41, 54, 55, 63, 93, 94, 95, 133, 187, 194, 207, 221, 228, 237, 239, 313,
    330, 377,
    # sockets named by path (AF_UNIX bind, connect, send*), and socketcall
    102, 345, 361, 362, 369, 370,
    # ways around the view
    120, 190, 310, 346, 425, 426, 427, 435, 467,
})

X32_BIT = 0x40000000


def refused(nr: int) -> bool:
    """Must a call of another ABI fail while a file system is mounted?
    Every x32 call does (no x32 program is known to run here)."""
    if nr >= 0 and nr & X32_BIT:
        return True
    return nr in I386_REFUSED
