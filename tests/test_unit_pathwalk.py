"""Unit tests of umvu.vfs.walk.Walker: no umvu session, no ptrace.

A temporary host tree (directories, files, relative and absolute symlinks,
loops, dangling links) is walked with a fake service table. Where no service
is involved the walker's answer, applied the way umvu/vfs/paths.py applies it
(the resolved path, plus "/" when trailing_slash, given to the same call), must
match what the kernel does on the original path: fstatat, or openat2 with
RESOLVE_IN_ROOT / RESOLVE_BENEATH / RESOLVE_NO_SYMLINKS for the chroot,
`beneath` and `no_symlinks` walks. Through mount points, fake services answer
lstat/readlink from a dict.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct

import pytest

from umvu.vfs.walk import MAXSYMLINKS, PATH_MAX, Walker

INF = float("inf")
PID = os.getpid()           # /proc/self in a walk is the caller's: ours here


# ---- fakes -------------------------------------------------------------------

def _under(path: str, top: str) -> bool:
    return top == "/" or path == top or path.startswith(top + "/")


class FakeService:
    """A PathService-like object answering lstat/readlink from a dict:
    path -> "dir" | "file" | ("link", target) | ("link", None) (readlink
    fails with EIO) | an int (lstat fails with that errno)."""

    def __init__(self, target: str, tree: dict, epoch: int = 1):
        self.target = target
        self.tree = tree
        self.epoch = epoch
        self.calls: list[tuple[str, str, int]] = []

    def _entry(self, path):
        entry = self.tree.get(path)
        if entry is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if isinstance(entry, int):
            raise OSError(entry, os.strerror(entry), path)
        return entry

    def lstat(self, path, caller):
        self.calls.append(("lstat", path, caller.pid))
        entry = self._entry(path)
        if entry == "dir":
            mode = stat.S_IFDIR | 0o755
        elif entry == "file":
            mode = stat.S_IFREG | 0o644
        else:
            mode = stat.S_IFLNK | 0o777
        return os.stat_result((mode, 1000 + len(path), 99, 1, 0, 0, 0, 0, 0, 0))

    def readlink(self, path, caller):
        self.calls.append(("readlink", path, caller.pid))
        entry = self._entry(path)
        if not isinstance(entry, tuple):
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL), path)
        if entry[1] is None:
            raise OSError(errno.EIO, os.strerror(errno.EIO), path)
        return entry[1]

    def __repr__(self):
        return f"<FakeService {self.target} epoch={self.epoch}>"


class FakeTable:
    """The one method the walker uses of umvu.servicetable.ServiceTable."""

    def __init__(self, *services):
        self.services = list(services)      # mount order
        self.befores: list[float] = []

    def for_path(self, path, before=INF):
        self.befores.append(before)
        for service in reversed(self.services):
            if service.epoch < before and _under(path, service.target):
                return service
        return None


class Magic:
    """The `magic(pid, kind)` callback: /proc/PID/{cwd,root,exe,fd/N}."""

    def __init__(self, answers=None):
        self.answers = answers or {}
        self.calls: list[tuple[int, str]] = []

    def __call__(self, pid, kind):
        self.calls.append((pid, kind))
        return self.answers.get(kind)


def walker(*services, magic=None):
    return Walker(FakeTable(*services), magic or Magic())


# ---- the host tree -----------------------------------------------------------

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """base/ d/ d/f d/sub/ d/sub/uplink->../.. d/sub/rootlink->/
    dl->d dabs->BASE/d fl->d/f dang->nowhere dangdir->nowhere/x
    loop1<->loop2 self->self c0->c1->...->c40->d (41 links)
    jail/ jail/etc/passwd jail/abs->/etc jail/esc->../../.. jail/dotdot->..
    mnt/hostonly (shadowed by the mounts of the tests); for them too:
    tomnt->mnt/d tomntabs->BASE/mnt/f ping->BASE/mnt/pong.
    Shared by the module's tests: none changes it."""
    b = os.path.realpath(tmp_path_factory.mktemp("walk"))
    os.makedirs(f"{b}/d/sub")
    open(f"{b}/d/f", "w").close()
    os.symlink("../..", f"{b}/d/sub/uplink")
    os.symlink("/", f"{b}/d/sub/rootlink")
    os.symlink("d", f"{b}/dl")
    os.symlink(f"{b}/d", f"{b}/dabs")
    os.symlink("d/f", f"{b}/fl")
    os.symlink("nowhere", f"{b}/dang")
    os.symlink("nowhere/x", f"{b}/dangdir")
    os.symlink("loop2", f"{b}/loop1")
    os.symlink("loop1", f"{b}/loop2")
    os.symlink("self", f"{b}/self")
    for i in range(MAXSYMLINKS):
        os.symlink(f"c{i + 1}", f"{b}/c{i}")
    os.symlink("d", f"{b}/c{MAXSYMLINKS}")
    os.makedirs(f"{b}/jail/etc")
    open(f"{b}/jail/etc/passwd", "w").close()
    os.symlink("/etc", f"{b}/jail/abs")
    os.symlink("../../..", f"{b}/jail/esc")
    os.symlink("..", f"{b}/jail/dotdot")
    os.makedirs(f"{b}/mnt")
    open(f"{b}/mnt/hostonly", "w").close()
    os.symlink("mnt/d", f"{b}/tomnt")
    os.symlink(f"{b}/mnt/f", f"{b}/tomntabs")
    os.symlink(f"{b}/mnt/pong", f"{b}/ping")
    return b


