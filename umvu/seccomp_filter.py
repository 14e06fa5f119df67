"""Seccomp filters built from the syscall table with libseccomp (pyseccomp).

Every process of a view starts with the *notifying* filter: the mount
family, unknown numbers, the negative control calls and other ABIs go to the
hypervisor as seccomp user notifications; everything else is allowed,
so a view with nothing loaded is never ptraced. Loading a module stacks a
*tracing* filter: it ALLOWs every known syscall except the trapped ones;
the rest (unknown numbers, other ABIs) returns RET_TRACE and stops in the
tracer. Filters only stack, so a view tightens by installing one more.
The notifying filter keeps its calls for good: the kernel ranks USER_NOTIF
above TRACE, and that is why only calls answered by a value belong to it.
"""

from __future__ import annotations

import functools
import tempfile

import pyseccomp

from . import syscall_table

#: SECCOMP_RET_DATA values: why the filter stopped the call
DATA_TABLE = 1      # the native table trapped it (or the number is unknown)
DATA_OTHER_ABI = 2  # i386 / x32 entry: not the native ABI
AUDIT_ARCH_X86_64 = 0xc000003e
X32_BIT = 0x40000000


def data_of(arch: int, nr: int) -> int:
    """The RET_DATA the tracing filter would have given (for notifications,
    which carry none)."""
    if arch != AUDIT_ARCH_X86_64 or (nr >= 0 and nr & X32_BIT):
        return DATA_OTHER_ABI
    return DATA_TABLE


#: libseccomp's SCMP_FLTATR_CTL_OPTIMIZE: 2 builds a binary tree of numbers
ATTR_OPTIMIZE = 8


@functools.lru_cache(maxsize=32)
def build(trapped: frozenset[int], notify: bool = False) -> bytes:
    """BPF program (struct sock_filter array) trapping `trapped` numbers:
    to the tracer, or with `notify` to the listener."""
    if notify:
        # libseccomp files the negative numbers under "bad arch" (x32 bit)
        flt = pyseccomp.SyscallFilter(pyseccomp.NOTIFY)
        flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.NOTIFY)
    else:
        flt = pyseccomp.SyscallFilter(pyseccomp.TRACE(DATA_TABLE))
        flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.TRACE(DATA_OTHER_ABI))
    try:
        flt.set_attr(ATTR_OPTIMIZE, 2)
    except OSError:
        pass                            # older libseccomp: a linear filter
    for call in syscall_table.TABLE:
        if call.nr not in trapped:
            flt.add_rule(pyseccomp.ALLOW, call.nr)
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


def trapped_numbers(families=(), names=()) -> frozenset[int]:
    """Numbers to trap for the given families and names, plus those always
    trapped."""
    families = set(families) | syscall_table.ALWAYS_TRAPPED
    return frozenset(syscall_table.numbers(families, names))


def notifying() -> bytes:
    """The filter every process of a view starts with."""
    return build(trapped_numbers(), notify=True)
