"""File operations by path, built on one FuseConnection.

The kernel turns path calls into FUSE requests on node ids; this module
does that for vufuse.  `WireOperations` is a path based,
fusepy-Operations-like face of a session (session.py): it turns paths into
node ids with LOOKUP and caches them (keeping the lookup counts the daemon
expects, and sending FORGET when it drops them), pins node ids while they
are in use, keeps the open handles, does the VFS checks daemons rely on,
and remembers which optional requests a daemon lacks.  How each request
and reply is laid out, for the negotiated protocol minor version, is
protocol.py's business.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
import threading
import time
from typing import Optional, Sequence

from .protocol import (
    ACCESS_IN, FALLOCATE_IN, FATTR_ATIME, FATTR_ATIME_NOW, FATTR_FH,
    FATTR_GID, FATTR_MODE, FATTR_MTIME, FATTR_MTIME_NOW, FATTR_SIZE,
    FATTR_UID, FLUSH_IN, FSYNC_IN, FUSE_ACCESS, FUSE_ATOMIC_O_TRUNC,
    FUSE_CREATE, FUSE_DO_READDIRPLUS, FUSE_FALLOCATE, FUSE_FLUSH,
    FUSE_FSYNC, FUSE_FSYNC_FDATASYNC, FUSE_FSYNCDIR, FUSE_GETATTR,
    FUSE_GETXATTR, FUSE_LINK, FUSE_LISTXATTR, FUSE_LOOKUP, FUSE_LSEEK,
    FUSE_MKDIR, FUSE_MKNOD, FUSE_NAME_MAX, FUSE_NO_OPEN_SUPPORT,
    FUSE_NO_OPENDIR_SUPPORT, FUSE_OPEN, FUSE_OPENDIR, FUSE_READ,
    FUSE_READDIR, FUSE_READDIRPLUS, FUSE_READLINK, FUSE_RELEASE,
    FUSE_RELEASEDIR, FUSE_REMOVEXATTR, FUSE_RENAME, FUSE_RENAME2,
    FUSE_RMDIR, FUSE_ROOT_ID, FUSE_SETATTR, FUSE_SETXATTR, FUSE_STATFS,
    FUSE_SYMLINK, FUSE_UNLINK, FUSE_WRITE, GETXATTR_IN, GETXATTR_OUT,
    LINK_IN, LSEEK_IN, LSEEK_OUT, MKDIR_IN, OPEN_IN, OPEN_OUT, RELEASE_IN,
    RENAME2_IN, RENAME_IN, SETXATTR_IN, UTIME_NOW, UTIME_OMIT, WRITE_OUT,
    EntryOut, FOPEN_DIRECT_IO, FOPEN_NONSEEKABLE, FOPEN_STREAM,
    FUSE_NOTIFY_DELETE, FUSE_NOTIFY_INVAL_ENTRY, FUSE_NOTIFY_INVAL_INODE,
    fsname, fuse_error, pack_create_in, pack_getattr_in,
    pack_io_in, pack_mknod_in, pack_setattr_in, signed64, unpack_attr_out,
    unpack_attr_valid, unpack_dirents, unpack_entry_out, unpack_inval_notify,
    unpack_statfs)
from .session import FuseConnection

__all__ = ["WireOperations"]


class _Cached:
    """One path of the lookup cache: the node it names, and the lookups we
    hold on that node."""
    __slots__ = ("nodeid", "generation", "ftype", "nlookup", "expires",
                 "parent", "children")

    def __init__(self, nodeid, generation, ftype, expires, parent):
        self.nodeid = nodeid
        self.generation = generation
        self.ftype = ftype              # S_IFMT bits: a node never changes type
        self.nlookup = 0
        self.expires = expires
        self.parent = parent
        self.children: set[str] = set()


class _ReadAhead:
    """What one open file read ahead: `data` from `start`, valid while the
    view has made no change (`changes`); `eof` when the daemon gave less
    than asked; `next` where a sequential reader reads next."""
    __slots__ = ("changes", "start", "data", "eof", "next")

    def __init__(self, changes, start, data, eof, nxt):
        self.changes, self.start, self.data = changes, start, data
        self.eof, self.next = eof, nxt


_NO_READAHEAD = FOPEN_DIRECT_IO | FOPEN_NONSEEKABLE | FOPEN_STREAM


def _split(path) -> list[str]:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    parts: list[str] = []
    for c in path.split("/"):
        if c in ("", "."):
            continue
        if c == "..":
            if parts:
                parts.pop()
            continue
        parts.append(c)
    return parts


def _key(parts: Sequence[str]) -> str:
    return "/" + "/".join(parts)


def _changes(fn):
    """An operation that may change the file system: the attribute cache
    and every read-ahead buffer are dropped before it (a reply to a request
    sent meanwhile is then not cached) and after it (nothing cached during
    it is kept), as the kernel invalidates what a change touched."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        self._changed()
        try:
            return fn(self, *args, **kwargs)
        finally:
            self._changed()
    return wrapper


_DT_DIR = 4
_NOCTTY_EXCL_CREAT = os.O_CREAT | os.O_EXCL | os.O_NOCTTY


