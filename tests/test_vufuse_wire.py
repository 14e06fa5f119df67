"""vufuse wire protocol: the kernel side of FUSE spoken over a socketpair.

Most tests drive the UNMODIFIED Debian fuse2fs (libfuse 2.9) on a small ext4
image: its "/dev/fuse" is one end of a SOCK_SEQPACKET socketpair, thanks to
a tiny LD_PRELOAD shim (tests/fuse_shim.c, compiled here) that hands out the
descriptor and makes mount(2)/umount2(2) succeed.  The image is checked
afterwards with e2fsck and debugfs.  A scripted fake daemon checks what
fuse2fs cannot show: compat structure sizes, FORGET, INTERRUPT, READDIRPLUS
and replies out of order.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import random
import shutil
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHIM_SRC = Path(__file__).resolve().parent / "fuse_shim.c"


def _load_vufuse():
    """vufuse's codec, session and path operations: from the installed
    package, or else straight from the source tree (without vufuse's
    __init__, which needs the rest of umvu)."""
    names = ("protocol", "session", "pathops")
    try:
        return [importlib.import_module("umvu.modules.vufuse." + n)
                for n in names]
    except Exception:
        pkg = types.ModuleType("vufuse_wire")
        pkg.__path__ = [str(REPO / "modules" / "vufuse")]
        sys.modules["vufuse_wire"] = pkg
        return [importlib.import_module("vufuse_wire." + n) for n in names]


protocol, session, pathops = _load_vufuse()

FUSE2FS = shutil.which("fuse2fs") or next(
    (p for p in ("/usr/sbin/fuse2fs", "/usr/bin/fuse2fs", "/sbin/fuse2fs")
     if os.access(p, os.X_OK)), None)
MKE2FS = shutil.which("mke2fs") or "/usr/sbin/mke2fs"
E2FSCK = shutil.which("e2fsck") or "/usr/sbin/e2fsck"
DEBUGFS = shutil.which("debugfs") or "/usr/sbin/debugfs"
GCC = shutil.which("gcc") or shutil.which("cc")

#: `make test` installs fuse2fs, e2fsprogs and gcc: their absence is a failure
assert FUSE2FS and GCC and os.access(MKE2FS, os.X_OK), \
    "fuse2fs, mke2fs and gcc are needed: run `make deps`"


UNKNOWN_INO = 0xFFFFFFFF        # libfuse 2 high-level readdir without ino
BIG = 3 * 1024 * 1024


# --------------------------------------------------------------------------
# fixtures: shim, source tree, image, running fuse2fs

@pytest.fixture(scope="session")
def shim(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("shim") / "fuse_shim.so"
    subprocess.run([GCC, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out),
                    str(SHIM_SRC), "-ldl"], check=True)
    return str(out)


@pytest.fixture(scope="module")
def srctree(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src") / "tree"
    rnd = random.Random(4242)
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "sub" / "emptydir").mkdir()
    (src / "hello.txt").write_bytes(b"hello world\n")
    (src / "empty").write_bytes(b"")
    (src / "name with spaces.txt").write_bytes(b"spaces\n" * 100)
    (src / "sub" / "inner.txt").write_bytes(b"inner file\n")
    (src / "sub" / "deeper" / "deep.bin").write_bytes(rnd.randbytes(10000))
    (src / "big.bin").write_bytes(rnd.randbytes(BIG))
    script = src / "script.sh"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    os.symlink("hello.txt", src / "link")
    os.symlink("sub/deeper", src / "dirlink")
    os.symlink("/nonexistent/target", src / "dangling")
    return src


def make_image(src: Path, dest: Path) -> Path:
    img = dest / "fs.img"
    subprocess.run([MKE2FS, "-q", "-F", "-t", "ext4", "-d", str(src),
                    str(img), "8M"], check=True, capture_output=True)
    return img


class Fuse2fs:
    """fuse2fs running on `img`, its /dev/fuse a socketpair end."""

    def __init__(self, img: Path, shim: str, workdir: Path, timeout=10.0,
                 opts=()):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mnt = workdir / "mnt"
        mnt.mkdir(exist_ok=True)
        env = dict(os.environ, LD_PRELOAD=shim,
                   FUSE_SHIM_FD=str(theirs.fileno()))
        self.log = workdir / "fuse2fs.log"
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(
                [FUSE2FS, str(img), str(mnt), "-f", *opts], env=env,
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=logf, stderr=logf, start_new_session=True)
        theirs.close()
        self.img = img
        self.conn = session.FuseConnection(ours, timeout=timeout)
        self.ops = pathops.WireOperations(self.conn)

    def finish(self, timeout=10.0) -> int:
        """DESTROY (if still connected) and wait for the daemon to exit."""
        if self.conn.alive:
            self.ops.destroy()
        self.conn.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail("fuse2fs did not exit after DESTROY")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.conn.close()


@pytest.fixture
def fs(srctree, shim, tmp_path):
    img = make_image(srctree, tmp_path)
    d = Fuse2fs(img, shim, tmp_path)
    d.ops.init()
    yield d
    try:
        if d.proc.poll() is None:
            d.finish()
    finally:
        d.kill()


def read_all(ops, path, chunk=None) -> bytes:
    fh = ops.open(path, os.O_RDONLY)
    try:
        if chunk is None:
            size = ops.getattr(path).st_size
            return ops.read(path, size + 1, 0, fh)
        out, off = [], 0
        while True:
            piece = ops.read(path, chunk, off, fh)
            out.append(piece)
            off += len(piece)
            if len(piece) < chunk:
                return b"".join(out)
    finally:
        ops.release(path, fh)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def errno_of(fn, *a, **k) -> int:
    with pytest.raises(OSError) as ei:
        fn(*a, **k)
    assert isinstance(ei.value, protocol.FuseError)
    return ei.value.errno


# --------------------------------------------------------------------------
# fuse2fs: reading

def test_init_negotiates_with_the_daemon_minor(fs):
    c = fs.conn
    assert c.major == 7
    # libfuse 2.9.9 answers 7.19; we speak min(ours=31, theirs)
    assert c.daemon_minor is not None and 9 <= c.daemon_minor
    assert c.minor == min(31, c.daemon_minor)
    assert c.flags & ~protocol.OFFERED_FLAGS == 0
    assert c.max_write >= 4096 and 4096 <= c.write_chunk <= c.max_write
    assert c.max_read >= 4096
    print(f"fuse2fs negotiated 7.{c.minor} flags={c.flags:#x} "
          f"max_write={c.max_write} max_readahead={c.max_readahead}")


def test_getattr_root(fs, srctree):
    st = fs.ops.getattr("/")
    assert stat.S_ISDIR(st.st_mode)
    assert st.st_ino == 2                  # ext4 root inode
    assert st.st_dev == 0 and st.st_nlink >= 3
    assert st.st_mtime_ns // 10**9 == st.st_mtime
    assert isinstance(st, os.stat_result)


def _walk_compare(ops, src: Path, rel: str):
    fh = ops.opendir(rel)
    try:
        entries = ops.readdir(rel, fh)
    finally:
        ops.releasedir(rel, fh)
    names = [e[0] for e in entries]
    assert len(names) == len(set(names)), names
    want = set(os.listdir(src)) | {".", ".."}
    if rel == "/":
        want.add("lost+found")
    assert set(names) == want
    for name, dtype, ino in entries:
        if name in (".", ".."):
            continue
        path = rel.rstrip("/") + "/" + name
        st = ops.getattr(path)
        if dtype:
            assert dtype == stat.S_IFMT(st.st_mode) >> 12
        if ino != UNKNOWN_INO:
            assert ino == st.st_ino
        if rel == "/" and name == "lost+found":
            continue
        sst = os.lstat(src / name)
        assert stat.S_IFMT(st.st_mode) == stat.S_IFMT(sst.st_mode), path
        assert stat.S_IMODE(st.st_mode) == stat.S_IMODE(sst.st_mode), path
        assert (st.st_uid, st.st_gid) == (sst.st_uid, sst.st_gid)
        assert st.st_mtime == int(sst.st_mtime), path
        if stat.S_ISREG(sst.st_mode):
            assert st.st_size == sst.st_size
        elif stat.S_ISLNK(sst.st_mode):
            assert ops.readlink(path) == os.readlink(src / name)
        elif stat.S_ISDIR(sst.st_mode):
            _walk_compare(ops, src / name, path)


def test_readdir_listing_equals_source_tree(fs, srctree):
    _walk_compare(fs.ops, srctree, "/")


def test_read_files_sha256(fs, srctree):
    for p in sorted(srctree.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        rel = "/" + str(p.relative_to(srctree))
        assert sha(read_all(fs.ops, rel)) == sha(p.read_bytes()), rel
    want = sha((srctree / "big.bin").read_bytes())
    for chunk in (4096, 65536, 131072, 200_000, 1 << 20, BIG, BIG + 1):
        assert sha(read_all(fs.ops, "/big.bin", chunk)) == want, chunk


def test_read_offsets_and_eof(fs, srctree):
    data = (srctree / "big.bin").read_bytes()
    ops = fs.ops
    fh = ops.open("/big.bin", os.O_RDONLY)
    try:
        for off, size in ((0, 1), (4095, 2), (123_457, 300_000),
                          (BIG - 10, 100), (BIG, 10), (BIG + 5, 10)):
            assert ops.read("/big.bin", size, off, fh) == data[off:off + size]
    finally:
        ops.release("/big.bin", fh)


def test_readlink_and_errors(fs):
    ops = fs.ops
    assert ops.readlink("/link") == "hello.txt"
    assert ops.readlink("/dirlink") == "sub/deeper"
    assert ops.readlink("/dangling") == "/nonexistent/target"
    assert errno_of(ops.readlink, "/hello.txt") == errno.EINVAL
    assert errno_of(ops.getattr, "/nope") == errno.ENOENT
    assert errno_of(ops.getattr, "/sub/nope/x") == errno.ENOENT
    assert errno_of(ops.getattr, "/hello.txt/x") == errno.ENOTDIR
    assert errno_of(ops.open, "/nope", os.O_RDONLY) == errno.ENOENT
    assert errno_of(ops.open, "/sub", os.O_WRONLY) == errno.EISDIR
    assert errno_of(ops.opendir, "/hello.txt") == errno.ENOTDIR
    assert errno_of(ops.getattr, "/" + "x" * 2000) == errno.ENAMETOOLONG
    # a FuseError is an OSError with the errno, of the builtin subclass
    with pytest.raises(FileNotFoundError) as ei:
        ops.getattr("/nope")
    assert ei.value.errno == errno.ENOENT
    assert isinstance(ei.value, protocol.FuseError)
    with pytest.raises(IsADirectoryError):
        ops.open("/sub", os.O_WRONLY)
    with pytest.raises(FileExistsError):
        ops.mkdir("/sub", 0o755)


def test_lookup_cache_counts(fs):
    ops = fs.ops
    assert ops.cached("/sub/deeper") is None
    ops.getattr("/sub/deeper/deep.bin")
    sub, deeper, deep = (ops.cached(p) for p in
                         ("/sub", "/sub/deeper", "/sub/deeper/deep.bin"))
    assert sub[2] == deeper[2] == deep[2] == 1
    ops.getattr("/sub/deeper/deep.bin")       # served from the cache
    assert ops.cached("/sub/deeper/deep.bin")[2] == 1
    assert len({sub[0], deeper[0], deep[0], 1}) == 4
    ops.drop("/sub")
    assert ops.cached("/sub") is None and ops.cached("/sub/deeper") is None
    assert ops.getattr("/sub/deeper/deep.bin").st_size == 10000


def test_concurrent_requests(fs, srctree):
    ops = fs.ops
    files = ["/hello.txt", "/sub/inner.txt", "/sub/deeper/deep.bin",
             "/name with spaces.txt"]
    want = {f: (srctree / f[1:]).read_bytes() for f in files}
    errors = []

    def worker(n):
        try:
            for i in range(60):
                f = files[(n + i) % len(files)]
                assert ops.getattr(f).st_size == len(want[f])
                assert read_all(ops, f) == want[f]
        except BaseException as e:       # report in the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[0]
    assert sha(read_all(ops, "/big.bin")) == sha(
        (srctree / "big.bin").read_bytes())


def test_tiny_cache_evicts_and_forgets(fs, srctree):
    small = pathops.WireOperations(fs.conn, max_cached=3)
    _walk_compare(small, srctree, "/")
    assert len(small._cache) <= 3
    assert sha(read_all(small, "/sub/deeper/deep.bin")) == sha(
        (srctree / "sub/deeper/deep.bin").read_bytes())
    assert fs.proc.poll() is None
    assert [e[0] for e in small.readdir("/sub")] == [
        e[0] for e in fs.ops.readdir("/sub")]


def test_concurrent_namespace_changes(fs):
    """Creates, unlinks and renames racing with lookups (two path caches,
    one tiny): no node id is used after its FORGET, so the daemon (whose
    libfuse aborts on unknown node ids) survives and the image is clean."""
    ops = fs.ops
    small = pathops.WireOperations(fs.conn, max_cached=4)
    ops.mkdir("/race", 0o755)
    ops.mkdir("/race/sub", 0o755)
    stop = threading.Event()
    errors = []

    def guard(fn, ok=(errno.ENOENT,)):
        try:
            fn()
        except OSError as e:
            if e.errno not in ok:
                errors.append(e)

    def writer(tag):
        for i in range(120):
            p = f"/race/{tag}{i % 4}"

            def cycle():
                fh = ops.create(p, 0o644, os.O_WRONLY | os.O_CREAT)
                ops.write(p, tag.encode() * 100, 0, fh)
                ops.release(p, fh)
                ops.unlink(p)
            guard(cycle, ())

    def renamer():
        for i in range(120):
            a, b = ("/race/sub", "/race/sub2") if i % 2 == 0 else (
                "/race/sub2", "/race/sub")
            guard(lambda: ops.rename(a, b), ())

    def reader(o):
        while not stop.is_set():
            for name in ("a0", "a1", "b2", "sub", "sub2", "sub/x"):
                guard(lambda: o.getattr("/race/" + name),
                      (errno.ENOENT, errno.ENOTDIR))
            guard(lambda: o.readdir("/race"), (errno.ENOENT,))

    workers = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    workers.append(threading.Thread(target=renamer))
    readers = [threading.Thread(target=reader, args=(o,))
               for o in (ops, ops, small, small)]
    for t in workers + readers:
        t.start()
    for t in workers:
        t.join(120)
    stop.set()
    for t in readers:
        t.join(30)
    assert not errors, errors[:3]
    assert fs.proc.poll() is None, fs.log.read_text()
    names = {e[0] for e in ops.readdir("/race")}
    assert names in ({".", "..", "sub"}, {".", "..", "sub2"})
    assert fs.finish() == 0
    fsck = subprocess.run([E2FSCK, "-fn", str(fs.img)], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout.decode()


def test_getattr_round_trip_time(fs):
    ops = fs.ops
    ops.getattr("/hello.txt")
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        ops.getattr("/hello.txt")
    us = (time.perf_counter() - t0) / n * 1e6
    print(f"GETATTR round trip through WireOperations: {us:.1f} us")
    assert us < 5000


# --------------------------------------------------------------------------
# fuse2fs: writing, then e2fsck and debugfs on the image

def debugfs(img, cmd) -> str:
    return subprocess.run([DEBUGFS, "-R", cmd, str(img)], capture_output=True,
                          check=True).stdout.decode("utf-8", "replace")


def test_writes_then_fsck_and_debugfs(fs, srctree):
    ops = fs.ops
    rnd = random.Random(7)

    # create + write (several WRITE chunks) + read back
    data = rnd.randbytes(300_000)
    fh = ops.create("/new.txt", 0o666, os.O_WRONLY | os.O_CREAT)
    assert ops.write("/new.txt", data, 0, fh) == len(data)
    assert ops.write("/new.txt", b"TAIL", len(data) + 1000, fh) == 4
    ops.flush("/new.txt", fh)
    ops.fsync("/new.txt", False, fh)
    assert ops.getattr("/new.txt", fh).st_size == len(data) + 1004
    ops.release("/new.txt", fh)
    st = ops.getattr("/new.txt")
    assert stat.S_IMODE(st.st_mode) == 0o644          # umask 022 applied
    content = data + b"\0" * 1000 + b"TAIL"
    assert read_all(ops, "/new.txt") == content
    assert ops.cached("/new.txt")[2] >= 1
    # O_EXCL on an existing name, plain O_CREAT opens it
    assert errno_of(ops.create, "/new.txt", 0o644,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    fh = ops.create("/new.txt", 0o644, os.O_RDONLY | os.O_CREAT)
    assert ops.read("/new.txt", 10, 0, fh) == data[:10]
    ops.release("/new.txt", fh)

    # O_TRUNC on open (fuse2fs has no ATOMIC_O_TRUNC: SETATTR after OPEN)
    fh = ops.create("/trunc.txt", 0o600, os.O_WRONLY | os.O_CREAT)
    ops.write("/trunc.txt", b"x" * 5000, 0, fh)
    ops.release("/trunc.txt", fh)
    fh = ops.open("/trunc.txt", os.O_WRONLY | os.O_TRUNC)
    assert ops.getattr("/trunc.txt").st_size == 0
    ops.write("/trunc.txt", b"short", 0, fh)
    ops.release("/trunc.txt", fh)
    assert read_all(ops, "/trunc.txt") == b"short"

    # directories
    ops.mkdir("/d1", 0o755)
    ops.mkdir("/d1/d2", 0o700)
    assert stat.S_ISDIR(ops.getattr("/d1/d2").st_mode)
    assert stat.S_IMODE(ops.getattr("/d1/d2").st_mode) == 0o700
    assert errno_of(ops.mkdir, "/d1", 0o755) == errno.EEXIST
    fh = ops.create("/d1/d2/f", 0o640, os.O_WRONLY | os.O_CREAT)
    ops.write("/d1/d2/f", b"moving file\n", 0, fh)
    ops.release("/d1/d2/f", fh)

    # rename: file across directories, cache entries dropped
    ops.rename("/d1/d2/f", "/d1/moved")
    assert ops.cached("/d1/d2/f") is None
    assert errno_of(ops.getattr, "/d1/d2/f") == errno.ENOENT
    assert read_all(ops, "/d1/moved") == b"moving file\n"
    ops.rename("/sub/inner.txt", "/inner2.txt")
    assert read_all(ops, "/inner2.txt") == b"inner file\n"
    # rename over an existing file replaces it
    ops.rename("/inner2.txt", "/empty")
    assert read_all(ops, "/empty") == b"inner file\n"
    assert errno_of(ops.getattr, "/inner2.txt") == errno.ENOENT
    # what the VFS refuses before the daemon sees it
    assert errno_of(ops.rename, "/d1", "/d1/d2/x") == errno.EINVAL
    assert errno_of(ops.rename, "/d1", "/hello.txt") == errno.ENOTDIR
    assert errno_of(ops.rename, "/hello.txt", "/d1") == errno.EISDIR
    # fuse2fs (7.19) has no RENAME2
    assert errno_of(ops.rename, "/hello.txt", "/x", 1) == errno.EINVAL

    # unlink / rmdir
    ops.unlink("/hello.txt")
    assert errno_of(ops.getattr, "/hello.txt") == errno.ENOENT
    assert ops.cached("/hello.txt") is None
    assert errno_of(ops.unlink, "/d1") == errno.EISDIR
    assert errno_of(ops.rmdir, "/d1/moved") == errno.ENOTDIR
    assert errno_of(ops.rmdir, "/d1") == errno.ENOTEMPTY
    ops.rmdir("/sub/emptydir")
    assert errno_of(ops.getattr, "/sub/emptydir") == errno.ENOENT
    ops.rmdir("/d1/d2")

    # truncate (path and handle), chmod, chown, utimens
    ops.truncate("/big.bin", 1024 * 1024 + 5)
    assert ops.getattr("/big.bin").st_size == 1024 * 1024 + 5
    fh = ops.open("/new.txt", os.O_WRONLY)
    ops.truncate("/new.txt", 100_000, fh)
    ops.release("/new.txt", fh)
    content = content[:100_000]
    assert read_all(ops, "/new.txt") == content
    assert errno_of(ops.truncate, "/d1", 0) == errno.EISDIR
    ops.chmod("/new.txt", 0o600)
    assert stat.S_IMODE(ops.getattr("/new.txt").st_mode) == 0o600
    assert stat.S_ISREG(ops.getattr("/new.txt").st_mode)
    ops.chown("/new.txt", 1000, 1001)
    st = ops.getattr("/new.txt")
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    ops.chown("/new.txt", -1, 1002)
    st = ops.getattr("/new.txt")
    assert (st.st_uid, st.st_gid) == (1000, 1002)
    ops.utimens("/new.txt", (1_500_000_000 * 10**9, 1_600_000_000 * 10**9))
    st = ops.getattr("/new.txt")
    assert (st.st_atime, st.st_mtime) == (1_500_000_000, 1_600_000_000)
    ops.utimens("/new.txt")
    assert abs(ops.getattr("/new.txt").st_mtime - time.time()) < 60

    # symlink (fusepy order: new name, then content), link, mknod
    ops.symlink("/sl", "new.txt")
    assert ops.readlink("/sl") == "new.txt"
    assert stat.S_ISLNK(ops.getattr("/sl").st_mode)
    ops.link("/hard", "/new.txt")
    a, b = ops.getattr("/hard"), ops.getattr("/new.txt")
    assert a.st_ino == b.st_ino and b.st_nlink == 2
    assert errno_of(ops.link, "/dirhard", "/d1") == errno.EPERM
    assert errno_of(ops.symlink, "/sl", "x") == errno.EEXIST
    ops.mknod("/fifo", stat.S_IFIFO | 0o644, 0)
    assert stat.S_ISFIFO(ops.getattr("/fifo").st_mode)
    ops.mknod("/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    assert ops.getattr("/null").st_rdev == os.makedev(1, 3)
    assert errno_of(ops.open, "/sl", os.O_RDONLY) == errno.ELOOP

    # xattrs
    ops.setxattr("/new.txt", "user.color", b"blue")
    assert ops.getxattr("/new.txt", "user.color") == b"blue"
    assert "user.color" in ops.listxattr("/new.txt")
    ops.removexattr("/new.txt", "user.color")
    assert errno_of(ops.getxattr, "/new.txt", "user.color") == errno.ENODATA

    # statfs, access
    sf = ops.statfs("/")
    assert sf["f_bsize"] > 0 and sf["f_frsize"] > 0
    assert 0 < sf["f_bfree"] < sf["f_blocks"]
    assert 0 < sf["f_ffree"] < sf["f_files"]
    assert sf["f_namemax"] == 255
    ops.access("/new.txt", os.R_OK | os.W_OK)

    # a file unlinked while open stays readable until released
    fh = ops.open("/trunc.txt", os.O_RDONLY)
    ops.unlink("/trunc.txt")
    assert ops.read("/trunc.txt", 100, 0, fh) == b"short"
    ops.release("/trunc.txt", fh)

    # lseek
    fh = ops.open("/new.txt", os.O_RDONLY)
    assert ops.lseek("/new.txt", 10, os.SEEK_SET, fh) == 10
    assert ops.lseek("/new.txt", -1, os.SEEK_END, fh) == 100_000 - 1
    assert ops.lseek("/new.txt", 0, os.SEEK_DATA, fh) == 0
    assert ops.lseek("/new.txt", 0, os.SEEK_HOLE, fh) == 100_000
    ops.release("/new.txt", fh)

    # end the session: the daemon closes the file system and exits
    assert fs.finish() == 0
    assert not fs.conn.alive
    assert errno_of(ops.getattr, "/") == errno.ENOTCONN

    fsck = subprocess.run([E2FSCK, "-fn", str(fs.img)], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()

    listing = debugfs(fs.img, "ls -l /")
    names = {line.split()[-1] for line in listing.splitlines() if line.strip()}
    for want in ("new.txt", "d1", "sl", "hard", "fifo", "null", "empty",
                 "big.bin", "sub", "lost+found"):
        assert want in names, listing
    for gone in ("hello.txt", "inner2.txt", "trunc.txt"):
        assert gone not in names, listing
    assert not any(n.startswith(".fuse_hidden") for n in names), listing
    sub = debugfs(fs.img, "ls -l /sub")
    assert "inner.txt" not in sub and "emptydir" not in sub
    assert "moved" in debugfs(fs.img, "ls -l /d1")
    cat = subprocess.run([DEBUGFS, "-R", "cat /new.txt", str(fs.img)],
                         capture_output=True, check=True).stdout
    assert cat == content
    st = debugfs(fs.img, "stat /new.txt")
    assert "Mode:  0600" in st and "User:  1000" in st, st
    big = subprocess.run([DEBUGFS, "-R", "cat /big.bin", str(fs.img)],
                         capture_output=True, check=True).stdout
    assert big == (srctree / "big.bin").read_bytes()[:1024 * 1024 + 5]


def test_requests_carry_the_callers_credentials(fs):
    ops = fs.ops
    nobody = (65534, 65534, os.getpid())
    assert errno_of(ops.create, "/x", 0o644, os.O_WRONLY | os.O_CREAT,
                    ctx=nobody) == errno.EACCES
    assert errno_of(ops.mkdir, "/xd", 0o755, ctx=nobody) == errno.EACCES
    ops.mkdir("/pub", 0o777)
    ops.chmod("/pub", 0o777)
    fh = ops.create("/pub/mine", 0o644, os.O_WRONLY | os.O_CREAT, ctx=nobody)
    ops.release("/pub/mine", fh, ctx=nobody)
    st = ops.getattr("/pub/mine")
    assert (st.st_uid, st.st_gid) == (65534, 65534)


# --------------------------------------------------------------------------
# connection failures

def test_killed_daemon_gives_enotconn_quickly(fs):
    ops = fs.ops
    assert stat.S_ISDIR(ops.getattr("/").st_mode)
    fs.proc.kill()
    fs.proc.wait()
    t0 = time.monotonic()
    assert errno_of(ops.getattr, "/sub") == errno.ENOTCONN
    assert time.monotonic() - t0 < 2.0
    assert not fs.conn.alive
    t0 = time.monotonic()
    assert errno_of(fs.conn.request, protocol.FUSE_GETATTR, 1) == errno.ENOTCONN
    assert errno_of(ops.statfs, "/") == errno.ENOTCONN
    assert time.monotonic() - t0 < 0.5
    fs.conn.destroy()                      # harmless once gone


def test_in_flight_request_fails_when_the_peer_closes():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn = session.FuseConnection(a, timeout=30)
    result = {}

    def call():
        try:
            conn.request(protocol.FUSE_GETATTR, 1, b"\0" * 16)
        except OSError as e:
            result["errno"] = e.errno

    t = threading.Thread(target=call)
    t.start()
    assert len(b.recv(4096)) == 56         # the request arrived
    t0 = time.monotonic()
    b.close()
    t.join(5)
    assert result.get("errno") == errno.ENOTCONN
    assert time.monotonic() - t0 < 2.0
    conn.close()


def test_unanswered_request_times_out_and_is_interrupted():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn = session.FuseConnection(a, timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(OSError) as ei:
        conn.request(protocol.FUSE_GETATTR, 1, b"\0" * 16, uid=5, gid=6, pid=7)
    took = time.monotonic() - t0
    assert ei.value.errno == errno.ETIMEDOUT
    assert 0.4 <= took < 2.0
    assert conn.alive
    req = b.recv(4096)
    ln, op, unique, nodeid, uid, gid, pid, _e, _p = protocol.IN_HEADER.unpack_from(req)
    assert (ln, op, nodeid, uid, gid, pid) == (56, protocol.FUSE_GETATTR, 1, 5, 6, 7)
    intr = b.recv(4096)
    ln, op, iunique, nodeid = protocol.IN_HEADER.unpack_from(intr)[:4]
    assert op == protocol.FUSE_INTERRUPT and ln == 48 and iunique == unique | 1
    assert struct.unpack_from("<Q", intr, 40)[0] == unique
    # a late answer is dropped; the connection still works
    b.send(protocol.OUT_HEADER.pack(16, -errno.EINTR, unique))
    th = threading.Thread(target=lambda: (
        lambda r: b.send(protocol.OUT_HEADER.pack(16 + 3, 0,
                         protocol.IN_HEADER.unpack_from(r)[2]) + b"abc"))(b.recv(4096)))
    th.start()
    assert conn.request(protocol.FUSE_READLINK, 2) == b"abc"
    th.join()
    # with nobody reading and the socket buffer full, the send itself
    # times out (and no INTERRUPT follows a request never sent)
    filler = 0
    while True:
        try:
            a.send(b"\0" * 4096, socket.MSG_DONTWAIT)
            filler += 1
        except BlockingIOError:
            break
    conn.timeout = 0.3
    t0 = time.monotonic()
    assert errno_of(conn.request, protocol.FUSE_GETATTR, 1) == errno.ETIMEDOUT
    assert 0.25 <= time.monotonic() - t0 < 2.0
    assert conn.alive
    b.settimeout(1)
    for _ in range(filler):
        assert b.recv(8192) == b"\0" * 4096
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(8192)
    conn.close()
    b.close()


# --------------------------------------------------------------------------
# a scripted fake daemon for protocol details


def pack_attr(ino, mode, size=0, minor=19, nlink=1):
    f = (ino, size, (size + 511) // 512, 1_700_000_000, 1_700_000_001,
         1_700_000_002, 5, 6, 7, mode, nlink, 1000, 1001, 0)
    return (protocol.ATTR.pack(*f, 4096, 0) if minor >= 9
            else protocol.ATTR_COMPAT.pack(*f))


def pack_entry(nodeid, ino, mode, size=0, minor=19, valid=60):
    return (protocol.ENTRY_HEAD.pack(nodeid, 0, valid, valid, 0, 0)
            + pack_attr(ino, mode, size, minor))


class FakeDaemon(threading.Thread):
    """Reads requests from its socket end, records them, answers through
    `handler(opcode, nodeid, body) -> bytes | int errno | None (no reply)`.
    INIT is answered with `minor` and `flags`."""

    def __init__(self, handler, minor=19, flags=0, max_write=131072,
                 init_size=None):
        super().__init__(daemon=True)
        self.ours, self.sock = socket.socketpair(socket.AF_UNIX,
                                                 socket.SOCK_SEQPACKET)
        self.handler = handler
        self.minor, self.flags, self.max_write = minor, flags, max_write
        self.init_size = init_size
        self.requests = []
        self.lock = threading.Lock()
        self.start()

    def reply(self, unique, error=0, body=b""):
        self.sock.send(protocol.OUT_HEADER.pack(16 + len(body), -error, unique)
                       + body)

    def run(self):
        try:
            self._serve()
        finally:
            self.sock.close()

    def _serve(self):
        while True:
            try:
                msg = self.sock.recv(1 << 21)
            except OSError:
                return
            if not msg:
                return
            ln, op, unique, nodeid, uid, gid, pid, _e, _p = \
                protocol.IN_HEADER.unpack_from(msg)
            assert ln == len(msg)
            body = msg[protocol.IN_HEADER.size:]
            with self.lock:
                self.requests.append((op, nodeid, body, unique))
            if op == protocol.FUSE_INIT:
                out = struct.pack("<IIIIHHI", 7, self.minor, 65536, self.flags,
                                  0, 0, self.max_write)
                if self.init_size:
                    out = (out + b"\0" * 64)[:self.init_size]
                self.reply(unique, 0, out)
                continue
            if op in (protocol.FUSE_FORGET, protocol.FUSE_BATCH_FORGET,
                      protocol.FUSE_INTERRUPT):
                continue
            res = self.handler(op, nodeid, body)
            if res is None:
                continue
            if isinstance(res, int):
                self.reply(unique, res)
            else:
                self.reply(unique, 0, res)

    def ops(self, timeout=5.0):
        conn = session.FuseConnection(self.ours, timeout=timeout)
        ops = pathops.WireOperations(conn)
        ops.init()
        return ops

    def of(self, opcode):
        with self.lock:
            return [r for r in self.requests if r[0] == opcode]


def tree_handler(minor=19, entries=None):
    """A tiny file system: / (1) holds dir 'd' (2) holding file 'f' (3)."""
    names = entries or {(1, b"d"): (2, stat.S_IFDIR | 0o755),
                        (2, b"f"): (3, stat.S_IFREG | 0o644)}
    modes = {1: stat.S_IFDIR | 0o755}
    modes.update({n: m for n, m in names.values()})

    def handler(op, nodeid, body):
        if op == protocol.FUSE_LOOKUP:
            key = (nodeid, body.rstrip(b"\0"))
            if key not in names:
                return errno.ENOENT
            n, m = names[key]
            return pack_entry(n, 100 + n, m, 10, minor)
        if op == protocol.FUSE_GETATTR:
            return (protocol.ATTR_OUT_HEAD.pack(1, 0, 0)
                    + pack_attr(100 + nodeid, modes[nodeid], 10, minor))
        if op in (protocol.FUSE_OPEN, protocol.FUSE_OPENDIR):
            return protocol.OPEN_OUT.pack(0x1000 + nodeid, 0, 0)
        if op == protocol.FUSE_READ:
            fh, off, size = struct.unpack_from("<QQI", body)
            return (b"0123456789"[off:off + size])
        if op in (protocol.FUSE_RELEASE, protocol.FUSE_RELEASEDIR, protocol.FUSE_UNLINK,
                  protocol.FUSE_RENAME, protocol.FUSE_READDIR):
            return b""              # READDIR: empty, '.' and '..' added
        return errno.ENOSYS

    return handler


def test_compat_structures_for_minor_8():
    fd = FakeDaemon(tree_handler(minor=8), minor=8, init_size=24)
    ops = fd.ops()
    ops.attr_cache = False          # every getattr a GETATTR: its layout
    assert ops.conn.minor == 8
    st = ops.getattr("/d/f")                      # from the LOOKUP reply
    assert (st.st_ino, st.st_size, st.st_uid) == (103, 10, 1000)
    assert st.st_blksize == 4096                  # absent before 7.9
    st = ops.getattr("/d")
    getattrs = fd.of(protocol.FUSE_GETATTR)
    assert st.st_ino == 102 and st.st_mtime_ns == 1_700_000_001 * 10**9 + 6
    assert getattrs and all(r[2] == b"" for r in getattrs)   # no getattr_in
    fh = ops.open("/d/f", os.O_RDONLY)
    assert fh == 0x1003
    assert ops.read("/d/f", 4, 2, fh) == b"2345"
    assert ops.read("/d/f", 0, 2, fh) == b""
    assert ops.read("/d/f", 100, 8, fh) == b"89"
    assert errno_of(ops.read, "/d/f", 1, -1, fh) == errno.EINVAL
    assert len(fd.of(protocol.FUSE_READ)[-1][2]) == 24          # compat read_in
    ops.release("/d/f", fh)
    ops.conn.close()


def test_compat_init_reply_sizes():
    for minor, size in ((4, 8), (12, 24), (22, 24)):
        fd = FakeDaemon(tree_handler(minor=minor), minor=minor,
                        init_size=size, max_write=65536)
        ops = fd.ops()
        assert ops.conn.minor == minor
        assert ops.conn.max_write == (4096 if minor < 5 else 65536)
        ops.conn.close()


def wait_for(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def forgotten(fd) -> list:
    """(nodeid, nlookup) pairs of FORGET and BATCH_FORGET, in order."""
    out = []
    with fd.lock:
        reqs = list(fd.requests)
    for op, nodeid, body, _u in reqs:
        if op == protocol.FUSE_FORGET:
            out.append((nodeid, struct.unpack("<Q", body)[0]))
        elif op == protocol.FUSE_BATCH_FORGET:
            count = struct.unpack_from("<I", body)[0]
            out += [struct.unpack_from("<QQ", body, 8 + 16 * i)
                    for i in range(count)]
    return out


def test_forget_sent_for_dropped_entries():
    fd = FakeDaemon(tree_handler())
    ops = fd.ops()
    ops.getattr("/d/f")
    ops.getattr("/d")
    assert ops.cached("/d")[:1] == (2,) and ops.cached("/d/f")[2] == 1
    ops.unlink("/d/f")
    assert ops.cached("/d/f") is None
    assert wait_for(lambda: forgotten(fd) == [(3, 1)])
    # rename drops both names and their subtrees
    ops.getattr("/d/f")
    ops.rename("/d", "/e")
    assert ops.cached("/d") is None and ops.cached("/d/f") is None
    assert wait_for(lambda: sorted(forgotten(fd)[1:]) == [(2, 1), (3, 1)])
    # several at once: one BATCH_FORGET (protocol 7.16+)
    ops.getattr("/d/f")
    ops.drop("/")
    assert wait_for(lambda: len(forgotten(fd)) == 5)
    assert sorted(forgotten(fd)[3:]) == [(2, 1), (3, 1)]
    assert len(fd.of(protocol.FUSE_BATCH_FORGET)) == 1
    ops.conn.close()


def test_unknown_handles_are_refused():
    fd = FakeDaemon(tree_handler())
    ops = fd.ops()
    assert errno_of(ops.read, "/d/f", 10, 0, 0xdead) == errno.EBADF
    assert errno_of(ops.write, "/d/f", b"x", 0, 0xdead) == errno.EBADF
    assert errno_of(ops.release, "/d/f", 0xdead) == errno.EBADF
    assert errno_of(ops.readdir, "/d", 0xdead) == errno.EBADF
    assert not fd.of(protocol.FUSE_READ) and not fd.of(protocol.FUSE_RELEASE)
    # a directory handle is no file handle
    dfh = ops.opendir("/d")
    assert errno_of(ops.read, "/d", 10, 0, dfh) == errno.EBADF
    assert ops.readdir("/d", dfh) == [(".", 4, 102), ("..", 4, 101)]
    ops.releasedir("/d", dfh)
    ops.conn.close()


def test_forget_waits_for_open_handles():
    fd = FakeDaemon(tree_handler())
    ops = fd.ops()
    fh = ops.open("/d/f", os.O_RDONLY)
    ops.unlink("/d/f")
    time.sleep(0.1)
    assert not forgotten(fd)                      # node 3 still open
    assert ops.read("/d/f", 3, 0, fh) == b"012"   # by handle, not by path
    assert fd.of(protocol.FUSE_READ)[-1][1] == 3
    ops.release("/d/f", fh)
    assert wait_for(lambda: forgotten(fd) == [(3, 1)])
    ops.conn.close()


def test_expired_entries_are_revalidated():
    names = {(1, b"d"): (2, stat.S_IFDIR | 0o755)}
    h = tree_handler(entries=names)

    def handler(op, nodeid, body):
        if op == protocol.FUSE_LOOKUP:     # entry_valid 0: always expired
            r = h(op, nodeid, body)
            return r if isinstance(r, int) else (
                protocol.ENTRY_HEAD.pack(2, 0, 0, 0, 0, 0) + r[40:])
        return h(op, nodeid, body)

    fd = FakeDaemon(handler)
    ops = fd.ops()
    ops.getattr("/d")
    ops.getattr("/d")
    assert len(fd.of(protocol.FUSE_LOOKUP)) == 2
    assert ops.cached("/d")[2] == 2               # both lookups counted
    ops.drop("/d")
    assert wait_for(lambda: forgotten(fd) == [(2, 2)])
    ops.conn.close()


def test_readdirplus_used_when_offered():
    minor = 31

    def dirents(plus):
        out = b""
        for i, (name, n, m) in enumerate(((b".", 1, stat.S_IFDIR),
                                          (b"..", 1, stat.S_IFDIR),
                                          (b"d", 2, stat.S_IFDIR),
                                          (b"file", 3, stat.S_IFREG))):
            rec = protocol.DIRENT.pack(100 + n, i + 1, len(name), m >> 12) + name
            rec += b"\0" * (-len(rec) % 8)
            if plus:
                nid = 0 if name in (b".", b"..") else n
                rec = pack_entry(nid, 100 + n, m | 0o755, 0, minor) + rec
            out += rec
        return out

    def handler(op, nodeid, body):
        if op in (protocol.FUSE_READDIR, protocol.FUSE_READDIRPLUS):
            off = struct.unpack_from("<Q", body, 8)[0]
            return dirents(op == protocol.FUSE_READDIRPLUS) if off == 0 else b""
        return tree_handler(minor)(op, nodeid, body)

    fd = FakeDaemon(handler, minor=minor, flags=protocol.FUSE_DO_READDIRPLUS)
    ops = fd.ops()
    assert ops.conn.minor == 31
    fh = ops.opendir("/")
    entries = ops.readdir("/", fh)
    ops.releasedir("/", fh)
    assert [(n, t) for n, t, _i in entries] == [
        (".", 4), ("..", 4), ("d", 4), ("file", 8)]
    assert fd.of(protocol.FUSE_READDIRPLUS) and not fd.of(protocol.FUSE_READDIR)
    assert ops.cached("/d") == (2, 0, 1) and ops.cached("/file") == (3, 0, 1)
    assert sorted(ops._cache) == ["/d", "/file"]     # not . and ..
    # the entries came with attributes: no LOOKUP needed
    ops.getattr("/file")
    assert not fd.of(protocol.FUSE_LOOKUP)
    ops.conn.close()

    # not offered: plain READDIR
    fd = FakeDaemon(handler, minor=minor, flags=0)
    ops = fd.ops()
    assert [e[0] for e in ops.readdir("/", ops.opendir("/"))] == [
        ".", "..", "d", "file"]
    assert fd.of(protocol.FUSE_READDIR) and not fd.of(protocol.FUSE_READDIRPLUS)
    assert ops.cached("/d") is None
    ops.conn.close()


def test_replies_out_of_order_reach_their_callers():
    held = []
    cv = threading.Condition()

    def handler(op, nodeid, body):
        with cv:
            held.append(nodeid)
            cv.notify_all()
        return None                           # answered below

    fd = FakeDaemon(handler)
    conn = session.FuseConnection(fd.ours, timeout=10)
    conn.init()
    results = {}

    def call(n):
        results[n] = conn.request(protocol.FUSE_READLINK, n)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(2, 22)]
    for t in threads:
        t.start()
    with cv:
        assert cv.wait_for(lambda: len(held) == 20, 5)
    for op, nodeid, _b, unique in reversed(fd.of(protocol.FUSE_READLINK)):
        fd.reply(unique, 0, b"node-%d" % nodeid)
    for t in threads:
        t.join(5)
    assert results == {n: b"node-%d" % n for n in range(2, 22)}
    conn.close()


def test_error_replies_and_no_open_support():
    def handler(op, nodeid, body):
        if op == protocol.FUSE_OPEN:
            return errno.ENOSYS                  # "zero-message open"
        if op == protocol.FUSE_GETXATTR:
            return errno.ENOSYS
        if op == protocol.FUSE_ACCESS:
            return errno.ENOSYS
        return tree_handler()(op, nodeid, body)

    fd = FakeDaemon(handler, flags=protocol.FUSE_NO_OPEN_SUPPORT)
    ops = fd.ops()
    assert ops.open("/d/f", os.O_RDONLY) == 0
    assert ops.open("/d/f", os.O_RDONLY) == 0
    assert len(fd.of(protocol.FUSE_OPEN)) == 1       # not asked again
    ops.release("/d/f", 0)
    ops.release("/d/f", 0)
    assert not fd.of(protocol.FUSE_RELEASE)
    assert errno_of(ops.getxattr, "/d", "user.x") == errno.EOPNOTSUPP
    ops.access("/d", os.R_OK)                    # ENOSYS: permitted
    ops.access("/d", os.R_OK)
    assert len(fd.of(protocol.FUSE_ACCESS)) == 1
    ops.conn.close()


def test_init_rejects_another_major():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn = session.FuseConnection(a, timeout=5)

    def answer():
        u = protocol.IN_HEADER.unpack_from(b.recv(4096))[2]
        b.send(protocol.OUT_HEADER.pack(16 + 8, 0, u) + struct.pack("<II", 8, 0))

    t = threading.Thread(target=answer)
    t.start()
    assert errno_of(conn.init) == errno.EPROTO
    t.join()
    conn.close()
    b.close()
