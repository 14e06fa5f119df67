"""Virtual root across modules (issue 13, items 5-7 and 15), unprivileged:
the ids a view shows reach the modules that record who asked (vufuse's
FUSE requests, vufs's cow store), a cow answers access() as the copy-up
would, and AF_UNIX socket names come back as the view named them.

Every session runs as uid 65534; the lower trees and images are made by
root, so that "root-owned" really means a file the user cannot change.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import NOBODY, VENV_BIN

SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture
def area(request, run_umvu):
    run_umvu.home(NOBODY)                   # the unprivileged set-up
    d = Path(tempfile.mkdtemp(prefix="umvu-vroot-", dir="/tmp"))
    os.chmod(d, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def session(run_umvu, script: str, opts=("-N",), timeout=120):
    return run_umvu(textwrap.dedent(script), user=NOBODY, opts=opts, timeout=timeout,
                    extra_env={"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}:{SBIN}"})


def lines_of(out: str) -> dict:
    """'key value...' lines -> {key: 'value...'}."""
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        found[key] = value
    return found


def debugfs(img: Path, request: str) -> str:
    return subprocess.run(["debugfs", "-R", request, str(img)], capture_output=True,
                          text=True).stdout


# ---- 5. vufuse: FUSE requests carry the ids the view shows ------------------

def root_image(area: Path) -> Path:
    """An ext2 image made by root: its root directory belongs to 0:0."""
    src = area / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("hi\n")
    img = area / "root.img"
    subprocess.run(["mkfs.ext2", "-q", "-d", str(src), str(img), "8M"], check=True)
    os.chown(img, NOBODY, NOBODY)               # the user may write the image
    (area / "mnt").mkdir()
    os.chown(area / "mnt", NOBODY, NOBODY)
    assert "User:     0   Group:     0" in debugfs(img, "stat /")
    return img


def test_vufuse_virtual_root_writes_root_owned_image(run_umvu, area):
    """Seed 002's flow: vusu, then mount -t vufuseext2 -o rw+: root writes
    into a root directory owned by 0:0, and what it makes is root's."""
    img = root_image(area)
    res = session(run_umvu, f"""
        cd {area}
        vu_insmod unrealuidgid vufuse
        vusu -c 'mount -t vufuseext2 -o rw+ root.img mnt && echo data > mnt/new &&
                 mkdir mnt/d && echo root-ok'
        touch mnt/user 2>/dev/null && echo user-wrote || echo user-refused
        vuumount mnt
    """)
    assert "root-ok" in res.stdout, res.stderr
    assert "user-refused" in res.stdout, res.stdout     # uid 65534 is not root
    listing = debugfs(img, "ls -l /")
    new = [ln.split() for ln in listing.splitlines() if ln.rstrip().endswith((" new", " d"))]
    assert len(new) == 2 and all(f[3] == "0" and f[4] == "0" for f in new), listing
    assert "data" in debugfs(img, "cat /new")


def test_vufuse_fakeroot_option(run_umvu, area):
    """Without unrealuidgid, -o fakeroot makes every request uid 0."""
    img = root_image(area)
    res = session(run_umvu, f"""
        cd {area}
        vu_insmod vufuse
        vumount -t vufuseext2 -o rw+ root.img mnt
        touch mnt/plain 2>/dev/null && echo plain-wrote || echo plain-refused
        vuumount mnt
        vumount -t vufuseext2 -o rw+,fakeroot root.img mnt
        touch mnt/fake && echo fake-ok
        vuumount mnt
    """)
    assert "plain-refused" in res.stdout and "fake-ok" in res.stdout, res
    line = [ln.split() for ln in debugfs(img, "ls -l /").splitlines()
            if ln.rstrip().endswith(" fake")]
    assert line and line[0][3:5] == ["0", "0"], line


# ---- 6. ownership in a cow as virtual root -------------------------------------

