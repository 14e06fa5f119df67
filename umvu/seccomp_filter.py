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

A built filter is kept in the user's cache directory, named by a hash of
what decides it (the table's numbers and what is trapped): libseccomp and
its binding cost a sixth of umvu's start-up, and a view with no module
needs only the notifying filter.
"""

from __future__ import annotations

import functools
import os
import stat
import zlib

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


NR_CLONE = syscall_table.NR["clone"]
#: CLONE_NEWNS | CLONE_NEWUSER: the clones a trapped clone stops for
CLONE_NS_FLAGS = 0x20000 | 0x10000000

#: libseccomp's SCMP_FLTATR_CTL_OPTIMIZE: 2 builds a binary tree of numbers
ATTR_OPTIMIZE = 8


def _cache_key(allowed: list[int], notify: bool) -> tuple[bytes, str | None]:
    """What decides a filter, and the file a copy of it is kept in (its
    name a checksum of the key; the file holds the key, checked on read)."""
    key = repr(("umvu-filter-2", notify, allowed, DATA_TABLE, DATA_OTHER_ABI,
                ATTR_OPTIMIZE, CLONE_NS_FLAGS)).encode() + b"\n"
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    if not home.startswith("/"):
        return key, None
    return key, os.path.join(home, "umvu", f"filter-{zlib.crc32(key):08x}.bpf")


@functools.lru_cache(maxsize=32)
def build(trapped: frozenset[int], notify: bool = False) -> bytes:
    """BPF program (struct sock_filter array) trapping `trapped` numbers:
    to the tracer, or with `notify` to the listener."""
    allowed = sorted(c.nr for c in syscall_table.TABLE if c.nr not in trapped)
    if NR_CLONE in trapped and not notify:
        allowed.append(-NR_CLONE)       # allowed unless it makes a namespace
    key, path = _cache_key(allowed, notify)
    bpf = _cached(path, key)
    if bpf is not None:
        return bpf
    bpf = _compile(allowed, notify)
    _store(path, key, bpf)
    return bpf


@functools.lru_cache(maxsize=64)
def build_on_fds(trapped: frozenset[int], fds: frozenset[int]) -> bytes:
    """BPF program stopping `trapped` numbers only when one of their
    descriptor arguments (the syscall table's fd and fd2) is in `fds`, and
    close_range always (it closes descriptors it does not name); everything
    else is allowed (the filters below decide it). A process holding a
    served file stacks one such filter per descriptor number, so that its
    calls on other descriptors never stop."""
    calls = []
    for nr in sorted(trapped):
        sc = syscall_table.BY_NR[nr]
        args = tuple(i for i in (sc.fd, sc.fd2) if i is not None and i >= 0)
        if sc.name == "close_range" or not args:
            calls.append((nr, ()))
        else:
            calls.append((nr, args))
    key = repr(("umvu-fd-filter-1", sorted(fds), calls, DATA_TABLE,
                ATTR_OPTIMIZE)).encode() + b"\n"
    _, path = _cache_key([], False)
    if path is not None:
        path = path.replace("filter-", f"fdfilter-{zlib.crc32(key):08x}-")
    bpf = _cached(path, key)
    if bpf is None:
        bpf = _compile_on_fds(calls, sorted(fds))
        _store(path, key, bpf)
    return bpf


def _compile_on_fds(calls, fds) -> bytes:
    import pyseccomp
    flt = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    flt.set_attr(pyseccomp.Attr.ACT_BADARCH, pyseccomp.ALLOW)
    try:
        flt.set_attr(ATTR_OPTIMIZE, 2)
    except OSError:
        pass
    trace = pyseccomp.TRACE(DATA_TABLE)
    for nr, args in calls:
        if not args:
            flt.add_rule(trace, nr)
            continue
        for index in args:          # an int argument: its low 32 bits count
            for fd in fds:
                flt.add_rule(trace, nr, pyseccomp.Arg(index, pyseccomp.MASKED_EQ,
                                                       0xffffffff, fd))
    return _export(flt)


def _store(path: str | None, key: bytes, bpf: bytes) -> None:
    """Keep a copy of a built filter (a cache: any failure only costs time)."""
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        import tempfile
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key + bpf)
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
    except OSError:
        pass


def _cached(path: str | None, key: bytes) -> bytes | None:
    """The cached filter, if this user wrote it (a file of ours that nobody
    else may write, not a link) and it holds the key."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022 or not stat.S_ISREG(st.st_mode):
            return None
        data = f.read()
    bpf = data[len(key):]
    return bpf if data.startswith(key) and bpf and len(bpf) % 8 == 0 else None


def _compile(allowed: list[int], notify: bool) -> bytes:
    import pyseccomp                    # only when the cache has no copy
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
    for nr in allowed:
        if nr == -NR_CLONE:
            # a trapped clone stops only when it asks for a namespace: fork
            # and threads stay free (clone3's flags are in memory: it stops)
            flt.add_rule(pyseccomp.ALLOW, NR_CLONE,
                         pyseccomp.Arg(0, pyseccomp.MASKED_EQ, CLONE_NS_FLAGS, 0))
        elif nr >= 0:
            flt.add_rule(pyseccomp.ALLOW, nr)
    return _export(flt)


def _export(flt) -> bytes:
    import tempfile
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