def _op(fn):
    """Public operations run with a per-thread list of pinned node ids:
    every node id an operation resolves stays pinned (its FORGET deferred)
    until the operation ends, so that a concurrent unlink, rename or cache
    eviction can never make the daemon forget a node id that is about to be
    used (libfuse's high-level layer aborts on unknown node ids)."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        tls = self._tls
        if getattr(tls, "pins", None) is not None:      # nested operation
            return fn(self, *args, **kwargs)
        tls.pins = []
        try:
            return fn(self, *args, **kwargs)
        finally:
            pins, tls.pins = tls.pins, None
            if pins:
                self._unpin(pins)
    return wrapper


class WireOperations:
    """fusepy-Operations-like, path-based view of a connection.

    Paths are '/'-rooted inside the file system, with symbolic links
    already resolved by the caller ('.' and '..' are folded lexically).
    Every method takes an optional `ctx=(uid, gid, pid)` keyword: the
    credentials the requests carry (default `self.ctx`, initially (0, 0, 0));
    the daemon does its own permission checks with them.  Failures raise
    FuseError (an OSError) with the errno.

    What the kernel does for a daemon is done here too:
      * path -> node id: a cache of (nodeid, generation, lookup count, type)
        per path, filled by LOOKUP (walking from node 1) and by the entry
        replies of CREATE/MKNOD/MKDIR/SYMLINK/LINK/READDIRPLUS.  Entries
        are dropped on unlink, rmdir, rename, a changed node id, daemon
        notifications (INVAL_ENTRY, DELETE) and beyond `max_cached`, and
        FORGET (BATCH_FORGET from 7.16) returns their lookup counts.
        Entries past the daemon's entry timeout are revalidated with a new
        LOOKUP unless `honor_entry_timeout` is False.
      * node ids in use are pinned: by open handles until release, and by
        every operation while it runs, so no node id is used after its
        FORGET (libfuse's high-level layer aborts on unknown node ids).
      * a lookup reply that may predate a concurrent namespace change is
        used but not cached (an epoch counter), so renames and unlinks
        racing with lookups leave no stale names behind.
      * the VFS checks daemons rely on (fuse2fs would e.g. UNLINK a
        directory): EISDIR/ENOTDIR for unlink/rmdir/open/truncate/rename
        type mismatches, EEXIST before creating an existing name, EPERM
        for hard links to directories, EINVAL for renaming a directory into
        itself, ENOTDIR below non-directories.
      * handles not handed out by open/create/opendir are refused (EBADF):
        daemons may take fh for a pointer.
      * O_TRUNC without FUSE_ATOMIC_O_TRUNC is a SETATTR after OPEN, the
        umask is applied here (FUSE_DONT_MASK is not offered), ENOSYS
        answers are remembered (no-op for flush/fsync/access, EOPNOTSUPP
        for xattrs/fallocate, MKNOD+OPEN for CREATE, READDIR for
        READDIRPLUS, zero-message open/opendir when offered).
    """

    def __init__(self, conn: FuseConnection, *, ctx=(0, 0, 0),
                 max_cached: int = 65536, honor_entry_timeout: bool = True,
                 attr_cache: bool = True, readahead: bool = True):
        self.conn = conn
        self.ctx = tuple(ctx)
        self.max_cached = max_cached
        self.honor_entry_timeout = honor_entry_timeout
        #: attributes kept for the daemon's attr_valid (per node id), and
        #: sequential reads served from a read-ahead buffer per open file;
        #: both dropped by every change made through this view (_changes)
        self.attr_cache = attr_cache
        self.readahead = readahead
        self._attrs: dict[int, tuple[os.stat_result, float]] = {}
        self._ra: dict[tuple[int, int], _ReadAhead] = {}
        self._no_ra: set[tuple[int, int]] = set()   # direct_io/stream opens
        self._changes = 0
        self._lock = threading.RLock()
        self._cache: dict[str, _Cached] = {}
        self._root_children: set[str] = set()
        self._by_nodeid: dict[int, set[str]] = {}
        # open handles: (is_dir, fh) -> [nodeid or None, flags, count]
        self._handles: dict[tuple[bool, int], list] = {}
        # nodeid -> open handles + operations in progress using it
        self._pins: dict[int, int] = {}
        self._deferred: dict[int, int] = {}      # nodeid -> nlookup to forget
        self._tls = threading.local()
        # bumped by every namespace change: a reply to a request sent before
        # the change may describe a name that no longer exists, so it is
        # used by its operation but not cached
        self._epoch = 0
        self._no_open = False
        self._no_opendir = False
        self._no_create = False
        self._no_readdirplus = False
        self._no_rename2 = False
        self._no_access = False
        self._no_flush = False
        self._no_fsync = False
        self._no_fsyncdir = False
        self._no_fallocate = False
        self._no_lseek = False
        if conn.on_notify is None:
            conn.on_notify = self._on_notify

    # -- plumbing -----------------------------------------------------------

    def _req(self, opcode, nodeid, payload=b"", ctx=None) -> bytes:
        uid, gid, pid = self.ctx if ctx is None else ctx
        return self.conn.request(opcode, nodeid, payload, uid=uid, gid=gid,
                                 pid=pid)

    @property
    def _minor(self) -> int:
        return self.conn.minor or 0

    def _parse_entry(self, body, off: int = 0) -> EntryOut:
        return unpack_entry_out(body, off, self._minor)

    def _parse_attr_out(self, body) -> os.stat_result:
        return unpack_attr_out(body, self._minor)

    def _io_in(self, fh, offset, size, flags, rw_flags=0) -> bytes:
        return pack_io_in(fh, offset, size, flags, self._minor, rw_flags)

    # -- the attribute cache --------------------------------------------------

    def _changed(self) -> None:
        with self._lock:
            self._changes += 1
            self._attrs.clear()
            self._ra.clear()

    def _attr_hit(self, nodeid) -> Optional[os.stat_result]:
        hit = self._attrs.get(nodeid)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        return None

    def _attr_keep(self, nodeid, attr, valid: float, changes: int) -> None:
        """Keep attributes got by a request sent when self._changes was
        `changes`, for `valid` seconds (the daemon's attr_valid)."""
        if not self.attr_cache or valid <= 0 or attr is None:
            return
        with self._lock:
            if changes != self._changes:
                return
            if len(self._attrs) >= self.max_cached:
                self._attrs.clear()
            self._attrs[nodeid] = (attr, time.monotonic() + valid)

    # -- the lookup cache -----------------------------------------------------

    def _expiry(self, valid: float) -> float:
        if not self.honor_entry_timeout:
            return float("inf")
        return time.monotonic() + valid

    def _children_of(self, key: str) -> set[str]:
        if key == "/":
            return self._root_children
        return self._cache[key].children

    def _remember(self, key: str, entry: EntryOut, epoch: int) -> None:
        """Account one lookup of entry.nodeid under `key`; `epoch` is
        self._epoch read before the request was sent."""
        forgets: list[tuple[int, int]] = []
        with self._lock:
            self._pin_locked(entry.nodeid)     # the caller may use it
            old = self._cache.get(key)
            parent = key.rsplit("/", 1)[0] or "/"
            if old is not None and old.nodeid == entry.nodeid:
                old.nlookup += 1
                if epoch == self._epoch:
                    old.generation = entry.generation
                    old.expires = self._expiry(entry.entry_valid)
            elif (epoch != self._epoch
                  or (parent != "/" and parent not in self._cache)):
                # possibly stale, or its parent was dropped meanwhile:
                # cache nothing, give the lookup back after the operation
                forgets.append((entry.nodeid, 1))
            else:
                if old is not None:
                    self._drop_locked(key, forgets)
                    self._epoch += 1
                ent = _Cached(entry.nodeid, entry.generation,
                              stat.S_IFMT(entry.attr.st_mode),
                              self._expiry(entry.entry_valid), parent)
                ent.nlookup = 1
                self._cache[key] = ent
                self._children_of(parent).add(key)
                self._by_nodeid.setdefault(entry.nodeid, set()).add(key)
                if len(self._cache) > self.max_cached:
                    self._evict_locked(forgets)
        self._forget(forgets)

    def _now_epoch(self) -> int:
        with self._lock:
            return self._epoch

    def _drop_locked(self, key: str, forgets: list) -> None:
        ent = self._cache.pop(key, None)
        if ent is None:
            return
        for child in list(ent.children):
            self._drop_locked(child, forgets)
        if ent.parent == "/":
            self._root_children.discard(key)
        else:
            p = self._cache.get(ent.parent)
            if p is not None:
                p.children.discard(key)
        keys = self._by_nodeid.get(ent.nodeid)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_nodeid[ent.nodeid]
        forgets.append((ent.nodeid, ent.nlookup))

    def _evict_locked(self, forgets: list) -> None:
        target = int(self.max_cached * 0.9)
        for key in list(self._cache):
            if len(self._cache) <= target:
                break
            ent = self._cache.get(key)
            if ent is not None and not ent.children:
                self._drop_locked(key, forgets)

    def _forget(self, forgets: list) -> None:
        """Send FORGET for dropped lookups, unless the node is open."""
        if not forgets:
            return
        now: list[tuple[int, int]] = []
        with self._lock:
            for nodeid, n in forgets:
                if self._pins.get(nodeid):
                    self._deferred[nodeid] = self._deferred.get(nodeid, 0) + n
                else:
                    now.append((nodeid, n))
        self.conn.forget_many(now)

    def _pin_locked(self, nodeid: int) -> None:
        pins = getattr(self._tls, "pins", None)
        if pins is None or nodeid == FUSE_ROOT_ID:
            return
        self._pins[nodeid] = self._pins.get(nodeid, 0) + 1
        pins.append(nodeid)

    def _unpin(self, nodeids) -> None:
        forgets = []
        with self._lock:
            for nodeid in nodeids:
                n = self._pins.get(nodeid, 0) - 1
                if n > 0:
                    self._pins[nodeid] = n
                    continue
                self._pins.pop(nodeid, None)
                d = self._deferred.pop(nodeid, 0)
                if d:
                    forgets.append((nodeid, d))
        self.conn.forget_many(forgets)

    @_op
    def drop(self, path, _changed: bool = True) -> None:
        """Drop the cached entries for `path` and below (sending FORGET),
        e.g. after the file system changed behind our back."""
        parts = _split(path)
        forgets: list = []
        with self._lock:
            if parts:
                self._drop_locked(_key(parts), forgets)
            else:
                for child in list(self._root_children):
                    self._drop_locked(child, forgets)
            if _changed or forgets:
                self._epoch += 1
        if _changed:
            self._changed()         # attributes and read-ahead too
        self._forget(forgets)

    def cached(self, path) -> Optional[tuple[int, int, int]]:
        """(nodeid, generation, lookup count) cached for `path`, or None."""
        parts = _split(path)
        if not parts:
            return (FUSE_ROOT_ID, 0, 1)
        with self._lock:
            ent = self._cache.get(_key(parts))
            return None if ent is None else (ent.nodeid, ent.generation,
                                             ent.nlookup)

    def _lookup(self, parent: int, name: str, key: str, ctx) -> EntryOut:
        bname = fsname(name)
        if len(bname) > FUSE_NAME_MAX:
            raise fuse_error(errno.ENAMETOOLONG)
        epoch = self._now_epoch()
        changes = self._changes
        try:
            body = self._req(FUSE_LOOKUP, parent, bname + b"\0", ctx)
        except OSError as e:
            if e.errno == errno.ENOENT:
                self.drop(key, False)
            raise
        entry = self._parse_entry(body)
        if entry.nodeid == 0:           # negative entry
            self.drop(key, False)
            raise fuse_error(errno.ENOENT)
        self._remember(key, entry, epoch)
        self._attr_keep(entry.nodeid, entry.attr, entry.attr_valid, changes)
        return entry

    def _resolve(self, parts: Sequence[str], ctx):
        """Node of a path, looking up what the cache lacks.  Returns
        (nodeid, stat_result or None, S_IFMT type): the attributes when the
        last component was just looked up.  A component below a
        non-directory gives ENOTDIR, as in the kernel."""
        nodeid = FUSE_ROOT_ID
        attr = None
        ftype = stat.S_IFDIR
        now = time.monotonic()
        for i in range(len(parts)):
            if ftype != stat.S_IFDIR:
                raise fuse_error(errno.ENOTDIR)
            key = _key(parts[:i + 1])
            with self._lock:
                ent = self._cache.get(key)
                hit = ent is not None and ent.expires > now
                if hit:
                    nodeid, ftype = ent.nodeid, ent.ftype
                    self._pin_locked(nodeid)
            if hit:
                attr = None
                continue
            entry = self._lookup(nodeid, parts[i], key, ctx)
            nodeid, attr = entry.nodeid, entry.attr
            ftype = stat.S_IFMT(attr.st_mode)
        return nodeid, attr, ftype

    def _node(self, path, ctx) -> int:
        return self._resolve(_split(path), ctx)[0]

    def _typed(self, path, ctx) -> tuple[int, int]:
        """(nodeid, S_IFMT type) of a path."""
        nodeid, _attr, ftype = self._resolve(_split(path), ctx)
        return nodeid, ftype

    def _probe(self, parts, ctx):
        """(nodeid, type) of an existing path, None when it does not exist."""
        try:
            nodeid, _attr, ftype = self._resolve(parts, ctx)
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise
        return nodeid, ftype

    def _parent(self, path, ctx) -> tuple[int, str, str]:
        """(parent nodeid, last component, cache key) for a path."""
        parts = _split(path)
        if not parts:
            raise fuse_error(errno.EBUSY)     # the root has no name to change
        parent, _attr, ptype = self._resolve(parts[:-1], ctx)
        if ptype != stat.S_IFDIR:
            raise fuse_error(errno.ENOTDIR)
        name = parts[-1]
        if len(fsname(name)) > FUSE_NAME_MAX:
            raise fuse_error(errno.ENAMETOOLONG)
        return parent, name, _key(parts)

    def _new_name(self, path, ctx) -> tuple[int, str, str]:
        """_parent() for a name about to be created: EEXIST if it exists
        (the VFS looks the name up before asking the file system)."""
        parent, name, key = self._parent(path, ctx)
        if self._probe(_split(path), ctx) is not None:
            raise fuse_error(errno.EEXIST)
        return parent, name, key

    def _on_notify(self, code: int, body: bytes) -> None:
        """Daemon notifications (reader thread: must not wait)."""
        if code in (FUSE_NOTIFY_INVAL_INODE, FUSE_NOTIFY_INVAL_ENTRY,
                    FUSE_NOTIFY_DELETE):
            self._changed()         # cached attributes and data
        gone = unpack_inval_notify(code, body)
        if gone is None:
            return
        parent, name = gone
        name = os.fsdecode(name)
        with self._lock:
            parents = (["/"] if parent == FUSE_ROOT_ID
                       else list(self._by_nodeid.get(parent, ())))
        for pk in parents:
            self.drop(pk.rstrip("/") + "/" + name)

    # -- handles --------------------------------------------------------------

    def _add_handle(self, is_dir: bool, fh: int, nodeid: int, flags: int,
                    ftype: int):
        with self._lock:
            h = self._handles.get((is_dir, fh))
            if h is None:
                self._handles[(is_dir, fh)] = [[nodeid], flags, ftype]
            else:                       # fh reused (no-open daemons: fh 0)
                h[0].append(nodeid)
            self._pins[nodeid] = self._pins.get(nodeid, 0) + 1

    def _handle(self, is_dir: bool, fh, path, ctx) -> tuple[int, int, int]:
        """(nodeid, open flags, type) of an open handle: the node it was
        opened on (valid even after an unlink or rename).  Handles we did
        not hand out are refused: daemons may take fh for a pointer."""
        with self._lock:
            h = self._handles.get((is_dir, fh))
            if h is None:
                raise fuse_error(errno.EBADF)
            nodes, flags, ftype = h
            if len(set(nodes)) == 1:
                return nodes[0], flags, ftype
        nodeid, ftype = self._typed(path, ctx)  # shared fh 0: by path
        return nodeid, flags, ftype

    def _drop_handle(self, is_dir: bool, fh: int, nodeid: int) -> None:
        with self._lock:
            h = self._handles.get((is_dir, fh))
            if h is None:
                return
            nodes = h[0]
            nodeid = nodeid if nodeid in nodes else nodes[-1]
            nodes.remove(nodeid)
            if not nodes:
                del self._handles[(is_dir, fh)]
        self._unpin([nodeid])

    # -- attributes -------------------------------------------------------------

    @_op
    def getattr(self, path, fh=None, *, ctx=None) -> os.stat_result:
        """Attributes; with the `fh` of an open regular file, GETATTR
        carries it (FUSE_GETATTR_FH), as the kernel's fstat does."""
        if fh is not None:
            with self._lock:
                h = self._handles.get((False, fh))
                if h is None or len(set(h[0])) != 1:
                    h = None
                else:
                    node, ftype = h[0][0], h[2]
            if h is not None:
                return self._getattr(node, fh if ftype == stat.S_IFREG
                                     else None, ctx)
        parts = _split(path)
        nodeid, attr, _t = self._resolve(parts, ctx)
        if attr is not None:
            return attr             # fresh from the LOOKUP just done
        try:
            return self._getattr(nodeid, None, ctx)
        except OSError as e:
            if e.errno != errno.ESTALE or not parts:
                raise
        self.drop(path)
        return self._getattr(self._node(path, ctx), None, ctx)

    def _getattr(self, nodeid, fh, ctx) -> os.stat_result:
        attr = self._attr_hit(nodeid)
        if attr is not None:
            return attr
        changes = self._changes
        payload = pack_getattr_in(fh, self._minor)
        body = self._req(FUSE_GETATTR, nodeid, payload, ctx)
        attr = self._parse_attr_out(body)
        self._attr_keep(nodeid, attr, unpack_attr_valid(body), changes)
        return attr

    def _setattr(self, path, valid, *, fh=None, size=0, mode=0, uid=0, gid=0,
                 atime=(0, 0), mtime=(0, 0), ctx=None) -> os.stat_result:
        if fh is not None:
            nodeid, _flags, ftype = self._handle(False, fh, path, ctx)
            if ftype == stat.S_IFREG:
                valid |= FATTR_FH
            else:
                fh = None
        else:
            nodeid = self._node(path, ctx)
        payload = pack_setattr_in(valid, fh, size=size, mode=mode, uid=uid,
                                  gid=gid, atime=atime, mtime=mtime)
        return self._parse_attr_out(self._req(FUSE_SETATTR, nodeid, payload,
                                              ctx))

    @_changes
    @_op
    def truncate(self, path, length, fh=None, *, ctx=None):
        if length < 0:
            raise fuse_error(errno.EINVAL)
        if fh is None:
            ftype = self._typed(path, ctx)[1]
            if ftype == stat.S_IFDIR:
                raise fuse_error(errno.EISDIR)
            if ftype != stat.S_IFREG:
                raise fuse_error(errno.EINVAL)
        self._setattr(path, FATTR_SIZE, fh=fh, size=length, ctx=ctx)

    @_changes
    @_op
    def chmod(self, path, mode, *, ctx=None):
        self._setattr(path, FATTR_MODE, mode=mode & 0o7777, ctx=ctx)

    @_changes
    @_op
    def chown(self, path, uid, gid, *, ctx=None):
        valid = 0
        if uid is not None and uid != -1 and uid != 0xFFFFFFFF:
            valid |= FATTR_UID
        if gid is not None and gid != -1 and gid != 0xFFFFFFFF:
            valid |= FATTR_GID
        if not valid:
            self._node(path, ctx)       # still report a missing path
            return
        self._setattr(path, valid, uid=uid if valid & FATTR_UID else 0,
                      gid=gid if valid & FATTR_GID else 0, ctx=ctx)

    @_changes
    @_op
    def utimens(self, path, times=None, *, ctx=None):
        """times: None (both now) or (atime, mtime), each nanoseconds since
        the epoch, UTIME_NOW, or UTIME_OMIT/None."""
        if times is None:
            times = (UTIME_NOW, UTIME_NOW)
        valid = 0
        vals = []
        for t, bit, now_bit in ((times[0], FATTR_ATIME, FATTR_ATIME_NOW),
                                (times[1], FATTR_MTIME, FATTR_MTIME_NOW)):
            if t is None or t == UTIME_OMIT:
                vals.append((0, 0))
                continue
            valid |= bit
            if t == UTIME_NOW:
                if self._minor >= 9:
                    valid |= now_bit
                    vals.append((0, 0))
                    continue
                t = time.time_ns()
            vals.append(divmod(int(t), 1_000_000_000))
        if not valid:
            self._node(path, ctx)
            return
        self._setattr(path, valid, atime=vals[0], mtime=vals[1], ctx=ctx)

    @_op
    def readlink(self, path, *, ctx=None) -> str:
        nodeid, ftype = self._typed(path, ctx)
        if ftype != stat.S_IFLNK:
            raise fuse_error(errno.EINVAL)
        body = self._req(FUSE_READLINK, nodeid, b"", ctx)
        return os.fsdecode(body.split(b"\0", 1)[0])

    @_op
    def statfs(self, path="/", *, ctx=None) -> dict:
        body = self._req(FUSE_STATFS, self._node(path, ctx), b"", ctx)
        return unpack_statfs(body)

    @_op
    def access(self, path, mode, *, ctx=None):
        nodeid = self._node(path, ctx)
        mask = mode & 7
        if mask == 0 or self._no_access:
            return
        try:
            self._req(FUSE_ACCESS, nodeid, ACCESS_IN.pack(mask, 0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_access = True      # as the kernel: permit

    # -- directories --------------------------------------------------------------

    @_op
    def opendir(self, path, *, ctx=None) -> int:
        nodeid, ftype = self._typed(path, ctx)
        if ftype != stat.S_IFDIR:
            raise fuse_error(errno.ENOTDIR)
        fh = 0
        if not self._no_opendir:
            try:
                body = self._req(FUSE_OPENDIR, nodeid,
                                 OPEN_IN.pack(os.O_RDONLY | os.O_DIRECTORY, 0),
                                 ctx)
                fh = OPEN_OUT.unpack_from(body)[0] if len(body) >= 8 else 0
            except OSError as e:
                if not (e.errno == errno.ENOSYS
                        and self.conn.flags & FUSE_NO_OPENDIR_SUPPORT):
                    raise
                self._no_opendir = True
        self._add_handle(True, fh, nodeid, os.O_RDONLY | os.O_DIRECTORY,
                         stat.S_IFDIR)
        return fh

    @_op
    def readdir(self, path, fh=None, *, ctx=None) -> list[tuple[str, int, int]]:
        """All entries as (name, d_type, ino), '.' and '..' included.
        Without `fh`, the directory is opened and released around it."""
        if fh is None:
            fh = self.opendir(path, ctx=ctx)
            try:
                return self.readdir(path, fh, ctx=ctx)
            finally:
                self.releasedir(path, fh, ctx=ctx)
        nodeid = self._handle(True, fh, path, ctx)[0]
        parts = _split(path)
        key = _key(parts)
        out: list[tuple[str, int, int]] = []
        plus = (bool(self.conn.flags & FUSE_DO_READDIRPLUS)
                and not self._no_readdirplus)
        size = min(self.conn.max_read, 64 * 1024)
        offset = 0
        while True:
            payload = self._io_in(fh or 0, offset, size,
                                  os.O_RDONLY | os.O_DIRECTORY)
            epoch = self._now_epoch()
            if plus:
                try:
                    body = self._req(FUSE_READDIRPLUS, nodeid, payload, ctx)
                except OSError as e:
                    if e.errno != errno.ENOSYS:
                        raise
                    self._no_readdirplus = True
                    plus = False
                    continue
            else:
                body = self._req(FUSE_READDIR, nodeid, payload, ctx)
            if not body:
                break
            last = offset
            offset = self._parse_dirents(body, plus, key, out, offset,
                                         epoch)
            if offset == last:
                break
        names = {e[0] for e in out}
        if ".." not in names:
            pparts = parts[:-1]
            try:
                ino = self.getattr(_key(pparts), ctx=ctx).st_ino
            except OSError:
                ino = 0
            out.insert(0, ("..", _DT_DIR, ino))
        if "." not in names:
            try:
                ino = self.getattr(key, ctx=ctx).st_ino
            except OSError:
                ino = 0
            out.insert(0, (".", _DT_DIR, ino))
        return out

    def _parse_dirents(self, body, plus, key, out, offset, epoch) -> int:
        remembered: list[tuple[str, EntryOut]] = []
        for name, dtype, ino, off, entry in unpack_dirents(body, plus,
                                                           self._minor):
            out.append((name, dtype, ino))
            offset = off
            if entry is not None and entry.nodeid and name not in (".", ".."):
                remembered.append((name, entry))
        for name, entry in remembered:
            self._remember(key.rstrip("/") + "/" + name, entry, epoch)
        return offset

    @_op
    def releasedir(self, path, fh, *, ctx=None):
        nodeid = self._handle(True, fh, path, ctx)[0]
        try:
            if not self._no_opendir:
                self._req(FUSE_RELEASEDIR, nodeid,
                          RELEASE_IN.pack(fh, os.O_RDONLY | os.O_DIRECTORY,
                                          0, 0), ctx)
        finally:
            self._drop_handle(True, fh, nodeid)

    @_op
    def fsyncdir(self, path, datasync, fh, *, ctx=None):
        self._sync(True, path, datasync, fh, ctx)

    def _sync(self, is_dir: bool, path, datasync, fh, ctx) -> None:
        """FSYNC or FSYNCDIR; a daemon that answers ENOSYS is not asked
        again (as the kernel does)."""
        unsupported = "_no_fsyncdir" if is_dir else "_no_fsync"
        if getattr(self, unsupported):
            return
        nodeid = self._handle(is_dir, fh, path, ctx)[0]
        try:
            self._req(FUSE_FSYNCDIR if is_dir else FUSE_FSYNC, nodeid,
                      FSYNC_IN.pack(fh, FUSE_FSYNC_FDATASYNC if datasync else 0,
                                    0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            setattr(self, unsupported, True)

    # -- files ------------------------------------------------------------------

    @_op
    def open(self, path, flags, *, ctx=None) -> int:
        nodeid, ftype = self._typed(path, ctx)
        self._check_open(ftype, flags)
        return self._open(nodeid, ftype, path, flags, ctx)

    @staticmethod
    def _check_open(ftype, flags) -> None:
        """The VFS's may_open() checks the daemon relies on."""
        if ftype == stat.S_IFLNK:
            raise fuse_error(errno.ELOOP)     # paths arrive with links resolved
        if ftype == stat.S_IFDIR:
            if (flags & os.O_ACCMODE) != os.O_RDONLY or flags & os.O_TRUNC:
                raise fuse_error(errno.EISDIR)
        elif flags & os.O_DIRECTORY:
            raise fuse_error(errno.ENOTDIR)

    def _open(self, nodeid, ftype, path, flags, ctx) -> int:
        if flags & os.O_TRUNC:
            self._changed()
            try:
                return self._open_now(nodeid, ftype, path, flags, ctx)
            finally:
                self._changed()
        return self._open_now(nodeid, ftype, path, flags, ctx)

    def _open_now(self, nodeid, ftype, path, flags, ctx) -> int:
        oflags = flags & ~_NOCTTY_EXCL_CREAT
        trunc_after = False
        if oflags & os.O_TRUNC and not self.conn.flags & FUSE_ATOMIC_O_TRUNC:
            oflags &= ~os.O_TRUNC
            trunc_after = (ftype == stat.S_IFREG
                           and (flags & os.O_ACCMODE) != os.O_RDONLY)
        fh = 0
        if not self._no_open:
            try:
                body = self._req(FUSE_OPEN, nodeid, OPEN_IN.pack(
                    oflags & 0xFFFFFFFF, 0), ctx)
                fh = OPEN_OUT.unpack_from(body)[0] if len(body) >= 8 else 0
                self._open_flags(fh, nodeid, body, 0)
            except OSError as e:
                if not (e.errno == errno.ENOSYS
                        and self.conn.flags & FUSE_NO_OPEN_SUPPORT):
                    raise
                self._no_open = True
        self._add_handle(False, fh, nodeid, oflags, ftype)
        if trunc_after:
            try:
                self._setattr(path, FATTR_SIZE, fh=fh, size=0, ctx=ctx)
            except BaseException:
                self.release(path, fh, ctx=ctx)
                raise
        return fh

    @_changes
    @_op
    def create(self, path, mode, flags=os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
               umask=0o022, *, ctx=None) -> int:
        parts = _split(path)
        # as the kernel's atomic_open: an existing name is simply opened
        found = self._probe(parts, ctx)
        if found is not None:
            if flags & os.O_EXCL:
                raise fuse_error(errno.EEXIST)
            self._check_open(found[1], flags & ~os.O_CREAT)
            return self._open(found[0], found[1], path, flags & ~os.O_CREAT,
                              ctx)
        parent, name, key = self._parent(path, ctx)
        fmode = stat.S_IFREG | (mode & 0o7777 & ~umask)
        if not self._no_create:
            oflags = (flags | os.O_CREAT) & ~os.O_NOCTTY
            if not self.conn.flags & FUSE_ATOMIC_O_TRUNC:
                oflags &= ~os.O_TRUNC
            head = pack_create_in(oflags, fmode, umask, self._minor)
            epoch = self._now_epoch()
            try:
                body = self._req(FUSE_CREATE, parent,
                                 [head, fsname(name) + b"\0"], ctx)
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                self._no_create = True
            else:
                entry = self._parse_entry(body)
                if not entry.nodeid:
                    raise fuse_error(errno.EIO, "CREATE returned node 0")
                self._remember(key, entry, epoch)
                esize = self.conn.entry_out_size
                fh = (OPEN_OUT.unpack_from(body, esize)[0]
                      if len(body) >= esize + 8 else 0)
                self._open_flags(fh, entry.nodeid, body, esize)
                self._add_handle(False, fh, entry.nodeid,
                                 oflags & ~_NOCTTY_EXCL_CREAT, stat.S_IFREG)
                return fh
        # no CREATE: MKNOD then OPEN, as the kernel falls back
        self._mknod(parent, name, key, fmode, 0, 0, ctx)
        return self.open(path, flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC),
                         ctx=ctx)

    @_op
    def read(self, path, size, offset, fh, *, ctx=None) -> bytes:
        """Up to `size` bytes at `offset`, in READs of at most max_read
        bytes; short at end of file.  An error after some data was read
        returns that data, as read(2) does."""
        nodeid, flags, _t = self._handle(False, fh, path, ctx)
        if offset < 0:
            raise fuse_error(errno.EINVAL)
        window = min(self.conn.max_read, max(self.conn.max_readahead, 4096))
        if (not self.readahead or size <= 0 or size >= window
                or (fh, nodeid) in self._no_ra):
            return self._read(nodeid, fh, flags, size, offset, ctx)
        key = (fh, nodeid)
        with self._lock:
            ra = self._ra.get(key)
            if ra is not None and ra.changes != self._changes:
                ra = None
        if ra is not None and ra.start <= offset <= ra.start + len(ra.data):
            skip = offset - ra.start
            if skip + size <= len(ra.data) or ra.eof:
                data = ra.data[skip:skip + size]
                ra.next = offset + len(data)
                return data
        if offset != 0 and (ra is None or offset != ra.next):
            # not sequential: as asked (the kernel's readahead also waits
            # for a second sequential read)
            data = self._read(nodeid, fh, flags, size, offset, ctx)
            with self._lock:
                self._ra[key] = _ReadAhead(self._changes, offset, b"", False,
                                           offset + len(data))
            return data
        changes = self._changes
        data = self._read(nodeid, fh, flags, window, offset, ctx)
        with self._lock:
            if changes == self._changes and len(self._ra) < 4096:
                self._ra[key] = _ReadAhead(changes, offset, data,
                                           len(data) < window,
                                           offset + min(size, len(data)))
        return data[:size]

    def _open_flags(self, fh, nodeid, body, off) -> None:
        """fuse_open_out.open_flags: no read-ahead for direct I/O or a
        stream, as the kernel's page cache is not used for them."""
        if len(body) >= off + 12:
            oflags = OPEN_OUT.unpack_from(body, off)[1]
            with self._lock:
                if oflags & _NO_READAHEAD:
                    self._no_ra.add((fh, nodeid))
                else:
                    self._no_ra.discard((fh, nodeid))

    def _read(self, nodeid, fh, flags, size, offset, ctx) -> bytes:
        chunk = self.conn.max_read
        pieces = []
        while size > 0:
            n = min(size, chunk)
            try:
                body = self._req(FUSE_READ, nodeid,
                                 self._io_in(fh, offset, n, flags), ctx)
            except OSError:
                if pieces:
                    break
                raise
            if len(body) > n:
                body = body[:n]
            pieces.append(body)
            offset += len(body)
            size -= len(body)
            if len(body) < n:
                break
        if len(pieces) == 1:
            return pieces[0]
        return b"".join(pieces)

    @_changes
    @_op
    def write(self, path, data, offset, fh, *, ctx=None) -> int:
        """Write `data` at `offset` in WRITEs of at most write_chunk bytes;
        returns the count written (short if the daemon wrote less, or if
        an error came after some data was written)."""
        nodeid, flags, _t = self._handle(False, fh, path, ctx)
        if offset < 0:
            raise fuse_error(errno.EINVAL)
        view = memoryview(data).cast("B")
        chunk = self.conn.write_chunk
        done = 0
        while done < len(view):
            piece = view[done:done + chunk]
            try:
                body = self._req(FUSE_WRITE, nodeid,
                                 [self._io_in(fh, offset + done, len(piece),
                                              flags), piece], ctx)
            except OSError:
                if done:
                    break
                raise
            if len(body) < WRITE_OUT.size:
                raise fuse_error(errno.EIO, "short write reply")
            n = WRITE_OUT.unpack_from(body)[0]
            if n > len(piece):
                raise fuse_error(errno.EIO, "daemon wrote more than asked")
            done += n
            if n < len(piece):
                break
        return done

    @_op
    def flush(self, path, fh, *, ctx=None):
        if self._no_flush:
            return
        nodeid, oflags, _t = self._handle(False, fh, path, ctx)
        if oflags & os.O_ACCMODE != os.O_RDONLY:
            self._changed()
        try:
            self._req(FUSE_FLUSH, nodeid, FLUSH_IN.pack(fh, 0, 0, 0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_flush = True

    @_op
    def release(self, path, fh, flags=0, *, ctx=None):
        nodeid, oflags, _t = self._handle(False, fh, path, ctx)
        with self._lock:
            self._ra.pop((fh, nodeid), None)
            self._no_ra.discard((fh, nodeid))
        if oflags & os.O_ACCMODE != os.O_RDONLY:
            self._changed()
        try:
            if not self._no_open:
                self._req(FUSE_RELEASE, nodeid,
                          RELEASE_IN.pack(fh, (flags or oflags) & 0xFFFFFFFF,
                                          0, 0), ctx)
        finally:
            self._drop_handle(False, fh, nodeid)

    @_op
    def fsync(self, path, datasync, fh, *, ctx=None):
        self._sync(False, path, datasync, fh, ctx)

    @_changes
    @_op
    def fallocate(self, path, mode, offset, length, fh, *, ctx=None):
        nodeid = self._handle(False, fh, path, ctx)[0]
        if offset < 0 or length <= 0:
            raise fuse_error(errno.EINVAL)
        if self._no_fallocate or self._minor < 19:
            raise fuse_error(errno.EOPNOTSUPP)
        try:
            self._req(FUSE_FALLOCATE, nodeid,
                      FALLOCATE_IN.pack(fh, offset, length, mode, 0), ctx)
        except OSError as e:
            if e.errno != errno.ENOSYS:
                raise
            self._no_fallocate = True
            raise fuse_error(errno.EOPNOTSUPP) from None

    @_op
    def lseek(self, path, offset, whence, fh, *, ctx=None) -> int:
        """SEEK_SET/SEEK_END are answered here; SEEK_DATA/SEEK_HOLE go to
        the daemon when it implements LSEEK, else the whole file is data."""
        if whence == os.SEEK_SET:
            if offset < 0:
                raise fuse_error(errno.EINVAL)
            return offset
        if whence == os.SEEK_END:
            pos = self.getattr(path, fh, ctx=ctx).st_size + offset
            if pos < 0:
                raise fuse_error(errno.EINVAL)
            return pos
        if whence not in (getattr(os, "SEEK_DATA", 3), getattr(os, "SEEK_HOLE", 4)):
            raise fuse_error(errno.EINVAL)
        if not self._no_lseek and self._minor >= 24:
            nodeid = self._handle(False, fh, path, ctx)[0]
            try:
                body = self._req(FUSE_LSEEK, nodeid,
                                 LSEEK_IN.pack(fh, offset, whence, 0), ctx)
                return signed64(LSEEK_OUT.unpack_from(body)[0])
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                self._no_lseek = True
        size = self.getattr(path, fh, ctx=ctx).st_size
        if offset < 0 or offset >= size:
            raise fuse_error(errno.ENXIO)
        return offset if whence == getattr(os, "SEEK_DATA", 3) else size

    # -- names ------------------------------------------------------------------

    def _entry_op(self, key: str, opcode: int, parent: int, payload,
                  ctx) -> os.stat_result:
        """A request answered with fuse_entry_out (MKNOD, MKDIR, SYMLINK,
        LINK): the new name gets cached with its lookup."""
        epoch = self._now_epoch()
        entry = self._parse_entry(self._req(opcode, parent, payload, ctx))
        if not entry.nodeid:
            raise fuse_error(errno.EIO, "entry reply with node 0")
        self._remember(key, entry, epoch)
        return entry.attr

    @_changes
    @_op
    def mkdir(self, path, mode, *, umask=0, ctx=None):
        parent, name, key = self._new_name(path, ctx)
        payload = [MKDIR_IN.pack(mode & 0o1777 & ~umask, umask),
                   fsname(name) + b"\0"]
        self._entry_op(key, FUSE_MKDIR, parent, payload, ctx)

    @_changes
    @_op
    def mknod(self, path, mode, dev=0, *, umask=0, ctx=None):
        ftype = stat.S_IFMT(mode)
        if ftype == 0:
            mode |= stat.S_IFREG
        elif ftype == stat.S_IFDIR:
            raise fuse_error(errno.EPERM)
        elif ftype not in (stat.S_IFREG, stat.S_IFCHR, stat.S_IFBLK,
                           stat.S_IFIFO, stat.S_IFSOCK):
            raise fuse_error(errno.EINVAL)
        parent, name, key = self._new_name(path, ctx)
        self._mknod(parent, name, key, mode & ~(umask & 0o7777), dev, umask,
                    ctx)

    def _mknod(self, parent, name, key, mode, dev, umask, ctx):
        head = pack_mknod_in(mode, dev, umask, self._minor)
        self._entry_op(key, FUSE_MKNOD, parent, [head, fsname(name) + b"\0"],
                       ctx)

    @_changes
    @_op
    def symlink(self, target, source, *, ctx=None):
        """Create `target` (the new name), a symlink whose content is
        `source` (fusepy's argument order)."""
        if not source:
            raise fuse_error(errno.ENOENT)
        parent, name, key = self._new_name(target, ctx)
        payload = [fsname(name) + b"\0", fsname(source) + b"\0"]
        self._entry_op(key, FUSE_SYMLINK, parent, payload, ctx)

    @_changes
    @_op
    def link(self, target, source, *, ctx=None):
        """Create `target` (the new name), a hard link to `source`."""
        old, ftype = self._typed(source, ctx)
        if ftype == stat.S_IFDIR:
            raise fuse_error(errno.EPERM)
        parent, name, key = self._new_name(target, ctx)
        payload = [LINK_IN.pack(old), fsname(name) + b"\0"]
        self._entry_op(key, FUSE_LINK, parent, payload, ctx)

    def _remove(self, opcode, path, ctx):
        parent, name, key = self._parent(path, ctx)
        ftype = self._typed(path, ctx)[1]
        if opcode == FUSE_UNLINK and ftype == stat.S_IFDIR:
            raise fuse_error(errno.EISDIR)
        if opcode == FUSE_RMDIR and ftype != stat.S_IFDIR:
            raise fuse_error(errno.ENOTDIR)
        try:
            self._req(opcode, parent, fsname(name) + b"\0", ctx)
        except OSError as e:
            if e.errno == errno.ENOENT:
                self.drop(key)
            raise
        self.drop(key)

    @_changes
    @_op
    def unlink(self, path, *, ctx=None):
        self._remove(FUSE_UNLINK, path, ctx)

    @_changes
    @_op
    def rmdir(self, path, *, ctx=None):
        self._remove(FUSE_RMDIR, path, ctx)

    @_changes
    @_op
    def rename(self, old, new, flags=0, *, ctx=None):
        """RENAME, or RENAME2 when `flags` (RENAME_NOREPLACE=1,
        RENAME_EXCHANGE=2, RENAME_WHITEOUT=4) are given and offered."""
        if flags & ~7 or (flags & 1 and flags & 6):
            raise fuse_error(errno.EINVAL)
        oparent, oname, okey = self._parent(old, ctx)
        nparent, nname, nkey = self._parent(new, ctx)
        oparts, nparts = _split(old), _split(new)
        onode, otype = self._typed(old, ctx)
        found = self._probe(nparts, ctx)
        if len(nparts) > len(oparts) and nparts[:len(oparts)] == oparts:
            raise fuse_error(errno.EINVAL)        # into its own subtree
        if len(oparts) > len(nparts) and oparts[:len(nparts)] == nparts:
            raise fuse_error(errno.EINVAL if flags & 2 else errno.ENOTEMPTY)
        if found is None:
            if flags & 2:
                raise fuse_error(errno.ENOENT)
        else:
            nnode, ntype = found
            if flags & 1:
                raise fuse_error(errno.EEXIST)
            if nnode == onode:
                return                      # same node: nothing to do
            if not flags & 2:
                if otype == stat.S_IFDIR and ntype != stat.S_IFDIR:
                    raise fuse_error(errno.ENOTDIR)
                if otype != stat.S_IFDIR and ntype == stat.S_IFDIR:
                    raise fuse_error(errno.EISDIR)
        names = [fsname(oname) + b"\0", fsname(nname) + b"\0"]
        if flags:
            if self._no_rename2 or self._minor < 23:
                raise fuse_error(errno.EINVAL)
            try:
                self._req(FUSE_RENAME2, oparent,
                          [RENAME2_IN.pack(nparent, flags, 0)] + names, ctx)
            except OSError as e:
                if e.errno != errno.ENOSYS:
                    raise
                self._no_rename2 = True
                raise fuse_error(errno.EINVAL) from None
        else:
            self._req(FUSE_RENAME, oparent, [RENAME_IN.pack(nparent)] + names,
                      ctx)
        forgets: list = []
        with self._lock:
            self._drop_locked(okey, forgets)
            self._drop_locked(nkey, forgets)
            self._epoch += 1
        self._forget(forgets)

    # -- extended attributes -------------------------------------------------------

    def _xattr(self, opcode, nodeid, size, name, ctx) -> bytes:
        payload = [GETXATTR_IN.pack(size, 0)]
        if name is not None:
            payload.append(fsname(name) + b"\0")
        try:
            return self._req(opcode, nodeid, payload, ctx)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                raise fuse_error(errno.EOPNOTSUPP) from None
            raise

    def _xattr_value(self, opcode, path, name, ctx) -> bytes:
        nodeid = self._node(path, ctx)
        for _ in range(8):
            body = self._xattr(opcode, nodeid, 0, name, ctx)
            if len(body) < GETXATTR_OUT.size:
                raise fuse_error(errno.EIO, "short xattr size reply")
            size = GETXATTR_OUT.unpack_from(body)[0]
            if size == 0:
                return b""
            try:
                return self._xattr(opcode, nodeid, size, name, ctx)
            except OSError as e:
                if e.errno != errno.ERANGE:     # grew meanwhile: ask again
                    raise
        raise fuse_error(errno.ERANGE)

    @_op
    def getxattr(self, path, name, position=0, *, ctx=None) -> bytes:
        return self._xattr_value(FUSE_GETXATTR, path, name, ctx)

    @_op
    def listxattr(self, path, *, ctx=None) -> list[str]:
        body = self._xattr_value(FUSE_LISTXATTR, path, None, ctx)
        return [os.fsdecode(n) for n in body.split(b"\0") if n]

    @_changes
    @_op
    def setxattr(self, path, name, value, options=0, position=0, *, ctx=None):
        nodeid = self._node(path, ctx)
        value = bytes(value)
        payload = [SETXATTR_IN.pack(len(value), options),
                   fsname(name) + b"\0", value]
        try:
            self._req(FUSE_SETXATTR, nodeid, payload, ctx)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                raise fuse_error(errno.EOPNOTSUPP) from None
            raise

    @_changes
    @_op
    def removexattr(self, path, name, *, ctx=None):
        nodeid = self._node(path, ctx)
        try:
            self._req(FUSE_REMOVEXATTR, nodeid, fsname(name) + b"\0", ctx)
        except OSError as e:
            if e.errno == errno.ENOSYS:
                raise fuse_error(errno.EOPNOTSUPP) from None
            raise

    # -- session ----------------------------------------------------------------

    def init(self) -> None:
        self.conn.init()

    def destroy(self, path=None):
        """FUSE_DESTROY; the daemon forgets every node by itself."""
        with self._lock:
            self._cache.clear()
            self._root_children.clear()
            self._by_nodeid.clear()
            self._deferred.clear()
        self.conn.destroy()