OWNERS = r'''
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)

def dtypes(path):
    """name -> d_type, straight from getdents64."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    buf = ctypes.create_string_buffer(65536)
    out = {}
    while True:
        n = libc.syscall(217, fd, buf, len(buf))
        if n <= 0:
            break
        pos = 0
        while pos < n:
            ino, off, reclen, dtype = struct.unpack_from("QqHB", buf.raw, pos)
            name = buf.raw[pos + 19: pos + reclen].split(b"\0")[0].decode()
            out[name] = dtype
            pos += reclen
    os.close(fd)
    return out

os.chdir(sys.argv[1])
dirfd = os.open(".", os.O_RDONLY)
for name in sys.argv[2:]:
    st = os.lstat(name)
    print("stat", name, st.st_uid, st.st_gid, oct(st.st_mode))
    fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    st = os.fstat(fd)
    print("fstat", name, st.st_uid, st.st_gid)
    buf = ctypes.create_string_buffer(256)      # fstatat(fd, "", AT_EMPTY_PATH)
    assert libc.syscall(262, fd, b"", buf, 0x1000) == 0
    print("empty", name, *struct.unpack_from("II", buf.raw, 28))
    os.close(fd)
    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    print("fstatat", name, st.st_uid, st.st_gid)
for name, dtype in sorted(dtypes(".").items()):
    print("dtype", name, dtype)
'''


def cow_lower(area: Path) -> tuple[Path, Path]:
    low, store = area / "low", area / "store"
    (low / "pkg").mkdir(parents=True)
    (low / "pkg" / "f").write_text("f\n")
    store.mkdir()
    os.chown(store, NOBODY, NOBODY)
    (area / "out").mkdir()
    os.chown(area / "out", NOBODY, NOBODY)
    (area / "owners.py").write_text(OWNERS)
    return low, store


def test_cow_ownership_as_virtual_root(run_umvu, area):
    """Virtual root's files are 0:0; chown, mknod and mkfifo are recorded;
    stat, fstat (of a directory too), fstatat, statx and getdents show it;
    tar archives it so; a second session sees the same."""
    low, store = cow_lower(area)
    names = "newf newd fifo cdev pkg pkg/f"
    res = session(run_umvu, f"""
        cd {low}
        echo x > newf; mkdir newd; mkfifo fifo; mknod cdev c 1 3
        chown 7:8 pkg/f; chown 0:0 pkg; chmod 0750 pkg
        python3 {area}/owners.py {low} {names}
        stat -c 'statx %n %u:%g %F' newf newd fifo cdev pkg pkg/f
        tar cf {area}/out/x.tar --numeric-owner newd pkg newf && tar tvf {area}/out/x.tar --numeric-owner
    """, opts=("-N", "--root", "--cow", f"{low}:{store}"))
    assert res.returncode == 0, res
    for name in ("newf", "newd", "fifo", "cdev", "pkg"):
        for how in ("stat", "fstat", "empty", "fstatat"):
            line = [ln for ln in res.stdout.splitlines() if ln.startswith(f"{how} {name} ")]
            assert line and line[0].split()[2:4] == ["0", "0"], (how, name, res.stdout)
    assert [ln for ln in res.stdout.splitlines() if ln.startswith("fstat pkg/f ")] == \
        ["fstat pkg/f 7 8"]
    assert "statx cdev 0:0 character special file" in res.stdout
    assert "statx fifo 0:0 fifo" in res.stdout
    assert "statx pkg 0:0 directory" in res.stdout
    dt = {ln.split()[1]: int(ln.split()[2]) for ln in res.stdout.splitlines()
          if ln.startswith("dtype ")}
    assert dt["cdev"] == 2 and dt["fifo"] == 1 and dt["newd"] == 4 and dt["pkg"] == 4, dt
    tar = [ln for ln in res.stdout.splitlines() if ln.startswith(("drw", "-rw"))]
    assert tar and all(" 0/0 " in ln or " 7/8 " in ln for ln in tar), tar
    assert any(ln.startswith("drwxr-x--- 0/0") and ln.endswith(" pkg/") for ln in tar), tar
    # the host never changed; the records live in the store, for next time
    assert not (low / "newf").exists() and os.stat(low / "pkg").st_mode & 0o777 == 0o755
    again = session(run_umvu, f"""
        stat -c 'again %n %u:%g %F' {low}/newf {low}/newd {low}/cdev {low}/pkg {low}/pkg/f
    """, opts=("-N", "--cow", f"{low}:{store}"))
    assert f"again {low}/newf 0:0 regular file" in again.stdout, again
    assert f"again {low}/newd 0:0 directory" in again.stdout
    assert f"again {low}/cdev 0:0 character special file" in again.stdout
    assert f"again {low}/pkg 0:0 directory" in again.stdout
    assert f"again {low}/pkg/f 7:8 regular file" in again.stdout


