"""The two layers of a vufs mount and what each mode does with a call.

`top` is SOURCE (where changes go in cow/mincow, the read-only layer in
merge, everything in bind); `bottom` is what TARGET showed before the mount.
Paths here are `rel`: '' for the mount point, else '/a/b'. Host work goes
through `lower`, the view as it was before this mount.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile

from umvu.module import linux

from .store import Store

STAT_CALLS = {"stat", "lstat", "newfstatat", "statx"}
ACCESS_CALLS = {"access", "faccessat", "faccessat2"}
OWNER_CALLS = {"chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat",
               "utime", "utimes", "futimesat", "utimensat"}
DT = {stat.S_IFREG: 8, stat.S_IFDIR: 4, stat.S_IFLNK: 10, stat.S_IFCHR: 2,
      stat.S_IFBLK: 6, stat.S_IFIFO: 1, stat.S_IFSOCK: 12}


#: the name of a copy-up in progress (renamed into place when complete)
TEMP_PREFIX = ".vufs-"


def writes(flags: int) -> bool:
    return flags & linux.O_ACCMODE != 0 or bool(flags & linux.O_TRUNC)


class Layers:
    def __init__(self, lower, source: str, target: str, opts):
        self.lower = lower
        self.source = source.rstrip("/") if source != "/" else ""
        self.target = target.rstrip("/") if target != "/" else ""
        self.mode = opts.mode
        self.opts = opts
        layered = self.mode in ("merge", "cow", "mincow")
        self.store = self._store() if layered else None

    def _store(self) -> Store:
        """SOURCE's bookkeeping: a host directory's (cow, mincow: the store
        must be one); a merge SOURCE an older service serves (an image)
        has none, as a read-only one never written."""
        try:
            host = self._host(self.source or "/")
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            if self.mode != "merge":
                raise OSError(errno.EOPNOTSUPP, f"vufs: {self.source}: the store "
                              "of cow and mincow must be a host directory") from None
            store = Store.__new__(Store)
            store.root, store.fd = None, None
            return store
        return Store(host, writable=self.mode in ("cow", "mincow"))

    # ---- addressing -------------------------------------------------------
    def top(self, rel: str) -> str:
        return (self.source + rel) or "/"

    def bottom(self, rel: str) -> str:
        return (self.target + rel) or "/"

    def _host(self, path: str, op: str = "stat") -> str:
        return self.lower.real(path, op)

    def _lstat(self, path: str):
        try:
            return self.lower.lstat(path)
        except OSError:
            return None

    def in_top(self, rel: str):
        return self._lstat(self.top(rel))

    def where(self, rel: str) -> str | None:
        """Which layer shows rel: 'top', 'bottom' or None (absent/deleted)."""
        if self.mode in ("bind", "move"):
            return "top"
        if self.store.deleted(rel):
            return None
        if self.in_top(rel) is not None:
            return "top"
        if self._lstat(self.bottom(rel)) is not None:
            return "bottom"
        return None

    def path_of(self, rel: str) -> str:
        return self.bottom(rel) if self.where(rel) == "bottom" else self.top(rel)

    # ---- used by the path walk -------------------------------------------------
    def lstat(self, rel: str):
        if self.where(rel) is None:
            raise FileNotFoundError(errno.ENOENT, "deleted", rel)
        return self.lower.lstat(self.path_of(rel))

    def readlink(self, rel: str) -> str:
        if self.where(rel) is None:
            raise FileNotFoundError(errno.ENOENT, "deleted", rel)
        return self.lower.readlink(self.path_of(rel))

    # ---- calls -----------------------------------------------------------------
    def call(self, call, rel: str, rel2: str | None):
        if self.mode in ("bind", "move"):
            if rel2 is not None:
                return call.redirect(self.top(rel), self.top(rel2))
            return call.redirect(self.top(rel))
        handler = getattr(self, "op_" + call.op)
        return handler(call, rel, rel2)

    def _meta(self, call, rel):
        if call.name in STAT_CALLS and self.store is not None:
            return self.store.stat_fields(rel)
        return None

    def op_stat(self, call, rel, rel2):
        where = self.where(rel)
        if where is None:
            return -errno.ENOENT
        path = self.top(rel) if where == "top" else self.bottom(rel)
        if where == "bottom" and call.name in ACCESS_CALLS and \
                call.mode & os.W_OK and self.mode in ("cow", "mincow"):
            answer = self._access_as_copy(call, path)
            if answer is not None:
                return answer
        return call.redirect(path, meta=self._meta(call, rel))

    def _access_as_copy(self, call, path):
        """access(W_OK) of a lower-layer name in cow/mincow: writing copies
        it up, so answer as the copy would (dpkg and apt check access
        before they write). None: the kernel's answer on the lower file is
        the copy's too."""
        want = call.mode & 7
        st = self._stat_follow(path)
        if st is None or self.mode == "mincow" and self.lower.access(path, want):
            return None
        uid = call.caller.fs_ids()[0]
        if uid == 0:
            return None                 # root's copy keeps owner and mode
        if stat.S_ISDIR(st.st_mode):
            # its copy is the user's, with u+rwx (_mkdir_like); what is
            # read or searched is still the lower directory
            rest = want & (os.R_OK | os.X_OK)
            return 0 if self.lower.access(path, rest or os.F_OK) else -errno.EACCES
        if not stat.S_ISREG(st.st_mode):
            return None                 # a FIFO or device is written in place
        if st.st_size and not self.lower.access(path, os.R_OK):
            return -errno.EACCES        # its data cannot be copied
        if st.st_uid == uid:            # the copy has the same owner and mode
            rest = want & (os.R_OK | os.X_OK)
            return 0 if st.st_mode & stat.S_IWUSR and \
                self.lower.access(path, rest or os.F_OK) else -errno.EACCES
        # the copy is the user's, with the same mode: the owner's bits decide
        return -errno.EACCES if want & ~(st.st_mode >> 6) & 7 else 0

    def op_open(self, call, rel, rel2):
        flags = call.flags
        where = self.where(rel)
        if where is None:
            if not flags & linux.O_CREAT:
                if self.store.deleted(rel):
                    return -errno.ENOENT
                return call.redirect(self.bottom(rel))  # the kernel says ENOENT
            return self._create(call, rel)
        if flags & linux.O_CREAT and flags & linux.O_EXCL:
            return -errno.EEXIST
        path = self.top(rel) if where == "top" else self.bottom(rel)
        if writes(flags) and not self._is_special(path):
            return self._modify(call, rel, truncate=0 if flags & linux.O_TRUNC else None)
        st = self._stat_follow(path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            return call.redirect(path, listing=lambda: self.listing(rel),
                                 meta=self.store.stat_fields(rel))
        # the lower layer's files of cow/mincow: fchmod & co must copy up
        lower = where == "bottom" and self.mode in ("cow", "mincow")
        meta = self.store.stat_fields(rel)
        return call.redirect(path, meta=meta, trap_fd=lower or bool(meta))

    def _is_special(self, path: str) -> bool:
        """A FIFO, socket or device: writing to it changes no file, so an
        open for writing reaches it where it is (no copy-up)."""
        st = self._stat_follow(path)
        return st is not None and (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode)
                                   or stat.S_ISBLK(st.st_mode) or stat.S_ISSOCK(st.st_mode))

    def _stat_follow(self, path):
        try:
            return self.lower.stat(path)
        except OSError:
            return None

    def op_modify(self, call, rel, rel2):
        where = self.where(rel)
        if where is None:
            return -errno.ENOENT
        if call.name in ("chown", "lchown", "fchownat"):
            return self._chown(call, rel, where)
        if where == "bottom" and self.opts.nochcopy and call.name in (
                "chmod", "fchmodat", "fchmodat2"):
            self.store.set_meta(rel, mode=call.mode)
            return 0
        return self._modify(call, rel, None)

    def op_create(self, call, rel, rel2):
        if self.where(rel) is not None:
            return -errno.EEXIST
        if self._create_layer(rel) == "top" and call.name in ("mknod", "mknodat") \
                and (stat.S_ISCHR(call.mode) or stat.S_ISBLK(call.mode)):
            return self._mknod_device(call, rel)
        return self._create(call, rel)

    def _create_layer(self, rel: str):
        """Where a new name goes: merge creates in TARGET, mincow in TARGET
        where the user may write there, cow (and mincow else) in SOURCE."""
        if self.mode == "merge":
            return -errno.EROFS if self.store.deleted(rel) else "bottom"
        if self.mode == "mincow" and not self.store.deleted(rel) and \
                self._can_write_dir(self.bottom(_dirname(rel))):
            return "bottom"
        return "top"

    def op_delete(self, call, rel, rel2):
        where = self.where(rel)
        if where is None:
            return -errno.ENOENT
        is_dir = call.name == "rmdir"
        st = self.lower.lstat(self.path_of(rel))
        if is_dir and not stat.S_ISDIR(st.st_mode):
            return -errno.ENOTDIR
        if not is_dir and stat.S_ISDIR(st.st_mode):
            return -errno.EISDIR
        if is_dir and any(n not in (".", "..") for n, _, _ in self.listing(rel)):
            return -errno.ENOTEMPTY
        if self.mode == "merge":
            if where == "top":
                return -errno.EROFS
            return call.redirect(self.bottom(rel))
        if where == "bottom" and self.mode == "mincow" and \
                self._can_write_dir(self.bottom(_dirname(rel))):
            return call.redirect(self.bottom(rel))
        if where == "top":
            host = self._host(self.top(rel), "delete")
            os.rmdir(host) if is_dir else os.unlink(host)
        self.store.drop_meta(rel)
        if self._lstat(self.bottom(rel)) is not None:
            self.store.whiteout(rel)
        return 0

    def op_rename(self, call, rel, rel2):
        if self.where(rel) is None:
            return -errno.ENOENT
        dest = self.where(rel2)
        if call.flags & linux.RENAME_EXCHANGE:
            return -errno.EINVAL
        if call.flags & linux.RENAME_NOREPLACE and dest is not None:
            return -errno.EEXIST
        if self.mode == "merge":
            if self.where(rel) == "top" or dest == "top":
                return -errno.EROFS
            return call.redirect(self.bottom(rel), self.bottom(rel2))
        if self.mode == "mincow" and self.where(rel) == "bottom" and \
                dest != "top" and not self.store.deleted(rel2) and \
                self._can_write_dir(self.bottom(_dirname(rel))) and \
                self._can_write_dir(self.bottom(_dirname(rel2))):
            return call.redirect(self.bottom(rel), self.bottom(rel2))
        src_st = self.lower.lstat(self.path_of(rel))
        if dest is not None:
            dst_st = self.lower.lstat(self.path_of(rel2))
            if stat.S_ISDIR(dst_st.st_mode):
                if not stat.S_ISDIR(src_st.st_mode):
                    return -errno.EISDIR
                if any(n not in (".", "..") for n, _, _ in self.listing(rel2)):
                    return -errno.ENOTEMPTY
            elif stat.S_ISDIR(src_st.st_mode):
                return -errno.ENOTDIR
        self._copy_up_tree(rel)
        self._make_parents(rel2)
        dst_host = self._host(self.top(rel2), "create")
        self.store.dewhiteout(rel2)
        os.rename(self._host(self.top(rel), "delete"), dst_host)
        self.store.rename_meta(rel, rel2)
        if self._lstat(self.bottom(rel)) is not None:
            self.store.whiteout(rel)
        if self._lstat(self.bottom(rel2)) is not None and stat.S_ISDIR(src_st.st_mode):
            self._hide_bottom_children(rel2)
        return 0

    def op_link(self, call, rel, rel2):
        if self.where(rel) is None:
            return -errno.ENOENT
        if self.where(rel2) is not None:
            return -errno.EEXIST
        if self.mode == "merge":
            if self.where(rel) == "top":
                return -errno.EXDEV     # a new name must not make SOURCE writable
            return call.redirect(self.bottom(rel), self.bottom(rel2))
        if self.where(rel) == "bottom":
            self._copy_up(rel)
        self._make_parents(rel2)
        self.store.dewhiteout(rel2)
        self.store.link_meta(rel, rel2)
        return call.redirect(self.top(rel), self.top(rel2))

    def fd_redirect(self, rel: str):
        """The host file a change through a descriptor must reach."""
        if self.where(rel) is None:
            return -errno.ENOENT
        if self.where(rel) == "bottom" and self.mode in ("cow", "mincow"):
            self._copy_up(rel)
        return self._host(self.path_of(rel), "modify")

    def fd_modify(self, rel: str, change, caller) -> int | None:
        """fchmod/fchown/fxattr on a descriptor of a lower-layer file: copy
        up, then change the copy (the descriptor still reads the original).
        None: the descriptor is the top layer's file, the kernel does it."""
        where = self.where(rel)
        if where is None:
            return -errno.ENOENT
        if change.name in ("setxattr", "removexattr"):
            return None if where == "top" or self.mode == "merge" else -errno.EOPNOTSUPP
        if change.name == "chown":
            keep = 0xffffffff
            call = _Change("chown", uid=keep if change.uid is None else change.uid,
                           gid=keep if change.gid is None else change.gid)
            return self._chown(call, rel, where)
        if where == "bottom":
            if self.opts.nochcopy and change.name == "chmod":
                self.store.set_meta(rel, mode=change.mode)
                return 0
            self._copy_up(rel)
        host = self._host(self.top(rel), "modify")
        if change.name == "chmod":
            os.chmod(host, change.mode, follow_symlinks=False)
            return 0
        return -errno.EOPNOTSUPP

    # ---- listings -----------------------------------------------------------------
    def listing(self, rel: str) -> list:
        """Merged entries: top first, then bottom's that top lacks and that
        were not deleted; '.-' is hidden at the root."""
        seen, out = set(), []
        recorded = self.store.records_below(rel)
        types = self.store.types_below(rel) if recorded else {}     # (mknod)
        for path, layer in ((self.top(rel), "top"), (self.bottom(rel), "bottom")):
            if layer == "bottom" and (self.store.deleted(rel) if rel else False):
                continue
            try:
                # through the older view: a layered mount below lists all
                # its layers, a served directory its entries
                entries = self.lower.scandir(path)
                dot = self.lower.lstat(path).st_ino
            except OSError:
                continue
            for name in (".", ".."):
                if name not in seen:
                    seen.add(name)
                    out.append((name, 4, dot))
            for name, dtype, ino in entries:
                if name in seen or (rel == "" and name == ".-" and layer == "top"):
                    continue
                if layer == "bottom" and recorded and self.store.deleted(f"{rel}/{name}"):
                    continue
                seen.add(name)
                if name in types:
                    dtype = DT.get(types[name], dtype)
                out.append((name, dtype, ino))
        return out

    # ---- copy-up and creation --------------------------------------------------------
    def _can_write_dir(self, path: str) -> bool:
        st = self._stat_follow(path)
        return st is not None and stat.S_ISDIR(st.st_mode) and \
            self.lower.access(path, os.W_OK | os.X_OK)

    def _create(self, call, rel):
        layer = self._create_layer(rel)
        if isinstance(layer, int):
            return layer
        if layer == "bottom":
            return call.redirect(self.bottom(rel))
        self._make_parents(rel)
        self.store.dewhiteout(rel)
        if call.name in ("mkdir", "mkdirat") and self._lstat(self.bottom(rel)):
            # a directory created where a deleted one was starts empty
            self._hide_bottom_children(rel)
        meta = self._owner_of_new(call, rel)
        return call.redirect(self.top(rel), meta=meta,
                             trap_fd=bool(meta) and call.op == "open")

    def _owner_of_new(self, call, rel) -> dict | None:
        """A new name in the top layer belongs, in the view, to the ids the
        view shows its creator (virtual root makes files of 0:0): when the
        host file cannot carry them, they are recorded in the store."""
        self.store.drop_meta(rel)       # a leftover of an older file
        uid, gid, _ = call.caller.view_ids()
        if (uid, gid) == tuple(call.caller.fs_ids()):
            return None
        self.store.set_meta(rel, uid=uid, gid=gid)
        return self.store.stat_fields(rel)

    def _hide_bottom_children(self, rel):
        try:
            names = self.lower.listdir(self.bottom(rel))
        except OSError:
            return
        top = self._host(self.top(rel))
        for name in names:
            if not os.path.lexists(os.path.join(top, name)):
                self.store.whiteout(f"{rel}/{name}")

    def _mknod_device(self, call, rel):
        self._make_parents(rel)
        self.store.dewhiteout(rel)
        host = self._host(self.top(rel), "create")
        dev = call.dev
        self._owner_of_new(call, rel)
        try:
            os.mknod(host, call.mode, dev)
            return 0
        except PermissionError:
            pass
        mode = call.mode & 0o7777 & ~call.caller.umask
        os.close(os.open(host, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        self.store.set_meta(rel, type=stat.S_IFMT(call.mode), mode=mode, rdev=dev)
        return 0

    def _modify(self, call, rel, truncate):
        where = self.where(rel)
        if where == "bottom":
            if self.mode == "merge":
                return call.redirect(self.bottom(rel))
            if self.mode == "mincow" and self._writable(rel, call.name):
                return call.redirect(self.bottom(rel))
            self._copy_up(rel, truncate)
        elif where == "top" and self.mode == "merge":
            return -errno.EROFS
        return call.redirect(self.top(rel), meta=self._meta(call, rel))

    def _writable(self, rel, name: str = "") -> bool:
        """May the user change the lower file in place (mincow)? Writing
        needs write permission; chmod, chown and times need ownership."""
        path = self.bottom(rel)
        if name in OWNER_CALLS:
            st = self._lstat(path)
            return st is not None and os.geteuid() in (0, st.st_uid) and \
                not self.lower.read_only(path)
        return self.lower.access(path, os.W_OK)

    def _chown(self, call, rel, where):
        if self.mode == "merge":
            if where == "top":
                return -errno.EROFS
            return call.redirect(self.bottom(rel))
        uid, gid = call.uid, call.gid
        if where == "bottom" and not self.opts.nochcopy:
            self._copy_up(rel)
            where = "top"
        meta = {}
        if uid != 0xffffffff:
            meta["uid"] = uid
        if gid != 0xffffffff:
            meta["gid"] = gid
        if where == "top":
            try:
                os.lchown(self._host(self.top(rel)), meta.get("uid", -1),
                          meta.get("gid", -1))
                self.store.drop_meta(rel)
                return 0
            except PermissionError:
                pass
        self.store.set_meta(rel, **meta)
        return 0

    def _make_parents(self, rel: str) -> None:
        """Make the top layer's copies of rel's parent directories."""
        parts = [p for p in _dirname(rel).split("/") if p]
        cur = ""
        for part in parts:
            cur = f"{cur}/{part}"
            top = self._host(self.top(cur), "create")
            if os.path.isdir(top):
                continue
            st = self._lstat(self.bottom(cur))
            if st is None:
                os.mkdir(top, 0o755)
            else:
                self._mkdir_like(top, st, cur)

    def _mkdir_like(self, path: str, st, rel: str) -> None:
        """A top-layer copy of a lower directory: same mode, owner and
        times. What the host will not take (an owner not ours; a mode that
        would keep us from writing in it) is kept in the metadata."""
        mode = st.st_mode & 0o7777
        os.mkdir(path, 0o700)
        os.chmod(path, mode | (0 if os.geteuid() == 0 else 0o700))
        meta = {}
        if mode & 0o700 != 0o700 and os.geteuid() != 0:
            meta["mode"] = mode
        try:
            os.lchown(path, st.st_uid, st.st_gid)
        except PermissionError:
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                meta.update(uid=st.st_uid, gid=st.st_gid)
        if meta:
            self.store.set_meta(rel, **meta)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    def _copy_up(self, rel: str, truncate: int | None = None) -> None:
        self._make_parents(rel)
        src = self.bottom(rel)          # a path of the older view
        dst = self._host(self.top(rel), "create")
        st = self.lower.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(self.lower.readlink(src), dst)
        elif stat.S_ISDIR(st.st_mode):
            self._mkdir_like(dst, st, rel)
            return
        elif stat.S_ISREG(st.st_mode):
            # a fresh name of our own (linux.O_EXCL): nothing planted is followed
            fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=os.path.dirname(dst))
            try:
                with os.fdopen(fd, "wb") as fout:
                    # nothing to read (O_TRUNC, an empty file): the source
                    # need not be readable (a root-only lock file under
                    # a virtual root)
                    if truncate != 0 and st.st_size:
                        with self.lower.open(src) as fin:
                            if truncate is None:
                                shutil.copyfileobj(fin, fout, 1 << 20)
                            else:
                                fout.write(fin.read(truncate))
                self._copy_stat(src, tmp, st)
                os.rename(tmp, dst)
            except BaseException:
                # ENOSPC, EACCES...: no half copy left behind in the store
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        else:
            raise OSError(errno.EOPNOTSUPP, "cannot copy up", rel)
        if st.st_uid != os.geteuid() or st.st_gid != os.getegid():
            try:
                os.lchown(dst, st.st_uid, st.st_gid)
            except PermissionError:
                if not self.store.meta(rel):
                    self.store.set_meta(rel, uid=st.st_uid, gid=st.st_gid)

    def _copy_stat(self, src: str, dst: str, st) -> None:
        """The copy gets the original's mode and times (and, from a host
        file, what else shutil.copystat copies)."""
        try:
            host = self._host(src)
        except OSError as exc:
            if exc.errno != errno.EOPNOTSUPP:
                raise
            os.chmod(dst, stat.S_IMODE(st.st_mode))     # a served file
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
            return
        shutil.copystat(host, dst, follow_symlinks=False)

    def _copy_up_tree(self, rel: str) -> None:
        """Bring rel, and everything below it, into the top layer."""
        if self.where(rel) == "bottom":
            self._copy_up(rel)
        st = self.in_top(rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            for name, _, _ in self.listing(rel):
                if name not in (".", ".."):
                    self._copy_up_tree(f"{rel}/{name}")


def remove_leftovers(top: str) -> int:
    """Copies a hypervisor killed in the middle of a copy-up left in the top
    layer (TEMP_PREFIX files): removed when the layer is mounted again."""
    removed = 0
    for dirpath, dirnames, filenames in os.walk(top):
        if dirpath == top and ".-" in dirnames:
            dirnames.remove(".-")
        for name in filenames:
            if name.startswith(TEMP_PREFIX):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except OSError:
                    pass
    return removed


def _dirname(rel: str) -> str:
    return rel.rsplit("/", 1)[0]


class _Change:
    """What _chown needs of a call, for descriptor calls."""

    def __init__(self, name, uid=0xffffffff, gid=0xffffffff):
        self.name, self.uid, self.gid = name, uid, gid