@pytest.fixture(scope="module")
def base_fd(base):
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def _err(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def kernel_stat(path: str, dir_fd: int, follow: bool):
    """What fstatat says of the original path: ("ok", dev, ino) or errno."""
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=follow)
    except OSError as exc:
        return _err(exc.errno)
    return ("ok", st.st_dev, st.st_ino)


def applied_stat(res, follow: bool):
    """The same call made on the walker's answer, as umvu/vfs/paths.py makes it."""
    if res.error:
        return _err(res.error)
    path = res.path + ("/" if res.trailing_slash and not res.path.endswith("/") else "")
    try:
        st = os.stat(path, follow_symlinks=follow)
    except OSError as exc:
        return _err(exc.errno)
    return ("ok", st.st_dev, st.st_ino)


# ---- the kernel as the reference: no service ---------------------------------

HOST_CASES = [
    ("d", True), ("d", False), ("d/", True), ("d/", False),
    ("d/f", True), ("d/f", False), ("d/f/", True), ("d/f/", False),
    ("d/f/..", True), ("d/nope", True), ("d/nope/x", True), ("d/nope/", True),
    ("d//f", True), ("./d/./f", True), ("d/sub/../f", True), (".", True),
    ("..", True), ("../", False), ("/", True),
    ("dl", True), ("dl", False), ("dl/", True), ("dl/", False),
    ("dl/f", True), ("dl/f", False), ("dl/..", True), ("dl/..", False),
    ("dl/.", True), ("dabs/f", True), ("dabs/../d/f", True),
    ("fl", True), ("fl", False), ("fl/", True), ("fl/", False),
    ("dang", True), ("dang", False), ("dang/", True), ("dang/", False),
    ("dang/.", True), ("dangdir", True), ("dangdir", False), ("dangdir/", True),
    ("loop1", True), ("loop1", False), ("loop1/x", True), ("loop1/", False),
    ("self", True), ("self", False),
    ("d/sub/uplink/d/f", True), ("d/sub/uplink/dl/..", True),
    ("d/sub/rootlink", True), ("d/sub/rootlink/", False),
    ("c1", True), ("c1/f", True), ("c0", True), ("c0", False), ("c0/f", True),
    ("c1/sub/uplink", True),          # 40 links, then one more: ELOOP
    # a trailing "." needs a directory and follows it, as the kernel
    ("d/f/.", True), ("d/f/.", False), ("fl/.", True), ("dl/.", False),
    ("dang/.", False),
    ("", True),                         # ENOENT (AT_EMPTY_PATH: vfs's)
]


@pytest.mark.parametrize("path,follow", HOST_CASES)
def test_host_walk_matches_kernel(base, base_fd, path, follow):
    res = walker().resolve(path, base, "/", follow, PID)
    assert applied_stat(res, follow) == kernel_stat(path, base_fd, follow)
    assert res.service is None
    assert res.touched == (res.error == errno.ELOOP)   # the view says ELOOP