# ---- 7. access() in a cow answers as the copy would -------------------------------

ACCESS = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for name in sys.argv[1:]:
    a = os.access(name, os.W_OK)
    b = libc.faccessat(-100, name.encode(), os.W_OK, 0) == 0
    c = libc.syscall(439, -100, name.encode(), os.W_OK | os.R_OK, 0) == 0   # faccessat2
    print("access", os.path.basename(name), int(a), int(b), int(c))
'''


def test_cow_access_as_copy(run_umvu, area):
    low, store = cow_lower(area)
    (low / "data").write_text("data\n")                 # root's, 0644
    (low / "lock").touch(mode=0o600)                    # root only, empty
    os.chmod(low / "lock", 0o600)
    (low / "secret").write_text("secret\n")             # root only, with data
    os.chmod(low / "secret", 0o600)
    (low / "ro").write_text("ro\n")
    os.chmod(low / "ro", 0o444)
    (area / "access.py").write_text(ACCESS)
    files = " ".join(str(low / n) for n in ("data", "lock", "secret", "ro", "pkg"))
    res = session(run_umvu, f"""
        python3 {area}/access.py {files}
        for f in data lock secret ro pkg; do test -w {low}/$f && echo "w $f yes" || echo "w $f no"; done
        echo more >> {low}/data && echo "wrote data"
        : >> {low}/lock && echo "wrote lock"
        echo more >> {low}/secret || echo "secret refused"
        touch {low}/pkg/new && echo "wrote pkg"
    """, opts=("-N", "--cow", f"{low}:{store}"))
    out = res.stdout
    for name, want in (("data", "1 1 1"), ("lock", "1 1 1"), ("secret", "0 0 0"),
                       ("ro", "0 0 0"), ("pkg", "1 1 1")):
        assert f"access {name} {want}" in out, (name, res)
    for name, want in (("data", "yes"), ("lock", "yes"), ("secret", "no"),
                       ("ro", "no"), ("pkg", "yes")):
        assert f"w {name} {want}" in out, (name, res)
    assert "wrote data" in out and "wrote lock" in out and "wrote pkg" in out, res
    assert "secret refused" in out and "Permission denied" in res.stderr, res
    assert not (store / "secret").exists()              # no silently empty copy
    assert (low / "data").read_text() == "data\n"


# ---- 15. AF_UNIX names below a cow --------------------------------------------------

SOCKETS = r'''
import os, socket, sys
d = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(d + "/sock"); s.listen(1)
print("getsockname", s.getsockname())
c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
c.connect(d + "/sock")
a, _ = s.accept()
print("getpeername", c.getpeername())
print("accepted", a.getsockname())
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); u.bind(d + "/dg")
v = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); v.bind(d + "/dg2")
v.connect(d + "/dg"); v.send(b"x"); v.send(b"y")
print("recvfrom", u.recvfrom(8)[1])
print("recvmsg", u.recvmsg(8)[3])
os.chdir(d)
r = socket.socket(socket.AF_UNIX); r.bind("rel")
print("relative", r.getsockname())
'''


def test_socket_names_below_cow(run_umvu, area):
    low, store = cow_lower(area)
    os.chown(low, NOBODY, NOBODY)
    (area / "sockets.py").write_text(SOCKETS)
    res = session(run_umvu, f"python3 {area}/sockets.py {low}",
                  opts=("-N", "--cow", f"{low}:{store}"))
    assert res.returncode == 0, res
    got = lines_of(res.stdout)
    assert got == {"getsockname": f"{low}/sock", "getpeername": f"{low}/sock",
                   "accepted": f"{low}/sock", "recvfrom": f"{low}/dg2",
                   "recvmsg": f"{low}/dg2", "relative": "rel"}, res
    assert (store / "sock").exists() and not (low / "sock").exists()
