"""Seccomp filters built from the syscall table with libseccomp (pyseccomp).

A filter ALLOWs every known syscall except the trapped ones; everything else
(trapped families, unknown numbers, the negative control calls, other ABIs)
returns RET_TRACE and stops in the tracer. Filters only stack, so a view
tightens by installing one more filter that traps more.
"""

from __future__ import annotations

import functools
import tempfile

import pyseccomp

from . import syscall_table

#: SECCOMP_RET_DATA values: why the filter stopped the call
DATA_TABLE = 1      # the native table trapped it (or the number is unknown)
DATA_OTHER_ABI = 2  # i386 / x32 entry: not the native ABI


#: libseccomp's SCMP_FLTATR_CTL_OPTIMIZE: 2 builds a binary tree of numbers
ATTR_OPTIMIZE = 8


@functools.lru_cache(maxsize=32)
def build(trapped: frozenset[int]) -> bytes:
    """BPF program (struct sock_filter array) trapping `trapped` numbers."""
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