@pytest.mark.parametrize("path,follow", [
    ("d/f", True), ("dl/f", True), ("dabs/../d/f", True), ("d/sub/uplink", True),
    ("dang", True), ("dl/..", True), ("c1", True),
    ("fl", False), ("dl", False), ("d/nope", False)])
def test_host_walk_path_is_realpath(base, path, follow):
    res = walker().resolve(path, base, "/", follow, PID)
    assert res.error == 0
    full = os.path.join(base, path)
    if follow:
        assert res.path == os.path.realpath(full)
    else:       # the last component itself, in a canonical directory
        assert res.path == os.path.join(os.path.realpath(os.path.dirname(full)),
                                        os.path.basename(full))


def test_absolute_path_ignores_start(base):
    res = walker().resolve(f"{base}/dl/f", "/nonexistent", "/", True, PID)
    assert res.path == f"{base}/d/f" and res.error == 0


def test_symlink_limit_is_the_kernels(base):
    w = walker()
    assert MAXSYMLINKS == 40
    assert w.resolve("c1", base, "/", True, PID).path == f"{base}/d"   # 40 links
    res = w.resolve("c0", base, "/", True, PID)                        # 41 links
    assert res.error == errno.ELOOP and res.touched


def test_missing_middle_vs_last(base):
    w = walker()
    last = w.resolve("d/nope", base, "/", True, PID)
    assert (last.error, last.path) == (0, f"{base}/d/nope")
    middle = w.resolve("d/nope/f", base, "/", True, PID)
    assert (middle.error, middle.path) == (errno.ENOENT, f"{base}/d/nope")
    notdir = w.resolve("d/f/g", base, "/", True, PID)
    assert (notdir.error, notdir.path) == (errno.ENOTDIR, f"{base}/d/f")


def test_dangling_last_gives_its_target(base):
    """open(O_CREAT) through a dangling link creates its target."""
    res = walker().resolve("dang", base, "/", True, PID)
    assert (res.error, res.path) == (0, f"{base}/nowhere")
    res = walker().resolve("dangdir", base, "/", True, PID)
    assert (res.error, res.path) == (errno.ENOENT, f"{base}/nowhere")


def test_trailing_slash_rules(base):
    w = walker()
    # no follow, but a trailing slash follows a last symlink ...
    res = w.resolve("dl/", base, "/", False, PID)
    assert (res.path, res.trailing_slash) == (f"{base}/d", True)
    # ... unless the call acts on the name itself (mkdir, unlink, rmdir)
    res = w.resolve("dl/", base, "/", False, PID, slash_follows=False)
    assert (res.path, res.trailing_slash, res.error) == (f"{base}/dl", True, 0)
    res = w.resolve("dang/", base, "/", False, PID, slash_follows=False)
    assert (res.path, res.trailing_slash) == (f"{base}/dang", True)
    # a file with a slash: the caller keeps the slash, the kernel says ENOTDIR
    res = w.resolve("d/f/", base, "/", True, PID)
    assert (res.path, res.trailing_slash, res.error) == (f"{base}/d/f", True, 0)
    # only slashes: the root, no trailing slash to keep
    res = w.resolve("///", base, "/", True, PID)
    assert (res.path, res.trailing_slash) == ("/", False)


