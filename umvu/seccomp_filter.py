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
NEG1 = (1 << 64) - 1


@functools.lru_cache(maxsize=32)
def build(spec: frozenset, band: int) -> bytes:
    """BPF program (struct sock_filter array) for a trap spec: pairs
    (nr, args); args == () traps nr always, else only when one of those
    descriptor arguments is in the band (>= band)."""
    wanted = dict(spec)
    flt = pyseccomp.SyscallFilter(pyseccomp.TRACE(DATA_TABLE))
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.TRACE(DATA_OTHER_ABI))
    try:
        flt.set_attr(ATTR_OPTIMIZE, 2)
    except OSError:
        pass                            # older libseccomp: a linear filter
    for call in syscall_table.TABLE:
        args = wanted.get(call.nr)
        if args is None:
            flt.add_rule(pyseccomp.ALLOW, call.nr)
        elif args:
            flt.add_rule(pyseccomp.ALLOW, call.nr,
                         *(pyseccomp.Arg(a, pyseccomp.LT, band) for a in args))
            if len(args) == 1:          # fd -1: anonymous mmap, close(-1)...
                flt.add_rule(pyseccomp.ALLOW, call.nr,
                             pyseccomp.Arg(args[0], pyseccomp.EQ, NEG1))
    with tempfile.TemporaryFile() as out:
        flt.export_bpf(out)
        out.seek(0)
        return out.read()


def trap_spec(families=(), banded_names=(), names=()) -> frozenset:
    """What to trap: whole families and banded_names trapped only for band
    descriptors where the call allows it; names (module handlers) always;
    plus what is always trapped."""
    families = set(families) | syscall_table.ALWAYS_TRAPPED
    spec = {}
    for nr in syscall_table.numbers(families, banded_names):
        spec[nr] = syscall_table.band_args(syscall_table.BY_NR[nr])
    for nr in syscall_table.numbers((), names):
        spec[nr] = ()
    return frozenset(spec.items())


def covers(old: frozenset, new: frozenset) -> bool:
    """True when a filter for `old` already traps everything `new` traps."""
    have = dict(old)
    return all(nr in have and (have[nr] == () or have[nr] == args)
               for nr, args in new)


def merge(old: frozenset, new: frozenset) -> frozenset:
    spec = dict(old)
    for nr, args in new:
        spec[nr] = args if nr not in spec or spec[nr] == args else ()
    return frozenset(spec.items())
