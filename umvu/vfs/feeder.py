"""The one feeder of the C core's state: what the fast path (csrc/fastpath.c)
must know to decide a call without Python. Per syscall number, a row built
from the syscall table (FastRow); per thread, its process, cwd, flags and
the descriptors the view mirrors; the mount points and what may be walked
below them in C; whether some process's /proc links are now the view's.
All of it goes through umvu.ccore's setters (csrc/core.h); the tracer
relays none of it."""

from __future__ import annotations

import os
import threading

from .. import ccore, creds, syscall_table
from ..servicetable import path_under
from ..linux import O_DIRECTORY
from .fdmirror import WATCH_ALL
from .state import ProcFs

#: calls that must always reach Python: they change or report the state
#: (close_range's descriptor argument starts a range: not one to check)
SLOW = {"chdir", "fchdir", "chroot", "execveat", "getcwd",
        "io_uring_setup", "bind", "connect", "close_range"}


class CoreFeeder:
    def __init__(self, vfs):
        self.vfs = vfs
        self._later: dict[int, ProcFs] = {}
        self._procs_later: dict[int, object] = {}

    # ---- per thread -------------------------------------------------------------
    def sync(self, proc) -> None:
        """Tell the C core whether this process's calls could be virtual.
        Only the tracer's thread does: the C core changes the tables itself
        (journaled), and a worker's copy could undo a change not yet
        replayed; a worker's sync waits for the next turn of the loop."""
        if threading.current_thread() is not threading.main_thread():
            self._procs_later[proc.pid] = proc
            ccore.lib.umvu_poke()
            return
        pfs = self.vfs.known_state(proc)
        if pfs is None:
            return
        flags = ccore.TF_PYTHON if pfs.fs.root != "/" else 0
        if len(proc.threads) > 1 or pfs.files.shared:
            flags |= ccore.TF_SHARED
        if os.geteuid() == 0 and (getattr(proc, "creds_changed", False) or
                                  not creds.has_my_rights(proc.pid)):
            flags |= ccore.TF_NOMAP   # the C core's walk would lend it root's rights
        if flags & ccore.TF_PYTHON or pfs.files.fds or pfs.exe or any(
                path_under(pfs.fs.cwd, m) for m in self.vfs.services.mount_points()):
            self.proc_virtual()         # its /proc/PID/{root,fd,exe,cwd}
        all_fds = getattr(proc, "fd_watch", 0) == WATCH_ALL
        fds = [describe(fd, entry, all_fds) for fd, (entry, _) in pfs.files]
        for tid in proc.threads:
            ccore.set_thread(tid, proc.pid, flags, pfs.fs.cwd, fds)

    def changed(self, pfs: ProcFs) -> None:
        """pfs's cwd, root or descriptors changed: re-sync all who share them."""
        for proc in self.vfs.view.tracer.processes.values():
            other = self.vfs.known_state(proc)
            if other is not None and (other.fs is pfs.fs or other.files is pfs.files):
                self.sync(proc)

    def changed_later(self, pfs: ProcFs) -> None:
        """As changed(), once the journal is replayed (flush)."""
        self._later[id(pfs)] = pfs

    def flush(self) -> None:
        """On the tracer's thread, after the journal's replay: the syncs
        put off (changed_later, and workers')."""
        if not self._later and not self._procs_later:
            return                  # (every turn of the tracer's loop asks)
        later, self._later = self._later, {}
        for pfs in later.values():
            self.changed(pfs)
        procs, self._procs_later = self._procs_later, {}
        for proc in procs.values():
            if not proc.exited:
                self.sync(proc)

    def sync_all(self) -> None:
        for proc in self.vfs.view.tracer.processes.values():
            self.sync(proc)

    @staticmethod
    def proc_virtual() -> None:
        """Some process's /proc/PID/{cwd,fd,exe} now differ from the kernel's:
        the C core sends such paths to Python from now on."""
        ccore.set_proc_virtual()

    # ---- mounts --------------------------------------------------------------------
    def mounts_changed(self) -> None:
        """Paths below which the C core must ask Python, unless the host
        directory given with one stands for it (a plain bind, or layers)."""
        ccore.set_mounts(self.vfs.services.host_dirs())
        self.vfs.served.unmounted(set(self.vfs.services))
        self.sync_all()

    # ---- per syscall number ----------------------------------------------------------
    def _exec_hooks(self) -> bool:
        """Some loaded module wants to hear of every exec."""
        from ..module import Module
        return any(type(m).exec_interpreter is not Module.exec_interpreter
                   for m in self.vfs.view.modules.values())

    def set_rows(self, trapped, taken, vfs_active: bool) -> None:
        """What the C core may decide alone at a seccomp stop, for each
        trapped number: a path or descriptor row of the VFS's, or resume at
        once (trapped by some filter, wanted by nobody). `taken(nr)`: the
        view or a module answers it, so Python must see it."""
        rows = {}
        for nr in trapped:
            if taken(nr):
                continue
            if vfs_active and nr in self.vfs.handlers:
                row = fast_row(nr, self._exec_hooks())
                if row is not None:
                    rows[nr] = row
            else:
                rows[nr] = ccore.RESUME
        ccore.set_fast_rows(rows)