def test_path_max(base, base_fd):
    ok = "./" * ((PATH_MAX - 4) // 2) + "d/f"       # 4095 bytes
    assert len(ok) == PATH_MAX - 1
    res = walker().resolve(ok, base, "/", True, PID)
    assert applied_stat(res, True) == kernel_stat(ok, base_fd, True)
    assert res.path == f"{base}/d/f"
    long = "./" + ok                                   # 4097 bytes
    res = walker().resolve(long, base, "/", True, PID)
    assert res.error == errno.ENAMETOOLONG
    assert kernel_stat(long, base_fd, True) == "ENAMETOOLONG"
    res = walker().resolve("/" * PATH_MAX, base, "/", True, PID)
    assert res.error == errno.ENAMETOOLONG == _kernel_errno(os.stat, "/" * PATH_MAX)


def test_path_max_counts_bytes(base, base_fd):
    path = "./" * (PATH_MAX // 2 - 1) + "\u00e9"     # 4095 chars, 4096 bytes
    assert len(os.fsencode(path)) == PATH_MAX
    assert kernel_stat(path, base_fd, True) == "ENAMETOOLONG"
    assert walker().resolve(path, base, "/", True, PID).error == errno.ENAMETOOLONG


def _kernel_errno(func, *args):
    try:
        func(*args)
    except OSError as exc:
        return exc.errno
    return 0


# ---- openat2 as the reference: chroot, beneath, no_symlinks ------------------

RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH, RESOLVE_IN_ROOT = 0x04, 0x08, 0x10
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def openat2(dirfd: int, path: str, follow: bool, resolve: int):
    """The kernel's canonical path for (dirfd, path), or its errno name."""
    flags = os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    how = struct.pack("QQQ", flags, 0, resolve)
    fd = _libc.syscall(437, ctypes.c_long(dirfd), os.fsencode(path), how,
                       ctypes.c_size_t(len(how)))
    if fd < 0:
        return _err(ctypes.get_errno())
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _have_openat2():
    return openat2(-100, "/", True, 0) == "/"


# openat2 is Linux 5.6+: the kernel it compares with must have it
needs_openat2 = pytest.mark.skipif(not _have_openat2(),
                                   reason="this kernel has no openat2 (Linux 5.6+) "
                                   "to compare the walker with")


def applied_path(res, follow: bool):
    """The walker's canonical path if the kernel finds something there."""
    if res.error:
        return _err(res.error)
    path = res.path + ("/" if res.trailing_slash else "")
    try:
        os.stat(path, follow_symlinks=follow)
    except OSError as exc:
        return _err(exc.errno)
    return res.path


@needs_openat2
@pytest.mark.parametrize("path,follow", [
    ("/etc/passwd", True), ("etc/passwd", True), ("abs/passwd", True),
    ("abs", True), ("abs", False), ("esc/etc/passwd", True), ("esc", True),
    ("../../etc", True), ("/../../etc/passwd", True), ("dotdot/etc/passwd", True),
    ("etc/../../..", True), ("/", True), ("..", True), ("abs/", False),
    ("etc/passwd/", True), ("etc/nope/x", True)])
def test_chroot_matches_resolve_in_root(base, path, follow):
    jail = f"{base}/jail"
    fd = os.open(jail, os.O_RDONLY | os.O_DIRECTORY)
    try:
        expected = openat2(fd, path, follow, RESOLVE_IN_ROOT)
    finally:
        os.close(fd)
    res = walker().resolve(path, jail, jail, follow, PID)
    assert applied_path(res, follow) == expected
    assert res.touched                  # a chroot: never the kernel's own walk


def test_chroot_relative_start_inside(base):
    jail = f"{base}/jail"
    res = walker().resolve("../../../abs/passwd", f"{jail}/etc", jail, True, PID)
    assert (res.path, res.error) == (f"{jail}/etc/passwd", 0)


@needs_openat2
@pytest.mark.parametrize("path,follow", [
    ("d/f", True), ("d/..", True), ("..", True), ("d/../..", True),
    ("dl/f", True), ("dabs/f", True), ("dabs", True), ("dabs", False),
    ("d/sub/uplink", True), ("d/sub/uplink/..", True), ("d/sub/rootlink", True),
    ("d/sub/rootlink", False), ("jail/esc", True), ("jail/dotdot/d", True),
    ("d/nope", True)])
def test_beneath_matches_resolve_beneath(base, base_fd, path, follow):
    expected = openat2(base_fd, path, follow, RESOLVE_BENEATH)
    res = walker().resolve(path, base, "/", follow, PID, beneath=base)
    assert applied_path(res, follow) == expected
    if res.error == errno.EXDEV:
        assert res.touched


@needs_openat2
@pytest.mark.parametrize("path,follow", [
    ("d/f", True), ("dl", True), ("dl", False), ("dl/f", True), ("fl", False),
    ("d/sub/uplink", True), ("d/sub/uplink", False), ("d/sub/..", True),
    ("dang", True), ("dang", False), ("dl/", False)])
def test_no_symlinks_matches_resolve_no_symlinks(base, base_fd, path, follow):
    expected = openat2(base_fd, path, follow, RESOLVE_NO_SYMLINKS)
    res = walker().resolve(path, base, "/", follow, PID, no_symlinks=True)
    assert applied_path(res, follow) == expected


# ---- through mount points ----------------------------------------------------

@pytest.fixture
def mnt(base):
    """A fake service on BASE/mnt, hiding the host's mnt/hostonly (the
    host links tomnt, tomntabs and ping of `base` lead into it; its pong
    links back to BASE/ping)."""
    m = f"{base}/mnt"
    svc = FakeService(m, {
        m: "dir",
        f"{m}/d": "dir",
        f"{m}/d/f": "file",
        f"{m}/f": "file",
        f"{m}/out": ("link", f"{base}/d"),        # absolute, out to the host
        f"{m}/relout": ("link", "../d/f"),        # relative, out to the host
        f"{m}/in": ("link", "d"),                 # stays inside
        f"{m}/toroot": ("link", "/"),
        f"{m}/loop": ("link", "loop"),
        f"{m}/pong": ("link", f"{base}/ping"),
        f"{m}/eacces": errno.EACCES,
        f"{m}/badlink": ("link", None),
    })
    return svc


def test_into_mount_through_host_symlinks(base, mnt):
    w = walker(mnt)
    res = w.resolve("tomnt/f", base, "/", True, PID)
    assert (res.path, res.service, res.touched, res.error) == \
        (f"{base}/mnt/d/f", mnt, True, 0)
    res = w.resolve("tomntabs", base, "/", True, PID)
    assert (res.path, res.service, res.error) == (f"{base}/mnt/f", mnt, 0)
    # the host's own BASE/mnt/d/f does not exist: the service answered
    assert not os.path.exists(f"{base}/mnt/d/f")
    assert ("lstat", f"{base}/mnt/d/f", PID) in mnt.calls


def test_mount_hides_the_host(base, mnt):
    w = walker(mnt)
    res = w.resolve("mnt/hostonly", base, "/", True, PID)
    assert (res.error, res.service) == (0, mnt)     # missing last: fine
    res = w.resolve("mnt/hostonly/x", base, "/", True, PID)
    assert (res.error, res.path) == (errno.ENOENT, f"{base}/mnt/hostonly")


def test_out_of_mount(base, mnt):
    w = walker(mnt)
    res = w.resolve("mnt/out/f", base, "/", True, PID)
    assert (res.path, res.service, res.error) == (f"{base}/d/f", None, 0)
    assert res.touched                  # the view shaped the walk
    res = w.resolve("mnt/relout", base, "/", True, PID)
    assert (res.path, res.service, res.touched) == (f"{base}/d/f", None, True)
    res = w.resolve("mnt/..", base, "/", True, PID)
    assert (res.path, res.service, res.touched) == (base, None, True)
    res = w.resolve("mnt/in/f", base, "/", True, PID)
    assert (res.path, res.service) == (f"{base}/mnt/d/f", mnt)


def test_last_symlink_in_mount_not_followed(base, mnt):
    w = walker(mnt)
    for name in ("relout", "loop", "badlink", "out"):
        res = w.resolve(f"mnt/{name}", base, "/", False, PID)
        assert (res.path, res.service, res.error) == (f"{base}/mnt/{name}", mnt, 0)
    assert not [c for c in mnt.calls if c[0] == "readlink"]


def test_errors_in_mount(base, mnt):
    w = walker(mnt)
    m = f"{base}/mnt"
    cases = {
        "mnt/f/x": (errno.ENOTDIR, f"{m}/f"),
        "mnt/nope/x": (errno.ENOENT, f"{m}/nope"),
        "mnt/eacces": (errno.EACCES, f"{m}/eacces"),     # only ENOENT is
        "mnt/eacces/x": (errno.EACCES, f"{m}/eacces"),   # fine on the last
        "mnt/badlink": (errno.EIO, f"{m}/badlink"),
        "mnt/loop": (errno.ELOOP, f"{m}/loop"),
        "ping": (errno.ELOOP, None),                     # host <-> mount loop
    }
    for path, (err, where) in cases.items():
        res = w.resolve(path, base, "/", True, PID)
        assert res.error == err, path
        if where is not None:
            assert res.path == where, path
    res = w.resolve("mnt/nope", base, "/", True, PID)
    assert (res.error, res.path, res.service) == (0, f"{m}/nope", mnt)


def test_mount_point_missing_on_host(base):
    ghost = f"{base}/ghost"
    svc = FakeService(ghost, {ghost: "dir", f"{ghost}/f": "file"})
    res = walker(svc).resolve(f"{ghost}/f", "/", "/", True, PID)
    assert (res.path, res.service, res.error) == (f"{ghost}/f", svc, 0)
    assert walker().resolve(f"{ghost}/f", "/", "/", True, PID).error == errno.ENOENT


def test_trailing_slash_in_mount(base, mnt):
    w = walker(mnt)
    m = f"{base}/mnt"
    res = w.resolve("mnt/f/", base, "/", True, PID)
    assert (res.path, res.trailing_slash, res.service) == (f"{m}/f", True, mnt)
    res = w.resolve("mnt/in/", base, "/", False, PID)
    assert (res.path, res.trailing_slash) == (f"{m}/d", True)
    res = w.resolve("mnt/in/", base, "/", False, PID, slash_follows=False)
    assert (res.path, res.trailing_slash) == (f"{m}/in", True)


def test_nested_mounts_and_before(base, mnt):
    inner_top = f"{base}/mnt/d/inner"
    inner = FakeService(inner_top, {inner_top: "dir", f"{inner_top}/x": "file"},
                        epoch=2)
    w = walker(mnt, inner)
    res = w.resolve("mnt/d/inner/x", base, "/", True, PID)
    assert (res.service, res.error) == (inner, 0)
    # the outer service's own walk (before its epoch... here the inner's):
    # only older mounts are seen, and mnt has no d/inner
    w.services.befores.clear()
    res = w.resolve("mnt/d/inner/x", base, "/", True, PID, before=2)
    assert (res.error, res.path) == (errno.ENOENT, inner_top)
    assert w.services.befores and set(w.services.befores) == {2}
    res = w.resolve("mnt/d/f", base, "/", True, PID, before=1)
    assert (res.service, res.touched, res.error) == (None, False, errno.ENOENT)


def test_caller_pid_reaches_the_service(base, mnt):
    walker(mnt).resolve("mnt/in/f", base, "/", True, 4321)
    assert mnt.calls and all(pid == 4321 for _, _, pid in mnt.calls)


def test_chroot_with_a_mount(base, mnt):
    """Absolute links in a chroot, mount or not, go to the chroot's root."""
    res = walker(mnt).resolve("/mnt/toroot/d/f", base, base, True, PID)
    assert (res.path, res.service, res.error) == (f"{base}/d/f", None, 0)
    res = walker(mnt).resolve("/mnt/toroot/mnt/f", "/", base, True, PID)
    assert (res.path, res.service) == (f"{base}/mnt/f", mnt)


def test_beneath_and_no_symlinks_in_mount(base, mnt):
    w = walker(mnt)
    m = f"{base}/mnt"
    assert w.resolve("out", m, "/", True, PID, beneath=m).error == errno.EXDEV
    assert w.resolve("relout", m, "/", True, PID, beneath=m).error == errno.EXDEV
    assert w.resolve("in/f", m, "/", True, PID, beneath=m).path == f"{m}/d/f"
    assert w.resolve("in/f", m, "/", True, PID, no_symlinks=True).error == errno.ELOOP
    res = w.resolve("in", m, "/", False, PID, no_symlinks=True)
    assert (res.error, res.path) == (0, f"{m}/in")


# ---- /proc/self and the magic links ------------------------------------------

def test_proc_self_is_the_callers(base):
    res = walker().resolve("/proc/self", "/", "/", True, 1)
    assert res.path == "/proc/1"
    res = walker().resolve("/proc/self", "/", "/", False, 1)
    assert res.path == "/proc/self"
    res = walker().resolve("/proc/thread-self", "/", "/", True, PID)
    assert res.path == f"/proc/{PID}/task/{PID}"


def test_magic_links_answered_by_the_view(base):
    magic = Magic({"cwd": f"{base}/d", "fd/7": f"{base}/d/f", "root": "/"})
    w = Walker(FakeTable(), magic)
    res = w.resolve("/proc/self/cwd/f", "/", "/", True, PID)
    assert (res.path, res.touched, res.error) == (f"{base}/d/f", True, 0)
    assert magic.calls == [(PID, "cwd")]
    res = w.resolve("/proc/thread-self/cwd", "/", "/", True, PID)
    assert res.path == f"{base}/d"
    res = w.resolve(f"/proc/{PID}/fd/7", "/", "/", True, PID)
    assert (res.path, res.touched) == (f"{base}/d/f", True)
    assert magic.calls[-1] == (PID, "fd/7")
    # not followed: the link itself, and the view is not asked
    magic.calls.clear()
    res = w.resolve("/proc/self/fd/7", "/", "/", False, PID)
    assert (res.path, res.error) == (f"/proc/{PID}/fd/7", 0)
    assert magic.calls == []


def test_magic_link_into_a_mount(base, mnt):
    magic = Magic({"cwd": f"{base}/mnt/d"})
    res = Walker(FakeTable(mnt), magic).resolve("/proc/self/cwd/f", "/", "/",
                                                  True, PID)
    assert (res.path, res.service, res.error) == (f"{base}/mnt/d/f", mnt, 0)


def test_magic_none_is_the_kernels(base):
    magic = Magic()
    res = Walker(FakeTable(), magic).resolve("/proc/self/cwd", "/", "/", True, PID)
    assert res.path == os.path.realpath("/proc/self/cwd") == os.getcwd()
    assert magic.calls == [(PID, "cwd")] and not res.touched


def test_kernel_objects_under_proc():
    r, w_ = os.pipe()
    try:
        w = walker()
        res = w.resolve(f"/proc/self/fd/{r}", "/", "/", True, PID)
        assert (res.path, res.error) == (f"/proc/{PID}/fd/{r}", 0)
        res = w.resolve(f"/proc/self/fd/{r}/x", "/", "/", True, PID)
        assert res.error == errno.ENOTDIR == _kernel_errno(os.stat, f"/proc/self/fd/{r}/x")
    finally:
        os.close(r)
        os.close(w_)


def test_magic_link_without_answer_under_beneath_and_no_symlinks():
    """With the kernel's answer, the walk reads the link and refuses it."""
    w = walker()
    res = w.resolve(f"{PID}/cwd", "/proc", "/", True, PID, beneath="/proc")
    assert res.error == errno.EXDEV
    res = w.resolve(f"/proc/{PID}/cwd", "/", "/", True, PID, no_symlinks=True)
    assert res.error == errno.ELOOP


@needs_openat2
def test_magic_link_answered_and_no_symlinks(base):
    assert openat2(-100, f"/proc/{PID}/cwd", True, RESOLVE_NO_SYMLINKS) == "ELOOP"
    w = Walker(FakeTable(), Magic({"cwd": f"{base}/d"}))
    res = w.resolve(f"/proc/{PID}/cwd", "/", "/", True, PID, no_symlinks=True)
    assert res.error == errno.ELOOP


@needs_openat2
def test_magic_link_answered_and_beneath(base):
    fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert openat2(fd, f"{PID}/cwd", True, RESOLVE_BENEATH) == "EXDEV"
    finally:
        os.close(fd)
    w = Walker(FakeTable(), Magic({"cwd": f"{base}/d"}))
    res = w.resolve(f"{PID}/cwd", "/proc", "/", True, PID, beneath="/proc")
    assert res.error == errno.EXDEV


def test_magic_links_count_toward_the_limit(base):
    """A magic link the view answers is a symlink the kernel counts."""
    w = Walker(FakeTable(), Magic({"cwd": f"{base}/c1"}))   # then 40 links
    res = w.resolve(f"/proc/{PID}/cwd", "/", "/", True, PID)
    assert (res.error, res.touched) == (errno.ELOOP, True)
    w = Walker(FakeTable(), Magic({"cwd": f"{base}/c2"}))   # 1 + 39
    assert w.resolve(f"/proc/{PID}/cwd", "/", "/", True, PID).path == f"{base}/d"