def describe(fd: int, entry, all_fds: bool) -> tuple:
    """What the C core is told of a mirrored descriptor (ccore.set_thread):
    its window; native when the kernel's answers to its calls are the
    view's (a file of a plain bind, with nothing the view adds); its data
    and stat calls, or only its stat calls (a lower layer's file or a
    merged directory, with no metadata of the service's); whether
    its close may be made in C (not a served file), and its dups (a dup
    needs no filter of its own: all_fds, the process traps every
    descriptor call); a directory's view path, from which relative paths
    are walked."""
    native = entry.served is None and entry.listing is None and not entry.trap \
        and not entry.meta and not entry.window and _plain_bind(entry.service)
    table_c = entry.served is None
    dup_c = table_c and (entry.listing is None or all_fds)
    stat_native = entry.served is None and not entry.meta and not entry.window
    reads = stat_native and entry.listing is None
    is_dir = entry.listing is not None or entry.flags & O_DIRECTORY or \
        entry.private.get("dir")
    return (fd, entry.window, (ccore.FD_NATIVE if native else 0) |
            (ccore.FD_TABLE_C if table_c else 0) | (ccore.FD_DUP_C if dup_c else 0) |
            (ccore.FD_READS if reads else 0) | (ccore.FD_STAT if stat_native else 0),
            entry.path if is_dir and entry.served is None else None, entry.host)


def _plain_bind(service) -> bool:
    """The service promised that a host directory stands for its mount."""
    host_dir = getattr(service, "host_dir", None)
    try:
        found = host_dir() if host_dir is not None else None
    except Exception:
        return False
    return found is not None and found[1] is None


def fd_class(sc) -> int:
    """What a descriptor call does to its descriptor (ccore.FDC_*)."""
    if sc.family == "fdmeta":
        return ccore.FDC_TABLE
    if sc.family == "fdattr" or sc.name == "ioctl":
        return ccore.FDC_ATTR
    return ccore.FDC_STAT if sc.name == "fstat" else ccore.FDC_DATA


def fast_row(nr: int, exec_hooks: bool = False) -> ccore.FastRow | None:
    """The C fast-path row (FastRow) of a number the VFS handles, or None.
    execve: only while no module has an exec_interpreter hook (it must see
    every exec then)."""
    sc = syscall_table.BY_NR[nr]
    if sc.name in SLOW or sc.name == "execve" and exec_hooks:
        return None
    if sc.family in ("fd", "fdmeta", "fdattr"):
        fd = sc.fd if sc.fd is not None else -1
        fd2 = sc.fd2 if sc.fd2 is not None else -1
        return ccore.FastRow(ccore.FAST_FD, path=fd, path2=fd2,
                             fdclass=fd_class(sc))
    if sc.family != "path":
        return None
    path, at = (sc.path, sc.at) if sc.path is not None else (sc.path2, sc.at2)
    path2, at2 = (sc.path2, sc.at2) if sc.path is not None else (None, None)
    follow, follow_arg = ccore.FOLLOW_ALWAYS, -1
    if sc.nofollow == "always":
        follow = ccore.FOLLOW_NEVER
    elif sc.nofollow:
        kind, _, arg = sc.nofollow.partition(":")
        follow, follow_arg = (ccore.FOLLOW_AT if kind == "at" else ccore.FOLLOW_O), int(arg)
    none = lambda v: -1 if v is None else v  # noqa: E731
    # below a plain bind the C core may rewrite the path itself, but not
    # of a call that opens a descriptor (the view mirrors those); below
    # layers (cow) only of a stat-like one (the others may copy up)
    op = sc.op
    rewrite = 0 if path2 is not None or op is None or \
        sc.name == "openat2" else {"stat": 1, "modify": 2,
                                    "open": ccore.REWRITE_OPEN}.get(op, 3)
    if sc.name in ("access", "faccessat", "faccessat2"):
        rewrite = 2     # below layers a service answers as a copy-up would
    if sc.name == "execve":
        rewrite = ccore.REWRITE_EXEC

    return ccore.FastRow(ccore.FAST_PATH, path=none(path), at=none(at),
                         path2=none(path2), at2=none(at2), follow=follow,
                         follow_arg=follow_arg, empty=none(sc.empty),
                         rewrite=rewrite)
